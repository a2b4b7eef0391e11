"""What ``taskq events`` and ``taskq inspect`` do: read the event log, show what
each worker process runs now. The CLI only parses and prints."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from typing import Any

from .app import App
from .brokers.base import Events
from .config import Settings
from .events import FLUSH_EVERY, matches

FOLLOW_PAUSE = 0.2  # seconds between reads of the log while following it
SETTLE = 4 * FLUSH_EVERY  # seconds a followed event waits for earlier ones written later


def events(
    broker: Events,
    queue: str | None = None,
    task: str | None = None,
    follow: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Iterator[dict[str, Any]]:
    """The events in the log that pass the filters, in the order they happened; with
    ``follow``, then each new one as it comes, until the caller stops.

    Each process appends its events in batches, so the log holds a producer's
    ``published`` after the worker's ``started`` at times: events are put in
    time order, and while following, held back ``SETTLE`` seconds (more than a
    batch waits) so that a late batch still takes its place.
    """
    cursor, held = "", []
    while True:
        batch, cursor = broker.read_events(cursor, 1000)
        held += [e for e in batch if matches(e, queue, task)]
        if batch:
            continue
        held.sort(key=_time)
        if not follow:
            yield from held
            return
        settled = bisect.bisect_right(held, clock() - SETTLE, key=_time)
        yield from held[:settled]
        del held[:settled]
        sleep(FOLLOW_PAUSE)


def _time(event: dict[str, Any]) -> float:
    ts = event.get("ts")
    return float(ts) if isinstance(ts, int | float) else 0.0


def active(settings: Settings) -> list[dict[str, Any]]:
    """Every worker process of every live supervisor, with what it runs now."""
    return processes_of(App.from_settings(settings).broker.worker_states())


def processes_of(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worker processes in supervisors' published states, each with its supervisor."""
    return [
        {"worker": w.get("name"), "host": w.get("host"), **child}
        for w in workers
        for child in w.get("children", [])
    ]


def format_active(processes: list[dict[str, Any]], now: float | None = None) -> str:
    """One line per worker process: what it runs, since when, its attempt and time limit."""
    now = time.time() if now is None else now
    if not processes:
        return "no live worker"
    lines = []
    for p in processes:
        where = f"{p['worker']} pid {p['pid']}"
        if not p.get("task"):
            lines.append(f"{where}: idle")
            continue
        started = p.get("started_at") or now
        limit = p.get("time_limit")
        lines.append(
            f"{where}: {p['task']}[{p['task_id']}] running {now - started:.1f} s, "
            f"attempt {p.get('attempt') or '?'}, "
            + (f"time limit {limit:g} s" if limit else "no time limit")
        )
    return "\n".join(lines)
