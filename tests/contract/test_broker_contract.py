"""The broker contract (taskq/brokers/base.py), each invariant stated once and held
by every broker in conftest.py. On-disk rules (tmp/ and rename, fsync order, file
modes) stay in tests/unit/test_file_broker.py."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from taskq.errors import BrokerError
from taskq.housekeeping import expire_dead_letters
from taskq.keys import Keyring
from taskq.message import Message, decode, dump_call, encode, new_id

KEY = Keyring(b"k" * 32)
DAY = 86400.0
OpenConsumer = Callable[..., Any]


def make_message(priority: int = 0, created: float | None = None, **kw: Any) -> Message:
    created = time.time() if created is None else created
    return Message(id=new_id(), task="tests.t", priority=priority, created=created, **kw)


def publish(broker: Any, message: Message | None = None) -> tuple[Message, bytes]:
    message = message or make_message()
    data = encode(message, dump_call(message.task, (message.id,), {}), KEY)
    broker.publish(message, data)
    return message, data


def drain(consumer: Any, timeout: float = 0.2) -> list[str]:
    names = []
    while (delivery := consumer.claim(timeout=timeout)) is not None:
        names.append(delivery.name)
    return names


def counts(broker: Any, queue: str = "default") -> tuple[int, int, int, int]:
    c = broker.counts()[queue]
    return c.ready, c.scheduled, c.claimed, c.dead


# -- publishing and claiming ---------------------------------------------------


def test_a_published_message_is_claimed_whole_with_its_bytes(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    message, data = publish(broker)

    delivery = open_consumer().claim(timeout=1)

    assert delivery is not None
    assert (delivery.name, delivery.data, delivery.queue) == (message.name, data, "default")


def test_publish_many_makes_every_message_of_the_batch_claimable(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    batch = [make_message() for _ in range(5)]
    items = [(m, encode(m, dump_call(m.task, (), {}), KEY)) for m in batch]

    assert broker.publish_many(items) == 5
    assert sorted(drain(open_consumer())) == sorted(m.name for m in batch)


def test_racing_consumers_claim_each_message_exactly_once(broker: Any) -> None:
    published = {publish(broker)[0].name for _ in range(200)}
    claimed: list[str] = []
    lock = threading.Lock()

    def consume(name: str) -> None:
        consumer = broker.open_consumer(["default"], name)
        try:
            names = drain(consumer)
        finally:
            consumer.close()
        with lock:
            claimed.extend(names)

    threads = [threading.Thread(target=consume, args=(f"racer{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not any(thread.is_alive() for thread in threads)
    assert Counter(claimed).most_common(1)[0][1] == 1
    assert set(claimed) == published


def test_claims_come_in_priority_order_then_first_in_first_out(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    t = time.time()
    low_old = publish(broker, make_message(priority=0, created=t))[0]
    high_new = publish(broker, make_message(priority=9, created=t + 2))[0]
    high_old = publish(broker, make_message(priority=9, created=t + 1))[0]
    low_new = publish(broker, make_message(priority=0, created=t + 3))[0]

    assert drain(open_consumer()) == [m.name for m in (high_old, high_new, low_old, low_new)]


def test_a_blocked_claim_wakes_when_a_message_arrives(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    consumer = open_consumer()
    timer = threading.Timer(0.2, publish, args=(broker,))
    timer.start()
    started = time.monotonic()

    delivery = consumer.claim(timeout=5)

    timer.join()
    assert delivery is not None
    assert time.monotonic() - started < 2


def test_wake_makes_a_blocked_claim_return_early(broker: Any, open_consumer: OpenConsumer) -> None:
    consumer = open_consumer()
    timer = threading.Timer(0.2, consumer.wake)
    timer.start()
    started = time.monotonic()

    assert consumer.claim(timeout=10) is None

    timer.join()
    assert time.monotonic() - started < 5


# -- scheduled messages ----------------------------------------------------------


def test_a_message_with_an_eta_is_claimable_only_once_promoted_when_due(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    eta = time.time() + 100
    message, _ = publish(broker, make_message(eta=eta))
    consumer = open_consumer()

    assert consumer.claim(timeout=0.1) is None
    assert broker.promote_due(eta - 1) == 0
    assert counts(broker)[:2] == (0, 1)
    assert broker.promote_due(eta + 1) == 1

    delivery = consumer.claim(timeout=1)
    assert delivery is not None and delivery.name == message.name


# -- settling --------------------------------------------------------------------


def claim_one(broker: Any, open_consumer: OpenConsumer, name: str = "c1") -> tuple[Message, Any]:
    message, _ = publish(broker)
    delivery = open_consumer(name).claim(timeout=1)
    assert delivery is not None
    return message, delivery


def test_ack_forgets_the_message(broker: Any, open_consumer: OpenConsumer) -> None:
    message, delivery = claim_one(broker, open_consumer)

    broker.ack(delivery)

    assert counts(broker) == (0, 0, 0, 0)
    assert broker.find(message.id) is None


def test_retry_later_moves_the_message_to_scheduled_with_the_new_attempt(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    message, delivery = claim_one(broker, open_consumer)
    again = message.replace(retries=1, eta=time.time() + 100)

    broker.retry_later(delivery, again, encode(again, b"", KEY))

    assert counts(broker) == (0, 1, 0, 0)
    assert broker.find(message.id) == "scheduled"


def test_retry_failing_after_the_new_copy_leaves_a_duplicate_never_a_loss(
    broker: Any, open_consumer: OpenConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    message, delivery = claim_one(broker, open_consumer)
    again = message.replace(retries=1, eta=time.time() + 100)

    def failing_ack(delivery: Any) -> None:
        raise OSError("injected: the old copy cannot be removed")

    monkeypatch.setattr(broker, "ack", failing_ack)
    with pytest.raises(OSError, match="injected"):
        broker.retry_later(delivery, again, encode(again, b"", KEY))

    assert counts(broker) == (0, 1, 1, 0)


def test_requeue_puts_a_claimed_message_back_unchanged(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    message, delivery = claim_one(broker, open_consumer)

    broker.requeue(delivery)

    again = open_consumer("c2").claim(timeout=1)
    assert again is not None and (again.name, again.data) == (message.name, delivery.data)


def test_a_dead_letter_keeps_its_record_and_bytes_until_removed(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    message, delivery = claim_one(broker, open_consumer)

    broker.dead_letter(delivery, {"id": message.id, "reason": "failed"})

    [letter] = broker.dead_letters()
    assert (letter.id, letter.record["reason"]) == (message.id, "failed")
    assert broker.dead_message(letter) == delivery.data
    assert broker.find(message.id) == "dead"
    broker.remove_dead(letter)
    assert broker.dead_letters() == []
    assert broker.find(message.id) is None


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def test_dead_letters_past_their_time_expire_and_later_ones_stay(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    now = time.time()
    for died, consumer in ((now - 8 * DAY, "c1"), (now - 6 * DAY, "c2"), (None, "c3")):
        _, delivery = claim_one(broker, open_consumer, consumer)
        record = {"reason": "failed", "died_at": died and iso(died), "kept": consumer}
        broker.dead_letter(delivery, record)

    removed = sum(expire_dead_letters(broker, before=now - 7 * DAY))

    assert removed == 1
    assert sorted(letter.record["kept"] for letter in broker.dead_letters()) == ["c2", "c3"]
    assert sum(expire_dead_letters(broker, before=0.0)) == 0  # 0: kept until purged
    assert counts(broker) == (0, 0, 0, 2)


# -- dead consumers ---------------------------------------------------------------


def test_a_closed_consumers_claims_are_recovered_once_then_it_is_forgotten(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    message, _ = publish(broker)
    gone = broker.open_consumer(["default"], "gone")
    assert gone.claim(timeout=1) is not None
    gone.close()  # without acking: its claim stays, and it counts as dead

    assert broker.dead_consumers() == ["gone"]
    assert broker.has_consumer("gone")  # dead, but registered until forgotten
    recovered = broker.recover("gone")
    assert recovered is not None and [d.name for d in recovered] == [message.name]
    assert broker.recover("gone") is None

    for delivery in recovered:
        broker.requeue(delivery)
    broker.forget_consumer("gone")
    assert broker.dead_consumers() == []
    assert not broker.has_consumer("gone")
    assert drain(open_consumer("c2")) == [message.name]


def test_a_live_consumer_is_never_dead_nor_recovered(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    claim_one(broker, open_consumer, "alive")

    assert broker.dead_consumers() == []
    assert broker.has_consumer("alive")
    assert broker.recover("alive") is None
    assert counts(broker)[2] == 1


# -- inspection ---------------------------------------------------------------------


def test_counts_report_each_state(broker: Any, open_consumer: OpenConsumer) -> None:
    for _ in range(3):
        publish(broker)
    publish(broker, make_message(eta=time.time() + 100))
    consumer = open_consumer()
    broker.ack(consumer.claim(timeout=1))
    broker.dead_letter(consumer.claim(timeout=1), {"reason": "failed"})

    assert counts(broker) == (1, 1, 0, 1)
    consumer.claim(timeout=1)
    assert counts(broker) == (0, 1, 1, 1)


def test_purge_drops_ready_and_scheduled_but_not_claimed_or_dead(
    broker: Any, open_consumer: OpenConsumer
) -> None:
    claim_one(broker, open_consumer)
    _, dead = claim_one(broker, open_consumer, "c2")
    broker.dead_letter(dead, {"reason": "failed"})
    publish(broker)
    publish(broker, make_message(eta=time.time() + 100))

    assert broker.purge("default") == 2
    assert counts(broker) == (0, 0, 1, 1)


def test_find_names_the_state_holding_a_task(broker: Any, open_consumer: OpenConsumer) -> None:
    ready, _ = publish(broker, make_message(created=time.time() + 10))
    scheduled, _ = publish(broker, make_message(eta=time.time() + 100))
    claimed, _ = claim_one(broker, open_consumer)

    assert [broker.find(m.id) for m in (ready, scheduled, claimed)] == [
        "ready",
        "scheduled",
        "claimed",
    ]
    assert broker.find(new_id()) is None


# -- results -------------------------------------------------------------------------


def test_a_worker_name_held_by_a_live_worker_is_refused_until_it_unregisters(
    broker: Any,
) -> None:
    broker.register_worker("w1")

    with pytest.raises(BrokerError, match="a live worker named 'w1' is registered"):
        broker.register_worker("w1")
    broker.register_worker("w2")
    broker.unregister_worker("w1")
    broker.register_worker("w1")
    for name in ("w1", "w2"):
        broker.unregister_worker(name)


def test_a_stored_result_is_loaded_until_deleted(broker: Any) -> None:
    task_id = new_id()
    broker.store_result(task_id, b"signed result")

    assert broker.load_result(task_id) == b"signed result"
    broker.delete_result(task_id)
    assert broker.load_result(task_id) is None


def test_results_stored_before_the_cutoff_expire_and_later_ones_stay(broker: Any) -> None:
    old, new = new_id(), new_id()
    broker.store_result(old, b"old")
    time.sleep(0.05)
    cutoff = time.time()
    time.sleep(0.05)
    broker.store_result(new, b"new")

    assert broker.expire_results(cutoff) == 1
    assert (broker.load_result(old), broker.load_result(new)) == (None, b"new")


# -- chords (canvas.chord): member results and the one member that completes it --


def member(index: int, value: str = "") -> bytes:
    """A signed result record, as a worker adds it to a chord."""
    return encode(Message(id=f"member-{index}", task="t", headers={"v": value}), b"", KEY)


def test_a_chord_is_completed_by_one_member_and_keeps_each_first_result(broker: Any) -> None:
    chord = new_id()
    assert broker.chord_add(chord, 0, 3, member(0)) is False
    assert broker.chord_add(chord, 2, 3, member(2)) is False
    assert broker.chord_add(chord, 1, 3, member(1)) is True

    # A re-run member adds its index again: its first result stays, and only
    # the completing member hears True again (to publish a callback its crash lost).
    assert broker.chord_add(chord, 0, 3, member(0, "rerun")) is False
    assert broker.chord_add(chord, 1, 3, member(1, "rerun")) is True
    assert broker.chord_results(chord) == [member(0), member(1), member(2)]


def test_a_re_run_member_before_completion_does_not_complete_the_chord(broker: Any) -> None:
    chord = new_id()
    assert broker.chord_add(chord, 0, 2, member(0)) is False
    assert broker.chord_add(chord, 0, 2, member(0, "rerun")) is False
    assert broker.chord_results(chord) == [member(0)]
    assert broker.chord_add(chord, 1, 2, member(1)) is True


def test_members_finishing_at_once_complete_the_chord_exactly_once(broker: Any) -> None:
    total = 8
    for _ in range(5):
        chord = new_id()
        start = threading.Barrier(total)
        completed: list[int] = []

        def add(index: int, chord: str, start: threading.Barrier, completed: list[int]) -> None:
            start.wait(timeout=10)
            if broker.chord_add(chord, index, total, member(index)):
                completed.append(index)

        threads = [
            threading.Thread(target=add, args=(i, chord, start, completed)) for i in range(total)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(completed) == 1, completed
        assert broker.chord_results(chord) == [member(i) for i in range(total)]


def test_a_chord_member_index_outside_the_chord_is_refused(broker: Any) -> None:
    with pytest.raises(BrokerError, match=r"index 3 is outside 0\.\.2"):
        broker.chord_add(new_id(), 3, 3, member(3))
    with pytest.raises(BrokerError, match="index -1"):
        broker.chord_add(new_id(), -1, 3, member(0))


# -- backup, restore and migration (Transfer) ----------------------------------------


def _held(broker: Any) -> tuple[Message, Message, Message, Message]:
    """A broker holding one message in each state: ready, scheduled, claimed, dead."""
    ready = publish(broker)[0]
    scheduled = publish(broker, make_message(eta=time.time() + DAY))[0]
    consumer = broker.open_consumer(["default"], "exporting")
    claimed = publish(broker, make_message(created=1.0))[0]  # first in delivery order
    delivery = consumer.claim(timeout=1)
    assert delivery is not None and delivery.name == claimed.name
    dead = publish(broker, make_message(created=2.0))[0]
    dying = consumer.claim(timeout=1)
    assert dying is not None and dying.name == dead.name
    broker.dead_letter(dying, {"id": dead.id, "reason": "exception"})
    return ready, scheduled, claimed, dead


def export_all(broker: Any, queues: list[str] | None = None) -> list[Any]:
    """``export_messages`` with a caller that remembers the ids it took, as the contract asks."""
    seen: set[str] = set()
    taken = []
    for stored in broker.export_messages(queues, seen.__contains__):
        message_id = decode(stored.data, KEY)[0].id
        assert message_id not in seen
        seen.add(message_id)
        taken.append(stored)
    return taken


def test_export_messages_yields_every_message_once_in_its_state_with_its_bytes(
    broker: Any,
) -> None:
    ready, scheduled, claimed, dead = _held(broker)
    seen: set[str] = set()

    exported = {}
    for stored in broker.export_messages(None, seen.__contains__):
        message = decode(stored.data, KEY)[0]
        assert message.id not in exported
        exported[message.id] = stored
        seen.add(message.id)

    states = {i: s.state for i, s in exported.items()}
    assert states == {
        ready.id: "ready",
        scheduled.id: "scheduled",
        claimed.id: "claimed",
        dead.id: "dead",
    }
    assert exported[dead.id].record == {"id": dead.id, "reason": "exception"}
    assert all(s.queue == "default" for s in exported.values())


def test_export_messages_reads_no_message_whose_id_the_caller_has_seen(broker: Any) -> None:
    ready, scheduled, claimed, dead = _held(broker)
    skip = {ready.id, dead.id}

    ids = {decode(s.data, KEY)[0].id for s in broker.export_messages(None, skip.__contains__)}

    assert ids == {scheduled.id, claimed.id}


def test_export_messages_of_one_queue_leaves_the_others_out(broker: Any) -> None:
    publish(broker)
    other = publish(broker, make_message(queue="other"))[0]

    stored = export_all(broker, ["other"])

    assert [decode(s.data, KEY)[0].id for s in stored] == [other.id]


def test_message_ids_names_every_message_in_every_state(broker: Any) -> None:
    held = _held(broker)

    assert sorted(broker.message_ids()) == sorted(m.id for m in held)


def test_restore_dead_puts_a_dead_letter_back_with_its_record(broker: Any) -> None:
    message = make_message(queue="restored")
    data = encode(message, dump_call(message.task, (), {}), KEY)

    broker.restore_dead("restored", message.name, data, {"id": message.id, "reason": "poison"})

    (letter,) = broker.dead_letters("restored")
    assert (letter.id, letter.record["reason"]) == (message.id, "poison")
    assert broker.dead_message(letter) == data
    assert counts(broker, "restored") == (0, 0, 0, 1)


def test_discard_removes_an_exported_message_from_each_state(broker: Any) -> None:
    _held(broker)

    for stored in export_all(broker):
        broker.discard(stored)
        broker.discard(stored)  # gone already: not an error

    assert counts(broker) == (0, 0, 0, 0)
    assert list(broker.message_ids()) == []


def test_export_while_a_consumer_claims_yields_every_message_exactly_once(broker: Any) -> None:
    from taskq.transfer import Summary, exported

    ids = {publish(broker)[0].id for _ in range(300)}
    started = threading.Event()

    def claim_all() -> None:
        # Opened by the thread that uses it, as a worker does: a Redis consumer's
        # connection belongs to its thread.
        consumer = broker.open_consumer(["default"], "racer")
        started.set()
        while consumer.claim(timeout=0.2) is not None:
            pass

    racer = threading.Thread(target=claim_all)
    racer.start()
    started.wait(5)
    try:
        listed = [header["id"] for _, header, _ in exported(broker, KEY, None, Summary())]
    finally:
        racer.join(30)
    # Claimed, never acked: every message is in the broker throughout.
    assert sorted(listed) == sorted(ids)


# -- events --------------------------------------------------------------------


def lines(*events: dict[str, Any]) -> list[str]:
    """Events as a recorder gives them to a broker: JSON objects, one a line."""
    return [json.dumps(e) for e in events]


def test_events_are_read_in_order_and_a_cursor_reads_on_after_them(broker: Any) -> None:
    broker.append_events(lines({"event": "published", "n": 1}, {"event": "started", "n": 2}))
    first, cursor = broker.read_events()
    broker.append_events(lines({"event": "succeeded", "n": 3}))

    more, cursor2 = broker.read_events(cursor)

    assert [e["n"] for e in first] == [1, 2]
    assert more == [{"event": "succeeded", "n": 3}]
    assert broker.read_events(cursor2) == ([], cursor2)


def test_events_are_read_at_most_limit_at_a_time(broker: Any) -> None:
    broker.append_events(lines(*({"n": n} for n in range(5))))

    page, cursor = broker.read_events(limit=3)
    rest, _ = broker.read_events(cursor, limit=3)

    assert [e["n"] for e in page] == [0, 1, 2]
    assert [e["n"] for e in rest] == [3, 4]


def test_pages_of_events_cross_batches_and_a_cursor_waits_for_more(broker: Any) -> None:
    broker.append_events(lines(*({"n": n} for n in range(5))))
    broker.append_events(lines(*({"n": n} for n in range(5, 7))))

    pages, cursor = [], ""
    for _ in range(3):
        page, cursor = broker.read_events(cursor, limit=3)
        pages.append([e["n"] for e in page])
    assert pages == [[0, 1, 2], [3, 4, 5], [6]]

    assert broker.read_events(cursor, limit=3)[0] == []
    broker.append_events(lines({"n": 7}))
    assert [e["n"] for e in broker.read_events(cursor, limit=3)[0]] == [7]


def test_a_run_stored_on_one_line_is_read_as_two_events_never_split(broker: Any) -> None:
    run = {"event": "succeeded", "ts_us": 2_500_000, "runtime_us": 250_000, "started_us": 2_000_000}
    broker.append_events(lines({"n": 0}, run | {"n": 1}, {"n": 2}))
    broker.append_events(lines(run | {"n": 3}))

    pages, cursors = [], [""]
    for _ in range(5):
        page, cursor = broker.read_events(cursors[-1], limit=2)
        pages.append([(e.get("event"), e["n"]) for e in page])
        cursors.append(cursor)

    run1, run3 = [("started", 1), ("succeeded", 1)], [("started", 3), ("succeeded", 3)]
    assert pages == [[(None, 0)], run1, [(None, 2)], run3, []]
    # A page of one holds a run whole: the events of a line are never split.
    assert len(broker.read_events(cursors[1], limit=1)[0]) == 2
    started = {"event": "started", "ts": 2.0, "time_limit": None, "n": 1}
    assert broker.read_events(limit=10)[0][1] == started


def test_an_unknown_event_cursor_reads_from_the_oldest_kept(broker: Any) -> None:
    broker.append_events(lines({"n": 1}))

    events, _ = broker.read_events("not-a-cursor")

    assert events == [{"n": 1}]


def test_event_batches_of_racing_writers_stay_whole(broker: Any) -> None:
    def write(writer: int) -> None:
        for batch in range(20):
            broker.append_events(lines(*({"w": writer, "b": batch, "i": i} for i in range(10))))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    events, cursor = broker.read_events(limit=10_000)
    assert len(events) == 4 * 20 * 10
    for writer in range(4):  # each writer's events in the order it wrote them
        mine = [(e["b"], e["i"]) for e in events if e["w"] == writer]
        assert mine == sorted(mine)
    assert broker.read_events(cursor) == ([], cursor)


# -- the periodic schedule: lease and ticks ------------------------------------------


def test_a_lease_has_one_holder_who_renews_it_until_released(broker: Any) -> None:
    assert broker.acquire_lease("schedule", "a", 5.0)
    assert not broker.acquire_lease("schedule", "b", 5.0)
    assert broker.acquire_lease("schedule", "a", 5.0)  # a renewal
    assert broker.acquire_lease("other", "b", 5.0)  # leases are by name
    broker.release_lease("schedule", "b")  # not b's: nothing happens
    assert not broker.acquire_lease("schedule", "b", 5.0)
    broker.release_lease("schedule", "a")
    assert broker.acquire_lease("schedule", "b", 5.0)
    assert not broker.acquire_lease("schedule", "a", 5.0)
    broker.release_lease("schedule", "b")
    broker.release_lease("other", "b")


# The file broker's lease is a flock: it lapses with its holder's process, not a TTL.
@pytest.mark.parametrize("broker", ["memory", "redis"], indirect=True)
def test_a_lease_not_renewed_lapses_after_its_ttl(broker: Any) -> None:
    assert broker.acquire_lease("schedule", "a", 0.2)
    assert not broker.acquire_lease("schedule", "b", 0.2)
    deadline = time.monotonic() + 5
    while not broker.acquire_lease("schedule", "b", 5.0):
        assert time.monotonic() < deadline, "the lease never lapsed"
        time.sleep(0.05)
    assert not broker.acquire_lease("schedule", "a", 5.0)
    broker.release_lease("schedule", "b")


def _same_broker(broker: Any) -> Any:
    """Another handle on ``broker``'s store, for another process."""
    if type(broker).__name__ == "FileBroker":
        return type(broker)(broker.root)
    return type(broker)(broker.url, prefix=broker.prefix)


