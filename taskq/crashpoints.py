"""Named steps of the data path where a test can make this process die.

Set ``TASKQ_CRASH_AT`` to a step's name and the process calls ``os._exit``
the moment it reaches that step: no ``finally`` blocks, no flushes, no
atexit handlers, as close to a power cut for this process as Python gets.
``tests/integration/test_crash_points.py`` kills a producer, a worker child
or a supervisor at every step and checks that a restart finds each message
where ``docs/architecture.md`` says (never lost, at most one duplicate).

The variable is read once, at import. Unset (always, outside that test),
``crash_point`` is a function that does nothing, so a step costs one call.
"""

from __future__ import annotations

import os
from collections.abc import Callable

EXIT_CODE = 86  # distinct from every exit code taskq itself uses

# Every step, in the order a message meets them, and what has happened when
# the process dies there. A test checks that the calls in the code name
# exactly these.
STEPS = {
    "publish.written": "the message is written out of sight, not yet visible",
    "publish.visible": "the message is in ready/ (or scheduled/), .delay() has not returned",
    "claim.claimed": "the message is renamed into claimed/<consumer>/, not yet run",
    "run.done": "the task has returned, nothing is settled",
    "result.stored": "the SUCCESS result is stored, the message not yet acked",
    "ack.done": "the message is acked (renamed into spare/)",
    "retry.marked": "the RETRY result is stored, the next attempt not yet published",
    "retry.published": "the next attempt is in scheduled/, the claimed file not yet acked",
    "dead.record-written": "the dead record is written, the message still claimed",
    "dead.moved": "the message is renamed into dead/ beside its record",
    "recovery.taken": "a dead consumer's lock is taken and its claims read, nothing settled",
    "recovery.settled-one": "one claim of a dead consumer is settled, its folder not yet removed",
}

_AT = os.environ.get("TASKQ_CRASH_AT", "")
if _AT and _AT not in STEPS:
    # A misspelt step would never be reached, and a crash test would pass vacuously.
    raise ValueError(f"TASKQ_CRASH_AT={_AT!r} names no crash step; the steps: {', '.join(STEPS)}")


def _crash_if_named(name: str) -> None:
    if name == _AT:
        os._exit(EXIT_CODE)


def _no_crash(name: str) -> None:
    """The hot path's version: nothing to compare, nothing to do."""


crash_point: Callable[[str], None] = _crash_if_named if _AT else _no_crash
