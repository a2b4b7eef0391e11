"""Running the periodic schedule: a process per ``taskq worker``, one publisher per tick.

The supervisor never imports user code, so it forks a scheduler process
(``scheduler_main``) that imports the task modules, finds the ``@periodic``
tasks and publishes the ticks of those whose lease it holds on the broker (a
lease per task). Every worker on a broker runs one; only a task's lease
holder publishes its ticks, and when the holder dies the lease lapses (file
broker: at once; Redis: after ``LEASE_TTL``) and another worker takes over
within ``RENEW_EVERY``. A reload restarts it on the new code.

Each tick is published once: a task's lease makes one publisher, and a tick is
recorded (``record_tick``) after its message is published under an id made
from the task and the tick, so that an owner taking over after a crash between
the two finds the message (queued, running or with a result) and does not
publish it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from .brokers.base import Broker
from .config import Settings
from .errors import TaskqError
from .keys import Keyring
from .message import new_id
from .periodic import Periodic, iter_periodic, zone

log = logging.getLogger("taskq.schedule")

LEASE_TTL = 3.0  # seconds a silent owner keeps a lease (brokers that need a TTL)
RENEW_EVERY = 1.0  # seconds between renewals (and takeover attempts): a third of the TTL
STEP = 0.2  # seconds between rounds looking for due ticks
ON_TIME = 2.0  # a tick published later than this after its time was missed
_MOST_COUNTED = 1000  # missed ticks counted for the log, at most


def tick_id(task: str, tick: float) -> str:
    """The message id of ``task``'s tick at ``tick``: the same on every worker."""
    digest = hashlib.sha256(task.encode()).hexdigest()[:16]
    return f"tick-{digest}-{round(tick * 1000)}"


def lease_name(task: str) -> str:
    """Each periodic task has a lease of its own: workers importing different
    modules on one broker each run the tasks they know."""
    return f"periodic:{task}"


