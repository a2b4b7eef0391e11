"""What the operator commands do: status, dead letters, purge, results.

The CLI only parses and prints; these functions are the logic, and tests
call them directly.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from .app import App
from .brokers import display_url
from .brokers.base import DeadLetter
from .config import Settings
from .errors import ResultNotFound, TaskqError
from .message import encode, validate_queue
from .policy import Outcome
from .results import READY_STATES, AsyncResult, require
from .settling import Unopened, classify


def status(settings: Settings) -> dict[str, Any]:
    broker = App.from_settings(settings).broker
    return {
        "broker": display_url(settings.broker),
        "queues": {q: dataclasses.asdict(c) for q, c in broker.counts().items()},
        "workers": broker.worker_states(),
    }


def health_problems(report: dict[str, Any], max_depth: int | None = None) -> list[str]:
    """What makes ``report`` (from ``status``) unhealthy: no live worker, or a queue
    with more than ``max_depth`` messages ready. Empty when healthy."""
    problems = []
    if not report["workers"]:
        problems.append(f"no worker is live on broker {report['broker']}")
    if max_depth is not None:
        for queue, counts in report["queues"].items():
            if counts["ready"] > max_depth:
                problems.append(
                    f"queue {queue} has {counts['ready']} message(s) ready, more than {max_depth}"
                )
    return problems


def format_status(report: dict[str, Any]) -> str:
    lines = [
        f"broker: {report['broker']}",
        "",
        f"{'queue':<20} {'ready':>8} {'scheduled':>10} {'in-flight':>10} {'dead':>6}",
    ]
    # A worker's state is what its supervisor last published: one that is starting
    # (registered, nothing published yet) or of another version may lack fields.
    consumed = {queue for w in report["workers"] for queue in w.get("queues", ())}
    for queue, c in report["queues"].items():
        unconsumed = "" if queue in consumed else "  (no live worker consumes it)"
        lines.append(
            f"{queue:<20} {c['ready']:>8} {c['scheduled']:>10} {c['claimed']:>10} {c['dead']:>6}"
            + unconsumed
        )
    if not report["queues"]:
        lines.append("(no queues yet)")
    lines.append("")
    workers = report["workers"]
    lines.append(f"workers: {len(workers)} live")
    for w in workers:
        if "pid" not in w or "queues" not in w:
            lines.append(f"  {w.get('name', '?')} (starting: no state published yet)")
            continue
        lines.append(f"  {w.get('name', '?')} (pid {w['pid']}) queues {','.join(w['queues'])}")
        for child in w.get("children", ()):
            doing = (
                f"running {child['task']}[{child.get('task_id')}] for "
                f"{time.time() - child.get('started_at', time.time()):.1f} s"
                if child.get("task")
                else "idle"
            )
            expired = f", {child['expired']} expired" if child.get("expired") else ""
            retiring = " (retiring after a reload)" if child.get("retiring") else ""
            done = child.get("done", 0)
            lines.append(f"    pid {child.get('pid')}{retiring}: {done} done{expired}, {doing}")
    return "\n".join(lines)


def dead_letters(settings: Settings, queue: str | None = None) -> list[DeadLetter]:
    return App.from_settings(settings).broker.dead_letters(queue)


def find_dead(settings: Settings, message_id: str) -> DeadLetter:
    for letter in dead_letters(settings):
        if message_id in (letter.id, letter.name):
            return letter
    raise TaskqError(f"no dead message with id {message_id!r} (see `taskq dead list`)")


def format_dead(letter: DeadLetter) -> str:
    r = dict(letter.record)
    lines = [f"{k}: {r.pop(k)}" for k in ("id", "task", "queue", "reason", "died_at") if k in r]
    lines.append(f"error: {r.pop('exc_type', '')}: {r.pop('exc_message', '')}")
    attempts = r.pop("attempts", [])
    tb = r.pop("traceback", "")
    lines += [f"{k}: {v}" for k, v in r.items()]
    # A record is a file anyone with access may have edited: show what it holds.
    if attempts and isinstance(attempts, list):
        lines.append("attempts:")
        for n, a in enumerate(attempts, 1):
            a = a if isinstance(a, dict) else {"error": a}
            at, worker, outcome = a.get("at"), a.get("worker"), a.get("outcome")
            lines.append(f"  {n}. {at} on {worker}: {outcome} ({a.get('error')})")
    elif attempts:
        lines.append(f"attempts: {attempts}")
    if tb:
        lines += ["traceback:", str(tb).rstrip()]
    return "\n".join(lines)


def retry_dead(
    settings: Settings, message_id: str | None, tick: Callable[[int], object] = lambda n: None
) -> tuple[int, list[str]]:
    """Publish dead messages again with their attempts reset; ``None`` means all.

    Returns how many were requeued and why others could not be (bad signature,
    undecodable: those stay in dead/). One named message that cannot be retried
    is an error. ``tick(1)`` after each one requeued (a progress bar).
    """
    app = App.from_settings(settings)
    letters = dead_letters(settings) if message_id is None else [find_dead(settings, message_id)]
    requeued, skipped = 0, []
    for letter in letters:
        opened = classify(app.broker.dead_message(letter), app.key)
        if isinstance(opened, Unopened):
            skipped.append(_unretriable(letter, opened))
            continue
        message, payload = opened
        fresh = message.replace(retries=0, eta=None, attempts=())
        # The old FAILURE would answer .get() before the new attempt runs.
        app.broker.delete_result(message.id)
        app.broker.publish(fresh, encode(fresh, payload, app.key))
        app.broker.remove_dead(letter)
        requeued += 1
        tick(1)
    if message_id is not None and skipped:
        raise TaskqError(skipped[0])
    return requeued, skipped


def _unretriable(letter: DeadLetter, unopened: Unopened) -> str:
    """Why a dead message stays in dead/: it cannot be trusted or understood."""
    if unopened.outcome is Outcome.BAD_SIGNATURE:
        return (
            f"dead message {letter.id} has a bad signature: it is never run; "
            "inspect it with `taskq dead show` and purge it"
        )
    return f"dead message {letter.id} cannot be decoded: {unopened.error}"


def purge_dead(settings: Settings, queue: str | None) -> int:
    broker = App.from_settings(settings).broker
    letters = broker.dead_letters(queue)
    for letter in letters:
        broker.remove_dead(letter)
    return len(letters)


def purge_queue(settings: Settings, queue: str) -> int:
    """Drop a queue's waiting messages; a name no message ever used is refused
    (a typo would otherwise "delete 0 messages" and look like success)."""
    validate_queue(queue)  # a path is an invalid name, not an unknown queue
    broker = App.from_settings(settings).broker
    known = broker.counts()
    if queue not in known:
        listed = ", ".join(sorted(known)) or "none yet"
        raise TaskqError(
            f"no queue named {queue!r} in {display_url(settings.broker)} (queues: {listed})"
        )
    return broker.purge(queue)


def result(settings: Settings, task_id: str, wait: float | None) -> dict[str, Any]:
    handle = AsyncResult[Any](task_id, app=App.from_settings(settings))
    if wait:
        deadline = time.monotonic() + wait
        while handle.status not in READY_STATES and time.monotonic() < deadline:
            time.sleep(0.05)
    try:
        header = require(handle)
    except ResultNotFound:
        return {"id": task_id, "status": handle.status}
    out = {k: v for k, v in header.items() if k != "done"}
    if header["status"] == "SUCCESS":
        out["result"] = repr(handle.result)
    return out


def format_result(record: dict[str, Any]) -> str:
    tb = record.pop("traceback", None)
    text = json.dumps(record, indent=2, default=str)
    return f"{text}\n{tb.rstrip()}" if tb else text
