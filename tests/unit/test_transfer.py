"""Backup lines and the export/import/migrate flows, on memory and file brokers."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import sys
import time
from pathlib import Path

import pytest

from taskq import idset, transfer, transfer_check
from taskq.backup_lines import from_line, to_line
from taskq.brokers.base import Delivery
from taskq.brokers.memory import MemoryBroker
from taskq.errors import MessageError, TaskqError
from taskq.idset import IdSet
from taskq.keys import Keyring
from taskq.message import Message, decode, dump_call, encode, envelope, new_id
from taskq.progress import progress

KEY = Keyring(b"s" * 32)
OTHER = Keyring(b"o" * 32)


def put(broker: MemoryBroker, *args: object, key: Keyring = KEY, **fields: object) -> Message:
    message = Message(id=new_id(), task="t.add", created=time.time(), **fields)  # type: ignore[arg-type]
    broker.publish(message, encode(message, dump_call("t.add", args, {"n": 1}), key))
    return message


def claim(broker: MemoryBroker, consumer: str = "gone") -> Delivery:
    delivery = broker.open_consumer(["default"], consumer).claim(timeout=1)
    assert delivery is not None
    return delivery


def exported(broker: MemoryBroker) -> str:
    out = io.StringIO()
    transfer.export(broker, KEY, out)
    return out.getvalue()


def test_a_line_shows_json_arguments_and_keeps_the_exact_bytes() -> None:
    message = Message(id="m1", task="t.add", created=5.0, retries=2, eta=9.0, max_retries=7)
    payload = dump_call("t.add", (1, "two"), {"n": [3]})

    line = from_line(to_line(envelope(message), payload, "scheduled", None, KEY), KEY)
    shown = json.loads(to_line(envelope(message), payload, "scheduled", None, KEY))

    assert shown["payload"]["args"] == [1, "two"] and shown["payload"]["kwargs"] == {"n": [3]}
    assert shown["headers"] == {
        "timestamp": 5.0,
        "priority": 0,
        "eta": 9.0,
        "expires": None,
        "retries": 2,
        "queue": "default",
        "state": "scheduled",
    }
    assert (line.message, line.payload, line.state) == (message, payload, "scheduled")


def test_arguments_that_are_not_plain_json_show_as_null_and_load_no_code() -> None:
    message = Message(id="m1", task="t", created=1.0)
    for args in ((Path("/x"),), ((1, 2),), (lambda: 1,)):
        shown = json.loads(to_line(envelope(message), dump_call("t", args, {}), "ready", None, KEY))
        assert shown["payload"]["args"] is None and shown["payload"]["data"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t.replace('"retries":0', '"retries":9'), "signature does not match"),
        (lambda t: t.replace('"args":[1]', '"args":[2]'), "signature does not match"),
        (lambda t: t.rpartition(',"sig":')[0] + "}", "no signature"),
        (lambda t: json.dumps(json.loads(t)), "re-formatted"),
        (lambda t: t[:-66] + "zz" * 32 + '"}', "not hex"),
    ],
)
def test_a_changed_line_is_refused_saying_why(change: object, reason: str) -> None:
    message = Message(id="m", task="t", created=1.0)
    text = to_line(envelope(message), dump_call("t", (1,), {}), "ready", None, KEY)
    assert from_line(text, KEY).message == message

    with pytest.raises(MessageError, match=reason):
        from_line(change(text), KEY)  # type: ignore[operator]


def test_a_line_signed_with_another_key_is_refused() -> None:
    text = to_line(envelope(Message(id="m", task="t", created=1.0)), b"p", "ready", None, OTHER)

    with pytest.raises(MessageError, match="another key"):
        from_line(text, KEY)


def test_import_keeps_ids_order_eta_and_retries_claimed_come_back_ready_dead_stay_dead() -> None:
    source, target = MemoryBroker("src"), MemoryBroker("dst")
    first, second = put(source, 1, priority=5), put(source, 2, retries=2)
    later = put(source, 3, eta=time.time() + 3600)
    held = put(source, 4)
    dead = put(source, 5)
    claimed = [claim(source, f"c{n}") for n in range(4)]  # in delivery order
    assert [d.name for d in claimed] == [m.name for m in (first, second, held, dead)]
    source.dead_letter(claimed[3], {"id": dead.id, "reason": "poison"})
    last = put(source, 6)
    backup = exported(source)

    summary = transfer.import_(target, OTHER, io.StringIO(backup), source_key=KEY)

    assert summary.states == {"ready": 1, "scheduled": 1, "claimed": 3, "dead": 1}
    counts = target.counts()["default"]
    assert (counts.ready, counts.scheduled, counts.dead) == (4, 1, 1)
    consumer = target.open_consumer(["default"], "after")
    order = [decode(d.data, OTHER)[0] for d in iter(lambda: consumer.claim(0.01), None)]
    assert [m.id for m in order] == [first.id, second.id, held.id, last.id]  # re-signed
    assert order[1].retries == 2
    assert target.find(later.id) == "scheduled"
    (letter,) = target.dead_letters()
    assert (letter.id, letter.record["reason"]) == (dead.id, "poison")
    assert decode(target.dead_message(letter), OTHER)[0].id == dead.id


def test_a_second_import_adds_nothing_and_counts_what_it_skipped() -> None:
    source, target = MemoryBroker("src2"), MemoryBroker("dst2")
    for n in range(4):
        put(source, n)
    backup = exported(source)
    transfer.import_(target, KEY, io.StringIO(backup))

    again = transfer.import_(target, KEY, io.StringIO(backup + backup))

    assert (again.total, again.skipped) == (0, 8)
    assert target.counts()["default"].ready == 4


def test_a_bad_line_anywhere_names_its_number_and_imports_nothing() -> None:
    source, target = MemoryBroker("src3"), MemoryBroker("dst3")
    for n in range(3):
        put(source, n)
    rows = exported(source).splitlines()
    rows.insert(1, "")  # a blank line is allowed
    rows[3] = rows[3].replace('"retries":0', '"retries":5')

    with pytest.raises(TaskqError, match=r"backup.jsonl, line 4: signature does not match"):
        transfer.import_(target, KEY, io.StringIO("\n".join(rows)), where="backup.jsonl")

    assert list(target.message_ids()) == []


@pytest.fixture
def checked_in_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of a few hundred lines checked by a pool of processes, 50 lines a chunk."""
    monkeypatch.setattr(transfer_check, "_CHUNK", 50)
    monkeypatch.setattr(transfer_check, "usable_cores", lambda: 2)


