"""Crash at every named step of the data path, restart, and find the message
where docs/architecture.md says: never lost, run at most twice.

Each case runs the process that passes through its step (a producer, a
worker child, a supervisor) with ``TASKQ_CRASH_AT`` naming the step, checks
what the crash left on disk, then starts a clean worker and checks the
outcome: how often the task's side effect happened, the stored result, and
where the message ends. ``CASES`` is the table "Crash at each step" of
docs/architecture.md, row for row (``test_architecture_lists_every_case``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import itasks
import itasks_crashpoints
import pytest
from helpers import wait_for

from taskq.app import App
from taskq.brokers.names import id_of, ready_name_of
from taskq.crashpoints import EXIT_CODE, STEPS
from taskq.results import FAILURE, RETRY, SUCCESS, require
from taskq.testing import WorkerProcess

HERE = Path(__file__).parent
REPO = HERE.parent.parent
MODULES = "itasks_crashpoints"
PRODUCER, CHILD, SUPERVISOR = "producer", "worker child", "supervisor"


@dataclass(frozen=True)
class Case:
    step: str
    path: str  # the way through the step this case takes
    task: str  # the task whose call passes through the step
    dies: str  # the process that dies there
    left: tuple[str, ...]  # where the message is when it dies (see ``where``)
    result: str | None  # the status of the result stored by then
    after: str  # what a restart does, in the docs' words
    runs: int  # how often the task's side effect happens in all
    ends: tuple[str, ...] = ()  # where the message is at the end ("spare" left out)
    status: str | None = SUCCESS  # the final result (None: never enqueued, no result)
    reason: str | None = None  # the dead record's reason, for a dead letter
    error: str | None = None  # the type of the failure the final result holds


NEVER_ENQUEUED = "never enqueued (`.delay()` did not return); the `tmp/` file is never read"
RECOVERED = "recovered as a killed attempt (`WorkerLost`) and retried"

CASES = [
    Case("publish.written", "a recycled spare", "succeeds", PRODUCER, ("tmp",), None,
         NEVER_ENQUEUED + " and is deleted after 5 min", 0, ("tmp",), None),
    Case("publish.written", "a nameless file", "succeeds", PRODUCER, (), None,
         "never enqueued (`.delay()` did not return); the file vanished with the process",
         0, (), None),
    Case("publish.written", "a new file in `tmp/`", "succeeds", PRODUCER, ("tmp",), None,
         NEVER_ENQUEUED + " and is deleted after 5 min", 0, ("tmp",), None),
    Case("publish.visible", "any", "succeeds", PRODUCER, ("ready",), None,
         "runs once, although `.delay()` did not return", 1),
    Case("claim.claimed", "a success", "succeeds", CHILD, ("claimed",), None,
         RECOVERED + ": runs once", 1),
    Case("run.done", "a success", "succeeds", CHILD, ("claimed",), None,
         RECOVERED + ": runs again", 2),
    Case("result.stored", "a success", "succeeds", CHILD, ("claimed",), SUCCESS,
         RECOVERED + " (a `RETRY` result replaces `SUCCESS` until then): runs again", 2),
    Case("ack.done", "a success", "succeeds", CHILD, ("spare",), SUCCESS, "nothing to repair", 1),
    Case("retry.marked", "a failed attempt", "fails_first", CHILD, ("claimed",), RETRY,
         RECOVERED + ": its next attempt runs once", 1),
    Case("retry.published", "a failed attempt", "fails_first", CHILD,
         ("claimed", "scheduled"), RETRY,
         "the scheduled copy runs, and the claimed one is " + RECOVERED + ": runs twice", 2),
    Case("dead.record-written", "a final failure", "always_fails", CHILD,
         ("claimed", "dead record"), FAILURE,
         "recovered as a killed attempt: dead-lettered again, as `poison` (no attempts "
         "left); record and result now say `WorkerLost`, not the task's error", 1,
         ("dead", "dead record"), FAILURE, "poison", "WorkerLost"),
    Case("dead.moved", "a final failure", "always_fails", CHILD, ("dead", "dead record"),
         FAILURE, "nothing to repair", 1, ("dead", "dead record"), FAILURE, "max-retries",
         "ValueError"),
    Case("recovery.taken", "a dead consumer's claim", "succeeds", SUPERVISOR, ("claimed",),
         None, RECOVERED + " by the next supervisor: runs once", 1),
    Case("recovery.settled-one", "a dead consumer's claim", "succeeds", SUPERVISOR,
         ("scheduled", "spare"), RETRY,
         "the next supervisor removes the emptied folder; the retry runs once", 1),
]  # fmt: skip


# How the producer writes the file, by path: see itasks_crashpoints.produce.
HOW = {
    "a recycled spare": "spare",
    "a nameless file": "nameless",
    "a new file in `tmp/`": "new-file",
}


def case_id(case: Case) -> str:
    how = HOW.get(case.path) if case.dies == PRODUCER else None
    return f"{case.step}-{how}" if how else case.step


# -- what the disk holds --------------------------------------------------------


def where(broker_dir: Path, task_id: str) -> tuple[str, ...]:
    """The folders holding a file of message ``task_id`` ("dead record" for its
    dead/<name>.json); every file of tmp/ counts, as each test sends one message."""
    queue = broker_dir / "queues" / "default"
    found = ["tmp" for _ in _names(queue / "tmp")]
    found += ["ready" for n in _names(queue / "ready") if id_of(n) == task_id]
    scheduled = [ready_name_of(n) for n in _names(queue / "scheduled")]
    found += ["scheduled" for n in scheduled if id_of(n) == task_id]
    for consumer in _names(queue / "claimed"):
        found += ["claimed" for n in _names(queue / "claimed" / consumer) if id_of(n) == task_id]
    for name in _names(queue / "dead"):
        if id_of(name.removesuffix(".json")) == task_id:
            found.append("dead record" if name.endswith(".json") else "dead")
    found += ["spare" for n in _names(broker_dir / "spare") if id_of(n) == task_id]
    return tuple(sorted(found))


def _names(folder: Path) -> list[str]:
    return os.listdir(folder) if folder.is_dir() else []


def stored_status(app: App, task_id: str) -> str | None:
    loaded = app.AsyncResult(task_id)._load()
    return None if loaded is None else str(loaded[0]["status"])


def done_count(path: Path, task_id: str) -> int:
    return sum(1 for line in itasks.lines(str(path)) if line.startswith(f"done {task_id} "))


def exit_status(pid: int, timeout: float = 15.0) -> int:
    """The exit code of ``pid``, a child of a stopped process (so a zombie, unreaped)."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = stat.read_text().rpartition(")")[2].split()
        if fields[0] == "Z":
            return int(fields[49]) >> 8  # exit_code (field 52): a wait(2) status
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not die within {timeout} s")


