"""The load of the rate-limit tests: calls at twice a task's rate for a while, then
what the workers started within that time, measured from the runs' own records."""

from __future__ import annotations

import time
from typing import Any

from itasks_rates import starts

from taskq.rates import BURST


def load_and_measure(task: Any, path: str, rate: float, seconds: float) -> list[float]:
    """Send ``task`` calls at ``2 * rate`` per second for ``seconds``, wait until
    ``seconds`` have passed since the first run started, and return the start
    times of the runs within them (from the first)."""
    begun = time.time()
    calls = int(2 * rate * seconds)
    for n in range(calls):
        time.sleep(max(0.0, begun + n / (2 * rate) - time.time()))
        task.delay(path, n)
    deadline = time.monotonic() + 30
    while not starts(path):
        assert time.monotonic() < deadline, "no run started within 30 s"
        time.sleep(0.05)
    first = starts(path)[0]
    time.sleep(max(0.0, first + seconds + 1.0 - time.time()))  # runs record as they start
    return [t for t in starts(path) if t < first + seconds]


def assert_the_rate_holds(runs: list[float], rate: float, seconds: float) -> None:
    """The count within ``seconds`` is the rate's within 10%, and no window of a
    second holds more starts than the rate allows in it plus the burst."""
    expected = rate * seconds
    assert 0.9 * expected <= len(runs) <= 1.1 * expected, (
        f"{len(runs)} runs in {seconds:g} s at a limit of {rate:g}/s (expected {expected:g})"
    )
    most = int(rate) + BURST
    for i, start in enumerate(runs):
        within = sum(1 for t in runs[i:] if t < start + 1.0)
        assert within <= most, f"{within} runs within 1 s from {start:.3f}: a burst over {most}"
