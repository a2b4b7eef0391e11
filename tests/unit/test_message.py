"""Tests for taskq.message: the envelope, its signed wire format and its file names."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import socket
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskq.brokers.names import eta_of, id_of, ready_name_of, scheduled_name
from taskq.errors import BadSignature, MessageError, SerializationError
from taskq.keys import Keyring
from taskq.message import (
    MAGIC,
    Batch,
    Message,
    decode,
    dump_call,
    encode,
    load_value,
    new_id,
    seal,
    unseal,
    validate_queue,
    validate_task_id,
)

KEY = Keyring(b"k" * 32)
OTHER_KEY = Keyring(b"x" * 32)


def full_message(**changes: Any) -> Message:
    """A message with every field away from its default, so a lost field shows."""
    message = Message(
        id=new_id(),
        task="app.tasks.resize",
        queue="images",
        priority=7,
        created=1_700_000_000.123456,
        eta=1_700_000_100.5,
        expires=1_700_000_900.0,
        retries=2,
        max_retries=5,
        retry_backoff=2.5,
        retry_backoff_max=30.0,
        retry_jitter=False,
        time_limit=10.0,
        soft_time_limit=8.0,
        ignore_result=True,
        attempts=({"at": "2024-01-01T00:00:00", "outcome": "failed", "error": "E: x"},),
        headers={"trace": "abc", "n": 1},
    )
    return message.replace(**changes)


# -- the envelope and its wire format ---------------------------------------------


def test_encode_decode_round_trips_every_field_and_the_payload() -> None:
    message = full_message()
    payload = dump_call(message.task, ("cat.png",), {"width": 128})

    decoded, raw = decode(encode(message, payload, KEY), KEY)

    assert decoded == message
    assert raw == payload
    assert load_value(raw) == (("cat.png",), {"width": 128})


def test_header_leaves_out_fields_at_their_default_and_decode_restores_them() -> None:
    message = Message(id=new_id(), task="t.plain", created=1.5, max_retries=0)
    data = encode(message, b"p", KEY)
    (size,) = struct.unpack(">I", data[39:43])

    assert json.loads(data[43 : 43 + size]) == {
        "id": message.id,
        "task": "t.plain",
        "created": 1.5,
        "max_retries": 0,
    }
    decoded, _ = decode(data, KEY)
    assert decoded == message
    assert decoded.headers == {} and decoded.attempts == () and decoded.retry_jitter is True


def test_wire_format_is_magic_length_mac_then_header_and_payload() -> None:
    message = full_message()
    data = encode(message, b"pPAYLOAD", KEY)

    assert data.startswith(MAGIC)
    (body_length,) = struct.unpack(">I", data[3:7])
    assert body_length == len(data) - 39
    (size,) = struct.unpack(">I", data[39:43])
    assert json.loads(data[43 : 43 + size])["id"] == message.id
    assert data[43 + size :] == b"pPAYLOAD"


def test_unknown_header_fields_from_a_newer_sender_are_ignored() -> None:
    message = full_message()
    header = {**dataclasses.asdict(message), "added_in_v2": True}

    decoded, _ = decode(seal(header, b"", KEY), KEY)

    assert decoded == message


def test_header_missing_a_required_field_is_a_message_error() -> None:
    header = dataclasses.asdict(full_message())
    del header["task"]

    with pytest.raises(MessageError, match="missing"):
        decode(seal(header, b"", KEY), KEY)


# -- file names: the sort order is the delivery order -----------------------------

names = st.text(alphabet="abcdef0123456789_.", min_size=1, max_size=12).filter(
    lambda s: not s.startswith(".")
)
envelopes = st.builds(
    lambda priority, ms, task_id: Message(
        id=task_id, task="t", priority=priority, created=ms / 1000
    ),
    priority=st.integers(0, 9),
    # Whole milliseconds up to the year 2096: distinct times stay distinct in µs.
    ms=st.integers(0, 4_000_000_000_000),
    task_id=names,
)


@given(st.lists(envelopes, max_size=30))
def test_names_sort_by_priority_high_first_then_enqueue_time_then_id(
    messages: list[Message],
) -> None:
    by_name = sorted(messages, key=lambda m: m.name)
    expected = sorted(messages, key=lambda m: (-m.priority, round(m.created * 1000), m.id))

    assert [m.name for m in by_name] == [m.name for m in expected]


@given(envelopes, st.integers(0, 4_000_000_000_000))
def test_scheduled_name_maps_back_to_the_ready_name_and_its_eta(
    message: Message, eta_ms: int
) -> None:
    scheduled = message.replace(eta=eta_ms / 1000)

    assert ready_name_of(scheduled_name(scheduled)) == scheduled.name
    assert eta_of(scheduled_name(scheduled)) == pytest.approx(eta_ms / 1000, abs=1e-5)
    assert id_of(scheduled.name) == message.id


@given(st.lists(st.tuples(st.integers(0, 4_000_000_000_000), envelopes), max_size=30))
def test_scheduled_names_sort_by_eta_whatever_the_priority(
    pairs: list[tuple[int, Message]],
) -> None:
    scheduled = [m.replace(eta=eta_ms / 1000) for eta_ms, m in pairs]

    etas = [eta_of(n) for n in sorted(scheduled_name(m) for m in scheduled)]

    assert etas == sorted(etas)


def test_priority_beats_age_and_age_beats_id() -> None:
    old_low = Message(id="a", task="t", priority=0, created=100.0)
    new_high = Message(id="b", task="t", priority=9, created=200.0)
    same_time_z = Message(id="z", task="t", priority=5, created=150.0)
    same_time_c = Message(id="c", task="t", priority=5, created=150.0)

    names_in_order = sorted(m.name for m in (old_low, same_time_z, new_high, same_time_c))

    assert [id_of(n) for n in names_in_order] == ["b", "c", "z", "a"]


# -- the signature is checked before anything is parsed or unpickled --------------


def test_every_byte_after_the_length_is_covered_by_the_signature() -> None:
    data = encode(full_message(), dump_call("t", (1, "two"), {"three": 3.0}), KEY)

    for index in range(len(MAGIC) + 4, len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        with pytest.raises(BadSignature):
            decode(bytes(tampered), KEY)
    for index in range(len(MAGIC), len(MAGIC) + 4):  # a changed length never passes either
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        with pytest.raises(MessageError):
            decode(bytes(tampered), KEY)


def test_a_different_key_gives_bad_signature() -> None:
    data = encode(full_message(), b"p", KEY)

    with pytest.raises(BadSignature):
        decode(data, OTHER_KEY)


@pytest.mark.parametrize(
    "data",
    [b"", b"TQ", b"TQ1", MAGIC + b"\0" * 35, b"GARBAGE" * 20, b"TQ2" + b"\0" * 100],
    ids=["empty", "half-magic", "magic-only", "shorter-than-prefix", "garbage", "other-magic"],
)
def test_garbage_or_too_short_data_is_a_message_error_not_a_bad_signature(data: bytes) -> None:
    with pytest.raises(MessageError) as caught:
        decode(data, KEY)

    assert not isinstance(caught.value, BadSignature)


def test_truncated_message_is_told_apart_from_a_forged_one() -> None:
    # The body length in the prefix tells a cut-off file (undecodable, a crash or
    # a disk problem) from a tampered one (bad signature), before the HMAC runs.
    data = encode(full_message(), dump_call("t", (1,), {}), KEY)

    for cut in (20, 39, len(data) // 2, len(data) - 1):
        with pytest.raises(MessageError, match="truncated") as caught:
            decode(data[:cut], KEY)
        assert not isinstance(caught.value, BadSignature)
    with pytest.raises(BadSignature):
        decode(data[:-1] + bytes([data[-1] ^ 1]), KEY)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (struct.pack(">I", 500) + b"{}", "past the end"),
        (struct.pack(">I", 3) + b"{{{", "not valid JSON"),
        (struct.pack(">I", 2) + b"[]", "not a JSON object"),
    ],
)
def test_signed_but_malformed_header_is_a_message_error(body: bytes, match: str) -> None:
    import hashlib
    import hmac

    mac = hmac.digest(KEY.current, body, hashlib.sha256)
    data = MAGIC + struct.pack(">I", len(body)) + mac + body

    with pytest.raises(MessageError, match=match) as caught:
        unseal(data, KEY)
    assert not isinstance(caught.value, BadSignature)


class _CreatesMarker:
    """Unpickling this creates a file: the stand-in for code an attacker runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_payload_that_would_run_code_is_never_unpickled_under_a_wrong_signature(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    evil = b"p" + pickle.dumps(_CreatesMarker(marker))
    forged = encode(full_message(), evil, OTHER_KEY)

    with pytest.raises(BadSignature):
        decode(forged, KEY)
    assert not marker.exists()

    # Control: the same payload does run code once unpickled, so the check above matters.
    _, payload = decode(encode(full_message(), evil, KEY), KEY)
    load_value(payload).close()
    assert marker.exists()


# -- payloads: pickle first, dill for what pickle cannot take ---------------------


def test_plain_arguments_use_pickle() -> None:
    payload = dump_call("t", (1, "a", [2.0]), {"k": {"x": None}})

    assert payload[:1] == b"p"
    assert load_value(payload) == ((1, "a", [2.0]), {"k": {"x": None}})


def test_lambda_argument_falls_back_to_dill_and_still_works() -> None:
    offset = 10
    payload = dump_call("t", (lambda x: x + offset,), {})

    assert payload[:1] == b"d"
    (fn,), kwargs = load_value(payload)
    assert fn(5) == 15
    assert kwargs == {}


def test_function_and_class_defined_in_a_script_are_sent_by_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pickle would send "__main__.double", which the worker's own __main__ lacks.
    script: dict[str, Any] = {"__name__": "__main__"}
    exec(
        "def double(x):\n    return 2 * x\n\n"
        "class Point:\n    def __init__(self, x):\n        self.x = x\n",
        script,
    )
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "double", script["double"], raising=False)
    monkeypatch.setattr(main, "Point", script["Point"], raising=False)
    payload = dump_call("t", (script["double"],), {"at": script["Point"](3)})
    monkeypatch.undo()  # now in the "worker": a __main__ without those names

    (fn,), kwargs = load_value(payload)

    assert payload[:1] == b"d"
    assert fn(21) == 42
    assert kwargs["at"].x == 3


