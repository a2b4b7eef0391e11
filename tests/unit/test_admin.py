"""Operator commands' logic (the CLI only prints what these return)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskq import admin
from taskq.app import App
from taskq.brokers.base import Delivery
from taskq.config import Settings
from taskq.errors import TaskqError
from taskq.keys import Keyring
from taskq.message import Message, dump_call, encode


def dead_letter(app: App, message: Message, data: bytes) -> None:
    broker = app.broker
    broker.publish(message, data)
    consumer = broker.open_consumer(["default"], f"c-{message.id}")
    delivery = consumer.claim(timeout=1)
    assert isinstance(delivery, Delivery)
    broker.dead_letter(delivery, {"id": message.id, "reason": "max-retries"})
    consumer.close()


def test_retry_all_requeues_what_it_can_and_says_what_it_skipped(tmp_path: Path) -> None:
    settings = Settings(broker=str(tmp_path / "b"))
    app = App.from_settings(settings)
    good = Message(id="good", task="t", created=1.0, retries=3)
    forged = Message(id="forged", task="t", created=2.0)
    dead_letter(app, good, encode(good, dump_call("t", (), {}), app.key))
    dead_letter(app, forged, encode(forged, dump_call("t", (), {}), Keyring(b"not the key")))

    requeued, skipped = admin.retry_dead(settings, None)

    assert requeued == 1
    assert len(skipped) == 1 and "forged" in skipped[0] and "bad signature" in skipped[0]
    assert [letter.id for letter in admin.dead_letters(settings)] == ["forged"]
    assert app.broker.counts()["default"].ready == 1
    with pytest.raises(TaskqError, match="bad signature"):
        admin.retry_dead(settings, "forged")


def test_status_shows_a_worker_that_published_no_state_yet_as_starting() -> None:
    report = {
        "broker": "b",
        "queues": {"default": {"ready": 1, "scheduled": 0, "claimed": 0, "dead": 0}},
        "workers": [
            {"name": "w1"},  # registered, its first state not published yet
            {"name": "w2", "pid": 7, "queues": ["default"], "children": [{"pid": 8}]},
        ],
    }

    text = admin.format_status(report)

    assert "w1 (starting: no state published yet)" in text
    assert "w2 (pid 7) queues default" in text
    assert "pid 8: 0 done, idle" in text
    assert "no live worker consumes it" not in text  # w2 consumes default
