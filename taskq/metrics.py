"""Prometheus metrics of one supervisor, served on ``metrics_host:metrics_port``.

The supervisor never imports user code, so it learns what its children ran from
the event log they write anyway (``events``): each round it reads the events
since the last one and counts those of its own children (``worker`` is its
name). Queue depths come from the broker's counts, read once a sweep. The HTTP
server is prometheus_client's, in a thread of the supervisor; it only reads
the metrics, it never calls the broker.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .brokers.base import Events, Inspection
from .errors import TaskqError

log = logging.getLogger("taskq.metrics")

_OUTCOMES = {"succeeded", "retried", "failed", "expired"}  # how an attempt ends
_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, float("inf"))
_PAGE = 5000  # events read at a time


class Metrics:
    """The counters and gauges of one supervisor, and the server that shows them."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks = Counter(
            "taskq_tasks",
            "Attempts that ended, by task and outcome",
            ["task", "outcome"],
            registry=r,
        )
        self.runtime = Histogram(
            "taskq_task_runtime_seconds",
            "How long tasks ran",
            ["task"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.retries = Counter("taskq_retries", "Attempts retried later", ["task"], registry=r)
        self.dead = Counter(
            "taskq_dead_letters", "Messages dead-lettered", ["task", "reason"], registry=r
        )
        self.recoveries = Counter(
            "taskq_recoveries",
            "Messages taken over from dead worker processes",
            ["task"],
            registry=r,
        )
        self.depth = Gauge(
            "taskq_queue_messages",
            "Messages in the broker by queue and state",
            ["queue", "state"],
            registry=r,
        )
        self.processes = Gauge("taskq_worker_processes", "Live worker processes", registry=r)
        self.busy = Gauge(
            "taskq_worker_processes_busy", "Worker processes running a task", registry=r
        )
        self._cursor = ""
        self._server: Any = None

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

    def skip_history(self, events: Events) -> None:
        """Start counting from now: events already in the log are not ours to count."""
        while True:
            batch, self._cursor = events.read_events(self._cursor, _PAGE)
            if not batch:
                return

    def read(self, events: Events) -> int:
        """Count the events since the last read; return how many were read."""
        read = 0
        while True:
            batch, self._cursor = events.read_events(self._cursor, _PAGE)
            read += len(batch)
            for event in batch:
                if event.get("worker") == self.worker:
                    self.count(event)
            if len(batch) < _PAGE:
                return read

    def count(self, event: dict[str, Any]) -> None:
        kind, task = event.get("event"), str(event.get("task"))
        if kind in _OUTCOMES:
            self.tasks.labels(task, kind).inc()
        runtime = event.get("runtime")
        if isinstance(runtime, int | float):
            self.runtime.labels(task).observe(runtime)
        if kind == "retried":
            self.retries.labels(task).inc()
        elif kind == "dead-lettered":
            self.dead.labels(task, str(event.get("reason"))).inc()
        elif kind == "recovered":
            self.recoveries.labels(task).inc()

    def read_depths(self, broker: Inspection) -> None:
        for queue, counts in broker.counts().items():
            for state in ("ready", "scheduled", "claimed", "dead"):
                self.depth.labels(queue, state).set(getattr(counts, state))
