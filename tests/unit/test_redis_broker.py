"""The Redis broker's own rules, beyond the contract every broker keeps
(tests/contract): keys lost with a Redis restart, claims taken ahead, a
consumer declared dead, an unreachable server. Against the real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from taskq.errors import BrokerError, BrokerUnavailable, ConsumerLost
from taskq.keys import Keyring
from taskq.message import Message, dump_call, encode, new_id

redis = pytest.importorskip("redis")
from taskq.brokers.base import Delivery  # noqa: E402
from taskq.brokers.redis import RedisBroker, RedisConsumer  # noqa: E402

KEY = Keyring(b"k" * 32)


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisBroker]:
    url, _, prefix = redis_url.partition("?prefix=")
    broker = RedisBroker(url, prefix=prefix, liveness_timeout=1.0)
    yield broker
    broker.client.close()


def publish(broker: RedisBroker, n: int = 1, queue: str = "default") -> list[Message]:
    messages = [Message(id=new_id(), task="t", queue=queue, created=time.time()) for _ in range(n)]
    broker.publish_many((m, encode(m, dump_call("t", (), {}), KEY)) for m in messages)
    return messages


def lapse(broker: RedisBroker, consumer: str) -> None:
    """The consumer's liveness lapses, as when its process is gone."""
    broker.heartbeat.drop(broker.key("live:", consumer))
    broker.client.delete(broker.key("live:", consumer))


def test_a_deep_queue_is_claimed_a_few_at_a_time_and_a_shallow_one_singly(
    broker: RedisBroker,
) -> None:
    publish(broker, 40)
    consumer = broker.open_consumer(["default"], "c1")

    consumer.claim(timeout=1)

    # 40 ready: at most a 32nd of them (1) is taken; with 800 ready, 16 would be.
    assert broker.counts()["default"].claimed == 1
    publish(broker, 800)
    consumer.claim(timeout=1)
    assert broker.counts()["default"].claimed == 1 + 16
    consumer.close()


def claim_from_deep_queue(broker: RedisBroker) -> tuple[RedisConsumer, Delivery]:
    """Consumer c1, having taken 16 of 800 messages ahead and handed out the first."""
    publish(broker, 800)
    consumer = broker.open_consumer(["default"], "c1")
    handed = consumer.claim(timeout=1)
    assert handed is not None
    return consumer, handed


def test_closing_gives_back_the_claims_taken_ahead_uncounted(broker: RedisBroker) -> None:
    consumer, handed = claim_from_deep_queue(broker)

    consumer.close()

    counts = broker.counts()["default"]
    assert (counts.ready, counts.claimed) == (799, 1)  # the started one stays for recovery
    recovered = broker.recover("c1")
    assert recovered is not None
    assert [(d.name, d.started) for d in recovered] == [(handed.name, True)]


def test_recovery_tells_the_started_claim_from_those_taken_ahead(broker: RedisBroker) -> None:
    consumer, handed = claim_from_deep_queue(broker)
    consumer.sync()
    lapse(broker, "c1")  # as if its process was killed

    recovered = broker.recover("c1")

    assert recovered is not None and len(recovered) == 16
    assert [d.name for d in recovered if d.started] == [handed.name]


def test_a_thread_never_uses_the_connection_of_a_consumer_another_thread_opened(
    broker: RedisBroker,
) -> None:
    """Read-your-writes waits for this thread's consumer only: reading another
    thread's connection would take the replies that thread waits for."""
    publish(broker, 2)
    opened: list[RedisConsumer] = []
    thread = threading.Thread(target=lambda: opened.append(broker.open_consumer(["default"], "c1")))
    thread.start()
    thread.join(10)
    (other,) = opened
    delivery = other.claim(timeout=1)
    assert delivery is not None
    broker.ack(delivery)  # queued on c1's connection, not sent
    assert other.pending

    assert broker.counts()["default"].claimed == 1  # a read by this thread
    assert other.pending  # c1's queued ack was left to c1's thread
    other.close()


def test_a_consumer_whose_claims_were_taken_over_stops_claiming(broker: RedisBroker) -> None:
    publish(broker, 2)
    consumer = broker.open_consumer(["default"], "c1")
    lapse(broker, "c1")
    assert broker.recover("c1") == []
    broker.forget_consumer("c1")

    with pytest.raises(ConsumerLost, match="c1 lost its claims to recovery"):
        consumer.claim(timeout=1)


