"""Reading broker entries safely: only regular files are opened (never followed,
never opened blocking), reads are bounded, and whatever else is found is
quarantined with a reason, not a crashed worker or supervisor."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskq.app import App
from taskq.brokers import file_admin, fs
from taskq.brokers.file import FileBroker
from taskq.brokers.names import scheduled_name
from taskq.errors import MessageError, UnsafeEntry
from taskq.keys import Keyring
from taskq.message import Message, dump_call, encode, new_id
from taskq.results import AsyncResult
from taskq.worker import Worker

KEY = Keyring(b"k" * 32)


def make_folder(path: Path) -> None:
    path.mkdir()


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_link_to_zero(path: Path) -> None:
    os.symlink("/dev/zero", path)


def make_device(path: Path) -> None:
    os.mknod(path, 0o600 | 0o020000, os.makedev(1, 5))  # a character device: /dev/zero's


ENTRIES = [
    pytest.param(make_folder, "a folder", id="folder"),
    pytest.param(make_fifo, "a FIFO", id="fifo"),
    pytest.param(make_link_to_zero, "symbolic link", id="symlink"),
    pytest.param(make_device, "a character device", id="device"),
]


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A blocking open of a FIFO would hang the test: fail it within 10 s instead."""

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("a read blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(("make", "kind"), ENTRIES)
@pytest.mark.parametrize("read", [fs.read_file, fs.read_signed])
def test_only_regular_files_are_read(
    tmp_path: Path, make: Callable[[Path], None], kind: str, read: Callable[[str], bytes]
) -> None:
    if make is make_device and os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    entry = tmp_path / "entry"
    make(entry)
    with pytest.raises(UnsafeEntry, match=kind):
        read(str(entry))


def test_a_signed_file_is_read_no_further_than_its_header_declares(tmp_path: Path) -> None:
    message = encode(Message(new_id(), "t"), dump_call("t", ["x" * 100_000], {}), KEY)
    path = tmp_path / "long"
    path.write_bytes(message + b"\0" * 5_000_000)  # far longer than it says

    assert fs.read_signed(str(path)) == message
    assert fs.read_signed(str(tmp_path / "gone")) is None


def test_read_file_refuses_a_file_over_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"{}" * 600)
    with pytest.raises(UnsafeEntry, match="1200 bytes, more than the 1000 expected"):
        fs.read_file(str(path), limit=1000)


# -- the broker and the worker on such entries ----------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> FileBroker:
    return FileBroker(tmp_path / "broker")


@pytest.mark.parametrize(("make", "kind"), ENTRIES)
def test_a_worker_quarantines_a_non_file_in_ready_and_carries_on(
    broker: FileBroker, make: Callable[[Path], None], kind: str
) -> None:
    if make is make_device and os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    ready = broker.queue_dir("default") / "ready"
    make(ready / "0-00000000000000001-intruder")
    good = Message(new_id(), "t")
    broker.publish(good, encode(good, dump_call("t", [], {}), KEY))
    consumer = broker.open_consumer(["default"], "c1")
    worker = Worker(broker, KEY, consumer)

    intruder = consumer.claim(timeout=1)  # it sorts first
    assert intruder is not None and intruder.unsafe
    worker.process(intruder)

    [letter] = broker.dead_letters()
    assert letter.name == "0-00000000000000001-intruder"
    assert letter.record["reason"] == "unsafe-entry"
    assert kind in letter.record["exc_message"]
    claimed = consumer.claim(timeout=1)
    assert claimed is not None and claimed.name == good.name  # the queue goes on
    consumer.close()

    broker.remove_dead(letter)  # `taskq dead purge`
    assert broker.dead_letters() == []
    assert not os.path.lexists(broker.queue_dir("default") / "dead" / letter.name)


def test_recovery_of_a_dead_consumer_holding_non_files_does_not_crash(broker: FileBroker) -> None:
    claimed = broker.queue_dir("default") / "claimed" / "gone"
    claimed.mkdir()
    (claimed / ".lock").touch()
    make_fifo(claimed / "0-00000000000000001-fifo")
    make_folder(claimed / "0-00000000000000002-folder")

    assert broker.dead_consumers() == ["gone"]
    recovered = broker.recover("gone")

    assert recovered is not None
    assert {d.name: bool(d.unsafe) for d in recovered} == {
        "0-00000000000000001-fifo": True,
        "0-00000000000000002-folder": True,
    }


def test_a_foreign_name_in_scheduled_goes_to_ready_to_be_quarantined(broker: FileBroker) -> None:
    scheduled = broker.queue_dir("default") / "scheduled"
    (scheduled / "not-a-taskq-name").write_bytes(b"junk")
    later = Message(new_id(), "t", eta=4102444800.0)  # 2100
    broker.publish(later, encode(later, b"p", KEY))

    assert broker.promote_due(now=1e9) == 1

    assert os.listdir(broker.queue_dir("default") / "ready") == ["not-a-taskq-name"]
    assert os.listdir(scheduled) == [scheduled_name(later)]


def test_an_unreadable_dead_record_is_listed_as_such(broker: FileBroker) -> None:
    dead = broker.queue_dir("default") / "dead"
    (dead / "0-00000000000000001-x").write_bytes(b"message")
    (dead / "0-00000000000000001-x.json").write_bytes(b"{not json")

    [letter] = broker.dead_letters()

    assert letter.record["reason"] == "unreadable-record"
    assert "0-00000000000000001-x.json" in letter.record["exc_message"]
    assert json.dumps(letter.record)  # printable by `taskq dead list`


# -- results ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_bytes(b"TQ1 cut short"), "stored result of task r1: truncated"),
        (make_folder, "stored result of task r1: .* is a folder"),
    ],
    ids=["truncated", "folder"],
)
def test_a_broken_stored_result_is_an_error_naming_the_task(
    tmp_path: Path, make: Callable[[Path], None], says: str
) -> None:
    app = App(broker=str(tmp_path / "broker"), secret_key="k" * 32)
    make(app.broker.root / "results" / "r1")
    handle = AsyncResult[object]("r1", app=app)

    error = handle.result  # documented never to raise
    assert isinstance(error, MessageError)
    assert re.search(says, str(error))
    with pytest.raises(MessageError, match=says):
        handle.status  # noqa: B018


def test_listing_dead_letters_reads_records_not_messages(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = broker.queue_dir("default") / "dead"
    big = encode(Message("x", "t"), dump_call("t", ["y" * 1_000_000], {}), KEY)
    (dead / "0-00000000000000001-x").write_bytes(big)
    (dead / "0-00000000000000001-x.json").write_text('{"id": "x", "reason": "failed"}')

    def no_message_reads(path: str) -> bytes:
        raise AssertionError(f"read {path} to list dead letters")

    monkeypatch.setattr(file_admin, "read_signed", no_message_reads)
    [letter] = broker.dead_letters()  # `taskq dead list`

    assert (letter.id, letter.record["reason"]) == ("x", "failed")
    monkeypatch.undo()
    assert broker.dead_message(letter) == big  # `dead show` and `dead retry` read it
