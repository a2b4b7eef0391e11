"""Durable publishing: fsync per message for publish, one flush per batch for publish_many."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

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


# -- the order of flushes: the file's data before its name, the folder after ------


class Journal:
    """Records fsyncs, syncfs, renames and links, in order, by inode: a file's data
    must be on disk before its name appears in ready/ or scheduled/."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, int | str]] = []
        real_fsync, real_rename, real_link = os.fsync, os.rename, os.link

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                self.events.append(("fsync folder", os.readlink(f"/proc/self/fd/{fd}")))
            else:
                self.events.append(("fsync file", info.st_ino))
            real_fsync(fd)

        def rename(src: Any, dst: Any, **kwargs: Any) -> None:
            inode = os.stat(src).st_ino
            real_rename(src, dst, **kwargs)
            self.events.append((f"name in {Path(dst).parent.name}/", inode))

        def link(src: Any, dst: Any, **kwargs: Any) -> None:
            real_link(src, dst, **kwargs)
            self.events.append((f"name in {Path(dst).parent.name}/", os.stat(dst).st_ino))

        def syncfs(fd: int) -> int:
            self.events.append(("syncfs", os.readlink(f"/proc/self/fd/{fd}")))
            return 0

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)
        monkeypatch.setattr(os, "link", link)
        monkeypatch.setattr(fs_module, "_syncfs", syncfs)

    def check_published(self, folder: Path, count: int) -> None:
        """Each of the ``count`` files named into ``folder`` was flushed first (by its
        own fsync, or a syncfs before it), and ``folder`` was fsynced after the last."""
        kinds = [kind for kind, _ in self.events]
        shown = [i for i, kind in enumerate(kinds) if kind == f"name in {folder.name}/"]
        assert len(shown) == count, self.events
        for i in shown:
            inode = self.events[i][1]
            flushed = ("fsync file", inode) in self.events[:i] or "syncfs" in kinds[:i]
            assert flushed, f"file {inode} named into {folder.name}/ unflushed: {self.events}"
        folder_sync = ("fsync folder", str(folder))
        assert folder_sync in self.events[shown[-1] :], self.events
        assert folder_sync not in self.events[: shown[0]], self.events  # flushed too early


@pytest.mark.parametrize("way", ["nameless", "spare", "new-file"])
@pytest.mark.parametrize("state", ["ready", "scheduled"])
def test_durable_publish_flushes_the_file_before_naming_it_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str, state: str
) -> None:
    broker = FileBroker(tmp_path / "b", durable=True)
    if way == "spare":
        (tmp_path / "b" / "spare" / "9-00000000000000001-old").write_bytes(b"old")
    broker._nameless = way == "nameless"
    message, data = messages(1)[0]
    if state == "scheduled":
        message = message.replace(eta=time.time() + 3600)
    journal = Journal(monkeypatch)

    broker.publish(message, data)

    journal.check_published(broker.queue_dir("default") / state, 1)
    [name] = os.listdir(broker.queue_dir("default") / state)
    assert (broker.queue_dir("default") / state / name).read_bytes() == data
    if way == "spare":  # the recycled file was flushed after its rewrite, not before
        assert journal.events[0][0] == "name in tmp/"


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-per-file"])
def test_durable_batch_flushes_every_file_before_naming_any_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    broker = FileBroker(tmp_path / "b", durable=True)
    journal = Journal(monkeypatch)
    if not syncfs:
        monkeypatch.setattr(fs_module, "_syncfs", None)

    assert broker.publish_many(messages(1500)) == 1500

    ready = broker.queue_dir("default") / "ready"
    journal.check_published(ready, 1500)
    kinds = [kind for kind, _ in journal.events]
    # Two batches: each flushed (once, or file by file) before any of its names appear.
    first_name = kinds.index("name in ready/")
    if syncfs:
        assert kinds[:first_name].count("syncfs") == 1
    else:
        assert kinds[:first_name].count("fsync file") == 1000
    assert kinds.count("fsync folder") == 2