def test_a_vouched_consumer_lives_while_its_supervisor_says_so(broker: RedisBroker) -> None:
    broker.vouch("sup", ["c1"])
    consumer = broker.open_consumer(["default"], "c1")
    time.sleep(1.5)  # past the liveness timeout: the supervisor's thread keeps it

    assert broker.dead_consumers() == []
    broker.vouch("sup", [])  # its process exited
    assert broker.dead_consumers() == ["c1"]
    consumer.close()


def test_keys_lost_with_a_restart_are_put_back_by_a_process_that_holds_them(
    broker: RedisBroker, redis_url: str
) -> None:
    ring = broker.keys()
    signing = ring.signing_key()
    broker.client.delete(broker.key("keys"))  # Redis restarted without persistence

    time.sleep(1.1)  # a signer looks at the keys once a second
    assert ring.signing_key() == signing
    url, _, prefix = redis_url.partition("?prefix=")
    assert RedisBroker(url, prefix=prefix).keys().current == signing


def test_a_process_started_with_a_new_key_keeps_the_old_one_verifying(
    broker: RedisBroker, redis_url: str
) -> None:
    old = broker.keys().signing_key()
    broker.client.delete(broker.key("keys"))
    url, _, prefix = redis_url.partition("?prefix=")
    newcomer = RedisBroker(url, prefix=prefix).keys()  # made a key of its own meanwhile

    time.sleep(1.1)
    broker.keys().signing_key()  # the old process looks again

    assert newcomer.current != old
    assert old in RedisBroker(url, prefix=prefix).keys().previous


def test_a_lost_key_with_messages_stored_is_an_error_naming_them(
    broker: RedisBroker, redis_url: str
) -> None:
    publish(broker, 3)
    broker.client.delete(broker.key("keys"))
    url, _, prefix = redis_url.partition("?prefix=")

    with pytest.raises(BrokerError, match="is gone while 3 message"):
        RedisBroker(url, prefix=prefix).keys()


def test_an_unreachable_redis_is_an_error_naming_it_after_a_bounded_retry() -> None:
    broker = RedisBroker("redis://:hunter2@127.0.0.1:1/0", retry_for=0.5)
    message = Message(id=new_id(), task="t", created=time.time())
    started = time.monotonic()

    with pytest.raises(
        BrokerUnavailable, match=r"cannot reach Redis at redis://\*\*\*@127.0.0.1:1/0"
    ):
        broker.publish(message, b"data")

    assert time.monotonic() - started < 5
    assert isinstance(BrokerUnavailable("x"), OSError)  # a worker settling keeps trying


def test_wake_up_tokens_stay_few_whatever_is_published(broker: RedisBroker) -> None:
    for _ in range(3):
        publish(broker, 100)
    consumer = broker.open_consumer(["default"], "c1")
    consumer.claim(timeout=1)

    assert broker.client.llen(broker.key("wake:", "default")) <= 64
    consumer.close()


def test_an_export_reads_a_snapshot_unchanged_by_claims_and_leaves_no_copy_behind(
    broker: RedisBroker,
) -> None:
    published = publish(broker, 5)
    walk = broker.export_messages(None, lambda _: False)
    first = next(walk)  # the snapshot is taken: claims from now on are not seen
    consumer = broker.open_consumer(["default"], "claimer")
    while consumer.claim(timeout=0.1) is not None:
        pass

    states = [first.state, *(stored.state for stored in walk)]

    assert states == ["ready"] * 5
    assert first.name in {m.name for m in published}
    assert list(broker.client.scan_iter(match=f"{broker.prefix}export:*")) == []
    consumer.close()


def test_a_name_held_by_a_dead_supervisor_of_this_host_is_taken_over_at_once(
    broker: RedisBroker,
) -> None:
    from taskq.brokers.redis_stores import process_identity

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(gone.pid)  # read while it runs
    gone.wait(10)
    alive = broker.key("alive:", "w-killed")
    broker.client.set(alive, identity, px=60_000)  # as a SIGKILLed supervisor leaves it

    broker.register_worker("w-killed")

    assert broker.client.get(alive).decode() == process_identity(os.getpid())
    broker.unregister_worker("w-killed")


def test_a_name_held_by_a_live_process_or_another_host_is_refused(broker: RedisBroker) -> None:
    from taskq.brokers.redis_stores import process_identity

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        holders = {
            "w-live": process_identity(live.pid),
            "w-elsewhere": "other-host pid:[1] 1234 99",
            "w-old": "1",  # the value older versions wrote
        }
        for name, holder in holders.items():
            broker.client.set(broker.key("alive:", name), holder, px=60_000)
            with pytest.raises(BrokerError, match=f"a live worker named '{name}'"):
                broker.register_worker(name)
            assert broker.client.get(broker.key("alive:", name)).decode() == holder
    finally:
        live.kill()
        live.wait(10)
