"""``RateLimits.take_slot`` (taskq/brokers/base.py) on every broker: each take
reserves a slot of its own, ``interval`` apart past the burst, even when takers
in several processes race for them."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

INTERVAL = 10.0  # seconds: long enough that no slot comes due while a test runs


def test_takes_within_the_burst_start_at_once_then_one_per_interval(broker: Any) -> None:
    waits = [broker.take_slot("tests.rated", INTERVAL, 3) for _ in range(6)]

    assert waits[:3] == [0.0, 0.0, 0.0]
    for wait, expected in zip(waits[3:], (INTERVAL, 2 * INTERVAL, 3 * INTERVAL), strict=True):
        assert expected - 1.0 < wait <= expected


def test_each_rate_has_slots_of_its_own(broker: Any) -> None:
    assert broker.take_slot("tests.a", INTERVAL, 1) == 0.0
    assert broker.take_slot("tests.b", INTERVAL, 1) == 0.0
    assert broker.take_slot("tests.a", INTERVAL, 1) > INTERVAL - 1.0


def test_a_rate_left_quiet_starts_at_once_again(broker: Any) -> None:
    assert broker.take_slot("tests.quiet", 0.05, 1) == 0.0
    assert 0.0 < broker.take_slot("tests.quiet", 0.05, 1) <= 0.05
    time.sleep(0.15)  # both slots are past: no debt carried over

    assert broker.take_slot("tests.quiet", 0.05, 1) == 0.0


def test_a_task_name_of_any_length_and_alphabet_is_a_rate(broker: Any) -> None:
    for name in ("tests." + "x/é " * 120, "..", ".", "../tests.up"):
        assert broker.take_slot(name, INTERVAL, 1) == 0.0
        assert broker.take_slot(name, INTERVAL, 1) > INTERVAL - 1.0


def _same_broker(broker: Any) -> Any:
    """Another handle on ``broker``'s store, for another process."""
    if type(broker).__name__ == "FileBroker":
        return type(broker)(broker.root)
    return type(broker)(broker.url, prefix=broker.prefix)


TAKERS, TAKES, BURST = 4, 250, 3


def _take_in_processes(broker: Any) -> list[float]:
    """TAKERS forked processes, each taking TAKES slots as fast as it can."""
    start_r, start_w = os.pipe()
    out_r, out_w = os.pipe()
    pids = []
    for _ in range(TAKERS):
        pid = os.fork()
        if pid == 0:
            try:
                os.close(start_w)
                mine = _same_broker(broker)
                os.read(start_r, 1)  # every taker starts at once
                waits = [mine.take_slot("tests.raced", INTERVAL, BURST) for _ in range(TAKES)]
                os.write(out_w, (json.dumps(waits) + "\n").encode())
            finally:
                os._exit(0)
        pids.append(pid)
    os.close(out_w)
    os.close(start_r)
    try:
        os.write(start_w, b"x" * TAKERS)
        with os.fdopen(out_r) as replies:
            lines = replies.read().splitlines()
    finally:
        os.close(start_w)
        for pid in pids:
            os.waitpid(pid, 0)  # each exits once written (os._exit even on an error)
    return [wait for line in lines for wait in json.loads(line)]


def _take_in_threads(broker: Any) -> list[float]:
    waits: list[float] = []
    lock = threading.Lock()
    gate = threading.Barrier(TAKERS)

    def take() -> None:
        gate.wait(10)
        mine = [broker.take_slot("tests.raced", INTERVAL, BURST) for _ in range(TAKES)]
        with lock:
            waits.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(TAKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return waits


def test_racing_takers_get_exactly_the_burst_at_once_and_one_slot_each(broker: Any) -> None:
    # A memory broker lives in one process: its takers race as threads.
    memory = type(broker).__name__ == "MemoryBroker"
    waits = _take_in_threads(broker) if memory else _take_in_processes(broker)

    assert len(waits) == TAKERS * TAKES, "a taker failed"
    assert sum(wait < INTERVAL / 2 for wait in waits) == BURST
    # Past the burst, one slot per interval, none given twice, none skipped.
    later = sorted(round(wait / INTERVAL) for wait in waits if wait >= INTERVAL / 2)
    assert later == list(range(1, TAKERS * TAKES - BURST + 1))
