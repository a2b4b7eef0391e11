"""Workflows on real `taskq worker` processes, on the file broker and on Redis: a
chain of three, a group of 100, a chord of 100 (exactly one callback, also when a
worker child is SIGKILLed mid-chord), a chain failing in the middle, links."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import itasks_workflows as w
import pytest
from helpers import wait_for
from itasks import lines

from taskq import ChordFailed, chain, chord, group
from taskq.testing import WorkerProcess

MODULES = "itasks,itasks_workflows"


@pytest.fixture(params=["file", "redis"])
def broker_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The workers' and ``taskq_app``'s broker: a folder, or a Redis URL of the test's own."""
    if request.param == "file":
        return tmp_path / "broker"
    return f"{request.getfixturevalue('redis_url')}&liveness_timeout=2"


@pytest.fixture
def workers(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker(modules=MODULES, concurrency=2)


def test_a_chain_of_three_passes_each_result_on(workers: WorkerProcess) -> None:
    result = chain(w.add.s(1, 2), w.mul.s(10), w.add.s(5)).apply_async()
    assert result.get(timeout=30) == 35


def test_a_group_of_100_collects_every_result_in_order(workers: WorkerProcess) -> None:
    result = group(w.add.s(i, i) for i in range(100)).apply_async()
    assert result.get(timeout=60) == [2 * i for i in range(100)]


def test_a_chord_of_100_calls_back_once_with_the_sum(
    workers: WorkerProcess, tmp_path: Path
) -> None:
    runs, callbacks = str(tmp_path / "runs"), str(tmp_path / "callbacks")
    result = chord([w.member.s(runs, i, 0) for i in range(100)], w.tally.s(callbacks)).delay()

    assert result.get(timeout=60) == 4950
    assert lines(callbacks) == ["callback 4950 100"]


def test_a_chord_calls_back_exactly_once_when_a_child_is_sigkilled_mid_chord(
    workers: WorkerProcess, tmp_path: Path
) -> None:
    runs, callbacks = str(tmp_path / "runs"), str(tmp_path / "callbacks")
    result = chord([w.member.s(runs, i, 0.05) for i in range(100)], w.tally.s(callbacks)).delay()

    def running() -> list[str]:
        """Start lines of members not ended yet, once ten members have started."""
        seen = lines(runs)
        ended = {line.split()[1] for line in seen if line.startswith("end")}
        started = [line for line in seen if line.startswith("start")]
        return [s for s in started if s.split()[1] not in ended] if len(started) >= 10 else []

    wait_for(running, 30, "ten members started and one running")
    _, value, pid = running()[0].split()
    os.kill(int(pid), signal.SIGKILL)

    assert result.get(timeout=90) == 4950
    assert lines(callbacks) == ["callback 4950 100"]
    seen = lines(runs)
    assert {int(line.split()[1]) for line in seen if line.startswith("end")} == set(range(100))
    # The killed member ran again: at least once, never lost.
    assert [line.split()[1] for line in seen if line.startswith("start")].count(value) >= 2
    assert any(line == f"end {value} {p}" for p in workers.child_pids() for line in seen)


def test_a_chain_failing_in_the_middle_raises_its_error_and_stops(
    workers: WorkerProcess, tmp_path: Path
) -> None:
    path = str(tmp_path / "last")
    result = chain(w.add.s(1, 1), w.fail.s("middle broke"), w.record.s(path)).apply_async()

    with pytest.raises(ValueError, match="middle broke"):
        result.get(timeout=30)
    # The failure is stored (for every later step too) before the step is dead-lettered.
    wait_for(workers.broker.dead_letters, 10, "the failed step's dead letter")
    dead = workers.broker.dead_letters()
    assert [d.record["task"] for d in dead] == ["itasks_workflows.fail"]
    assert lines(path) == []  # the last step never ran (nor was it sent)
    assert workers.broker.find(result.id) is None


def test_link_gets_the_result_and_link_error_the_failed_tasks_id(
    workers: WorkerProcess, tmp_path: Path
) -> None:
    path = str(tmp_path / "links")
    ok = w.add.apply_async((2, 3), link=w.record.s(path))
    failed = w.fail.apply_async((0, "no"), link=w.record.s(path), link_error=w.record.s(path))

    wait_for(lambda: len(lines(path)) >= 2, 30, "both links")
    assert ok.get(timeout=5) == 5
    with pytest.raises(ValueError, match="no"):
        failed.get(timeout=5)
    assert sorted(lines(path)) == sorted(["5", repr(failed.id)])


def test_a_chord_whose_member_is_killed_for_good_dead_letters_its_callback(
    workers: WorkerProcess, tmp_path: Path
) -> None:
    """The supervisor settles the killed member (no retries left): the chord does
    not wait forever, its callback goes to the dead letters naming the member."""
    runs, callbacks = str(tmp_path / "runs"), str(tmp_path / "callbacks")
    members = [w.member.s(runs, 0, 0), w.fragile.s(runs, 1, 60), w.member.s(runs, 2, 0)]
    result = chord(members, w.tally.s(callbacks)).delay()

    wait_for(lambda: [x for x in lines(runs) if x.startswith("start 1 ")], 30, "member 1 running")
    pid = next(x for x in lines(runs) if x.startswith("start 1 ")).split()[2]
    os.kill(int(pid), signal.SIGKILL)

    with pytest.raises(ChordFailed, match=r"chord member 1 \(task itasks_workflows.fragile\["):
        result.get(timeout=30)
    assert lines(callbacks) == []
    wait_for(lambda: len(workers.broker.dead_letters()) == 2, 10, "two dead letters")
    dead = {d.record["task"]: d.record for d in workers.broker.dead_letters()}
    assert dead["itasks_workflows.tally"]["reason"] == "chord-failed"
    assert dead["itasks_workflows.fragile"]["reason"] == "poison"


def test_a_child_dying_between_sending_the_callback_and_its_ack_runs_it_once(
    worker: Callable[..., WorkerProcess],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """The completing member's child dies right after its follow-ups went out
    (crash point ``result.stored``), again on each re-run: each run sends
    another copy of the callback. A clean worker then serves the callback's
    queue: the callback runs once, the other copies are dropped unrun."""
    runs, callbacks = str(tmp_path / "runs"), str(tmp_path / "callbacks")
    crashing = worker(
        MODULES,
        "-Q",
        "default",
        concurrency=1,
        cwd=Path(__file__).parent,
        env={"TASKQ_CRASH_AT": "result.stored"},
    )
    body = w.tally.s(callbacks).set(queue="callbacks")
    result = chord([w.member.s(runs, 7, 0)], body).delay()

    def copies() -> int:
        counts = crashing.broker.counts().get("callbacks")
        return counts.ready if counts is not None else 0

    wait_for(lambda: copies() >= 2, 30, "two copies of the callback (two crashed runs)")
    crashing.kill()
    assert lines(callbacks) == []  # nobody served the callbacks' queue yet

    clean = start_worker("-Q", "default,callbacks", modules=MODULES, concurrency=2)
    assert result.get(timeout=30) == 7
    wait_for(lambda: copies() == 0, 30, "every copy of the callback claimed")
    # A copy claimed is settled (and its drop logged) a moment later.
    wait_for(lambda: "second copy of a chord callback dropped" in clean.log(), 10, "a drop")
    assert lines(callbacks) == ["callback 7 1"]
