"""Durable publishing: fsync per message for publish, one flush per batch for publish_many."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskq.brokers import fs as fs_module
from taskq.brokers.file import FileBroker
from taskq.message import Message


def messages(count: int) -> list[tuple[Message, bytes]]:
    return [(Message(id=f"m{i}", task="t", created=1.0 + i), b"x" * 300) for i in range(count)]


def test_durable_publish_fsyncs_the_file_and_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    broker = FileBroker(tmp_path / "b", durable=True)

    broker.publish(*messages(1)[0])

    assert len(synced) == 2  # the message's data, then the ready/ folder's entry
    assert len(os.listdir(tmp_path / "b" / "queues" / "default" / "ready")) == 1


def test_durable_batch_costs_one_filesystem_flush_per_thousand_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes: list[int] = []
    monkeypatch.setattr(fs_module, "_syncfs", lambda fd: flushes.append(fd) or 0)
    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsynced.append(fd) or real_fsync(fd))
    broker = FileBroker(tmp_path / "b", durable=True)

    assert broker.publish_many(messages(2500)) == 2500

    assert len(flushes) == 3  # batches of 1,000
    assert len(fsynced) == 3  # one ready/ folder fsync per batch, none per message
    ready = os.listdir(tmp_path / "b" / "queues" / "default" / "ready")
    assert len(ready) == 2500
    assert os.listdir(tmp_path / "b" / "queues" / "default" / "tmp") == []


def test_durable_batch_falls_back_to_fsync_per_file_without_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_module, "_syncfs", None)
    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsynced.append(fd) or real_fsync(fd))
    broker = FileBroker(tmp_path / "b", durable=True)

    broker.publish_many(messages(10))

    assert len(fsynced) == 11  # each file, then the folder once