@pytest.mark.usefixtures("checked_in_processes")
def test_a_long_file_checked_in_processes_is_imported_whole_and_in_order() -> None:
    source, target = MemoryBroker("src7"), MemoryBroker("dst7")
    ids = [put(source, n).id for n in range(420)]
    backup = exported(source)

    summary = transfer.import_(target, OTHER, io.StringIO(backup + backup), source_key=KEY)

    assert (summary.states["ready"], summary.skipped) == (420, 420)
    consumer = target.open_consumer(["default"], "after")
    got = [decode(d.data, OTHER)[0].id for d in iter(lambda: consumer.claim(0.01), None)]
    assert got == ids


@pytest.mark.usefixtures("checked_in_processes")
def test_a_tampered_line_deep_in_a_long_file_is_named_and_nothing_is_imported() -> None:
    source, target = MemoryBroker("src8"), MemoryBroker("dst8")
    for n in range(420):
        put(source, n)
    rows = exported(source).splitlines()
    rows[336] = rows[336].replace('"retries":0', '"retries":9')

    with pytest.raises(TaskqError, match=r"backup.jsonl, line 337: signature does not match"):
        transfer.import_(target, KEY, io.StringIO("\n".join(rows)), where="backup.jsonl")

    assert list(target.message_ids()) == []


def test_the_import_publishes_what_was_verified_even_if_the_file_changes_after() -> None:
    source, target = MemoryBroker("src5"), MemoryBroker("dst5")
    ids = [put(source, n).id for n in range(3)]
    backup = io.StringIO(exported(source))
    verified = transfer_check.verify(backup, KEY, OTHER, "backup.jsonl")
    backup.seek(0)
    backup.truncate()
    backup.write("changed after the check\n")

    with verified:
        summary = transfer.import_(target, OTHER, verified)

    assert summary.states["ready"] == 3
    consumer = target.open_consumer(["default"], "after")
    got = [decode(d.data, OTHER)[0].id for d in iter(lambda: consumer.claim(0.01), None)]
    assert got == ids  # signed with the destination's key, in order


