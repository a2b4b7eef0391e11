"""Prometheus metrics of one supervisor, served on ``metrics_host:metrics_port``.

The supervisor never imports user code, so the per-task facts come from its
worker processes: each counts what it settles in a ``tally.Tally`` and posts it
into its shared-memory slot every 0.25 s while busy (and when idle or
exiting). At a scrape, the supervisor adds up the live processes' tallies,
those of processes that exited (kept when they are replaced) and its own
(recoveries, attempts it settles for a killed process). Queue depths come from
the broker's counts, read by the supervisor once a sweep. The HTTP server is
prometheus_client's, in a thread; it reads memory, never the broker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .brokers.base import Inspection
from .errors import TaskqError
from .slots import Slot
from .tally import BUCKETS, Tally

log = logging.getLogger("taskq.metrics")

_STATES = ("ready", "scheduled", "claimed", "dead")


class Metrics:
    """The metrics of one supervisor; ``slots`` gives its live processes' slots."""

    def __init__(self, slots: Callable[[], list[Slot]], own: Tally) -> None:
        """``own``: the supervisor's own counts (changed by its main thread only)."""
        self.slots = slots
        self.own = own
        self._own_posted = b""
        self._retired = Tally()  # processes that exited
        self._lock = threading.Lock()  # slots are read (scrape) or retired (main thread)
        self._depths: dict[str, dict[str, int]] = {}
        self._processes = (0, 0)  # live, busy
        self._server: Any = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def serve(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (a thread); ``TaskqError`` naming it if that fails."""
        try:
            self._server, _ = start_http_server(port, host, self.registry)
        except OSError as exc:
            raise TaskqError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror} (metrics_port)"
            ) from None
        log.info("Serving Prometheus metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def retire(self, slot: Slot) -> None:
        """Keep the counts of a process that exited, then clear its slot for the next."""
        with self._lock:
            self._retired.merge(Tally.from_bytes(slot.read_stats()))
            slot.reset()

    def update(self, processes: int, busy: int) -> None:
        """The supervisor's round: its own counts and its processes, for the next scrape."""
        self._own_posted = self.own.to_bytes()
        self._processes = (processes, busy)

    def read_depths(self, broker: Inspection) -> None:
        self._depths = {
            queue: {state: getattr(counts, state) for state in _STATES}
            for queue, counts in broker.counts().items()
        }

    def total(self) -> Tally:
        total = Tally()
        with self._lock:
            total.merge(self._retired)
            for slot in self.slots():
                total.merge(Tally.from_bytes(slot.read_stats()))
        total.merge(Tally.from_bytes(self._own_posted))
        return total

    def collect(self) -> Iterator[Metric]:
        total = self.total()
        yield _counter(
            "taskq_tasks", "Attempts that ended, by task and outcome", total.tasks, "outcome"
        )
        runtime = HistogramMetricFamily(
            "taskq_task_runtime_seconds", "How long tasks ran", labels=["task"]
        )
        for task, hist in sorted(total.runtime.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*BUCKETS, float("inf")), hist[:-1], strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            runtime.add_metric([task], buckets, sum_value=hist[-1])
        yield runtime
        yield _counter("taskq_retries", "Attempts retried later", {"": total.retries}, None)
        yield _counter("taskq_dead_letters", "Messages dead-lettered", total.dead, "reason")
        yield _counter(
            "taskq_recoveries",
            "Messages taken over from dead worker processes",
            {"": total.recoveries},
            None,
        )
        depth = GaugeMetricFamily(
            "taskq_queue_messages",
            "Messages in the broker by queue and state",
            labels=["queue", "state"],
        )
        for queue, states in sorted(self._depths.items()):
            for state, count in states.items():
                depth.add_metric([queue, state], count)
        yield depth
        live, busy = self._processes
        yield GaugeMetricFamily("taskq_worker_processes", "Live worker processes", value=live)
        yield GaugeMetricFamily(
            "taskq_worker_processes_busy", "Worker processes running a task", value=busy
        )


def _counter(
    name: str, documentation: str, counts: dict[str, dict[str, int]], label: str | None
) -> CounterMetricFamily:
    """A counter by task (and ``label``); ``counts`` is task -> label -> n, or, without
    a second label, "" -> task -> n."""
    family = CounterMetricFamily(name, documentation, labels=["task", label] if label else ["task"])
    for outer, inner in sorted(counts.items()):
        for key, n in sorted(inner.items()):
            family.add_metric([outer, key] if label else [key], n)
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
