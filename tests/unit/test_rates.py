"""Rate limits (taskq/rates.py): the rate a task declares, the rate its messages
carry, and how a worker admits a rate-limited message (run now, sleep for a
near slot, or put it back in scheduled/ for a far one)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskq import App
from taskq.brokers.memory import MemoryBroker
from taskq.errors import MessageError, TaskqError
from taskq.keys import Keyring
from taskq.message import Message, decode, dump_call, encode, envelope, envelope_from, new_id
from taskq.rates import LEAD, SLEEP_MOST, admit, interval_of
from taskq.task import own_policy
from taskq.worker import Worker

KEY = Keyring(b"r" * 32)


@pytest.mark.parametrize(
    ("rate", "interval"),
    [("100/m", 0.6), ("4/s", 0.25), ("2/h", 1800.0), ("10", 0.1), (2, 0.5), (0.5, 2.0)],
)
def test_a_rate_is_n_per_second_minute_or_hour_or_a_number_per_second(
    rate: str | float, interval: float
) -> None:
    assert interval_of(rate) == pytest.approx(interval)


@pytest.mark.parametrize("rate", ["0/s", "-1/m", "ten/m", "10/d", "10/", "", -2, 0, [10], True])
def test_a_bad_rate_is_refused_naming_it_when_the_task_is_declared(rate: Any) -> None:
    app = App(broker="memory://rates-bad")
    with pytest.raises(TaskqError, match=r"^invalid rate_limit " + re.escape(repr(rate))):
        app.task(lambda: None, name="tests.rates.bad", rate_limit=rate)


@pytest.fixture
def app() -> Iterator[App]:
    app = App(broker="memory://rates")
    yield app
    assert isinstance(app.broker, MemoryBroker)
    app.broker.reset()


RAN: list[int] = []


def record(n: int) -> int:
    RAN.append(n)
    return n


def test_the_rate_travels_with_each_message_and_costs_nothing_without_one(app: App) -> None:
    limited = app.task(record, name="tests.rates.limited", rate_limit="100/m")
    per_second = app.task(record, name="tests.rates.per_second", rate_limit=5)
    plain = app.task(record, name="tests.rates.plain")

    assert limited.message((1,), {}).rate_limit == "100/m"
    assert per_second.message((1,), {}).rate_limit == "5.0"
    assert "rate_limit" not in envelope(plain.message((1,), {}))
    limited.map([1, 2])
    assert [m.rate_limit for m, _ in _published(app)] == ["100/m"] * 2


def _published(app: App) -> list[tuple[Message, bytes]]:
    consumer = app.broker.open_consumer(["default"], new_id())
    found = []
    while (delivery := consumer.claim(timeout=0)) is not None:
        found.append(decode(delivery.data, app.key))
    consumer.close()
    return found


def test_a_task_sent_by_name_gets_its_rate_in_the_worker(app: App) -> None:
    app.task(record, name="tests.rates.by_name", rate_limit="3/h")
    sent = Message(new_id(), "tests.rates.by_name", by_name=True)

    assert own_policy(sent).rate_limit == "3/h"


def test_an_envelope_with_a_bad_rate_is_undecodable() -> None:
    with pytest.raises(MessageError, match="'rate_limit' must be a rate"):
        envelope_from({"id": new_id(), "task": "t", "rate_limit": "fast"})


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_admit_runs_a_message_whose_slot_is_due_and_sleeps_for_a_near_one() -> None:
    broker, sleeps, rescheduled = MemoryBroker("admit"), Sleeps(), []
    message = Message(new_id(), "tests.rates.t", rate_limit="2/s")

    assert admit(broker, message, rescheduled.append, sleeps) is message
    assert admit(broker, message, rescheduled.append, sleeps) is message

    assert sleeps[0] == 0.0 and 0.4 < sleeps[1] <= 0.5
    assert rescheduled == []


def test_admit_puts_a_message_back_for_a_far_slot_without_counting_an_attempt() -> None:
    broker, sleeps, rescheduled = MemoryBroker("admit"), Sleeps(), []
    message = Message(new_id(), "tests.rates.t", retries=1, rate_limit="1/m")
    admit(broker, message, rescheduled.append, sleeps)

    assert admit(broker, message, rescheduled.append, sleeps) is None

    [again] = rescheduled
    assert again.rate_slot is not None and again.eta is not None
    assert again.rate_slot == pytest.approx(time.time() + 60, abs=1)
    assert again.eta == pytest.approx(again.rate_slot - LEAD)
    assert (again.id, again.retries, again.attempts) == (message.id, 1, ())
    assert sleeps == [0.0]  # the first ran at once; the second did not wait in the child


def test_a_message_holding_its_slot_runs_in_it_and_its_retry_takes_a_new_one() -> None:
    broker, sleeps, rescheduled = MemoryBroker("admit"), Sleeps(), []
    broker.take_slot("tests.rates.t", 60.0, 1)  # the slot now is gone: the next is a minute on
    slot = time.time() + 0.3
    holding = Message(new_id(), "tests.rates.t", rate_limit="1/m", eta=slot - LEAD, rate_slot=slot)

    assert admit(broker, holding, rescheduled.append, sleeps) is holding
    assert 0.2 < sleeps[0] <= 0.3 and rescheduled == []

    # A retry (after a failure, or its worker killed mid-task) has another ETA.
    retry = holding.replace(retries=1, eta=time.time())
    assert admit(broker, retry, rescheduled.append, sleeps) is None
    [again] = rescheduled
    assert again.rate_slot == pytest.approx(time.time() + 60, abs=1)


def test_a_slot_held_by_a_far_off_clock_is_not_slept_on_for_long() -> None:
    broker, sleeps = MemoryBroker("admit"), Sleeps()
    slot = time.time() + 3600
    late = Message(new_id(), "tests.rates.t", rate_limit="1/m", eta=slot - LEAD, rate_slot=slot)

    assert admit(broker, late, [].append, sleeps) is late
    assert sleeps == [SLEEP_MOST]


def test_a_worker_runs_what_the_rate_allows_and_schedules_the_rest_for_their_slots(
    app: App,
) -> None:
    RAN.clear()
    limited = app.task(record, name="tests.rates.worker", rate_limit="1/m")
    first, second = limited.delay(1), limited.delay(2)
    broker = app.broker
    consumer = broker.open_consumer(["default"], "rates-worker")
    worker = Worker(broker, app.key, consumer)

    for _ in range(2):
        delivery = consumer.claim(timeout=1)
        assert delivery is not None
        worker.process(delivery)

    assert RAN == [1]
    assert first.get(timeout=0) == 1 and second.status == "PENDING"
    counts = broker.counts()["default"]
    assert (counts.ready, counts.scheduled, counts.claimed) == (0, 1, 0)
    [(_, data)] = [(s.name, s.data) for s in broker.export_messages(None, lambda _: False)]
    waiting, _ = decode(data, app.key)
    assert (waiting.id, waiting.retries) == (second.id, 0)
    assert waiting.rate_slot == pytest.approx(time.time() + 60, abs=2)
    consumer.close()


def test_an_expired_message_takes_no_slot(app: App) -> None:
    RAN.clear()
    limited = app.task(record, name="tests.rates.expiring", rate_limit="1/m")
    limited.apply_async((1,), expires=-1.0)
    consumer = app.broker.open_consumer(["default"], "rates-expiring")
    delivery = consumer.claim(timeout=1)
    assert delivery is not None

    Worker(app.broker, app.key, consumer).process(delivery)

    assert RAN == []
    assert app.broker.take_slot("tests.rates.expiring", 60.0, 1) == 0.0  # the slot is unused
    consumer.close()


def test_encoded_rate_fields_round_trip() -> None:
    message = Message(new_id(), "t", rate_limit="7/m", rate_slot=1_700_000_000.5)
    decoded, _ = decode(encode(message, dump_call("t", (), {}), KEY), KEY)
    assert (decoded.rate_limit, decoded.rate_slot) == ("7/m", 1_700_000_000.5)