def test_unknown_payload_kind_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="unknown payload kind"):
        load_value(b"z" + pickle.dumps(1))


def test_unserializable_positional_argument_is_named_with_its_task() -> None:
    generator = (i for i in range(3))

    with pytest.raises(SerializationError) as caught:
        dump_call("app.tasks.resize", ("fine", generator), {})

    text = str(caught.value)
    assert "app.tasks.resize" in text
    assert "positional argument 1" in text
    assert "generator" in text


def test_unserializable_keyword_argument_is_named_with_its_task() -> None:
    with socket.socket() as sock, pytest.raises(SerializationError) as caught:
        dump_call("app.tasks.send", (), {"ok": 1, "conn": sock})

    text = str(caught.value)
    assert "app.tasks.send" in text
    assert "'conn'" in text
    assert "socket" in text


# -- names that end up in paths ----------------------------------------------------


@pytest.mark.parametrize("queue", ["default", "images-2", "a.b_c", "Q", "x" * 64])
def test_valid_queue_names_are_accepted(queue: str) -> None:
    assert validate_queue(queue) == queue


@pytest.mark.parametrize(
    "queue", ["../x", "", ".hidden", "a/b", "-x", "x" * 65, "a b", "a\n", "/abs", "..", "é"]
)
def test_queue_names_that_could_escape_or_hide_are_rejected(queue: str) -> None:
    with pytest.raises(MessageError, match="invalid queue name"):
        validate_queue(queue)


