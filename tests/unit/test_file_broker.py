"""Tests for taskq.brokers.file: each broker invariant of DESIGN.md, then the rest of
the broker's surface. Fast: no `taskq worker`; the few child processes are forked,
stopped by PID and waited for with bounds."""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import pickle
import resource
import signal
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from taskq.brokers import file as file_module
from taskq.brokers import fs
from taskq.brokers.base import Delivery, QueueCounts
from taskq.brokers.consumer import FileConsumer
from taskq.brokers.file import FileBroker
from taskq.brokers.names import scheduled_name
from taskq.brokers.wakeup import InotifyWatcher, WatchdogWatcher
from taskq.errors import BrokerError, DiskFull
from taskq.keys import Keyring
from taskq.message import Message, decode, dump_call, encode, new_id

KEY = Keyring(b"k" * 32)
FORK = multiprocessing.get_context("fork")

OpenConsumer = Callable[..., FileConsumer]


def make_message(
    priority: int = 0,
    created: float | None = None,
    eta: float | None = None,
    queue: str = "default",
    task_id: str | None = None,
) -> Message:
    return Message(
        id=task_id or new_id(),
        task="tests.t",
        queue=queue,
        priority=priority,
        created=time.time() if created is None else created,
        eta=eta,
    )


def publish(broker: FileBroker, message: Message | None = None) -> tuple[Message, bytes]:
    message = message or make_message()
    data = encode(message, dump_call(message.task, (message.id,), {}), KEY)
    broker.publish(message, data)
    return message, data


def listing(broker: FileBroker, state: str, queue: str = "default") -> list[str]:
    return sorted(os.listdir(broker.root / "queues" / queue / state))


@pytest.fixture
def broker(tmp_path: Path) -> FileBroker:
    return FileBroker(tmp_path / "broker", poll_interval=0.05)


@pytest.fixture
def open_consumer(broker: FileBroker) -> Iterator[OpenConsumer]:
    """Consumers of ``broker``, closed when the test ends."""
    opened: list[FileConsumer] = []

    def open_(name: str = "c1", queues: tuple[str, ...] = ("default",), **kw: Any) -> FileConsumer:
        consumer = broker.open_consumer(list(queues), name, **kw)
        opened.append(consumer)
        return consumer

    yield open_
    for consumer in opened:
        consumer.close()


def stop(process: Any) -> None:
    """Stop a forked child by its PID, with bounded waits."""
    if process.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    process.join(10)
    assert not process.is_alive(), f"child {process.pid} did not stop"


# -- 1. atomic visibility -----------------------------------------------------------


# A message is written either as a nameless file (O_TMPFILE, linked into ready/ when
# whole) or, where the filesystem cannot, in tmp/ and renamed: both must hold.
WRITE_PATHS = [pytest.param(True, id="nameless"), pytest.param(False, id="tmp-rename")]


def unseen(path: str, broker: FileBroker) -> bool:
    """A path being written that no consumer can see: in tmp/, or not linked anywhere."""
    return path.startswith(str(broker.root / "queues" / "default" / "tmp") + os.sep) or (
        path.endswith(" (deleted)")  # how /proc shows an O_TMPFILE file's fd
    )


def publish_watching_writes(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch, message: Message, state: str
) -> tuple[list[tuple[str, list[str]]], bytes]:
    """Publish ``message``, noting at each write the file written and ``state``'s listing."""
    real_write = os.write
    seen: list[tuple[str, list[str]]] = []

    def spy(fd: int, data: Any) -> int:
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), listing(broker, state)))
        return real_write(fd, data)

    monkeypatch.setattr(file_module.os, "write", spy)
    _, data = publish(broker, message)
    monkeypatch.undo()
    return seen, data


@pytest.mark.parametrize("nameless", WRITE_PATHS)
def test_publish_writes_out_of_sight_and_ready_only_ever_sees_the_whole_file(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch, nameless: bool
) -> None:
    broker.queue_dir("default")
    broker._nameless = nameless
    message = make_message()
    seen, data = publish_watching_writes(broker, monkeypatch, message, "ready")

    assert seen, "publish wrote nothing through os.write"
    assert all(unseen(path, broker) for path, _ in seen), seen
    assert all(ready == [] for _, ready in seen)
    assert listing(broker, "ready") == [message.name]
    assert (broker.root / "queues" / "default" / "ready" / message.name).read_bytes() == data
    assert listing(broker, "tmp") == []


