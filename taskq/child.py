"""A worker child's life around the loop: start-up, signals, recycling.

The supervisor forks a child into ``child_main``: it ignores Ctrl-C (the
supervisor's to act on), takes SIGTERM as "finish the task in hand, then exit",
asks to be stopped when the supervisor dies, imports the task modules, and
runs ``worker.Worker`` until it is stopped or due for recycling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from .config import Settings
from .errors import ConsumerLost
from .keys import Keyring
from .output import TaskOutput
from .slots import Slot
from .tally import Tally
from .worker import Worker, running_message, soft_limit

log = logging.getLogger("taskq.worker")


def rss_mb() -> float:
    """This process's resident memory in MB."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def install_child_signals(on_stop: Callable[[], None]) -> None:
    """Ctrl-C reaches the whole process group: only the supervisor acts on it.
    SIGTERM from the supervisor means: finish the task in hand, then exit."""
    signal.set_wakeup_fd(-1)  # inherited from the supervisor: its pipe is not ours
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda s, f: on_stop())
    signal.signal(signal.SIGALRM, soft_limit)


EXIT_IMPORT_ERROR = 3


def child_main(
    settings: Settings, key: Keyring, slot: Slot, consumer_name: str, worker_name: str = ""
) -> None:
    """Entry point of a forked worker child; it signs and verifies with the
    supervisor's ``key`` (the broker's key is looked up once, by the supervisor).
    ``worker_name`` (the supervisor's) marks the events the child records."""
    from .app import App
    from .current import set_default_app

    state: dict[str, Any] = {"stop": False, "worker": None}

    def on_stop() -> None:
        state["stop"] = True
        worker: Worker | None = state["worker"]
        if worker is not None:
            worker.stopping = True
            worker.consumer.wake()

    install_child_signals(on_stop)
    parent = _stop_when_parent_dies()
    import multiprocessing  # logging names processes after the stdlib's idea of them

    multiprocessing.current_process().name = f"worker-{slot.index}"
    app = App.from_settings(settings, key=key)
    set_default_app(app)
    sys.stdout = TaskOutput("stdout", logging.INFO, running_message)
    sys.stderr = TaskOutput("stderr", logging.WARNING, running_message)
    try:
        import_modules(settings.modules)
    except (Exception, SystemExit) as exc:
        log.error("Cannot import the task modules: %s", describe_import_error(exc))
        sys.exit(EXIT_IMPORT_ERROR)
    consumer = app.broker.open_consumer(settings.queues, consumer_name)
    events = app.events
    if events is not None:
        events.worker = worker_name
    tally = Tally() if settings.metrics_port else None
    worker = Worker(
        app.broker,
        app.key,
        consumer,
        slot,
        settings.default_time_limit,
        events=events,
        tally=tally,
    )
    state["worker"] = worker
    worker.stopping = state["stop"]
    try:
        worker.run(
            should_continue=lambda: os.getppid() == parent and not recycle_due(worker, settings)
        )
    except ConsumerLost as exc:
        log.error("%s: exiting, to be replaced", exc)
    finally:
        worker.flush()
        consumer.close()


def _stop_when_parent_dies() -> int:
    """Ask for SIGTERM when the supervisor dies (Linux), so orphans finish their
    task and exit instead of running unsupervised; the loop also checks the
    parent's pid, for other systems. Returns the parent's pid."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return parent


_PR_SET_PDEATHSIG = 1


def import_modules(modules: tuple[str, ...]) -> None:
    """Import the task modules, with the working directory on sys.path (as Celery does)."""
    import importlib

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        importlib.import_module(module)


def describe_import_error(exc: BaseException) -> str:
    """The error with the file and line at fault, for one log line."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError in {exc.filename}, line {exc.lineno}: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def recycle_due(worker: Worker, settings: Settings) -> bool:
    """Whether this child should exit and be replaced by a fresh one."""
    if settings.max_tasks_per_child and worker.done >= settings.max_tasks_per_child:
        log.info("Recycling after %d tasks (max_tasks_per_child)", worker.done)
        return True
    if settings.max_memory_per_child and worker.done and rss_mb() > settings.max_memory_per_child:
        log.info("Recycling at %.0f MB (max_memory_per_child)", rss_mb())
        return True
    return False
