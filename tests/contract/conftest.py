"""The brokers every contract test runs against: add a broker here and the whole
suite holds it to the same promises."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq.brokers.file import FileBroker
from taskq.brokers.memory import MemoryBroker

from taskq.brokers.redis import RedisBroker


@pytest.fixture(params=["memory", "file", "redis"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryBroker("contract")
    elif request.param == "file":
        yield FileBroker(tmp_path / "broker", poll_interval=0.05)
    else:
        url, _, prefix = request.getfixturevalue("redis_url").partition("?prefix=")
        broker = RedisBroker(url, prefix=prefix, liveness_timeout=2.0)
        yield broker
        broker.client.close()


@pytest.fixture
def open_consumer(broker: Any) -> Iterator[Callable[..., Any]]:
    """Consumers of ``broker``, closed when the test ends."""
    opened: list[Any] = []

    def open_(name: str = "c1", queues: tuple[str, ...] = ("default",)) -> Any:
        consumer = broker.open_consumer(list(queues), name)
        opened.append(consumer)
        return consumer

    yield open_
    for consumer in opened:
        consumer.close()
