"""``@periodic``: a task that also runs on a schedule (cron text or a fixed interval).

Declaring one only records it, like ``@task``: nothing touches the broker at
import. ``taskq worker`` runs the schedule (see ``scheduler.py``); the
schedule's arithmetic lives here, pure, so every worker computes the same ticks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import TaskqError
from .task import Task, make_task

if TYPE_CHECKING:
    from .app import App

R = TypeVar("R")

MISSED_POLICIES = ("run_once", "skip")


def zone(name: str) -> tzinfo:
    """The time zone of an IANA name ("UTC", "Europe/Paris"); TaskqError if unknown."""
    try:
        return UTC if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TaskqError(
            f"unknown time zone {name!r}: give an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


@dataclass(frozen=True)
class Schedule:
    """When a periodic task runs: ``cron`` text in a time zone, or ``every`` seconds.

    ``every`` ticks at whole multiples of the interval since the Unix epoch, so
    all workers agree on the ticks without talking: ``every=3600`` is on the hour.
    ``tz`` is None when the task leaves it to the ``timezone`` setting.
    """

    cron: str | None = None
    every: float | None = None
    tz: str | None = None
    missed: str = "run_once"

    def describe(self, default_tz: str = "UTC") -> str:
        if self.every is not None:
            return f"every {self.every:g}s"
        return f"cron {self.cron!r} ({self.tz or default_tz})"

    def latest(self, now: float, tz: tzinfo) -> float:
        """The last tick at or before ``now``."""
        if self.every is not None:
            return math.floor(now / self.every) * self.every
        assert self.cron is not None
        # cronsim's reverse walk is strictly before its start: start a second on.
        start = datetime.fromtimestamp(math.floor(now) + 1, tz)
        return next(CronSim(self.cron, start, reverse=True)).timestamp()

    def next_after(self, moment: float, tz: tzinfo) -> float:
        """The first tick strictly after ``moment``."""
        if self.every is not None:
            return (math.floor(moment / self.every) + 1) * self.every
        assert self.cron is not None
        return next(CronSim(self.cron, datetime.fromtimestamp(math.floor(moment), tz))).timestamp()

    def ticks_between(self, after: float, before: float, tz: tzinfo, most: int = 1000) -> int:
        """How many ticks fall strictly between ``after`` and ``before`` (at most ``most``)."""
        if self.every is not None:
            count = math.ceil(before / self.every) - math.floor(after / self.every) - 1
            return max(0, min(most, count))
        count, tick = 0, self.next_after(after, tz)
        while tick < before and count < most:
            count, tick = count + 1, self.next_after(tick, tz)
        return count


@dataclass(frozen=True)
class Periodic:
    """A declared periodic task: the task (callable, ``.delay()``) and its schedule."""

    task: Task[Any, Any]
    schedule: Schedule


_periodic: dict[str, Periodic] = {}


def periodic_tasks() -> Mapping[str, Periodic]:
    """Every periodic task declared in this process, by task name."""
    return _periodic


def iter_periodic() -> Iterator[Periodic]:
    return iter(sorted(_periodic.values(), key=lambda p: p.task.name))


def _check_schedule(
    name: str, cron: str | None, every: timedelta | float | None, tz: str | None, missed: str
) -> Schedule:
    where = f"@periodic on {name}"
    if (cron is None) == (every is None):
        raise TaskqError(f"{where}: give either cron=... or every=..., not both or neither")
    seconds = None
    if every is not None:
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TaskqError(f"{where}: every must be a timedelta or seconds, got {every!r}")
        if not math.isfinite(seconds) or seconds < 1:
            raise TaskqError(f"{where}: every must be at least 1 second, got {every!r}")
    if cron is not None:
        try:
            CronSim(cron, datetime.now(UTC))
        except (CronSimError, TypeError) as exc:
            raise TaskqError(f"{where}: invalid cron expression {cron!r}: {exc}") from None
    if tz is not None:
        try:
            zone(tz)
        except TaskqError as exc:
            raise TaskqError(f"{where}: {exc}") from None
    if missed not in MISSED_POLICIES:
        raise TaskqError(
            f"{where}: missed must be one of {', '.join(MISSED_POLICIES)}, got {missed!r}"
        )
    return Schedule(
        cron=cron, every=None if seconds is None else float(seconds), tz=tz, missed=missed
    )


def _check_no_arguments(name: str, fn: Callable[..., Any], bind: bool) -> None:
    """A tick calls the task with no arguments (but ``self`` when bound): say so now,
    not with a TypeError at every tick."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to read (a builtin): the first run will tell
    try:
        signature.bind(*([None] if bind else []))
    except TypeError:
        called = "self only (bind=True)" if bind else "no arguments"
        raise TaskqError(
            f"@periodic on {name}: a periodic task is called with {called}, "
            f"but {fn.__name__}({', '.join(signature.parameters)}) needs more"
        ) from None


def make_periodic(
    fn: Callable[..., Any],
    app: App | None,
    name: str | None,
    *,
    cron: str | None,
    every: timedelta | float | None,
    tz: str | None,
    missed: str,
    options: dict[str, Any],
) -> Task[Any, Any]:
    task_name = name or f"{fn.__module__}.{fn.__qualname__}"
    schedule = _check_schedule(task_name, cron, every, tz, missed)
    _check_no_arguments(task_name, fn, bool(options.get("bind")))
    declared = make_task(fn, app, task_name, **options)
    _periodic[declared.name] = Periodic(declared, schedule)
    return declared


def periodic(
    *,
    cron: str | None = None,
    every: timedelta | float | None = None,
    tz: str | None = None,
    missed: str = "run_once",
    name: str | None = None,
    **options: Any,
) -> Callable[[Callable[..., R]], Task[..., R]]:
    """Declare a task that ``taskq worker`` runs on a schedule, with no arguments.

    ``@periodic(cron="*/5 * * * *")`` (in ``tz``, else the ``timezone`` setting,
    UTC by default) or ``@periodic(every=timedelta(seconds=30))`` (or ``every=30``).
    ``missed="run_once"`` runs a tick missed while no worker ran once, late;
    ``missed="skip"`` drops it. Other options are ``@task``'s (queue, max_retries...).
    """

    def declare(fn: Callable[..., R]) -> Task[..., R]:
        options_ = dict(options)
        return make_periodic(
            fn, None, name, cron=cron, every=every, tz=tz, missed=missed, options=options_
        )

    return declare
