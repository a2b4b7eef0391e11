"""Huey's benchmark app. The worker runs ``huey_consumer benchmarks.peers.huey_tasks.huey``
with its storage in ``BENCH_HUEY`` (JSON); the producer calls ``make_huey``."""

from __future__ import annotations

import json
import os
from typing import Any

from huey import FileHuey, RedisHuey, SqliteHuey

from .record import noop, slow, stamp


def make_huey(storage: str, name: str, location: str) -> tuple[Any, Any, Any, Any]:
    """A Huey with ``results=False`` and its tasks; returns (huey, noop, stamp, slow)."""
    if storage == "redis":
        huey: Any = RedisHuey(name, results=False, url=location)
    elif storage == "sqlite":
        huey = SqliteHuey(name, results=False, filename=location)
    elif storage == "file":
        huey = FileHuey(name, results=False, path=location)
    else:
        raise ValueError(f"unknown huey storage {storage!r}")
    tasks = [huey.task(name=fn.__name__)(fn) for fn in (noop, stamp, slow)]
    return huey, *tasks


_config = os.environ.get("BENCH_HUEY")
huey = make_huey(**json.loads(_config))[0] if _config else None