@pytest.mark.parametrize(
    "task_id", ["abc", new_id(), "job_1.retry", "_x", "9" * 128, str(uuid.uuid4()), "a-b"]
)
def test_valid_task_ids_are_accepted(task_id: str) -> None:
    assert validate_task_id(task_id) == task_id


def test_an_id_with_dashes_survives_the_file_name() -> None:
    message = Message(id=str(uuid.uuid4()), task="t", created=1.0, eta=2.0)
    assert id_of(message.name) == message.id
    assert id_of(scheduled_name(message)) == message.id


@pytest.mark.parametrize(
    "task_id",
    ["", ".x", "-x", "../x", "a/b", "x" * 129, "a b", "..", "a\0b"],
)
def test_task_ids_that_break_file_names_are_rejected(task_id: str) -> None:
    # '/' and a leading '.' would escape or hide the file.
    with pytest.raises(MessageError, match="invalid task id"):
        validate_task_id(task_id)


def test_new_ids_are_valid_unique_and_survive_the_file_name() -> None:
    ids = {new_id() for _ in range(1000)}

    assert len(ids) == 1000
    for task_id in ids:
        validate_task_id(task_id)
        assert id_of(Message(id=task_id, task="t", created=1.0).name) == task_id


def test_message_is_frozen() -> None:
    message = full_message()

    with pytest.raises(dataclasses.FrozenInstanceError):
        message.retries = 9  # type: ignore[misc]
    assert message.replace(retries=9).retries == 9
    assert message.retries == 2


