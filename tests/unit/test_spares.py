"""Recycled message files: an ack keeps the file, the next publish rewrites it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from taskq.brokers.file import FileBroker
from taskq.brokers.spares import SparePool
from taskq.message import Message


def publish(broker: FileBroker, i: int, data: bytes) -> None:
    broker.publish(Message(id=f"m{i}", task="t", created=1.0 + i), data)


def test_ack_keeps_the_file_and_the_next_publish_rewrites_it_whole(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "b")
    publish(broker, 1, b"a" * 500)
    consumer = broker.open_consumer(["default"], "c1")
    delivery = consumer.claim(timeout=1)
    assert delivery is not None and delivery.data == b"a" * 500
    claimed_inode = os.stat(
        tmp_path / "b" / "queues" / "default" / "claimed" / "c1" / delivery.name
    )

    broker.ack(delivery)

    spare = tmp_path / "b" / "spare"
    assert os.listdir(spare) == [delivery.name]
    assert not (tmp_path / "b" / "queues" / "default" / "claimed" / "c1" / delivery.name).exists()

    producer = FileBroker(tmp_path / "b")  # as in another process: it lists spare/ afresh
    publish(producer, 2, b"short")  # shorter than the old content: no stale tail

    assert os.listdir(spare) == []
    again = consumer.claim(timeout=1)
    assert again is not None and again.data == b"short"
    path = tmp_path / "b" / "queues" / "default" / "claimed" / "c1" / again.name
    assert os.stat(path).st_ino == claimed_inode.st_ino  # the same inode, recycled
    consumer.close()


def test_a_spare_taken_by_another_producer_is_skipped(tmp_path: Path) -> None:
    pool = SparePool(tmp_path)
    for name in ("x", "y"):
        (tmp_path / "spare" / name).write_bytes(b"old")
    (tmp_path / "out").mkdir()
    first = pool.take(str(tmp_path / "out"), b"1", sync=False)
    assert first is not None
    (tmp_path / "spare" / os.listdir(tmp_path / "spare")[0]).unlink()  # "another producer"

    assert pool.take(str(tmp_path / "out"), b"2", sync=False) is None
    assert Path(first).read_bytes() == b"1"
    assert os.listdir(tmp_path / "out") == [Path(first).name]


def test_tidy_keeps_a_bounded_pool_and_drops_long_unused_spares(tmp_path: Path) -> None:
    pool = SparePool(tmp_path)
    for i in range(30):
        (tmp_path / "spare" / f"s{i}").write_bytes(b"x")

    assert pool.tidy(unused_since=0, keep=20, most=100) == 10
    assert len(os.listdir(tmp_path / "spare")) == 20
    assert pool.tidy(unused_since=0, keep=0, most=5) == 5  # spread out: at most `most` a call
    old = time.time() - 7200
    for name in os.listdir(tmp_path / "spare")[:3]:
        os.utime(tmp_path / "spare" / name, (old, old))
    assert pool.tidy(unused_since=time.time() - 3600, keep=100) == 3
    assert len(os.listdir(tmp_path / "spare")) == 12
