"""``taskq worker --reload`` on real worker processes and a package written to tmp_path.

The test process never imports the package it edits: calls are published by
task name (``app.tasks.<name>``), so what a result says came from a worker.
Every wait is bounded; the fixtures stop every worker by PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from taskq.app import App
from taskq.message import Message, decode, dump_call, new_id
from taskq.results import SUCCESS, AsyncResult
from taskq.testing import WorkerProcess

T = TypeVar("T")

# The edited module. `slow` takes seconds, or seconds by VALUE, so that one
# call can sleep long on the old code and briefly on the new.
TASKS_BODY = """
import os
import time

from taskq import task


def note(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (text + "\\n").encode())
    finally:
        os.close(fd)


@task
def value():
    return VALUE


@task(bind=True, max_retries=3)
def slow(self, path, seconds):
    note(path, f"start {VALUE} {self.request.retries} {os.getpid()}")
    time.sleep(seconds[VALUE] if isinstance(seconds, dict) else seconds)
    note(path, f"end {VALUE} {os.getpid()}")
    return VALUE
"""
RELOADED = re.compile(
    r"Reloaded after changes to (?P<files>.+?): swap took (?P<ms>\d+) ms, "
    r"waited for (?P<waited>\d+) in-flight task\(s\)"
)


def tasks_source(value: int, extra: str = "") -> str:
    return f"VALUE = {value!r}\n{TASKS_BODY}{extra}"


def save(proj: Path, value: int, extra: str = "") -> Path:
    path = proj / "app" / "tasks.py"
    path.write_text(tasks_source(value, extra))
    return path


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A project folder holding the package ``app`` (app/__init__.py, app/tasks.py)."""
    root = tmp_path / "proj"
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    save(root, 1)
    return root


@pytest.fixture
def broker_dir(proj: Path) -> Path:
    # Inside the project tree (overrides the plugin's fixture, which the
    # `worker` fixture builds its --broker from): a worker watching the whole
    # project must still ignore it.
    return proj / "queue-data"