def _iso(moment: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(moment, tz).isoformat(timespec="seconds")


@dataclass
class Scheduler:
    """Publishes the due ticks of the tasks whose lease it holds; a round per ``step``."""

    broker: Broker
    entries: list[Periodic]
    owner: str
    default_tz: str = "UTC"
    renew_every: float = RENEW_EVERY
    owned: set[str] = field(default_factory=set)  # tasks whose lease this owner holds
    _renew_at: float = 0.0  # monotonic
    _known: dict[str, float] = field(default_factory=dict)  # last ticks read or recorded
    _unsure: set[str] = field(default_factory=set)  # taken over, not yet published since

    @property
    def owning(self) -> bool:
        return bool(self.owned)

    def tz(self, entry: Periodic) -> tzinfo:
        return zone(entry.schedule.tz or self.default_tz)

    def step(self, now: float) -> int:
        """Renew or take the leases when due; publish what is due. How many ticks were
        settled (published now, or found published by an owner that died before
        recording them)."""
        if time.monotonic() >= self._renew_at:
            self._renew_at = time.monotonic() + self.renew_every
            self._renew()
        return sum(self._due(e, now) for e in self.entries if e.task.name in self.owned)

    def pause(self, now: float) -> float:
        """How long to wait before the next round: ``STEP``, or less when a tick of a
        task held here falls sooner (so that a tick starts milliseconds after its time)."""
        due = [
            e.schedule.next_after(now, self.tz(e))
            for e in self.entries
            if e.task.name in self.owned
        ]
        return max(0.0, min([STEP, *(t - now for t in due)]))

    def _renew(self) -> None:
        gained, lost = [], []
        for entry in self.entries:
            name = entry.task.name
            held = self.broker.acquire_lease(lease_name(name), self.owner, LEASE_TTL)
            if held and name not in self.owned:
                gained.append(name)
                self.owned.add(name)
                self._unsure.add(name)
                self._known.pop(name, None)  # another owner may have moved it on
            elif not held and name in self.owned:
                lost.append(name)
                self.owned.discard(name)
        if gained:
            log.info("This worker now runs the schedule of %s (%s)", ", ".join(gained), self.owner)
        if lost:
            log.warning("Another worker took over the schedule of %s", ", ".join(lost))

    def _due(self, entry: Periodic, now: float) -> bool:
        name, schedule, tz = entry.task.name, entry.schedule, self.tz(entry)
        latest = schedule.latest(now, tz)
        known = self._known.get(name)
        if known is not None and latest <= known:
            return False  # nothing due: no need to ask the broker
        last = self.broker.last_tick(name)
        if last is not None and latest <= last:
            self._known[name] = last
            return False
        late = now - latest > ON_TIME
        # Only published ticks are recorded in the broker (they are the "last run"
        # of `taskq schedule`); a tick passed over is remembered here only.
        if last is None and late:
            self._known[name] = latest  # never ran here: nothing missed, wait for the next
            return False
        between = schedule.ticks_between(last, latest, tz, _MOST_COUNTED) if last is not None else 0
        missed = between + late
        if missed:
            self._log_missed(entry, missed, last if last is not None else latest, tz)
            if late and schedule.missed == "skip":
                self._known[name] = latest
                return False
        self._publish(entry, latest)
        self.broker.record_tick(name, latest)
        self._known[name] = latest
        return True

    def _log_missed(self, entry: Periodic, missed: int, last: float, tz: tzinfo) -> None:
        what = (
            "skipped (missed='skip')"
            if entry.schedule.missed == "skip"
            else "running it once now (missed='run_once')"
        )
        log.warning(
            "Periodic task %s missed %s tick(s) while no worker ran its schedule (last at %s): %s",
            entry.task.name,
            f"{missed}+" if missed > _MOST_COUNTED else missed,
            _iso(last, tz),
            what,
        )

    def _publish(self, entry: Periodic, tick: float) -> None:
        name, task_id = entry.task.name, tick_id(entry.task.name, tick)
        if name in self._unsure:
            # The previous owner may have died between publishing and recording.
            self._unsure.discard(name)
            found = self.broker.find(task_id) or self.broker.load_result(task_id)
            if found is not None:
                log.info("Tick %s of %s was published before the takeover", task_id, name)
                return
        entry.task.apply_async(task_id=task_id)
        log.debug("Published tick %s of %s", task_id, name)

    def release(self) -> None:
        """Give up every lease held (a stopping worker), so another takes over at once."""
        for name in sorted(self.owned):
            with contextlib.suppress(TaskqError, OSError):
                self.broker.release_lease(lease_name(name), self.owner)
        self.owned.clear()


def scheduler_main(settings: Settings, key: Keyring, owner: str) -> None:
    """Entry point of the scheduler process a supervisor forks: import the task
    modules, then run the schedule until told to stop. Exits 0 at once when the
    modules declare no periodic task (the supervisor does not restart it then)."""
    from .app import App
    from .child import (
        EXIT_IMPORT_ERROR,
        _stop_when_parent_dies,
        describe_import_error,
        import_modules,
        install_child_signals,
    )
    from .current import set_default_app

    stop = threading.Event()
    install_child_signals(stop.set)
    parent = _stop_when_parent_dies()
    import multiprocessing  # logging names processes after the stdlib's idea of them

    multiprocessing.current_process().name = "scheduler"
    app = App.from_settings(settings, key=key)
    set_default_app(app)
    try:
        import_modules(settings.modules)
    except (Exception, SystemExit) as exc:
        log.error("Cannot import the task modules: %s", describe_import_error(exc))
        sys.exit(EXIT_IMPORT_ERROR)
    entries = list(iter_periodic())
    if not entries:
        return
    scheduler = Scheduler(app.broker, entries, owner, settings.timezone)
    log.info(
        "Schedule: %s",
        "; ".join(f"{e.task.name} {e.schedule.describe(settings.timezone)}" for e in entries),
    )
    failing = ""
    try:
        while not stop.is_set() and os.getppid() == parent:
            try:
                scheduler.step(time.time())
                failing = ""
            except (TaskqError, OSError) as exc:
                if str(exc) != failing:  # once per error, not every round
                    log.error("Cannot run the schedule: %s (trying again)", exc)
                failing = str(exc)
            stop.wait(scheduler.pause(time.time()))
    finally:
        scheduler.release()


_BACKOFF_MAX = 30.0


@dataclass
class SchedulerProcess:
    """The supervisor's handle on its scheduler process: start, restart when it
    dies (with back-off), restart on reload, stop. It never imports user code."""

    context: Any
    worker: str
    process: Any = None
    idle: bool = False  # exited 0: the code declares no periodic task
    failures: int = 0
    respawn_at: float = 0.0
    _started: float = 0.0
    _retiring: list[Any] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else int(self.process.pid)

    def keep(self, settings: Settings, key: Keyring, now: float) -> None:
        """Reap a dead scheduler and start one when due; called every round."""
        self._retiring = [p for p in self._retiring if p.is_alive()]
        if self.process is not None and not self.process.is_alive():
            self._reaped(self.process.exitcode, now)
        if self.process is None and not self.idle and settings.schedule and now >= self.respawn_at:
            owner = f"{self.worker}/scheduler-{new_id()[:6]}"
            process = self.context.Process(
                target=scheduler_main, args=(settings, key, owner), name="scheduler"
            )
            process.start()
            self.process, self._started = process, now

    def _reaped(self, exitcode: int | None, now: float) -> None:
        self.process = None
        if exitcode == 0:
            self.idle = True  # no periodic task: nothing to run until a reload
            return
        early = now - self._started < 5.0
        self.failures = self.failures + 1 if early else 1
        delay = min(0.1 * 2 ** (self.failures - 1), _BACKOFF_MAX)
        log.error(
            "The scheduler process died (exit code %s): restarting in %.1f s", exitcode, delay
        )
        self.respawn_at = now + delay

    def roll(self) -> None:
        """A reload: stop this scheduler; the next round starts one on the new code."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            self._retiring.append(self.process)
        self.process, self.idle, self.failures, self.respawn_at = None, False, 0, 0.0

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the scheduler (and any retiring one), bounded by ``timeout``."""
        processes = [p for p in [self.process, *self._retiring] if p is not None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.join(5)
        self.process, self._retiring = None, []


# -- what `taskq schedule` shows ---------------------------------------------------


def schedule_report(settings: Settings, broker: Broker, now: float) -> list[dict[str, Any]]:
    """Each periodic task of ``settings.modules`` (imported here, in the CLI's
    process), its schedule, next run and last run (read from the broker)."""
    from .child import describe_import_error, import_modules

    if not settings.modules:
        raise TaskqError("no task modules: give -A MODULE (or `modules` in taskq.toml)")
    try:
        import_modules(settings.modules)
    except (Exception, SystemExit) as exc:
        raise TaskqError(f"cannot import the task modules: {describe_import_error(exc)}") from None
    rows = []
    for entry in iter_periodic():
        tz = zone(entry.schedule.tz or settings.timezone)
        last = broker.last_tick(entry.task.name)
        rows.append(
            {
                "task": entry.task.name,
                "schedule": entry.schedule.describe(settings.timezone),
                "timezone": entry.schedule.tz or settings.timezone,
                "queue": entry.task.options.queue,
                "missed": entry.schedule.missed,
                "next_run": _iso(entry.schedule.next_after(now, tz), tz),
                "last_run": None if last is None else _iso(last, tz),
            }
        )
    return rows


def format_schedule(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no periodic tasks in these modules"
    table = [("task", "schedule", "next run", "last run", "queue")]
    for r in rows:
        last = r["last_run"] or "never"
        table.append((r["task"], r["schedule"], r["next_run"], last, r["queue"]))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    lines = (
        "  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[4]])
        for line in table
    )
    return "\n".join(lines)