def test_publish_links_a_nameless_file_where_the_filesystem_can(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[str] = []
    real_rename = os.rename
    monkeypatch.setattr(
        file_module.os, "rename", lambda a, b: renames.append(str(b)) or real_rename(a, b)
    )
    message, data = publish(broker)

    assert broker._nameless, "O_TMPFILE + linkat refused on this test's filesystem"
    assert renames == []  # linked straight into ready/, no tmp/ entry made and moved
    assert (broker.root / "queues" / "default" / "ready" / message.name).read_bytes() == data


def test_publish_falls_back_to_tmp_and_rename_when_nameless_files_are_refused(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    tries: list[int] = []

    def no_tmpfile(path: Any, flags: int, *args: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            tries.append(flags)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args)

    monkeypatch.setattr(file_module.os, "open", no_tmpfile)
    first, first_data = publish(broker)
    second, second_data = publish(broker)
    monkeypatch.undo()

    assert len(tries) == 1  # refused once, then not asked again
    assert not broker._nameless
    ready = broker.root / "queues" / "default" / "ready"
    assert (ready / first.name).read_bytes() == first_data
    assert (ready / second.name).read_bytes() == second_data
    assert listing(broker, "tmp") == []


def test_link_new_declines_where_the_platform_has_no_o_tmpfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs, "_O_TMPFILE", 0)  # as on macOS

    assert fs.link_new(str(tmp_path), str(tmp_path / "m"), b"data") is False
    assert os.listdir(tmp_path) == []


def test_link_new_leaves_a_taken_name_alone(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_bytes(b"first")

    assert fs.link_new(str(tmp_path), str(target), b"second") is False
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["taken"]


def test_publish_of_a_name_already_in_ready_replaces_it(broker: FileBroker) -> None:
    message, _ = publish(broker)
    again = encode(message, dump_call(message.task, ("again",), {}), KEY)
    broker.publish(message, again)

    assert broker._nameless  # a taken name is no reason to stop linking
    assert listing(broker, "ready") == [message.name]
    assert (broker.root / "queues" / "default" / "ready" / message.name).read_bytes() == again


def test_durable_publish_many_renames_into_ready_only_after_every_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch is flushed once, between the writes and the renames.
    broker = FileBroker(tmp_path / "broker", durable=True)
    broker.queue_dir("default")
    real_write = os.write
    ready_while_writing: list[list[str]] = []

    def spy(fd: int, data: Any) -> int:
        ready_while_writing.append(listing(broker, "ready"))
        return real_write(fd, data)

    batch = []
    for _ in range(5):
        message = make_message()
        batch.append((message, encode(message, b"p", KEY)))
    monkeypatch.setattr(file_module.os, "write", spy)
    assert broker.publish_many(batch) == 5
    monkeypatch.undo()

    assert ready_while_writing == [[]] * 5
    assert listing(broker, "ready") == sorted(m.name for m, _ in batch)
    for message, data in batch:
        assert (broker.root / "queues" / "default" / "ready" / message.name).read_bytes() == data


def publish_failing_halfway(broker: FileBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish whose write stops halfway on a full disk: a short write, then ENOSPC."""
    real_write = os.write

    def crash_halfway(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(file_module.os, "write", crash_halfway)
    with pytest.raises(DiskFull, match="no space left on the broker's filesystem"):
        publish(broker)
    monkeypatch.undo()


@pytest.mark.parametrize("nameless", WRITE_PATHS)
def test_publish_on_a_full_disk_raises_and_leaves_nothing(
    broker: FileBroker, open_consumer: OpenConsumer, monkeypatch: pytest.MonkeyPatch, nameless: bool
) -> None:
    broker._nameless = nameless
    consumer = open_consumer()
    publish_failing_halfway(broker, monkeypatch)

    assert broker._nameless is nameless  # a full disk is no reason to stop linking
    assert listing(broker, "tmp") == []
    assert listing(broker, "ready") == []
    assert consumer.claim(timeout=0.1) is None


def test_a_batch_placed_by_two_threads_says_exactly_what_a_full_disk_let_in(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = [make_message(created=1000.0 + i) for i in range(200)]
    doomed = batch[150].name
    real_link_new = file_module.link_new

    def full_at_150(folder: str, target: str, *args: Any) -> bool:
        if target.endswith(doomed):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_link_new(folder, target, *args)

    monkeypatch.setattr(file_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(file_module, "link_new", full_at_150)
    with pytest.raises(DiskFull, match=r"for message 151; the 150 before it were enqueued") as e:
        broker.publish_many((m, b"data") for m in batch)

    ready = set(listing(broker, "ready"))
    assert {m.name for m in batch[:150]} <= ready  # every one before it, as a loop would
    assert doomed not in ready
    past = len(ready) - 150  # the other thread may have gone a little further
    assert (f"and {past} after it" in str(e.value)) == (past > 0)


def test_a_half_rewritten_spare_on_a_full_disk_is_dropped(
    broker: FileBroker, open_consumer: OpenConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    (broker.root / "spare" / "old").write_bytes(b"x" * 100)
    consumer = open_consumer()
    publish_failing_halfway(broker, monkeypatch)

    assert os.listdir(broker.root / "spare") == []
    assert listing(broker, "tmp") == []
    assert listing(broker, "ready") == []
    assert consumer.claim(timeout=0.1) is None


def test_crashed_tmp_writer_litter_is_never_claimed_and_is_swept(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    consumer = open_consumer()
    litter = broker.queue_dir("default") / "tmp" / "crashed-writer"
    litter.write_bytes(b"TQ1 half a message")

    assert consumer.claim(timeout=0.1) is None
    # A writer may still be busy with a fresh tmp file: only old litter goes.
    assert broker.sweep_tmp(older_than=time.time() - 60) == 0
    assert listing(broker, "tmp") == ["crashed-writer"]
    hour_ago = time.time() - 3600
    os.utime(litter, (hour_ago, hour_ago))
    assert broker.sweep_tmp(older_than=time.time() - 60) == 1
    assert listing(broker, "tmp") == []


@pytest.mark.parametrize("nameless", WRITE_PATHS)
def test_scheduled_message_is_also_written_out_of_sight_first(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch, nameless: bool
) -> None:
    broker.queue_dir("default")
    broker._nameless = nameless
    message = make_message(eta=time.time() + 60)
    seen, _ = publish_watching_writes(broker, monkeypatch, message, "scheduled")

    assert len(seen) == 1 and unseen(seen[0][0], broker), seen
    assert seen[0][1] == []  # scheduled/ was empty while the file was written
    assert listing(broker, "scheduled") == [scheduled_name(message)]
    assert listing(broker, "ready") == []


# -- 2. one claimer wins ----------------------------------------------------------------


def _claim_until_empty(root: str, name: str, barrier: Any, out: str) -> None:
    consumer = FileBroker(root).open_consumer(["default"], name)
    barrier.wait(20)
    claimed = []
    while (delivery := consumer.claim(timeout=0)) is not None:
        claimed.append(delivery.name)
    Path(out).write_text("\n".join(claimed))
    consumer.close()


def test_concurrent_claimers_in_several_processes_claim_each_message_exactly_once(
    broker: FileBroker, tmp_path: Path
) -> None:
    published = {publish(broker)[0].name for _ in range(500)}
    barrier = FORK.Barrier(4)
    outs = [tmp_path / f"claimed-{i}.txt" for i in range(4)]
    children = [
        FORK.Process(
            target=_claim_until_empty, args=(str(broker.root), f"c{i}", barrier, str(outs[i]))
        )
        for i in range(4)
    ]
    try:
        for child in children:
            child.start()
        for child in children:
            child.join(30)
    finally:
        for child in children:
            stop(child)

    assert [c.exitcode for c in children] == [0, 0, 0, 0]
    reports = [[n for n in out.read_text().split("\n") if n] for out in outs]
    claims = Counter(name for report in reports for name in report)
    assert set(claims) == published
    assert max(claims.values()) == 1
    assert listing(broker, "ready") == []
    # What each claimer reported is what its folder holds.
    for i, report in enumerate(reports):
        assert sorted(report) == [n for n in listing(broker, f"claimed/c{i}") if n != ".lock"]


def test_claimer_that_lost_the_race_moves_on_without_error(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    names = sorted(publish(broker)[0].name for _ in range(3))
    slow, fast = open_consumer("slow"), open_consumer("fast")
    first = slow.claim(timeout=0)  # lists all three, claims one
    assert first is not None

    rest = [fast.claim(timeout=0), fast.claim(timeout=0)]

    assert slow.claim(timeout=0) is None  # its cached names are gone: ENOENT, no error
    assert [first.name] + [d.name for d in rest if d] == names


# -- 3. nothing is lost ------------------------------------------------------------------


def _claimed(broker: FileBroker, open_consumer: OpenConsumer) -> tuple[Delivery, Message]:
    message, _ = publish(broker)
    delivery = open_consumer().claim(timeout=1)
    assert delivery is not None and delivery.name == message.name
    return delivery, message


def test_retry_that_fails_to_write_the_new_copy_keeps_the_old(
    broker: FileBroker, open_consumer: OpenConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery, message = _claimed(broker, open_consumer)
    again = message.replace(retries=1, eta=time.time() + 60)

    def crash(message: Message, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(broker, "publish", crash)
    with pytest.raises(OSError, match="disk full"):
        broker.retry_later(delivery, again, encode(again, b"p", KEY))

    assert listing(broker, "claimed/c1") == [".lock", message.name]


def test_retry_moves_the_message_to_scheduled_with_the_new_envelope(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    delivery, message = _claimed(broker, open_consumer)
    again = message.replace(retries=1, eta=time.time() + 60)
    data = encode(again, b"p", KEY)

    broker.retry_later(delivery, again, data)

    assert listing(broker, "claimed/c1") == [".lock"]
    assert listing(broker, "scheduled") == [scheduled_name(again)]
    path = broker.root / "queues" / "default" / "scheduled" / scheduled_name(again)
    assert decode(path.read_bytes(), KEY)[0].retries == 1


def test_dead_letter_writes_the_record_before_moving_the_message(
    broker: FileBroker, open_consumer: OpenConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery, message = _claimed(broker, open_consumer)
    real_rename = os.rename

    def crash_on_move(src: Any, dst: Any) -> None:
        if "claimed" in str(src):
            raise OSError("crashed before the move")
        real_rename(src, dst)

    monkeypatch.setattr(file_module.os, "rename", crash_on_move)
    with pytest.raises(OSError, match="crashed"):
        broker.dead_letter(delivery, {"reason": "failed"})
    monkeypatch.undo()

    assert listing(broker, "claimed/c1") == [".lock", message.name]
    assert listing(broker, "dead") == [f"{message.name}.json"]


# -- 4. dead consumers are noticed without clocks ------------------------------------------


def _claim_and_hang(root: str, name: str, count: int, conn: Connection) -> None:
    consumer = FileBroker(root).open_consumer(["default"], name)
    names = []
    for _ in range(count):
        delivery = consumer.claim(timeout=5)
        names.append(delivery.name if delivery else None)
    conn.send(names)
    time.sleep(60)  # killed long before this ends


def test_sigkilled_consumer_is_dead_and_its_claims_are_recovered(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    by_name = {m.name: data for m, data in (publish(broker) for _ in range(4))}
    parent_end, child_end = FORK.Pipe()
    child = FORK.Process(target=_claim_and_hang, args=(str(broker.root), "victim", 3, child_end))
    try:
        child.start()
        assert parent_end.poll(20), "child did not claim its messages in time"
        taken = parent_end.recv()
        # Alive and idle, however long: not dead.
        assert broker.dead_consumers() == []
        assert broker.recover("victim") is None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    finally:
        stop(child)
        parent_end.close()
        child_end.close()
    assert child.exitcode == -signal.SIGKILL
    live = open_consumer("alive")
    assert live.claim(timeout=1) is not None

    assert broker.dead_consumers() == ["victim"]
    recovered = broker.recover("victim")

    assert recovered is not None
    assert sorted(d.name for d in recovered) == sorted(taken)
    assert all(d.data == by_name[d.name] and d.consumer == "victim" for d in recovered)
    # A second sweeper cannot take the same claims while the first settles them.
    other = FileBroker(broker.root)
    assert other.recover("victim") is None
    assert other.dead_consumers() == []
    for delivery in recovered:
        broker.requeue(delivery)
    broker.forget_consumer("victim")
    assert broker.dead_consumers() == []
    assert not (broker.root / "queues" / "default" / "claimed" / "victim").exists()
    assert len(listing(broker, "ready")) == 3


def test_a_consumer_is_registered_from_open_until_forgotten(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    assert not broker.has_consumer("c1")
    consumer = open_consumer("c1")
    assert broker.has_consumer("c1")
    assert not broker.has_consumer("c2")
    consumer.close()
    assert broker.has_consumer("c1")  # dead, its claims not yet recovered
    assert broker.recover("c1") == []
    broker.forget_consumer("c1")
    assert not broker.has_consumer("c1")


def test_live_consumer_in_this_process_is_never_dead(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    publish(broker)
    consumer = open_consumer("alive")
    delivery = consumer.claim(timeout=1)
    assert delivery is not None

    assert broker.dead_consumers() == []
    assert broker.recover("alive") is None
    assert FileBroker(broker.root).recover("alive") is None
    assert listing(broker, "claimed/alive") == [".lock", delivery.name]


def test_closed_consumer_is_dead_and_keeps_its_claims_until_recovered(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    message, _ = publish(broker)
    consumer = open_consumer("gone")
    assert consumer.claim(timeout=1) is not None
    consumer.close()

    assert broker.dead_consumers() == ["gone"]
    recovered = broker.recover("gone")
    assert recovered is not None
    assert [d.name for d in recovered] == [message.name]


def test_consumer_folder_being_born_is_not_swept(broker: FileBroker) -> None:
    # Between creating its lock file and locking it, a new consumer's folder
    # still has its dotted staging name and an unlocked lock.
    staging = broker.queue_dir("default") / "claimed" / ".new-c9"
    staging.mkdir()
    (staging / ".lock").touch()

    assert broker.dead_consumers() == []
    assert staging.exists()


def test_two_consumers_cannot_share_a_name(broker: FileBroker, open_consumer: OpenConsumer) -> None:
    open_consumer("twin")

    with pytest.raises(FileExistsError, match="twin"):
        open_consumer("twin")


# -- 5. order, and no rescan per claim --------------------------------------------------------


def test_claims_come_in_priority_order_then_fifo(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    t = time.time()
    spec = [(0, t + 1), (9, t + 5), (5, t + 2), (9, t + 3), (0, t + 0.5), (5, t + 4)]
    ids = {publish(broker, make_message(p, created))[0].id: (p, created) for p, created in spec}
    consumer = open_consumer()

    claimed = [d.name for d in iter(lambda: consumer.claim(timeout=0), None)]

    order = [ids[name.rpartition("-")[2]] for name in claimed]
    assert order == sorted(spec, key=lambda pc: (-pc[0], pc[1]))


def test_message_arriving_after_the_listing_still_takes_its_place_in_the_order(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    t = time.time()
    low = [publish(broker, make_message(0, t + i))[0] for i in range(3)]
    consumer = open_consumer()
    first = consumer.claim(timeout=0)
    assert first is not None and first.name == low[0].name

    urgent, _ = publish(broker, make_message(9, t + 10))

    rest = [d.name for d in iter(lambda: consumer.claim(timeout=0), None)]
    assert rest == [urgent.name, low[1].name, low[2].name]


def test_queues_are_served_in_the_order_given(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    low, _ = publish(broker, make_message(9, queue="bulk"))
    high, _ = publish(broker, make_message(0, queue="urgent"))
    consumer = open_consumer(queues=("urgent", "bulk"))

    first, second = consumer.claim(timeout=0), consumer.claim(timeout=0)

    assert first is not None and second is not None
    assert (first.queue, first.name) == ("urgent", high.name)
    assert (second.queue, second.name) == ("bulk", low.name)


def test_claiming_many_messages_lists_ready_only_a_couple_of_times(
    broker: FileBroker, open_consumer: OpenConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(100):
        publish(broker)
    ready = str(broker.root / "queues" / "default" / "ready")
    listings = []
    real_listdir, real_scandir = os.listdir, os.scandir

    def counting_listdir(path: Any = ".") -> list[str]:
        if os.fspath(path) == ready:
            listings.append("listdir")
        return real_listdir(path)

    def counting_scandir(path: Any = ".") -> Any:
        if os.fspath(path) == ready:
            listings.append("scandir")
        return real_scandir(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    monkeypatch.setattr(os, "scandir", counting_scandir)
    consumer = open_consumer()
    claimed = [consumer.claim(timeout=1) for _ in range(50)]
    for _ in range(100):  # arrivals while it works come from events, not listings
        publish(broker)
    claimed += [consumer.claim(timeout=1) for _ in range(150)]
    monkeypatch.undo()

    assert all(d is not None for d in claimed)
    assert len({d.name for d in claimed if d}) == 200
    assert len(listings) <= 2


# -- 6. authenticated input, a private root ------------------------------------------------


def test_world_writable_root_is_refused_naming_the_path_and_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "open"
    root.mkdir()
    root.chmod(0o777)

    with pytest.raises(BrokerError) as caught:
        FileBroker(root)

    assert str(root) in str(caught.value)
    assert "world-writable" in str(caught.value)
    assert f"chmod 700 {root}" in str(caught.value)


def test_root_is_created_private(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"

    FileBroker(root)

    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")

    with pytest.raises(BrokerError, match=str(path)):
        FileBroker(path)


def test_secret_is_made_once_private_and_shared_by_every_broker_on_the_root(
    tmp_path: Path,
) -> None:
    root = tmp_path / "broker"
    first = FileBroker(root).keys().current
    made = (root / "secret").stat()

    second = FileBroker(root).keys().current

    assert first == second
    assert len(first) >= 32
    assert stat.S_IMODE(made.st_mode) == 0o600
    assert (root / "secret").stat().st_ino == made.st_ino
    assert [p.name for p in root.iterdir() if "secret" in p.name] == ["secret"]


def test_brokers_racing_to_make_the_secret_agree_on_one(tmp_path: Path) -> None:
    root = tmp_path / "broker"
    brokers = [FileBroker(root) for _ in range(8)]
    keys: list[bytes] = []
    barrier = threading.Barrier(len(brokers))

    def make(broker: FileBroker) -> None:
        barrier.wait(10)
        keys.append(broker.keys().current)

    threads = [threading.Thread(target=make, args=(b,)) for b in brokers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(keys) == 8
    assert len(set(keys)) == 1
    assert keys[0] == (root / "secret").read_bytes().strip()


@pytest.mark.parametrize("content", [b"", b"  \n"])
def test_empty_secret_file_is_refused_rather_than_signing_with_an_empty_key(
    broker: FileBroker, content: bytes
) -> None:
    (broker.root / "secret").write_bytes(content)
    (broker.root / "secret").chmod(0o600)

    with pytest.raises(BrokerError, match=r"secret.* is empty"):
        broker.keys()


def test_recover_takes_a_dead_consumers_claims_in_every_queue(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    a, _ = publish(broker, make_message(queue="a"))
    b, _ = publish(broker, make_message(queue="b"))
    consumer = open_consumer("gone", queues=("a", "b"))
    assert consumer.claim(timeout=1) is not None
    assert consumer.claim(timeout=1) is not None
    consumer.close()

    recovered = broker.recover("gone")

    assert recovered is not None
    assert sorted((d.queue, d.name) for d in recovered) == [("a", a.name), ("b", b.name)]
    for delivery in recovered:
        broker.requeue(delivery)
    broker.forget_consumer("gone")
    assert listing(broker, "ready", queue="a") == [a.name]
    assert listing(broker, "ready", queue="b") == [b.name]
    assert broker.dead_consumers() == []


class _CreatesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_message_with_a_bad_signature_is_dead_lettered_unopened(
    broker: FileBroker, open_consumer: OpenConsumer, tmp_path: Path
) -> None:
    from taskq.worker import Worker

    marker = tmp_path / "pwned"
    message = make_message()
    forged = encode(
        message, b"p" + pickle.dumps(((_CreatesMarker(marker),), {})), Keyring(b"x" * 32)
    )
    broker.publish(message, forged)
    consumer = open_consumer()
    delivery = consumer.claim(timeout=1)
    assert delivery is not None

    Worker(broker, KEY, consumer).process(delivery)

    assert not marker.exists()
    [letter] = broker.dead_letters()
    assert letter.record["reason"] == "bad-signature"
    assert broker.dead_message(letter) == forged
    assert listing(broker, "claimed/c1") == [".lock"]


# -- 7. wake-up without busy polling -------------------------------------------------------

WATCHERS = [
    pytest.param("auto", InotifyWatcher, id="inotify"),
    pytest.param("watchdog", WatchdogWatcher, id="watchdog"),
    pytest.param("poll", type(None), id="poll"),
]


@pytest.mark.parametrize(("watcher", "kind"), WATCHERS)
def test_blocked_claim_wakes_when_a_message_arrives(
    broker: FileBroker, open_consumer: OpenConsumer, watcher: str, kind: type
) -> None:
    consumer = open_consumer(watcher=watcher)
    assert isinstance(consumer._waiter.watcher, kind)
    assert consumer.claim(timeout=0) is None  # the listing is cached and empty
    published: list[Message] = []

    def later() -> None:
        time.sleep(0.2)
        published.append(publish(broker)[0])

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    delivery = consumer.claim(timeout=5)
    elapsed = time.monotonic() - started
    thread.join(5)

    assert delivery is not None
    assert delivery.name == published[0].name
    assert elapsed < 2.0  # woke on the arrival, not at the timeout


@pytest.mark.parametrize(("watcher", "kind"), WATCHERS[:2])
def test_idle_claim_sleeps_instead_of_polling(
    broker: FileBroker, open_consumer: OpenConsumer, watcher: str, kind: type
) -> None:
    consumer = open_consumer(watcher=watcher)
    assert isinstance(consumer._waiter.watcher, kind)
    assert consumer.claim(timeout=0) is None
    cpu = time.process_time()
    wall = time.monotonic()
    sleeps = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw

    assert consumer.claim(timeout=1.0) is None

    assert time.monotonic() - wall >= 0.9
    assert time.process_time() - cpu < 0.2
    # Each time this thread goes to sleep is one voluntary context switch: a
    # consumer blocked on an event sleeps once, a fast poller a thousand times.
    assert resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - sleeps < 10


def test_wake_makes_a_blocked_claim_return_early(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    consumer = open_consumer()
    timer = threading.Timer(0.2, consumer.wake)
    timer.start()
    started = time.monotonic()

    delivery = consumer.claim(timeout=5)
    elapsed = time.monotonic() - started
    timer.join(5)

    assert delivery is None
    assert elapsed < 2.0  # returned on wake(), not at the timeout (shutdown waits on this)


def test_wake_before_claim_still_lets_it_take_a_waiting_message(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    message, _ = publish(broker)
    consumer = open_consumer()
    consumer.wake()

    delivery = consumer.claim(timeout=1)

    assert delivery is not None and delivery.name == message.name


# -- the rest of the broker's surface ------------------------------------------------------


def test_promote_due_moves_only_due_messages_under_their_ready_name(broker: FileBroker) -> None:
    now = time.time()
    due, _ = publish(broker, make_message(eta=now + 30))
    later, _ = publish(broker, make_message(eta=now + 300))
    assert listing(broker, "ready") == []

    assert broker.promote_due(now + 60) == 1

    assert listing(broker, "ready") == [due.name]
    assert listing(broker, "scheduled") == [scheduled_name(later)]
    assert broker.promote_due(now + 600) == 1
    assert listing(broker, "ready") == sorted([due.name, later.name])


def test_promote_due_moves_a_bounded_number_a_call_and_the_rest_at_the_next_calls(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "PROMOTE_MOST", 5)
    now = time.time()
    for i in range(12):
        publish(broker, make_message(eta=now + 1 + i / 1000))

    assert [broker.promote_due(now + 60) for _ in range(4)] == [5, 5, 2, 0]
    assert len(listing(broker, "ready")) == 12


def test_scheduled_message_added_after_a_promotion_is_promoted_once_due(
    broker: FileBroker,
) -> None:
    far, _ = publish(broker, make_message(eta=time.time() + 300))
    assert broker.promote_due(time.time()) == 0

    soon, _ = publish(broker, make_message(eta=time.time() + 0.05))
    time.sleep(0.1)

    assert broker.promote_due(time.time()) == 1
    assert listing(broker, "ready") == [soon.name]
    assert listing(broker, "scheduled") == [scheduled_name(far)]


def test_message_whose_eta_has_passed_goes_straight_to_ready(broker: FileBroker) -> None:
    message, _ = publish(broker, make_message(eta=time.time() - 1))

    assert listing(broker, "ready") == [message.name]


def test_requeue_puts_a_claimed_message_back_in_ready_unchanged(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    message, data = publish(broker)
    consumer = open_consumer()
    delivery = consumer.claim(timeout=1)
    assert delivery is not None

    broker.requeue(delivery)

    assert listing(broker, "ready") == [message.name]
    assert listing(broker, "claimed/c1") == [".lock"]
    again = consumer.claim(timeout=1)
    assert again is not None and again.data == data


def test_ack_forgets_the_message(broker: FileBroker, open_consumer: OpenConsumer) -> None:
    delivery, _ = _claimed(broker, open_consumer)

    broker.ack(delivery)

    assert listing(broker, "claimed/c1") == [".lock"]
    assert broker.counts()["default"] == QueueCounts(0, 0, 0, 0)


def test_dead_letter_keeps_the_message_beside_a_readable_record(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    message, data = publish(broker)
    delivery = open_consumer().claim(timeout=1)
    assert delivery is not None

    broker.dead_letter(delivery, {"id": message.id, "reason": "failed", "died_at": "2024"})

    assert listing(broker, "dead") == [message.name, f"{message.name}.json"]
    record = json.loads((broker.root / "queues/default/dead" / f"{message.name}.json").read_text())
    assert record == {"id": message.id, "reason": "failed", "died_at": "2024"}
    [letter] = broker.dead_letters("default")
    assert (letter.queue, letter.name, letter.id) == ("default", message.name, message.id)
    assert broker.dead_message(letter) == data
    assert letter.record["reason"] == "failed"


def test_dead_letters_are_listed_oldest_first_and_removed_one_by_one(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    consumer = open_consumer()
    for died_at in ("2024-03", "2024-01", "2024-02"):
        publish(broker)
        delivery = consumer.claim(timeout=1)
        assert delivery is not None
        broker.dead_letter(delivery, {"reason": "failed", "died_at": died_at})

    letters = broker.dead_letters()
    assert [d.record["died_at"] for d in letters] == ["2024-01", "2024-02", "2024-03"]

    broker.remove_dead(letters[0])

    assert [d.record["died_at"] for d in broker.dead_letters()] == ["2024-02", "2024-03"]
    assert letters[0].name not in listing(broker, "dead")
    assert f"{letters[0].name}.json" not in listing(broker, "dead")


def test_purge_drops_ready_and_scheduled_but_not_claimed_or_dead(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    _claimed(broker, open_consumer)
    for _ in range(3):
        publish(broker)
    publish(broker, make_message(eta=time.time() + 60))
    publish(broker, make_message(queue="other"))

    assert broker.purge("default") == 4

    assert listing(broker, "ready") == listing(broker, "scheduled") == []
    assert len(listing(broker, "claimed/c1")) == 2
    assert len(listing(broker, "ready", queue="other")) == 1


def test_counts_report_each_state_per_queue(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    consumer = open_consumer()
    for _ in range(4):
        publish(broker)
    publish(broker, make_message(eta=time.time() + 60))
    publish(broker, make_message(queue="other"))
    first, second = consumer.claim(timeout=1), consumer.claim(timeout=1)
    assert first is not None and second is not None
    broker.dead_letter(second, {"reason": "failed"})

    counts = broker.counts()

    assert counts["default"] == QueueCounts(ready=2, scheduled=1, claimed=1, dead=1)
    assert counts["other"] == QueueCounts(ready=1, scheduled=0, claimed=0, dead=0)


def test_find_reports_the_state_holding_a_task_id(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    ready, _ = publish(broker)
    scheduled, _ = publish(broker, make_message(eta=time.time() + 60))
    assert broker.find(ready.id) == "ready"
    assert broker.find(scheduled.id) == "scheduled"

    delivery = open_consumer().claim(timeout=1)
    assert delivery is not None
    assert broker.find(ready.id) == "claimed"
    broker.dead_letter(delivery, {"reason": "failed"})
    assert broker.find(ready.id) == "dead"
    assert broker.find("nosuchid") is None


def test_results_are_stored_whole_and_loaded_back(broker: FileBroker) -> None:
    broker.store_result("abc", b"first")
    broker.store_result("abc", b"second")  # replaced atomically

    assert broker.load_result("abc") == b"second"
    assert broker.load_result("missing") is None
    assert sorted(os.listdir(broker.root / "results")) == ["abc"]


def test_expire_results_removes_only_old_results(broker: FileBroker) -> None:
    broker.store_result("old", b"1")
    broker.store_result("new", b"2")
    day_ago = time.time() - 86400
    os.utime(broker.root / "results" / "old", (day_ago, day_ago))

    assert broker.expire_results(older_than=time.time() - 3600) == 1

    assert broker.load_result("old") is None
    assert broker.load_result("new") == b"2"


def test_sweep_tmp_also_removes_stale_half_written_results(broker: FileBroker) -> None:
    litter = broker.root / "results" / ".abc.1234.tmp"
    litter.write_bytes(b"half")
    broker.store_result("kept", b"whole")
    old = time.time() - 3600
    os.utime(litter, (old, old))
    os.utime(broker.root / "results" / "kept", (old, old))

    assert broker.sweep_tmp(older_than=time.time() - 60) == 1

    assert not litter.exists()
    assert broker.load_result("kept") == b"whole"


def test_load_result_refuses_an_id_that_is_a_path(broker: FileBroker) -> None:
    from taskq.errors import MessageError

    with pytest.raises(MessageError):
        broker.load_result("../secret")


def test_queue_name_that_escapes_the_root_is_refused(
    broker: FileBroker, open_consumer: OpenConsumer
) -> None:
    from taskq.errors import MessageError

    with pytest.raises(MessageError):
        broker.queue_dir("../escape")
    with pytest.raises(MessageError):
        open_consumer(queues=("../escape",))
    assert not (broker.root / "escape").exists()


def test_scheduled_message_added_in_the_same_mtime_tick_as_a_listing_is_not_missed(
    broker: FileBroker,
) -> None:
    # A directory's mtime ticks coarsely (a few ms): a name added in the same tick
    # as promote_due's listing leaves the mtime unchanged. Simulated with utime.
    far, _ = publish(broker, make_message(eta=time.time() + 3600))
    scheduled = broker.root / "queues" / "default" / "scheduled"
    assert broker.promote_due(time.time()) == 0
    tick = scheduled.stat().st_mtime_ns

    soon, _ = publish(broker, make_message(eta=time.time() + 0.05))
    os.utime(scheduled, ns=(scheduled.stat().st_atime_ns, tick))
    time.sleep(0.15)

    assert broker.promote_due(time.time()) == 1
    assert listing(broker, "ready") == [soon.name]
    assert listing(broker, "scheduled") == [scheduled_name(far)]


def test_promote_due_does_not_list_an_unchanged_scheduled_folder_again(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(broker, make_message(eta=time.time() + 3600))
    scheduled = broker.root / "queues" / "default" / "scheduled"
    minute_ago = time.time_ns() - 60 * 10**9
    os.utime(scheduled, ns=(minute_ago, minute_ago))
    listings = []
    real_listdir = os.listdir

    def counting_listdir(path: Any = ".") -> list[str]:
        if os.fspath(path) == str(scheduled):
            listings.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    for _ in range(5):
        assert broker.promote_due(time.time()) == 0
    publish(broker, make_message(eta=time.time() + 3600))
    assert broker.promote_due(time.time()) == 0

    assert len(listings) == 2  # the first call, then once after the folder changed