# -- the processes that die -----------------------------------------------------


def send(case: Case, task_id: str, runs: Path) -> None:
    task = getattr(itasks_crashpoints, case.task)
    task.apply_async((str(runs),), task_id=task_id)


def crash_producer(case: Case, broker_dir: Path, task_id: str, runs: Path) -> None:
    how = HOW.get(case.path, "")
    code = "import sys, itasks_crashpoints as m; m.produce(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(broker_dir), how, task_id, str(runs)],
        cwd=HERE,
        env={**os.environ, "TASKQ_CRASH_AT": case.step},
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == EXIT_CODE, done.stderr.decode()
    assert b"returned" not in done.stdout  # it died inside the call


def crash_child(
    case: Case, app: App, start: Callable[..., WorkerProcess], task_id: str, runs: Path
) -> None:
    hooked = start(env={"TASKQ_CRASH_AT": case.step})
    [child] = hooked.child_pids()
    # A stopped supervisor repairs nothing: the disk stays as the child left it.
    os.kill(hooked.pid, signal.SIGSTOP)
    try:
        send(case, task_id, runs)
        assert exit_status(child) == EXIT_CODE, hooked.log()
    finally:
        hooked.kill([child])


def crash_supervisor(
    case: Case, app: App, start: Callable[..., WorkerProcess], task_id: str, runs: Path
) -> None:
    send(case, task_id, runs)
    consumer = app.broker.open_consumer(["default"], "gone-1-0-dead00")
    delivery = consumer.claim(timeout=10)
    assert delivery is not None and id_of(delivery.name) == task_id
    consumer.close()  # its lock is free, as the kernel leaves it when a consumer dies
    hooked = start(env={"TASKQ_CRASH_AT": case.step}, ready=False)
    assert hooked.wait(timeout=20) == EXIT_CODE, hooked.log()


