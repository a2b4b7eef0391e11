"""taskq's benchmark tasks, as ``taskq worker -A benchmarks.peers.taskq_tasks`` imports them.

The producer declares the same names on its own ``App`` (``systems/taskq_default.py``);
the worker finds a task by name, so both sides agree.
"""

from __future__ import annotations

from taskq import task

from .record import noop as _noop
from .record import slow as _slow
from .record import stamp as _stamp

noop = task(name="bench.noop", ignore_result=True)(_noop)
stamp = task(name="bench.stamp", ignore_result=True)(_stamp)

# W5 (chaos): a SIGKILL during a task counts as a failed attempt, so enough retries
# that the run's kills cannot poison a task by chance; a short back-off (the producer
# declares the same options: they travel in the message).
CHAOS_OPTIONS = {"max_retries": 100, "retry_backoff": 0.2, "retry_backoff_max": 2.0}
slow = task(name="bench.slow", ignore_result=True, **CHAOS_OPTIONS)(_slow)
