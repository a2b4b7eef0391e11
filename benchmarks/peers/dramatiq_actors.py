"""Dramatiq's benchmark actors. The worker runs ``dramatiq benchmarks.peers.dramatiq_actors``
with its broker in ``BENCH_DRAMATIQ`` (JSON); the producer calls ``make_broker``."""

from __future__ import annotations

import json
import os
from typing import Any

import dramatiq

from .record import noop, slow, stamp


def make_broker(kind: str, url: str, namespace: str, queue: str) -> tuple[Any, Any, Any]:
    """A broker with no result middleware and the two actors; returns (broker, noop, stamp)."""
    if kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        broker: Any = RedisBroker(url=url, namespace=namespace)
    elif kind == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url)
    else:
        raise ValueError(f"unknown dramatiq broker {kind!r}")
    actors = [
        dramatiq.actor(fn, broker=broker, actor_name=fn.__name__, queue_name=queue)
        for fn in (noop, stamp, slow)
    ]
    return broker, actors[0], actors[1]


_config = os.environ.get("BENCH_DRAMATIQ")
if _config:
    dramatiq.set_broker(make_broker(**json.loads(_config))[0])
