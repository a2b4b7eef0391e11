"""The ``Uniques`` part of the broker contract (taskq/brokers/base.py): a key is held
by one task id until that id releases it or its lifetime passes, and of many
claimers at once exactly one wins it. Held by every broker in conftest.py."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from taskq.errors import MessageError
from taskq.message import new_id

KEY = "a" * 64


def test_a_free_key_goes_to_its_first_claimer_and_then_names_it(broker: Any) -> None:
    first, second = new_id(), new_id()

    assert broker.claim_unique(KEY, first, 60) == first
    assert broker.claim_unique(KEY, second, 60) == first
    assert broker.claim_unique(KEY, first, 60) == first  # its holder asking again
    assert broker.claim_unique("b" * 64, second, 60) == second  # another key is free


def test_only_the_holder_releases_a_key(broker: Any) -> None:
    holder, other, later = new_id(), new_id(), new_id()
    broker.claim_unique(KEY, holder, 60)

    broker.release_unique(KEY, other)
    assert broker.claim_unique(KEY, later, 60) == holder

    broker.release_unique(KEY, holder)
    assert broker.claim_unique(KEY, later, 60) == later


def test_releasing_a_key_nobody_holds_changes_nothing(broker: Any) -> None:
    broker.release_unique(KEY, new_id())
    claimer = new_id()
    assert broker.claim_unique(KEY, claimer, 60) == claimer


def test_a_key_lapses_after_its_lifetime_and_a_late_release_leaves_the_next_holder(
    broker: Any,
) -> None:
    lapsed, next_holder = new_id(), new_id()
    broker.claim_unique(KEY, lapsed, 0.2)
    assert broker.claim_unique(KEY, next_holder, 60) == lapsed

    deadline = time.monotonic() + 10
    while broker.claim_unique(KEY, next_holder, 60) != next_holder:
        assert time.monotonic() < deadline, "a key outlived its lifetime"
        time.sleep(0.05)

    broker.release_unique(KEY, lapsed)  # its message settled after the key lapsed
    assert broker.claim_unique(KEY, new_id(), 60) == next_holder


@pytest.mark.parametrize("key", ["", "../escape", ".hidden", "a/b", "x" * 129])
def test_a_key_that_cannot_name_a_file_is_refused(broker: Any, key: str) -> None:
    with pytest.raises(MessageError, match="invalid unique key"):
        broker.claim_unique(key, new_id(), 60)


def test_racing_threads_give_a_key_to_exactly_one(broker: Any) -> None:
    ids = [new_id() for _ in range(8)]
    answers: list[str] = []
    start = threading.Barrier(len(ids))

    def claim(task_id: str) -> None:
        start.wait(5)
        answers.append(broker.claim_unique(KEY, task_id, 60))

    threads = [threading.Thread(target=claim, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(answers) == len(ids)
    assert len(set(answers)) == 1 and answers[0] in ids


def _same_broker(broker: Any) -> Any:
    """Another handle on ``broker``'s store, for another process."""
    if type(broker).__name__ == "FileBroker":
        return type(broker)(broker.root)
    return type(broker)(broker.url, prefix=broker.prefix)


# A memory broker lives in one process: its racers are the threads above.
@pytest.mark.parametrize("broker", ["file", "redis"], indirect=True)
def test_racing_processes_give_each_key_to_exactly_one(broker: Any) -> None:
    keys = [f"race-{n}" for n in range(200)]
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pids = []
    for _ in range(5):
        pid = os.fork()
        if pid == 0:  # a racer: waits for the start, claims every key, reports its wins
            try:
                os.close(go_w)
                mine = _same_broker(broker)
                me = new_id()
                os.read(go_r, 1)
                won = sum(mine.claim_unique(key, me, 60) == me for key in keys)
                os.write(out_w, f"{me} {won}\n".encode())
            finally:
                os._exit(0)
        pids.append(pid)
    os.close(out_w)
    try:
        os.write(go_w, b"x" * len(pids))  # every racer starts at once
        report = b""
        deadline = time.monotonic() + 30
        while report.count(b"\n") < len(pids) and time.monotonic() < deadline:
            chunk = os.read(out_r, 4096)
            if not chunk:
                break
            report += chunk
    finally:
        for pid in pids:
            with_kill(pid)
        os.close(out_r)
        os.close(go_r)
        os.close(go_w)

    wins = dict(line.split() for line in report.decode().splitlines())
    assert len(wins) == len(pids), f"some racers did not report: {report!r}"
    assert sum(int(n) for n in wins.values()) == len(keys)  # one winner a key
    holders = {broker.claim_unique(key, new_id(), 60) for key in keys}
    assert holders <= set(wins)


def with_kill(pid: int) -> None:
    """Reap a forked racer, killing it if it is still there after a bounded wait."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
