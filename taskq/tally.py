"""Per-process counts for the metrics: tasks by name and outcome, run times,
retries, dead letters, recoveries.

A worker process counts what it settles in a ``Tally`` (a few dict updates a
task) and posts the whole tally into its shared-memory slot now and then, as
JSON; the supervisor adds up the tallies of its processes (and of those that
died) when Prometheus scrapes it. No event log is read and no message passes
between the processes per task.
"""

from __future__ import annotations

import bisect
import json
from typing import Any

from .policy import Ack, Dead, Outcome, RetryAt

# Upper bounds (seconds) of the run-time histogram's buckets; +Inf is implicit.
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)
_SUCCESS = Outcome.SUCCEEDED  # a global: an enum's member is slow to look up on its class


class Tally:
    """Counts of one process (or of several, merged)."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, int]] = {}  # task -> outcome -> attempts
        # task -> [count per bucket (non-cumulative, +Inf last)..., sum of run times]
        self.runtime: dict[str, list[float]] = {}
        self.retries: dict[str, int] = {}
        self.dead: dict[str, dict[str, int]] = {}  # task -> reason -> messages
        self.recoveries: dict[str, int] = {}

    def settled(self, task: str, outcome: Outcome, decision: Any, runtime: float | None) -> None:
        """Count how a delivery of ``task`` ended (what ``policy.settle`` decided)."""
        if outcome is _SUCCESS:  # the hot path (acked, so counted as succeeded below)
            outcomes = self.tasks.get(task) or self.tasks.setdefault(task, {})
            outcomes["succeeded"] = outcomes.get("succeeded", 0) + 1
            if runtime is not None:
                self._ran(task, runtime)
            return
        if outcome is Outcome.EXPIRED:
            kind = "expired"
        elif outcome is Outcome.REVOKED:
            kind = "revoked"
        elif isinstance(decision, Ack):
            kind = "succeeded"
        elif isinstance(decision, RetryAt):
            kind = "retried"
            self.retries[task] = self.retries.get(task, 0) + 1
        else:
            kind = "failed"
        if isinstance(decision, Dead):
            reasons = self.dead.setdefault(task, {})
            reasons[decision.reason] = reasons.get(decision.reason, 0) + 1
            if outcome in (Outcome.UNKNOWN_TASK, Outcome.UNDECODABLE):
                return  # never ran: no attempt ended
        outcomes = self.tasks.setdefault(task, {})
        outcomes[kind] = outcomes.get(kind, 0) + 1
        if runtime is not None:
            self._ran(task, runtime)

    def _ran(self, task: str, runtime: float) -> None:
        hist = self.runtime.get(task)
        if hist is None:
            hist = self.runtime[task] = [0.0] * (len(BUCKETS) + 2)
        hist[bisect.bisect_left(BUCKETS, runtime)] += 1
        hist[-1] += runtime

    def recovered(self, task: str) -> None:
        self.recoveries[task] = self.recoveries.get(task, 0) + 1

    def to_bytes(self) -> bytes:
        return json.dumps(
            [self.tasks, self.runtime, self.retries, self.dead, self.recoveries],
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Tally:
        """A tally posted by ``to_bytes``; an empty one for anything else (a torn
        or missing posting counts nothing rather than garbage)."""
        tally = cls()
        try:
            tasks, runtime, retries, dead, recoveries = json.loads(data)
        except ValueError:
            return tally
        tally.merge_parts(tasks, runtime, retries, dead, recoveries)
        return tally

    def merge(self, other: Tally) -> None:
        self.merge_parts(other.tasks, other.runtime, other.retries, other.dead, other.recoveries)

    def merge_parts(
        self,
        tasks: dict[str, dict[str, int]],
        runtime: dict[str, list[float]],
        retries: dict[str, int],
        dead: dict[str, dict[str, int]],
        recoveries: dict[str, int],
    ) -> None:
        for mine, theirs in ((self.tasks, tasks), (self.dead, dead)):
            for task, counts in theirs.items():
                into = mine.setdefault(task, {})
                for label, n in counts.items():
                    into[label] = into.get(label, 0) + n
        for flat_mine, flat_theirs in ((self.retries, retries), (self.recoveries, recoveries)):
            for task, n in flat_theirs.items():
                flat_mine[task] = flat_mine.get(task, 0) + n
        for task, hist in runtime.items():
            into_hist = self.runtime.setdefault(task, [0.0] * (len(BUCKETS) + 2))
            for i, value in enumerate(hist[: len(into_hist)]):
                into_hist[i] += value