@pytest.fixture
def launch(broker_dir: Path, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `taskq worker -A app.tasks` with only the given flags (the `worker`
    fixture always adds --concurrency, which would override taskq.toml)."""
    started: list[WorkerProcess] = []

    def start(*args: str, cwd: Path) -> WorkerProcess:
        log_path = tmp_path / f"launched-{len(started)}.log"
        command = [sys.executable, "-m", "taskq", "--broker", str(broker_dir)]
        command += ["worker", "-A", "app.tasks", *args]
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        process = WorkerProcess(popen, broker_dir, log_path)
        started.append(process)
        return process.wait_ready()

    yield start
    for process in started:
        process.stop(timeout=15)


def send(app: App, name: str, *args: Any) -> AsyncResult[Any]:
    """Publish a call of app.tasks.<name> by name: this process never imports it."""
    message = Message(id=new_id(), task=f"app.tasks.{name}", created=time.time())
    app.publish(message, dump_call(message.task, args, {}))
    return app.AsyncResult(message.id)


def wait_until(check: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_for_value(app: App, expected: int, timeout: float = 10.0) -> float:
    """Send value() until one returns ``expected``; when that result arrived (monotonic)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        got = send(app, "value").get(timeout=max(0.1, deadline - time.monotonic()), interval=0.01)
        if got == expected:
            return time.monotonic()
        seen.append(got)
    raise AssertionError(f"no task returned {expected} within {timeout} s (saw {seen[-5:]})")


def reloads(w: WorkerProcess) -> list[re.Match[str]]:
    return [m for line in w.log().splitlines() if (m := RELOADED.search(line))]


def refusals(w: WorkerProcess) -> list[str]:
    return [line for line in w.log().splitlines() if "RELOAD REFUSED" in line]


def marks(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def queue_files(broker_dir: Path, state: str) -> list[Path]:
    folder = broker_dir / "queues" / "default" / state
    if state == "claimed":
        return [p for p in folder.glob("*/*") if p.name != ".lock"]
    return sorted(folder.iterdir())


def consumers(broker_dir: Path) -> set[str]:
    folder = broker_dir / "queues" / "default" / "claimed"
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def wait_for_roll(broker_dir: Path, before: set[str]) -> None:
    """Wait until a new pool's child has opened its consumer: the old pool's
    in-flight tasks are counted by then, so the test's own calls no longer are."""
    wait_until(lambda: consumers(broker_dir) - before, what="the new pool")


def new_pool(w: WorkerProcess, size: int, old_pids: set[int]) -> list[int]:
    """The children's pids once the worker state shows only ``size`` new, live ones."""

    def pool() -> list[int]:
        state = w.state()
        pids = [c["pid"] for c in state["children"]] if state else []
        fresh = all(pid and pid not in old_pids for pid in pids)
        return pids if len(pids) == size and fresh else []

    return wait_until(pool, what=f"a pool of {size} new children")


def log_time(w: WorkerProcess, text: str) -> str:
    [line] = [line for line in w.log().splitlines() if text in line]
    return line.split()[1].partition(",")[0]  # [2026-11-25 17:49:39,381 INFO ...


def clock_seconds(clock: str) -> int:
    hours, minutes, seconds = map(int, clock.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def threads_and_inotify(pid: int) -> tuple[int, int]:
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = os.listdir(f"/proc/{pid}/fd")
    inotify = 0
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            inotify += "inotify" in os.readlink(f"/proc/{pid}/fd/{fd}")
    return threads, inotify


def test_edited_task_returns_the_new_value(
    proj: Path, worker: Callable[..., WorkerProcess], taskq_app: App
) -> None:
    w = worker("app.tasks", "--reload", concurrency=2, cwd=proj)
    assert f"Watching for changes: {(proj / 'app').resolve()}" in w.log()
    old_pids = set(w.child_pids())
    assert send(taskq_app, "value").get(timeout=10) == 1

    saved = time.monotonic()
    save(proj, 2)  # same size, likely the same second: a stale .pyc must not win
    latency = wait_for_value(taskq_app, 2, timeout=10) - saved
    print(f"save to first task on the new code: {latency * 1000:.0f} ms")

    [line] = wait_until(lambda: reloads(w), what="the reload line")
    assert line["files"] == "tasks.py"
    # Once the swap is done, every task runs on the new code, in new processes.
    assert [send(taskq_app, "value").get(timeout=10) for _ in range(5)] == [2] * 5
    new_pool(w, 2, old_pids)
    assert refusals(w) == []


def test_task_in_flight_during_a_save_finishes_once_on_the_old_code(
    proj: Path, worker: Callable[..., WorkerProcess], taskq_app: App, broker_dir: Path
) -> None:
    w = worker("app.tasks", "--reload", concurrency=2, cwd=proj)
    runs = proj.parent / "runs"
    slow = send(taskq_app, "slow", str(runs), 3.0)
    wait_until(lambda: marks(runs), what="the slow task to start")

    before = consumers(broker_dir)
    save(proj, 2)
    wait_for_roll(broker_dir, before)
    wait_for_value(taskq_app, 2)
    # The new pool serves while the old one finishes its task.
    assert slow.status != SUCCESS
    assert reloads(w) == []

    assert slow.get(timeout=10) == 1
    [line] = wait_until(lambda: reloads(w), what="the reload line")
    assert (line["files"], line["waited"]) == ("tasks.py", "1")
    time.sleep(0.5)  # a re-run would have been claimed by now
    [start, end] = marks(runs)
    assert start.startswith("start 1 0 ") and end.startswith("end 1 ")
    assert start.split()[-1] == end.split()[-1]  # one process, start to end
    assert queue_files(broker_dir, "ready") == []
    assert queue_files(broker_dir, "claimed") == []
    assert taskq_app.broker.dead_letters() == []
    assert "returned to ready/" not in w.log()


BAD_SAVES = {
    "syntax-error": ("VALUE = (\n", "SyntaxError in {path}, line {line}"),
    "exception-at-module-level": (
        "raise RuntimeError('broken at import')\n",
        "RuntimeError: broken at import ({path}, line {line})",
    ),
    "import-error": (
        "import no_such_dependency_xyz\n",
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz' ({path}, line {line})",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_SAVES))
def test_bad_save_is_refused_and_the_last_good_code_keeps_serving(
    proj: Path, worker: Callable[..., WorkerProcess], taskq_app: App, kind: str
) -> None:
    bad, expected = BAD_SAVES[kind]
    # Off UTC, so a "loaded at" time in another zone than the log's would show.
    w = worker("app.tasks", "--reload", concurrency=2, cwd=proj, env={"TZ": "Asia/Kolkata"})
    pids = set(w.child_pids())

    path = save(proj, 2, extra=bad)
    [refusal] = wait_until(lambda: refusals(w), timeout=30, what="RELOAD REFUSED")
    line = len(tasks_source(2).splitlines()) + 1
    assert expected.format(path=path, line=line) in refusal
    # "Still serving the code loaded at" the time the log gave for the worker's start.
    loaded = re.search(r"Still serving the code loaded at (\d\d:\d\d:\d\d)", refusal)
    assert loaded is not None
    started = log_time(w, "Watching for changes")
    # Seconds apart at most (more on a loaded machine); a zone mix-up is hours.
    assert (clock_seconds(loaded[1]) - clock_seconds(started)) % 86400 < 10
    # The pool was left alone: same processes, last good code, supervisor up.
    assert [send(taskq_app, "value").get(timeout=10) for _ in range(3)] == [1] * 3
    assert set(w.child_pids()) == pids
    assert w.popen.poll() is None
    assert reloads(w) == []

    save(proj, 3)
    wait_for_value(taskq_app, 3)
    wait_until(lambda: reloads(w), what="the reload line")
    assert len(refusals(w)) == 1
    assert w.popen.poll() is None


def test_ten_files_saved_at_once_are_one_reload(
    proj: Path, worker: Callable[..., WorkerProcess], taskq_app: App
) -> None:
    others = [proj / "app" / f"mod{i}.py" for i in range(9)]
    for path in others:
        path.write_text("X = 1\n")
    w = worker("app.tasks", "--reload", concurrency=2, cwd=proj)

    started = time.monotonic()
    save(proj, 2)
    for path in others:
        path.write_text("X = 2\n")
    assert time.monotonic() - started < 0.1

    wait_for_value(taskq_app, 2)
    [line] = wait_until(lambda: reloads(w), what="the reload line")
    time.sleep(1.0)  # four debounce windows: a second reload would show by now
    assert len(reloads(w)) == 1
    assert sorted(line["files"].split(", ")) == sorted(["tasks.py", *(p.name for p in others)])


def test_changes_that_are_not_edits_of_watched_code_cause_no_reload(
    proj: Path, worker: Callable[..., WorkerProcess], taskq_app: App, broker_dir: Path
) -> None:
    (proj / "generated").mkdir()
    (proj / "generated" / "gen.py").write_text("X = 1\n")
    # The whole project is watched, so the broker directory lies inside a watched tree.
    w = worker(
        "app.tasks", "--reload", "--reload-dir", ".", "--reload-exclude", "generated", cwd=proj
    )
    assert broker_dir.is_relative_to(proj) and broker_dir.is_dir()
    pids = set(w.child_pids())
    tasks = proj / "app" / "tasks.py"

    def nothing_happens(what: str, change: Callable[[], object]) -> None:
        change()
        time.sleep(0.8)  # three debounce windows and an import check
        assert reloads(w) == [] and refusals(w) == [], f"{what}:\n{w.log()}"

    def in_excluded_folder() -> None:
        (proj / "generated" / "gen.py").write_text("X = 2\n")
        (proj / "generated" / "sub").mkdir()
        (proj / "generated" / "sub" / "new.py").write_text("X = 1\n")

    def in_broker_dir() -> None:
        (broker_dir / "notes.py").write_text("X = 1\n")
        assert [send(taskq_app, "value").get(timeout=10) for _ in range(5)] == [1] * 5

    def in_ignored_folders() -> None:
        for folder in ("app/__pycache__", ".venv/lib", "node_modules/pkg", ".git"):
            (proj / folder).mkdir(parents=True, exist_ok=True)
            (proj / folder / "new.py").write_text("X = 1\n")

    nothing_happens("a change in an excluded folder", in_excluded_folder)
    nothing_happens("a change in the broker directory", in_broker_dir)
    nothing_happens("a touch", lambda: os.utime(tasks))
    nothing_happens("a save of identical bytes", lambda: tasks.write_bytes(tasks.read_bytes()))
    nothing_happens("an editor swap file", lambda: (proj / "app" / ".tasks.py.swp").write_text("x"))
    nothing_happens("a backup file", lambda: (proj / "app" / "tasks.py~").write_text("VALUE = (\n"))
    nothing_happens("new files in ignored folders", in_ignored_folders)
    assert set(w.child_pids()) == pids

    # The watcher was alive all along: a real edit is one reload naming only its file.
    save(proj, 2)
    wait_for_value(taskq_app, 2)
    [line] = wait_until(lambda: reloads(w), what="the reload line")
    assert line["files"] == "tasks.py"


def test_task_past_reload_grace_is_requeued_uncounted_and_rerun_on_the_new_code(
    proj: Path, worker: Callable[..., WorkerProcess], taskq_app: App, broker_dir: Path
) -> None:
    w = worker("app.tasks", "--reload", concurrency=2, cwd=proj, env={"TASKQ_RELOAD_GRACE": "1"})
    runs = proj.parent / "runs"
    slow = send(taskq_app, "slow", str(runs), {1: 60.0, 2: 1.5})  # 60 s on the old code
    wait_until(lambda: marks(runs), what="the slow task to start")

    cut_at = time.monotonic()
    save(proj, 2)
    second = wait_until(lambda: marks(runs)[1:], timeout=10, what="the re-run on the new code")
    assert time.monotonic() - cut_at < 10  # cut off after the 1 s grace, not after 60 s
    assert second[0].startswith("start 2 0 ")  # new code, retries still 0
    [claimed] = queue_files(broker_dir, "claimed")  # the re-run holds the same message
    message, _ = decode(claimed.read_bytes(), taskq_app.key)
    assert message.id == slow.id
    assert (message.retries, message.attempts) == (0, ())

    assert slow.get(timeout=10) == 2
    first, rerun, end = marks(runs)
    assert first.startswith("start 1 0 ") and end.startswith("end 2 ")
    assert rerun.split()[-1] == end.split()[-1] != first.split()[-1]  # a new process ran it
    [line] = wait_until(lambda: reloads(w), what="the reload line")
    assert line["waited"] == "1"
    assert w.log().count("returned to ready/ (worker stopped)") == 1
    assert "died with exit code" not in w.log()
    assert taskq_app.broker.dead_letters() == []


def test_without_reload_nothing_is_watched(
    proj: Path, worker: Callable[..., WorkerProcess], taskq_app: App
) -> None:
    w = worker("app.tasks", concurrency=2, cwd=proj)
    pids = set(w.child_pids())
    # No watchdog observer thread, no inotify watch in the supervisor.
    assert threads_and_inotify(w.pid) == (1, 0)

    save(proj, 2)
    time.sleep(1.0)
    assert [send(taskq_app, "value").get(timeout=10) for _ in range(3)] == [1] * 3
    assert set(w.child_pids()) == pids
    log = w.log()
    assert "Watching for changes" not in log
    assert "Reloaded after" not in log and "RELOAD REFUSED" not in log


def test_config_change_reloads_the_pool_with_the_new_settings(
    proj: Path, launch: Callable[..., WorkerProcess], taskq_app: App
) -> None:
    config = proj / "taskq.toml"
    config.write_text("concurrency = 2\n")
    w = launch("--reload", cwd=proj)
    old_pids = set(w.child_pids())
    assert len(old_pids) == 2

    config.write_text('concurrency = "three"\n')
    [refusal] = wait_until(lambda: refusals(w), timeout=30, what="RELOAD REFUSED")
    assert "the configuration is invalid: concurrency from" in refusal
    assert set(w.child_pids()) == old_pids

    config.write_text("concurrency = 3\n")
    [line] = wait_until(lambda: reloads(w), what="the reload line")
    assert line["files"] == "taskq.toml"
    new_pool(w, 3, old_pids)
    w.wait_ready()  # all three consumers open
    assert send(taskq_app, "value").get(timeout=10) == 1


def test_child_crash_looping_on_broken_code_does_not_stall_the_next_reload(
    proj: Path, worker: Callable[..., WorkerProcess], taskq_app: App
) -> None:
    """A child respawned while the code on disk is broken imports the broken code
    and backs off (the documented behaviour: a new process can only import what
    is on disk); the log says where the code is broken and why the slot serves
    nothing, the other child keeps serving the last good code, and the next good
    save replaces the whole pool, the backing-off slot included."""
    w = worker("app.tasks", "--reload", concurrency=2, cwd=proj)
    path = save(proj, 2, extra="VALUE = (\n")
    wait_until(lambda: refusals(w), timeout=30, what="RELOAD REFUSED")
    victim, survivor = w.child_pids()
    os.kill(victim, signal.SIGKILL)
    # Caught in its back-off: the slot has no process when the next save lands.
    # Five crash-and-back-off rounds, each importing the broken code: slow under load.
    wait_until(lambda: "respawning in 1.6 s" in w.log(), timeout=40, what="a long back-off")
    line = len(tasks_source(2).splitlines()) + 1
    assert f"Cannot import the task modules: SyntaxError in {path}, line {line}" in w.log()
    assert "Worker 0 restarted into the code on disk, whose last save was refused" in w.log()
    assert [send(taskq_app, "value").get(timeout=10) for _ in range(3)] == [1] * 3
    assert w.child_pids() == [survivor]  # the survivor serves; the slot in back-off does not

    save(proj, 3)
    wait_for_value(taskq_app, 3)
    [line] = wait_until(lambda: reloads(w), what="the reload line")
    assert line["files"] == "tasks.py"
    new_pool(w, 2, {victim, survivor})


def test_overlapping_reloads_log_one_line_each(
    proj: Path, worker: Callable[..., WorkerProcess], taskq_app: App, broker_dir: Path
) -> None:
    w = worker("app.tasks", "--reload", concurrency=2, cwd=proj)
    runs = proj.parent / "runs"
    slow = send(taskq_app, "slow", str(runs), 3.0)
    wait_until(lambda: marks(runs), what="the slow task to start")

    for value in (2, 3):  # the first swap still waits for the slow task at the second save
        before = consumers(broker_dir)
        save(proj, value)
        wait_for_roll(broker_dir, before)
        wait_for_value(taskq_app, value)
    assert slow.get(timeout=10) == 1
    # The second swap (an idle pool) ends first; the first ends with the slow task.
    wait_until(lambda: len(reloads(w)) == 2, what="two reload lines")
    time.sleep(0.5)
    assert [(m["files"], m["waited"]) for m in reloads(w)] == [("tasks.py", "0"), ("tasks.py", "1")]
