"""Tests for taskq.housekeeping and the supervisor's rounds: a failing chore is
logged once and supervision goes on; the clean-up sweep does a bounded share a
round, resumes, and never holds up promotion or respawns."""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskq.brokers.file import FileBroker
from taskq.config import Settings
from taskq.housekeeping import Chores, Sweep
from taskq.keys import Keyring
from taskq.message import Message, encode, new_id
from taskq.supervisor import Supervisor

KEY = Keyring(b"k" * 32)
DAY = 86400.0


def old_results(broker: FileBroker, count: int) -> None:
    two_days_ago = time.time() - 2 * DAY
    for _ in range(count):
        path = broker.root / "results" / new_id()
        path.write_bytes(b"x")
        os.utime(path, (two_days_ago, two_days_ago))


def results_left(broker: FileBroker) -> int:
    return len(os.listdir(broker.root / "results"))


def test_sweep_with_a_small_budget_removes_some_results_a_tick_and_finishes_over_ticks(
    tmp_path: Path,
) -> None:
    broker = FileBroker(tmp_path / "broker")
    old_results(broker, 200)
    sweep = Sweep(broker, every=60.0, budget=0.0)
    now = time.time()

    sweep.tick(now, now - DAY)
    assert 0 < 200 - results_left(broker) < 200
    assert sweep.pending
    for _ in range(1000):
        if not sweep.pending:
            break
        sweep.tick(now, now - DAY)
    assert not sweep.pending
    assert results_left(broker) == 0
    assert sweep.removed == 200


def test_sweep_starts_at_once_then_waits_its_period(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "broker")
    sweep = Sweep(broker, every=60.0, budget=1.0)
    now = time.time()
    old_results(broker, 3)
    sweep.tick(now, now - DAY)  # a worker's first round expires at once
    assert results_left(broker) == 0
    old_results(broker, 3)
    sweep.tick(now + 30, now - DAY)
    assert results_left(broker) == 3
    sweep.tick(now + 60, now - DAY)
    assert results_left(broker) == 0


def test_sweep_cut_short_by_a_stop_is_finished_by_the_next_start(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "broker")
    old_results(broker, 50)
    now = time.time()
    Sweep(broker, every=60.0, budget=0.0).tick(now, now - DAY)
    assert 0 < results_left(broker) < 50

    Sweep(broker, every=60.0, budget=1.0).tick(now, now - DAY)
    assert results_left(broker) == 0


def test_sweep_keeps_recent_results_and_removes_stale_tmp_litter(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "broker")
    old_results(broker, 2)
    fresh = broker.root / "results" / "fresh"
    fresh.write_bytes(b"x")
    broker.queue_dir("default")
    litter = broker.root / "queues" / "default" / "tmp" / "litter"
    litter.write_bytes(b"half")
    os.utime(litter, (time.time() - 600, time.time() - 600))
    now = time.time()
    Sweep(broker, every=60.0, budget=1.0).tick(now, now - DAY)
    assert os.listdir(broker.root / "results") == ["fresh"]
    assert not litter.exists()


def test_failing_chore_is_logged_once_and_once_more_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chores = Chores()
    done = []
    with caplog.at_level(logging.INFO, logger="taskq.supervisor"):
        for _ in range(5):
            with chores.chore("publish the status"):
                raise OSError(errno.ENOSPC, "No space left on device")
            done.append("after")
        assert chores.failing == ["publish the status"]
        with chores.chore("publish the status"):
            pass
        with chores.chore("publish the status"):
            pass
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Cannot publish the status: [Errno 28] No space left on device. "
        "Supervising on; trying again on each round.",
        "Can publish the status again",
    ]
    assert done == ["after"] * 5
    assert chores.failing == []


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    """A supervisor run round by round in this process, one child forked from it."""
    settings = Settings(broker=str(tmp_path / "broker"), concurrency=1, secret_key="k" * 32)
    sup = Supervisor(settings)
    sup.broker.register_worker(sup.name)
    try:
        yield sup
    finally:
        for child in sup.children:
            if child.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGKILL)
                child.process.join(5)


def rounds_until(
    sup: Supervisor, condition: Callable[[], object], what: str, limit: float = 10.0
) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {limit} s of rounds")
        sup._round()
        time.sleep(0.01)


def test_pending_sweep_does_not_hold_up_promotion_or_respawn(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    sup = supervisor
    # A sweep that would never end if it were run to the end in one round.
    monkeypatch.setattr(sup.broker, "housekeeping_steps", lambda *_: itertools.repeat(False))
    sup._start_pool()
    # On a queue the pool does not consume: it stays in ready/ once promoted.
    message = Message(
        id=new_id(), task="tests.t", queue="other", created=time.time(), eta=time.time() + 0.2
    )
    sup.broker.publish(message, encode(message, b"p" + b"\x80\x04N.", KEY))
    ready = Path(sup.settings.broker) / "queues" / "other" / "ready"

    rounds_until(sup, lambda: (ready / message.name).exists(), "promotion")
    assert sup._sweep.pending

    [child] = sup.children
    first = child.process.pid
    os.kill(first, signal.SIGKILL)
    rounds_until(sup, lambda: child.process is not None and child.process.pid != first, "a respawn")
    assert sup._sweep.pending


def test_sweep_deletes_dead_letters_that_died_before_the_cutoff(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "broker")
    now = time.time()
    for days in (8, 6):
        message = Message(id=new_id(), task="t", created=now)
        broker.publish(message, encode(message, b"", KEY))
        delivery = broker.open_consumer(["default"], f"c{days}").claim(timeout=1)
        assert delivery is not None
        died_at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - days * DAY))
        broker.dead_letter(delivery, {"reason": "failed", "died_at": died_at, "days": days})

    Sweep(broker, every=60.0, budget=1.0).tick(now, now - DAY, dead_before=now - 7 * DAY)

    assert [letter.record["days"] for letter in broker.dead_letters()] == [6]