def test_new_ids_do_not_repeat_when_random_is_reseeded() -> None:
    # new_id draws from the OS, so a seeded random module (tests, forks) cannot repeat ids.
    import random

    random.seed(0)
    first = new_id()
    random.seed(0)
    assert new_id() != first
    assert len(first) == 32
    assert os.path.basename(first) == first


@pytest.mark.parametrize(
    "template",
    [
        Message(id="t", task="tasks.add", created=1.5),
        Message(
            id="t",
            task="tasks.slow",
            queue="low",
            priority=7,
            created=2.0,
            eta=3_000_000_000.25,
            expires=3_000_000_100.0,
            max_retries=0,
            time_limit=30.0,
            soft_time_limit=20.5,
            ignore_result=True,
            headers={"trace": "x"},
        ),
    ],
)
def test_a_batch_seals_what_encode_would_and_keeps_the_order_it_was_given(
    template: Message,
) -> None:
    batch = Batch(template, KEY)
    made = [batch.message() for _ in range(200)]
    payload = dump_call("tasks.add", (1, 2), {})
    for message in made:
        decoded, body = decode(batch.seal(message, payload), KEY)
        assert (
            decoded
            == message
            == dataclasses.replace(template, id=message.id, created=message.created)
        )
        assert body == payload
        assert decode(encode(message, payload, KEY), KEY)[0] == decoded
    assert len({m.id for m in made}) == 200
    created = [m.created for m in made]
    assert created == sorted(set(created))  # strictly increasing: delivered in order
    assert [m.name for m in made] == sorted(m.name for m in made)


def test_a_batch_keeps_its_order_when_the_clock_stands_still(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("taskq.message.time.time_ns", lambda: 1_733_320_000_123_456_789)
    batch = Batch(Message(id="t", task="tasks.add", created=1.0), KEY)
    names = [batch.message().name for _ in range(1000)]
    assert names == sorted(names)
    assert len({name.split("-")[1] for name in names}) == 1000


def test_a_batch_signs_with_the_current_key_only() -> None:
    batch = Batch(Message(id="t", task="tasks.add", created=1.0), KEY)
    message = batch.message()
    with pytest.raises(BadSignature):
        decode(batch.seal(message, b"p"), OTHER_KEY)
