"""Unique tasks: a call whose key is held is not enqueued; its caller gets the
handle of the call that holds it.

``@task(unique_for=60)`` derives the key from the task's name and its arguments
bound to the function's parameters (so ``f(1, y=2)`` and ``f(1, 2)`` are one
call), as canonical JSON hashed with SHA-256; ``apply_async(unique_key=...)``
names it. The key is claimed on the broker (``Uniques.claim_unique``) before the
message is published, and travels in the signed envelope (``Message.unique``):
the worker lets it go once it settles the message for good (``settling``), and
its lifetime (``unique_for``) is the backstop for a release that never comes.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import TaskqError

if TYPE_CHECKING:
    from .app import App
    from .message import Message

log = logging.getLogger("taskq")

# The lifetime of an explicit ``unique_key`` given to a task without ``unique_for``.
DEFAULT_UNIQUE_FOR = 3600.0

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def check_unique_for(value: float | None) -> float | None:
    """``unique_for`` as ``@task`` takes it: None, or seconds > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskqError(f"unique_for must be a number of seconds, got {value!r:.80}")
    if not 0 < value <= 1e9:  # NaN too; at most a message's longest duration
        raise TaskqError(f"unique_for must be seconds, more than 0 and at most 1e9: got {value}")
    return float(value)


def explicit_key(unique_key: str) -> str:
    """The broker key of ``apply_async(unique_key=...)``: one per string, whatever
    the task (two tasks given one key exclude each other)."""
    if not isinstance(unique_key, str) or not unique_key:
        raise TaskqError(f"unique_key must be a non-empty string, got {unique_key!r:.80}")
    return hashlib.sha256(b"key\0" + unique_key.encode()).hexdigest()


def call_signature(fn: Callable[..., Any], bound: bool) -> inspect.Signature:
    """The parameters a caller passes (``bind=True``: without the task itself)."""
    signature = inspect.signature(fn)
    if bound:
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    return signature


def derived_key(
    task: str, signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> str:
    """The broker key of a call of a ``unique_for`` task: its name and arguments.

    Arguments are bound to the parameters with their defaults filled in, then
    encoded as JSON with sorted keys: a tuple and a list with the same items are
    the same argument, ``1`` and ``1.0`` are not. Raises ``TaskqError`` naming an
    argument JSON cannot encode, or a call that does not fit the signature.
    """
    try:
        call = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TaskqError(f"task {task}: {exc}: its unique key cannot be made") from None
    call.apply_defaults()
    try:
        text = _CANONICAL.encode([task, call.arguments])
    except (TypeError, ValueError):
        raise _not_json(task, call.arguments) from None
    return hashlib.sha256(b"call\0" + text.encode()).hexdigest()


def _not_json(task: str, arguments: Mapping[str, Any]) -> TaskqError:
    for name, value in arguments.items():
        try:
            _CANONICAL.encode(value)
        except (TypeError, ValueError) as exc:
            return TaskqError(
                f"task {task}: argument {name!r} ({type(value).__name__}) cannot make a unique "
                f"key: unique_for keys calls by their arguments as JSON ({exc}); give "
                "apply_async(unique_key=...) instead"
            )
    return TaskqError(f"task {task}: its arguments cannot make a unique key as JSON")


def send_unique(app: App, items: Sequence[tuple[Message, bytes, float]]) -> list[str]:
    """Publish each call (a message and its pickled call) whose unique key it takes,
    for that many seconds; a message without a key is published as it is. Returns
    the id each caller's handle is to have: the message's own, or the holder's.

    The key is taken before the message is published: a key taken by a message
    that never appears (the producer died in between) blocks its calls until its
    lifetime passes. A publish that fails gives back the keys of the messages
    that are nowhere.
    """
    broker = app.broker
    ids: list[str] = []
    batch: list[tuple[Message, bytes]] = []
    for message, payload, ttl in items:
        holder = message.id
        if message.unique:
            holder = broker.claim_unique(message.unique, message.id, ttl)
        ids.append(holder)
        if holder == message.id:
            batch.append((message, payload))
        else:
            log.debug("Task %s not enqueued: its unique key is held by %s", message.task, holder)
    try:
        if len(batch) == 1:  # a single call: the broker's quickest path, as .delay()
            app.publish(*batch[0])
        elif batch:
            app.publish_many(batch)
    except BaseException:
        for message, _ in batch:
            if message.unique:
                with contextlib.suppress(Exception):  # the error that matters is raised below
                    if broker.find(message.id) is None:
                        broker.release_unique(message.unique, message.id)
        raise
    return ids