def test_a_line_that_is_no_export_line_is_refused_with_its_line_number() -> None:
    with pytest.raises(TaskqError, match=r"<stdin>, line 1: no signature"):
        transfer.import_(MemoryBroker("dst4"), KEY, io.StringIO("{nope\n"))


def test_a_signed_line_that_is_not_json_is_refused() -> None:
    mac = hmac.digest(KEY.current, b"{nope}", hashlib.sha256).hex()

    with pytest.raises(MessageError, match="not JSON"):
        from_line('{nope,"sig":"' + mac + '"}', KEY)


def test_export_leaves_out_dead_letters_its_key_does_not_verify() -> None:
    broker = MemoryBroker("src5")
    forged = put(broker, 1, key=OTHER)
    broker.dead_letter(claim(broker), {"id": forged.id, "reason": "bad-signature"})
    put(broker, 2)
    out = io.StringIO()

    summary = transfer.export(broker, KEY, out)

    assert (summary.total, summary.unverified) == (1, 1)
    assert "1 dead message(s) left out" in summary.describe("exported")


def test_migrate_moves_everything_and_a_rerun_after_an_interruption_adds_nothing() -> None:
    source, target = MemoryBroker("src6"), MemoryBroker("dst6")
    for n in range(1200):  # more than a batch
        put(source, n)
    backup = exported(source)

    summary = transfer.migrate(source, KEY, target, OTHER)

    assert summary.states["ready"] == 1200
    assert list(source.message_ids()) == []
    transfer.import_(source, KEY, io.StringIO(backup))  # as if removal had not happened
    rerun = transfer.migrate(source, KEY, target, OTHER)
    assert (rerun.total, rerun.skipped) == (0, 1200)
    assert list(source.message_ids()) == []
    assert target.counts()["default"].ready == 1200


def test_migrate_refuses_while_a_worker_is_live_on_the_source() -> None:
    source = MemoryBroker("src7")
    source.register_worker("w1")
    source.publish_worker_state("w1", {"name": "w1"})

    with pytest.raises(TaskqError, match=r"workers are live on the source broker \(w1\)"):
        transfer.migrate(source, KEY, MemoryBroker("dst7"), KEY)


def test_id_set_remembers_ids_in_a_file_it_deletes(tmp_path: Path) -> None:
    with IdSet() as ids:
        assert ids.add("a") and not ids.add("a")
        ids.update(["b", "c"])
        assert "b" in ids and "z" not in ids
        assert ids.add("z") and "z" in ids and not ids.add("z")  # asked of, then added
        assert "y" not in ids
        ids.update(["y"])
        assert not ids.add("y")  # found absent, then added by update: not new any more
        path = Path(ids._path)
        assert path.exists()
    assert not path.exists()


@pytest.mark.parametrize("bloom_mask", [idset._BLOOM_MASK, 0], ids=["bloom", "all-collide"])
def test_id_set_answers_alike_whatever_its_filter_lets_through(
    monkeypatch: pytest.MonkeyPatch, bloom_mask: int
) -> None:
    # A mask of 0 puts every id on one bit: the filter says "maybe" of all of them,
    # so every answer comes from the file (and the batch not yet written to it).
    monkeypatch.setattr(idset, "_BLOOM_MASK", bloom_mask)
    monkeypatch.setattr(IdSet, "_FLUSH_AT", 10)
    with IdSet() as ids:
        ids.update(f"held-{i}" for i in range(25))
        new = [ids.add(f"met-{i}") for i in range(25)]  # some flushed to the file, some not
        again = [ids.add(f"met-{i}") for i in range(25)] + [ids.add(f"held-{i}") for i in range(25)]

        assert all(new) and not any(again)
        assert all(f"met-{i}" in ids and f"held-{i}" in ids for i in range(25))
        assert not any(f"other-{i}" in ids for i in range(100))


def test_progress_draws_a_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress("export", 10) as tick:
        tick(10)
    assert "export" in terminal.getvalue() and "/10" in terminal.getvalue()

    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with progress("export", 10) as tick:
        tick(10)
    assert pipe.getvalue() == ""
