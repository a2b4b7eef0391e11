"""Tests for taskq.keys and the file broker's key files: a lost key is never
silently replaced, and a rotation is accepted by running processes."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from taskq.brokers import file_keys
from taskq.brokers.file import FileBroker
from taskq.config import Settings
from taskq.errors import BadSignature, BrokerError, TaskqError
from taskq.keys import Keyring, keyring_for
from taskq.message import Message, decode, encode, new_id
from taskq.results import success_record


def publish(broker: FileBroker, keys: Keyring, eta: float | None = None) -> Message:
    message = Message(id=new_id(), task="t", created=time.time(), eta=eta)
    broker.publish(message, encode(message, b"p", keys))
    return message


def ready_files(broker: FileBroker) -> list[Path]:
    ready = broker.queue_dir("default") / "ready"
    return sorted(ready.iterdir())


@pytest.fixture
def broker(tmp_path: Path) -> FileBroker:
    return FileBroker(tmp_path / "broker")


@pytest.fixture
def no_wait_to_prune(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_keys, "PRUNE_AFTER", 0.0)


# -- a lost key ----------------------------------------------------------------------


def test_an_empty_broker_gets_a_private_key_on_first_use(broker: FileBroker) -> None:
    keys = broker.keys()

    secret = broker.root / "secret"
    assert secret.read_bytes() == keys.current
    assert len(keys.current) == 64
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert FileBroker(broker.root).keys().current == keys.current


@pytest.mark.parametrize("where", ["ready", "scheduled", "claimed", "dead"])
def test_a_deleted_key_is_not_remade_while_messages_are_signed_with_it(
    broker: FileBroker, where: str
) -> None:
    keys = broker.keys()
    publish(broker, keys, eta=time.time() + 3600 if where == "scheduled" else None)
    publish(broker, keys, eta=time.time() + 3600 if where == "scheduled" else None)
    if where in ("claimed", "dead"):
        consumer = broker.open_consumer(["default"], "c1")
        for _ in range(2):
            delivery = consumer.claim(1.0)
            assert delivery is not None
            if where == "dead":
                broker.dead_letter(delivery, {"reason": "test"})
    (broker.root / "secret").unlink()

    with pytest.raises(BrokerError) as caught:
        FileBroker(broker.root).keys()

    message = str(caught.value)
    assert "\n" not in message
    assert f"signing key {broker.root / 'secret'} is missing" in message
    assert "2 message(s)" in message
    assert "restore it from a backup" in message and "secret_key" in message
    assert not (broker.root / "secret").exists()
    assert [p.name for p in broker.root.iterdir() if "secret" in p.name] == []


def test_a_deleted_key_of_a_drained_broker_is_made_again(broker: FileBroker) -> None:
    old = broker.keys().current
    (broker.root / "secret").unlink()

    assert FileBroker(broker.root).keys().current != old
    assert (broker.root / "secret").exists()


# -- rotation ------------------------------------------------------------------------


def test_rotation_signs_with_a_new_key_and_still_verifies_the_old_one(
    broker: FileBroker,
) -> None:
    before = broker.keys()
    old_message = publish(broker, before)

    broker.rotate_key()

    after = FileBroker(broker.root).keys()
    assert after.current != before.current
    assert after.previous == (before.current,)
    assert stat.S_IMODE((broker.root / "secret.previous").stat().st_mode) == 0o600
    new_message = publish(broker, after)
    decoded = {decode(p.read_bytes(), after)[0].id for p in ready_files(broker)}
    assert decoded == {old_message.id, new_message.id}


def test_a_running_keyring_accepts_a_rotated_key_without_a_restart(broker: FileBroker) -> None:
    running = broker.keys()  # a worker that started before the rotation
    broker.rotate_key()
    producer = FileBroker(broker.root).keys()
    message = publish(broker, producer)

    (path,) = ready_files(broker)
    assert decode(path.read_bytes(), running)[0].id == message.id
    assert running.current == producer.current  # re-read once, on the mismatch


def test_a_running_producer_signs_with_the_rotated_key_within_a_second(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = broker.keys()
    old = producer.current
    broker.rotate_key()
    assert producer.signing_key() == old  # looked at the files less than a second ago

    later = time.monotonic() + 1.01
    monkeypatch.setattr(time, "monotonic", lambda: later)

    assert producer.signing_key() == (broker.root / "secret").read_bytes()
    assert producer.previous == (old,)


def test_verifying_with_the_current_key_tries_nothing_else(
    broker: FileBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.rotate_key()  # a previous key exists, and is not tried
    keys = FileBroker(broker.root).keys()
    publish(broker, keys)
    (path,) = ready_files(broker)
    tried: list[bytes] = []
    monkeypatch.setattr(Keyring, "verify_other", lambda self, mac, body: tried.append(mac))

    decode(path.read_bytes(), keys)

    assert tried == []


def test_a_forged_message_is_still_a_bad_signature_after_a_look_at_the_files(
    broker: FileBroker,
) -> None:
    keys = broker.keys()
    forged = Message(id=new_id(), task="t")
    data = encode(forged, b"p", Keyring(b"f" * 64))

    with pytest.raises(BadSignature):
        decode(data, keys)


# -- pruning -------------------------------------------------------------------------


@pytest.mark.usefixtures("no_wait_to_prune")
def test_prune_refuses_while_a_message_needs_a_previous_key_and_says_how_many(
    broker: FileBroker,
) -> None:
    old = broker.keys()
    publish(broker, old)
    publish(broker, old, eta=time.time() + 3600)
    broker.rotate_key()
    publish(broker, FileBroker(broker.root).keys())  # signed with the new key: no need

    with pytest.raises(BrokerError, match=r"2 message\(s\) and 0 result\(s\) .* previous key"):
        broker.prune_keys()
    assert FileBroker(broker.root).keys().previous == (old.current,)


@pytest.mark.usefixtures("no_wait_to_prune")
def test_prune_counts_results_signed_with_a_previous_key(broker: FileBroker) -> None:
    old = broker.keys()
    broker.store_result("r1", success_record("r1", "t", 1, old))
    broker.rotate_key()

    with pytest.raises(BrokerError, match=r"0 message\(s\) and 1 result\(s\)"):
        broker.prune_keys()


@pytest.mark.usefixtures("no_wait_to_prune")
def test_prune_drops_previous_keys_once_nothing_needs_them(broker: FileBroker) -> None:
    old = broker.keys()
    first = publish(broker, old)
    broker.rotate_key()
    consumer = broker.open_consumer(["default"], "c1")
    delivery = consumer.claim(1.0)
    assert delivery is not None and delivery.name == first.name
    broker.ack(delivery)  # drained
    publish(broker, FileBroker(broker.root).keys())

    assert broker.prune_keys() == 1

    assert not (broker.root / "secret.previous").exists()
    assert FileBroker(broker.root).keys().previous == ()
    assert broker.prune_keys() == 0


def test_prune_waits_until_producers_had_time_to_take_the_new_key(broker: FileBroker) -> None:
    broker.keys()
    broker.rotate_key()

    with pytest.raises(BrokerError, match=r"rotated .* ago"):
        broker.prune_keys()


# -- configured keys -----------------------------------------------------------------


def test_configured_previous_keys_still_verify_and_never_sign() -> None:
    old = Keyring(b"old-key")
    message = Message(id=new_id(), task="t")
    data = encode(message, b"p", old)
    keys = keyring_for(Settings(secret_key="new-key", previous_secret_keys=("old-key",)), None)

    assert decode(data, keys)[0].id == message.id
    assert keys.signing_key() == b"new-key"
    with pytest.raises(BadSignature):
        decode(data, keyring_for(Settings(secret_key="new-key"), None))


def test_rotating_a_configured_key_is_refused_with_what_to_do(broker: FileBroker) -> None:
    from taskq import keys

    with pytest.raises(TaskqError, match="previous_secret_keys"):
        keys.rotate(Settings(secret_key="k"), broker)
    assert not os.path.exists(broker.root / "secret")
