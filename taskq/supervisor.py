"""The supervisor: keeps a pool of worker children alive and the broker tidy.

It never imports user code (so a bad save or a crashing task cannot take it
down). It forks children, respawns only the dead ones (backing off when they
crash-loop), kills a child past its hard time limit, promotes due scheduled
messages, recovers the claims of dead consumers, expires results, and turns
SIGTERM/SIGINT into a warm, then a cold, shutdown. An I/O error in a chore
never ends it (see ``housekeeping``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import multiprocess
from multiprocess.connection import wait

from .brokers import display_url, open_broker
from .brokers.base import Broker
from .child import EXIT_IMPORT_ERROR, child_main
from .config import Settings
from .errors import TaskqError
from .events import Recorder
from .housekeeping import Chores, Recoveries, Sweep, TrustWatch
from .keys import Keyring, keyring_for
from .message import new_id, validate_queue
from .policy import Outcome
from .reload import HotReload, try_import
from .scheduler import SchedulerProcess
from .slots import Slot
from .tally import Tally

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("taskq.supervisor")

_TICK = 0.25  # seconds between housekeeping rounds when nothing wakes us sooner
_SWEEP_EVERY = 1.0  # seconds between dead-consumer sweeps and status updates
_EXPIRE_EVERY = 60.0  # seconds between result-expiry and tmp/ sweeps
_SWEEP_BUDGET = 0.015  # seconds of sweeping a round: the longest it may hold up the rest
_SWEEPING_TICK = 0.035  # seconds between rounds while a sweep is unfinished
_BACKOFF_MAX = 30.0  # longest wait before respawning a crash-looping child


@dataclass
class Child:
    slot: Slot
    consumer: str
    process: Any = None
    started: float = 0.0
    failures: int = 0  # consecutive early deaths, for crash-loop back-off
    respawn_at: float = 0.0
    kill_reason: Outcome | None = None  # set when we kill it on purpose
    requeue_only: bool = False  # killed for shutdown: give its claims back uncounted
    retire_by: float | None = None  # replaced by a reload: finish, or be killed at this time


@dataclass(frozen=True)
class Swap:
    """A reload in progress: the old pool finishes its tasks while the new one serves."""

    started: float
    changed: tuple[Path, ...]
    in_flight: int
    retiring: frozenset[str]  # the old pool's consumers: done when none is left


# Room for a 64-character host name, a separator and a pid: the default name.
_WORKER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}")


def worker_name(template: str | None = None) -> str:
    """A worker's name from ``-n``: ``%h`` becomes the host name, as in Celery;
    without one, ``<host>-<pid>``."""
    name = (template or f"%h-{os.getpid()}").replace("%h", socket.gethostname())
    if not _WORKER_NAME.fullmatch(name):
        raise TaskqError(
            f"invalid worker name {name!r}: use 1-128 letters, digits, '_', '-', '.' or '@', "
            "not starting with '.', '-' or '@'"
        )
    return name


@dataclass
class Supervisor:
    settings: Settings
    reread: Callable[[], Settings] | None = None  # for --reload: settings as the CLI gave them
    config_file: Path | None = None
    broker: Broker = field(init=False)
    key: Keyring = field(init=False)
    children: list[Child] = field(default_factory=list)
    name: str = field(default_factory=worker_name)
    _stop_requests: int = 0
    _wake_r: int = -1
    _next_sweep: float = 0.0
    _chores: Chores = field(default_factory=Chores)
    _hot_reload: HotReload | None = None
    _swaps: list[Swap] = field(default_factory=list)  # a save during a swap starts another
    _trust: TrustWatch = field(init=False)  # re-checks the broker's owners and modes
    _vouched: set[str] = field(default_factory=set)  # consumers of our live children
    _scheduler: SchedulerProcess = field(init=False)  # runs the @periodic tasks' schedule

    def __post_init__(self) -> None:
        # Checked here, not only in each child: a bad name is one error, not a crash loop.
        for queue in self.settings.queues:
            validate_queue(queue)
        self.broker = open_broker(self.settings)
        self.key = keyring_for(self.settings, self.broker)
        self._trust = TrustWatch(self.broker, self.settings.trust_check_interval)
        self._ctx = multiprocess.get_context("fork")
        self._sweep = Sweep(self.broker, every=_EXPIRE_EVERY, budget=_SWEEP_BUDGET)
        # Monitoring: the supervisor's own events (recoveries, killed tasks), and
        # metrics counted from the event log its children write.
        self._events = Recorder(self.broker, self.name) if self.settings.events else None
        # The metrics are served once the pool runs (see _serve_metrics); their
        # package is looked for now, so that a missing one is one error at start.
        self._metrics: Metrics | None = None
        self._own_tally = _check_metrics() if self.settings.metrics_port else None
        self._stop_error: TaskqError | None = None
        self._recoveries = Recoveries(
            self.broker,
            self.key,
            self.name,
            self._chores,
            events=self._events,
            tally=self._own_tally,
        )
        self._scheduler = SchedulerProcess(self._ctx, self.name)

    # -- lifecycle ------------------------------------------------------------

    def run(self) -> int:
        import multiprocessing  # logging names processes after the stdlib's idea of them

        multiprocessing.current_process().name = "supervisor"
        if not self.settings.reload:  # --reload waits for a save that imports instead
            error = try_import(self._ctx, self.settings.modules)
            if error is not None:
                log.error("Cannot import the task modules: %s. Not starting.", error)
                return EXIT_IMPORT_ERROR
        self._install_signals()
        self.broker.register_worker(self.name)
        log.info(
            "taskq worker %s: %d worker process(es), queues %s, broker %s",
            self.name,
            self.settings.worker_count,
            ",".join(self.settings.queues),
            display_url(self.settings.broker),
        )
        self._recoveries.sweep(live=set())
        if self.settings.reload and self.reread is not None:
            self._hot_reload = HotReload(self.settings, self.reread, self._ctx, self.config_file)
        self._start_pool()
        self._serve_metrics()
        while self._stop_requests == 0:
            self._round()
            self._sleep()
        if self._hot_reload is not None:
            self._hot_reload.stop()
        self._shutdown()
        self._stop_monitoring()
        with self._chores.chore("unregister from workers/"):
            self.broker.unregister_worker(self.name)
        log.info("taskq worker %s stopped", self.name)
        self._trust.raise_error()  # stopped because the broker became untrusted: exit 1
        if self._stop_error is not None:
            raise self._stop_error
        return 0

    def _round(self) -> None:
        now = time.time()
        self._reap()
        self._enforce_time_limits(now)
        self._terminate_revoked()
        self._retire_overdue(now)
        if self._hot_reload is not None:
            self._check_sources(self._hot_reload)
        self._finish_swap()
        if self._trust.failed(now):
            self._stop_requests = max(self._stop_requests, 1)  # a warm shutdown
        with self._chores.chore("promote due messages from scheduled/"):
            self.broker.promote_due(now)
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY
            self._recoveries.sweep(live={c.consumer for c in self.children})
            with self._chores.chore("publish the status into workers/"):
                self.broker.publish_worker_state(self.name, self.state())
            if self._metrics is not None:
                with self._chores.chore("read the queue depths for metrics"):
                    self._metrics.read_depths(self.broker)
        with self._chores.chore("delete expired results, dead letters and litter"):
            dead_for = self.settings.dead_letter_expires
            self._sweep.tick(now, now - self.settings.result_expires, dead_for and now - dead_for)
        for child in self.children:
            if child.process is None and child.retire_by is None and now >= child.respawn_at:
                self._spawn(child)
        self._monitor()
        with self._chores.chore("start the scheduler process"):
            self._scheduler.keep(self.settings, self.key, now)

    def _sleep(self) -> None:
        # Wake early when a child dies, a signal arrives (set_wakeup_fd) or sources change.
        waitables = [c.process.sentinel for c in self.children if c.process is not None]
        waitables.append(self._wake_r)
        timeout = _SWEEPING_TICK if self._sweep.pending else _TICK
        if self._hot_reload is not None:
            waitables.append(self._hot_reload.fileno())
            timeout = self._hot_reload.timeout(timeout)
        wait(waitables, timeout=timeout)
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # -- children -------------------------------------------------------------

    def _start_pool(self) -> None:
        for index in range(self.settings.worker_count):
            child = Child(Slot(index), consumer="")
            self.children.append(child)
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        if self._metrics is not None:
            self._metrics.retire(child.slot)  # keeps the counts of its last process
        child.slot.reset()
        child.consumer = f"{self.name}-{child.slot.index}-{new_id()[:6]}"
        child.kill_reason = None
        child.requeue_only = False
        self._vouch(add=child.consumer)  # alive before it claims anything
        process = self._ctx.Process(
            target=child_main,
            args=(self.settings, self.key, child.slot, child.consumer, self.name),
            name=f"worker-{child.slot.index}",
        )
        with self._chores.chore("start a worker process"):
            process.start()  # a failed fork is tried again on the next round
            child.process = process
            child.started = time.monotonic()

    def _reap(self) -> None:
        for child in list(self.children):
            process = child.process
            if process is None or process.is_alive():
                continue
            if child.retire_by is not None:  # an old pool's child: not respawned
                self._settle_dead_child(child, process.exitcode)
                if self._metrics is not None:
                    self._metrics.retire(child.slot)
                self.children.remove(child)
                continue
            # A death mid-task is the task's doing and its retry policy's business
            # (poison); only deaths outside a task mean the pool itself crash-loops.
            crashed = process.exitcode != 0 and not child.slot.read().busy
            self._settle_dead_child(child, process.exitcode)  # logs the dead child's pid
            child.process = None
            self._plan_respawn(child, crashed)

    def _vouch(self, *, add: str = "", drop: str = "") -> None:
        """Tell the broker which consumers our live children run (see ``Broker.vouch``)."""
        self._vouched.discard(drop)
        if add:
            self._vouched.add(add)
        with self._chores.chore("keep the worker processes' liveness"):
            self.broker.vouch(self.name, self._vouched)

    def _settle_dead_child(self, child: Child, exitcode: int | None) -> None:
        self._vouch(drop=child.consumer)  # dead from now: its claims can be taken over
        if child.requeue_only:
            outcome: Outcome | None = None
        elif child.kill_reason is not None:
            outcome = child.kill_reason
        elif exitcode in (0, EXIT_IMPORT_ERROR):
            outcome = None  # a clean exit holds no claims; give back any leftovers
            if exitcode == EXIT_IMPORT_ERROR and self._hot_reload is not None:
                self._hot_reload.child_failed_import(child.slot.index)
        else:
            outcome = Outcome.KILLED
            log.error(
                "Worker %s (pid %s) died with exit code %s",
                child.slot.index,
                child.process and child.process.pid,
                exitcode,
            )
        self._recoveries.settle(child.consumer, outcome)

    def _plan_respawn(self, child: Child, crashed: bool) -> None:
        early_death = crashed and time.monotonic() - child.started < 5.0
        child.failures = child.failures + 1 if early_death else 0
        delay = min(0.1 * 2 ** (child.failures - 1), _BACKOFF_MAX) if child.failures else 0.0
        if delay:
            log.warning("Worker %s keeps dying: respawning in %.1f s", child.slot.index, delay)
        child.respawn_at = time.time() + delay

    def _enforce_time_limits(self, now: float) -> None:
        for child in self.children:
            posting = child.slot.read()
            if child.process is None or not posting.busy or not posting.deadline:
                continue
            if now >= posting.deadline and child.kill_reason is None:
                log.error(
                    "Task %s[%s] passed its time limit: killing worker %s (pid %s)",
                    posting.task,
                    posting.task_id,
                    child.slot.index,
                    child.process.pid,
                )
                child.kill_reason = Outcome.TIME_LIMIT
                _kill(child.process.pid)

    def _terminate_revoked(self) -> None:
        """Kill the children running a task revoked with ``terminate``: its claim is
        then settled as revoked (not run again, no poison strike) and the child replaced."""
        running = {}
        for child in self.children:
            if child.process is not None and child.kill_reason is None:
                posting = child.slot.read()
                if posting.busy:
                    running[posting.task_id] = (child, posting)
        if not running:
            return
        doomed: set[str] = set()
        with self._chores.chore("read the revoked task ids"):
            doomed = self.broker.terminations() & running.keys()
        for task_id in doomed:
            child, posting = running[task_id]
            if child.slot.read().started_at != posting.started_at:
                continue  # it finished meanwhile (reading the ids may take a round trip)
            log.warning(
                "Task %s[%s] revoked with terminate: killing worker %s (pid %s)",
                posting.task,
                task_id,
                child.slot.index,
                child.process.pid,
            )
            child.kill_reason = Outcome.REVOKED
            _kill(child.process.pid)

    # -- reload ---------------------------------------------------------------

    def _check_sources(self, hot_reload: HotReload) -> None:
        plan = None
        with self._chores.chore("check the changed sources"):
            plan = hot_reload.check()
        if plan is not None:
            self._roll_pool(*plan)

    def _roll_pool(self, settings: Settings, changed: list[Path]) -> None:
        """Start a pool on the new code; the old one finishes its tasks and exits."""
        retire_by = time.time() + settings.reload_grace
        old = [c for c in self.children if c.retire_by is None]
        in_flight = sum(1 for c in old if c.process is not None and c.slot.read().busy)
        for child in old:
            child.retire_by = retire_by
            if child.process is None:
                # Waiting out a respawn back-off: its claims were settled when it
                # died, and nothing reaps a child with no process.
                self.children.remove(child)
            else:
                _signal(child.process.pid, signal.SIGTERM)
        self.settings = settings
        logging.getLogger().setLevel(settings.loglevel)  # inherited by the new pool
        retiring = frozenset(c.consumer for c in old if c.process is not None)
        self._swaps.append(Swap(time.monotonic(), tuple(changed), in_flight, retiring))
        self._start_pool()
        self._scheduler.roll()  # the new code may declare other periodic tasks

    def _retire_overdue(self, now: float) -> None:
        for child in self.children:
            overdue = child.retire_by is not None and now >= child.retire_by
            if overdue and child.process is not None and child.kill_reason is None:
                # Cut off by the reload, not by its own fault: back to ready/, uncounted.
                child.requeue_only = True
                _kill(child.process.pid)

    def _finish_swap(self) -> None:
        consumers = {c.consumer for c in self.children}
        for swap in [s for s in self._swaps if not s.retiring & consumers]:
            self._swaps.remove(swap)
            log.info(
                "Reloaded after changes to %s: swap took %.0f ms, waited for %d in-flight task(s)",
                ", ".join(p.name for p in swap.changed),
                (time.monotonic() - swap.started) * 1000,
                swap.in_flight,
            )

    # -- shutdown -------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._stop_requests += 1
        if self._stop_requests == 1:
            log.info("Warm shutdown: finishing tasks in flight (signal again to stop now)")
        else:
            log.warning("Cold shutdown: stopping tasks now; they go back to ready/")

    def _shutdown(self) -> None:
        self._scheduler.stop()  # first: no tick is published for a stopping worker
        for child in self.children:
            if child.process is not None:
                _signal(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self._alive() and time.monotonic() < deadline and self._stop_requests < 2:
            # A warm shutdown waits for tasks in flight, but not past their hard limit.
            self._enforce_time_limits(time.time())
            self._sleep()
            self._reap_without_respawn()
        for child in self.children:
            if child.process is not None:
                child.requeue_only = child.kill_reason is None
                _kill(child.process.pid)
                child.process.join(5)
        self._reap_without_respawn()

    def _alive(self) -> bool:
        return any(c.process is not None and c.process.is_alive() for c in self.children)

    def _reap_without_respawn(self) -> None:
        for child in self.children:
            if child.process is not None and not child.process.is_alive():
                exitcode = child.process.exitcode
                self._settle_dead_child(child, exitcode)
                child.process = None

    # -- monitoring -----------------------------------------------------------

    def _serve_metrics(self) -> None:
        """Serve the metrics, after the first fork: the processes start without waiting
        for prometheus_client to load, and do not hold the port. One that cannot be
        served stops the worker (warm), with the error."""
        if self._own_tally is None:
            return
        from .metrics import Metrics

        self._metrics = Metrics(self._live_slots, self._own_tally)
        try:
            self._metrics.serve(self.settings.metrics_host, self.settings.metrics_port)
        except TaskqError as exc:
            log.error("%s: stopping", exc)
            self._stop_error = exc
            self._stop_requests = max(self._stop_requests, 1)

    def _monitor(self) -> None:
        """Write this round's events; tell the metrics about the processes."""
        if self._events is not None:
            self._events.flush()
        if self._metrics is not None:
            live = [c for c in self.children if c.process is not None]
            self._metrics.update(len(live), sum(1 for c in live if c.slot.read().busy))

    def _live_slots(self) -> list[Slot]:
        """The slots of live processes (called from the metrics' thread: a copy)."""
        return [c.slot for c in list(self.children) if c.process is not None]

    def _stop_monitoring(self) -> None:
        if self._events is not None:
            self._events.flush()
        if self._metrics is not None:
            self._metrics.stop()

    # -- status ---------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        children = []
        for child in self.children:
            posting = child.slot.read()
            children.append(
                {
                    "pid": child.process.pid if child.process is not None else None,
                    "consumer": child.consumer,
                    "retiring": child.retire_by is not None,
                    "done": posting.done,
                    "expired": posting.expired,
                    "task": posting.task or None,
                    "task_id": posting.task_id or None,
                    "started_at": posting.started_at or None,
                    "attempt": posting.attempt if posting.busy else None,
                    "time_limit": posting.time_limit or None if posting.busy else None,
                    "deadline": posting.deadline or None,
                }
            )
        return {
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "queues": list(self.settings.queues),
            "updated": time.time(),
            "children": children,
            "scheduler": self._scheduler.pid,
        }


def _check_metrics() -> Tally:
    """The supervisor's own tally for the metrics, once their package is found."""
    if importlib.util.find_spec("prometheus_client") is None:
        raise TaskqError(
            "metrics_port is set but prometheus_client is not installed: "
            "pip install 'taskq[metrics]'"
        )
    return Tally()


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _kill(pid: int) -> None:
    _signal(pid, signal.SIGKILL)