# -- the test -------------------------------------------------------------------


@pytest.fixture
def start(worker: Callable[..., WorkerProcess]) -> Callable[..., WorkerProcess]:
    def start_one(env: dict[str, str], ready: bool = True) -> WorkerProcess:
        return worker(MODULES, concurrency=1, cwd=HERE, env=env, ready=ready)

    return start_one


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_crash_at_step_loses_nothing(
    case: Case,
    taskq_app: App,
    broker_dir: Path,
    start: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    task_id = "crash-" + os.urandom(4).hex()
    runs = tmp_path / "runs"
    if case.dies == PRODUCER:
        crash_producer(case, broker_dir, task_id, runs)
    elif case.dies == CHILD:
        crash_child(case, taskq_app, start, task_id, runs)
    else:
        crash_supervisor(case, taskq_app, start, task_id, runs)
    assert where(broker_dir, task_id) == case.left
    assert stored_status(taskq_app, task_id) == case.result

    start(env={"TASKQ_CRASH_AT": ""})  # a clean worker
    if case.status is None:  # never enqueued: a later message shows the queue was served
        later = itasks_crashpoints.succeeds.delay(str(tmp_path / "later"))
        assert later.get(timeout=20) == "ok"
    wait_for(
        lambda: (
            stored_status(taskq_app, task_id) == case.status
            and _settled(where(broker_dir, task_id)) == case.ends
        ),
        timeout=20,
        what=f"{case_id(case)}: result {case.status} and the message in {case.ends or 'none'}",
    )
    assert done_count(runs, task_id) == case.runs
    # A result is stored just before its ack: give the last ack its moment.
    wait_for(
        lambda: _nothing_waiting(taskq_app),
        timeout=10,
        what="no message ready, scheduled or claimed",
    )
    if case.reason is not None:
        [letter] = taskq_app.broker.dead_letters()
        assert (letter.id, letter.record["reason"]) == (task_id, case.reason)
        header = require(taskq_app.AsyncResult(task_id))
        assert header["exc_type"].rpartition(".")[2] == case.error


def _nothing_waiting(app: App) -> bool:
    counts = app.broker.counts()["default"]
    return (counts.ready, counts.scheduled, counts.claimed) == (0, 0, 0)


def _settled(places: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p for p in places if p != "spare")  # an acked file waits there to be reused


# -- the cases, the code and the docs agree -----------------------------------------


def test_cases_cover_every_step_and_never_lose_a_message() -> None:
    assert sorted({c.step for c in CASES}) == sorted(STEPS)
    for case in CASES:
        enqueued = case.status is not None
        assert (1 <= case.runs <= 2) if enqueued else case.runs == 0, case


def test_every_crash_point_in_the_code_is_a_known_step() -> None:
    called = set()
    for source in (REPO / "taskq").rglob("*.py"):
        called |= set(re.findall(r'crash_point\("([^"]+)"\)', source.read_text()))
    assert called == set(STEPS)


_LABELS = {
    "tmp": "`tmp/`",
    "ready": "`ready/`",
    "scheduled": "`scheduled/`",
    "claimed": "`claimed/`",
    "dead": "`dead/`",
    "dead record": "`dead/<name>.json`",
    "spare": "`spare/` (acked)",
}


def table_row(case: Case) -> str:
    left = ", ".join(_LABELS[place] for place in case.left) or "nothing"
    if case.result is not None:
        left += f"; result `{case.result}`"
    cells = [f"`{case.step}`", case.path, case.dies, left, case.after, str(case.runs)]
    return "| " + " | ".join(cells) + " |"


def test_architecture_lists_every_case() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    section = doc.split("### Crash at each step", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    expected = [table_row(case) for case in CASES]
    assert rows == expected, "docs/architecture.md should read:\n" + "\n".join(expected)
    # The table "Nothing is lost" names every step under the change it belongs to.
    lost = doc.split("**3. Nothing is lost.**", 1)[1].split("**4.", 1)[0]
    assert set(re.findall(r"`([a-z]+\.[a-z-]+)`", lost)) == set(STEPS)
