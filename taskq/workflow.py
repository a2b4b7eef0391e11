"""What a worker does for a workflow when it settles a message: publish the
follow-ups its envelope carries (see ``canvas``), before the message is acked or
dead-lettered, so a crash in between publishes them again rather than losing them.

- success: each ``link`` and the ``next`` chain step, with the result as their
  first argument;
- failure for good (dead-lettered, or expired): the failure is stored as the
  result of every later chain step (``fail``), so the chain's ``.get()`` raises
  it, and each ``link_error`` is sent with the failed task's id;
- a chord member, either way: its result record joins the chord in the broker;
  the one member that completes it sends the callback, with every result, or
  marked ``chord_failed`` (naming the first failed member) to be dead-lettered.

The supervisor settles killed messages too, and never imports user code: on a
failure nothing here unpickles anything but the failed chord's result headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .brokers.base import Broker
from .canvas import Step, materialize
from .errors import ChordFailed, MessageError
from .events import Recorder
from .keys import Keyring
from .message import Message, dump_call, encode, load_value, new_id, unseal
from .results import SUCCESS


class FollowUps:
    """Publishes a settled message's follow-ups through ``broker``."""

    def __init__(self, broker: Broker, key: Keyring, events: Recorder | None = None) -> None:
        self.broker = broker
        self.key = key
        self.events = events

    def settled(self, message: Message, succeeded: bool, value: Any, record: bytes) -> None:
        """``message`` ended for good (``value``: its result or error; ``record``:
        its signed result record)."""
        flow = message.workflow
        if succeeded:
            for step in flow.get("link", ()):
                self._send(step, prepend=value)
            if "next" in flow:
                self._send(flow["next"], prepend=value)
        else:
            for task_id in flow.get("fail", ()):
                self.broker.store_result(task_id, record)
            for step in flow.get("link_error", ()):
                self._send(step, workflow={"errback_of": message.id})
        chord = flow.get("chord")
        if chord is not None and self.broker.chord_add(
            chord["id"], chord["index"], chord["total"], record
        ):
            self._complete(chord)

    def _complete(self, chord: Mapping[str, Any]) -> None:
        """Send the callback of a chord whose every member has ended."""
        records = self.broker.chord_results(chord["id"])
        # Marked as this chord's callback, copy <nonce>: see ``first_copy``.
        mark = {"chord_of": chord["id"], "copy": new_id()}
        failed = _first_failure(records, self.key)
        if failed is not None:
            self._send(chord["callback"], workflow={**mark, "chord_failed": failed})
            return
        values = [load_value(unseal(data, self.key)[1]) for data in records]
        self._send(chord["callback"], prepend=values, workflow=mark)

    def _send(self, step: Step, **how: Any) -> None:
        message, payload = materialize(step, **how)
        self.broker.publish(message, encode(message, payload, self.key))
        if self.events is not None:
            self.events.record("published", message, ts=message.created)


def _first_failure(records: list[bytes], key: Keyring) -> dict[str, Any] | None:
    """Who failed first, in the chord's order (headers only: nothing unpickled)."""
    for index, data in enumerate(records):
        try:
            header, _ = unseal(data, key)
        except MessageError as exc:
            return {"index": index, "id": None, "error": f"its result cannot be read: {exc}"}
        if header.get("status") != SUCCESS:
            error = f"{header.get('exc_type')}: {header.get('exc_message')}"
            return {
                "index": index,
                "id": header.get("id"),
                "task": header.get("task"),
                "error": error,
            }
    return None


def first_copy(broker: Broker, message: Message) -> bool:
    """Whether a chord callback is the copy to run. A completing member that dies
    after sending the callback but before its ack runs again and sends a second
    copy; the first copy a worker opens claims the chord's callback slot (the
    broker keeps the first data given for a chord index), later copies are
    dropped. The same copy delivered again (a retry, a killed worker) runs again."""
    chord_id, copy = message.workflow.get("chord_of"), message.workflow.get("copy")
    if not isinstance(chord_id, str) or not isinstance(copy, str):
        return True
    slot = f"{chord_id}.callback"
    broker.chord_add(slot, 0, 1, copy.encode())
    return broker.chord_results(slot) == [copy.encode()]


def on_open(message: Message, payload: bytes) -> tuple[Message, bytes] | ChordFailed:
    """A workflow message as the worker is to run it: a ``link_error`` call gets
    the failed task's id as its first argument (the envelope then forgets it, so
    a retry does not add it twice); a chord callback marked failed is refused."""
    flow = message.workflow
    failed = flow.get("chord_failed")
    if failed is not None:
        return ChordFailed(
            f"chord member {failed.get('index')} (task {failed.get('task')}[{failed.get('id')}]) "
            f"failed for good: {failed.get('error')}; callback {message.task}[{message.id}] "
            "not run"
        )
    errback_of = flow.get("errback_of")
    if errback_of is None:
        return message, payload
    try:
        args, kwargs = load_value(payload)
    except Exception:
        return message, payload  # the worker fails it as undecodable, as any such call
    rest = {k: v for k, v in flow.items() if k != "errback_of"}
    return message.replace(workflow=rest), dump_call(message.task, (errback_of, *args), kwargs)
