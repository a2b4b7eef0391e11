"""Fixtures every test folder shares: a Redis of its own keys for the Redis broker.

Redis (127.0.0.1:6379, or REDIS_TEST_URL) is shared with other runs: each
test gets a unique key prefix, and deletes exactly the keys under it. A test
that needs Redis skips, saying why, when it does not answer; on CI (``CI``
set) it fails instead: there the Redis broker must be tested, not skipped.
(Not a ``TASKQ_`` name: every ``TASKQ_*`` variable is a taskq setting.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from taskq.message import new_id

REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")


def _redis_or_skip() -> object:
    try:
        import redis
    except ImportError:
        pytest.skip("redis-py is not installed (pip install -e '.[dev]')")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        why = f"Redis at {REDIS_URL} does not answer ({exc}): Redis broker not tested"
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI must test it")
        pytest.skip(why)
    return client


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis broker URL with a prefix of this test's own; its keys go afterwards."""
    client = _redis_or_skip()
    prefix = f"taskq-test-{new_id()[:12]}:"
    yield f"{REDIS_URL}?prefix={prefix}"
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))  # type: ignore[attr-defined]
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])  # type: ignore[attr-defined]