# A memory broker lives in one process: its holders cannot be killed apart.
@pytest.mark.parametrize("broker", ["file", "redis"], indirect=True)
def test_a_lease_passes_on_when_its_holder_is_sigkilled(broker: Any) -> None:
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder: takes the lease, says so, then waits to be killed
        try:
            held = _same_broker(broker).acquire_lease("schedule", "doomed", 1.0)
            os.write(ready_w, b"1" if held else b"0")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"1"
        assert not broker.acquire_lease("schedule", "heir", 1.0)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
    deadline = time.monotonic() + 10  # file: at once; TTL brokers: after the 1 s TTL
    while not broker.acquire_lease("schedule", "heir", 5.0):
        assert time.monotonic() < deadline, "the dead holder's lease never passed on"
        time.sleep(0.05)
    broker.release_lease("schedule", "heir")


def test_a_tick_is_recorded_only_forward(broker: Any) -> None:
    assert broker.last_tick("tasks.beat") is None
    assert broker.record_tick("tasks.beat", 1000.0)
    assert not broker.record_tick("tasks.beat", 1000.0)  # the same tick twice: once
    assert not broker.record_tick("tasks.beat", 940.0)
    assert broker.last_tick("tasks.beat") == 1000.0
    assert broker.record_tick("tasks.beat", 1060.5)
    assert broker.last_tick("tasks.beat") == 1060.5
    assert broker.last_tick("tasks.other") is None
