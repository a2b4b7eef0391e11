"""The message: a frozen envelope, its signed wire format and its delivery order.

Wire format of one message (and of one stored result)::

    b"TQ1" | body length (4) | HMAC-SHA256 of body (32) | body
    body = header length (4) | header | payload          (lengths: big endian)

The header is JSON (the envelope); the payload is the pickled call. The body
length tells a truncated file from a forged one before anything else; the
HMAC is checked before anything is parsed, because unpickling runs code: a
file we did not sign is never loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import pickle
import re
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import BadSignature, MessageError, SerializationError
from .keys import Keyring
from .rates import valid_rate

MAGIC = b"TQ1"
_MAC_SIZE = 32
_PREFIX = len(MAGIC) + 4 + _MAC_SIZE
_PICKLE = b"p"
_DILL = b"d"

QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TASK_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class Message:
    """One call of a task, with everything a broker or policy needs to route it.

    Retry policy travels with the message so that any process (including the
    supervisor, which never imports user code) can settle it.
    """

    id: str
    task: str
    queue: str = "default"
    priority: int = 0
    created: float = 0.0
    eta: float | None = None
    expires: float | None = None
    retries: int = 0
    max_retries: int = 3
    retry_backoff: float = 1.0
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    time_limit: float | None = None
    soft_time_limit: float | None = None
    ignore_result: bool = False
    attempts: tuple[Mapping[str, Any], ...] = ()
    headers: Mapping[str, Any] = field(default_factory=dict)
    # What follows this call in a workflow (next chain step, links, chord): see canvas.py.
    workflow: Mapping[str, Any] = field(default_factory=dict)
    # Sent by name (``app.send_task``) by a producer without the task's code: the
    # worker gives it the task's own retry policy and limits (``task.own_policy``).
    by_name: bool = False
    # At most this many calls of the task start per second, minute or hour
    # ("100/m"), over every worker of the broker; ``rate_slot``: the time of the
    # slot this message holds already (see ``rates.admit``).
    rate_limit: str | None = None
    rate_slot: float | None = None
    # A unique task's key (``taskq.unique``): the worker lets it go once this
    # message is settled for good. Empty, and so absent from the header, otherwise.
    unique: str = ""

    @property
    def name(self) -> str:
        """The delivery-order key: sorts by (priority high first, enqueue time, id).

        The file broker names its ready/ files so (see ``brokers.names``).
        """
        return f"{9 - self.priority}-{int(self.created * 1e6):017d}-{self.id}"

    def replace(self, **changes: Any) -> Message:
        return dataclasses.replace(self, **changes)


def new_id() -> str:
    return os.urandom(16).hex()


def validate_queue(queue: str) -> str:
    if not QUEUE_NAME.fullmatch(queue):
        raise MessageError(
            f"invalid queue name {queue!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "not starting with '.' or '-'"
        )
    return queue


def validate_task_id(task_id: str) -> str:
    """Ids end file names: no path separators, nothing hidden."""
    if not TASK_ID.fullmatch(task_id):
        raise MessageError(
            f"invalid task id {task_id!r}: use 1-128 letters, digits, '_', '-' or '.', "
            "not starting with '.' or '-'"
        )
    return task_id


def validate_unique_key(key: str) -> str:
    """Unique keys name files too (the file broker's ``unique/<key>``)."""
    if not isinstance(key, str) or not TASK_ID.fullmatch(key):
        raise MessageError(
            f"invalid unique key {key!r:.80}: use 1-128 letters, digits, '_', '-' or '.', "
            "not starting with '.' or '-'"
        )
    return key


# -- payload: the pickled call -------------------------------------------------


def dump_call(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """Pickle ``(args, kwargs)``; fall back to dill for what pickle cannot take.

    pickle is ~40x faster than dill for plain arguments, and dill handles
    lambdas, closures and interactively defined functions.
    """
    call = (tuple(args), dict(kwargs))
    try:
        data = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        # pickle refers to a script's functions and classes as "__main__.name",
        # which the worker's own __main__ does not have: dill sends them by value.
        if b"__main__" not in data:
            return _PICKLE + data
    except Exception:
        pass
    import dill

    try:
        return _DILL + bytes(dill.dumps(call, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        raise _which_argument_fails(task, args, kwargs) from None


def _which_argument_fails(
    task: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> SerializationError:
    import dill

    named = [(f"positional argument {i}", v) for i, v in enumerate(args)]
    named += [(f"argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in named:
        try:
            dill.dumps(value)
        except Exception as exc:
            return SerializationError(
                f"task {task}: {label} ({type(value).__name__}) cannot be serialized: {exc}"
            )
    return SerializationError(f"task {task}: its arguments cannot be serialized")


def dump_value(value: Any) -> bytes:
    """Pickle one value (a result or an exception), dill as the fallback."""
    try:
        return _PICKLE + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    import dill

    try:
        return _DILL + bytes(dill.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise SerializationError(
            f"value of type {type(value).__name__} cannot be serialized: {exc}"
        ) from exc


def load_value(payload: bytes) -> Any:
    """Unpickle a payload. Call only on bytes whose signature was verified."""
    kind, body = payload[:1], payload[1:]
    if kind == _PICKLE:
        return pickle.loads(body)
    if kind == _DILL:
        import dill

        return dill.loads(body)
    raise MessageError(f"unknown payload kind {kind!r}")


# -- signing --------------------------------------------------------------------


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # json.dumps builds one per call
_LENGTH = struct.Struct(">I")


def seal(header: Mapping[str, Any], payload: bytes, key: Keyring) -> bytes:
    """Sign a header and payload into the wire format, with the current key."""
    head = _COMPACT_JSON.encode(header).encode()
    body = _LENGTH.pack(len(head)) + head + payload
    mac = hmac.digest(key.signing_key(), body, hashlib.sha256)
    return MAGIC + _LENGTH.pack(len(body)) + mac + body


def signed_by(data: bytes, key: Keyring) -> bool:
    """Whether ``key`` verifies ``data`` (the header is read, never the pickled payload)."""
    try:
        unseal(data, key)
    except MessageError:
        return False
    return True


def unseal(data: bytes, key: Keyring) -> tuple[dict[str, Any], bytes]:
    """Verify the signature, then parse the header. Raises BadSignature or MessageError."""
    if not data.startswith(MAGIC):
        raise MessageError("not a taskq message (no TQ1 magic)")
    if len(data) < _PREFIX:
        raise MessageError(f"truncated: {len(data)} bytes, shorter than the fixed prefix")
    (length,) = struct.unpack_from(">I", data, len(MAGIC))
    mac, body = data[len(MAGIC) + 4 : _PREFIX], data[_PREFIX:]
    if len(body) != length:
        raise MessageError(f"truncated: the body has {len(body)} of its {length} bytes")
    # The current key first, inline: previous keys cost only on a mismatch.
    current = hmac.digest(key.current, body, hashlib.sha256)
    if not hmac.compare_digest(mac, current) and not key.verify_other(mac, body):
        raise BadSignature("signature does not match the secret key")
    (size,) = struct.unpack(">I", body[:4])
    if size > len(body) - 4:
        raise MessageError("header length points past the end of the file")
    try:
        header = json.loads(body[4 : 4 + size])
    except ValueError as exc:
        raise MessageError(f"header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MessageError("header is not a JSON object")
    return header, body[4 + size :]


_FIELDS = frozenset(f.name for f in dataclasses.fields(Message))
_NO_DEFAULT = object()


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_DEFAULT if f.default is dataclasses.MISSING else f.default


_DEFAULTS = tuple((f.name, _default(f)) for f in dataclasses.fields(Message))
_FIELDS_IN_ORDER = tuple(f.name for f in dataclasses.fields(Message))
# A frozen dataclass's __init__ sets each field through object.__setattr__;
# setting the slots directly is what lets Batch copy a template in a third of it.
_SLOT: dict[str, Any] = {name: getattr(Message, name) for name in _FIELDS_IN_ORDER}
_STAMPED = (_SLOT["id"], _SLOT["created"])
_new_message = object.__new__


def _header(message: Message) -> dict[str, Any]:
    # The header leaves out fields at their default (decode puts them back): a
    # quarter of the JSON to write for a plain call. Not dataclasses.asdict: it
    # deep-copies every field, a third of the cost of a publish.
    header = {}
    for name, default in _DEFAULTS:
        value = getattr(message, name)
        if value != default:
            header[name] = value
    return header


def envelope(message: Message) -> dict[str, Any]:
    """The JSON envelope of ``message`` as its header holds it (fields at their
    default left out)."""
    return _header(message)


def encode(message: Message, payload: bytes, key: Keyring) -> bytes:
    return seal(_header(message), payload, key)


class Batch:
    """Messages that differ from one template only in id and creation time, for
    ``Task.map``: the envelope's JSON is written once for the whole batch, and
    each message is a copy of the template, not a new dataclass built and checked.

    Creation times strictly increase in the microseconds a message's name holds,
    so the batch is delivered in the order it was given (equal times would sort
    by the random id).
    """

    def __init__(self, template: Message, key: Keyring) -> None:
        header = _header(template)
        header.pop("id")
        header.pop("created", None)
        self._rest = _COMPACT_JSON.encode(header).encode()[1:]  # b'"task":...}'
        # The key's HMAC state, made once and copied per message: half the cost
        # of hmac.digest, which starts from the key again each time.
        self._mac = hmac.new(key.signing_key(), digestmod=hashlib.sha256)
        values = [(_SLOT[name], getattr(template, name)) for name in _FIELDS_IN_ORDER]
        self._values = [(slot, value) for slot, value in values if slot not in _STAMPED]
        self._micros = 0  # the last message's time, as its name has it

    def message(self) -> Message:
        """A new message: the template's, with a new id and the next creation time."""
        micros = max(time.time_ns() // 1000, self._micros + 1)
        created = micros / 1e6
        while int(created * 1e6) <= self._micros:  # the float lost the microsecond
            micros += 1
            created = micros / 1e6
        self._micros = int(created * 1e6)
        message = _new_message(Message)
        _SLOT["id"].__set__(message, new_id())
        _SLOT["created"].__set__(message, created)
        for slot, value in self._values:
            slot.__set__(message, value)
        return message

    def seal(self, message: Message, payload: bytes) -> bytes:
        """``encode(message, payload, key)``, for a message this batch made."""
        head = b'{"id":"%s","created":%s,%s' % (
            message.id.encode(),
            repr(message.created).encode(),
            self._rest,
        )
        body = _LENGTH.pack(len(head)) + head + payload
        mac = self._mac.copy()
        mac.update(body)
        return MAGIC + _LENGTH.pack(len(body)) + mac.digest() + body


# What each envelope field may hold. A signed header comes from a key holder,
# yet a wrong type (a list as the task name, NaN as the ETA) must not take the
# worker down later: it is refused here, and the message dead-lettered as
# undecodable. Times and durations stay within what a file name's 17 digits of
# microseconds and the interval timer can hold.
_LATEST = 1e11  # seconds since the epoch: the year 5138
_LONGEST = 1e9  # seconds, about 31 years


def _time(v: Any) -> bool:
    return type(v) in (int, float) and 0 <= v < _LATEST


def _duration(v: Any) -> bool:
    return type(v) in (int, float) and 0 <= v <= _LONGEST


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (lambda v: isinstance(v, str) and TASK_ID.fullmatch(v) is not None, "a task id"),
    "task": (lambda v: isinstance(v, str), "a string"),
    "queue": (lambda v: isinstance(v, str) and QUEUE_NAME.fullmatch(v) is not None, "a queue"),
    "priority": (lambda v: type(v) is int and 0 <= v <= 9, "an integer from 0 to 9"),
    "created": (_time, "a time"),
    "eta": (lambda v: v is None or _time(v), "a time or null"),
    "expires": (lambda v: v is None or _time(v), "a time or null"),
    "retries": (lambda v: type(v) is int and v >= 0, "an integer >= 0"),
    "max_retries": (lambda v: type(v) is int and v >= 0, "an integer >= 0"),
    "retry_backoff": (_duration, "a duration"),
    "retry_backoff_max": (_duration, "a duration"),
    "retry_jitter": (lambda v: type(v) is bool, "true or false"),
    "time_limit": (lambda v: v is None or _duration(v), "a duration or null"),
    "soft_time_limit": (lambda v: v is None or _duration(v), "a duration or null"),
    "ignore_result": (lambda v: type(v) is bool, "true or false"),
    "attempts": (lambda v: type(v) is list and all(type(a) is dict for a in v), "a list"),
    "headers": (lambda v: type(v) is dict, "an object"),
    "workflow": (lambda v: type(v) is dict, "an object"),
    "by_name": (lambda v: type(v) is bool, "true or false"),
    "rate_limit": (lambda v: v is None or valid_rate(v), 'a rate such as "100/m", or null'),
    "rate_slot": (lambda v: v is None or _time(v), "a time or null"),
    "unique": (
        lambda v: isinstance(v, str) and (not v or TASK_ID.fullmatch(v) is not None),
        "a unique key or empty",
    ),
}


def decode(data: bytes, key: Keyring) -> tuple[Message, bytes]:
    """Verify and parse a message file into its envelope and (still pickled) payload."""
    header, payload = unseal(data, key)
    return envelope_from(header), payload


def check_envelope(header: Mapping[str, Any]) -> None:
    """``MessageError`` unless ``header`` describes a message: each field's type
    checked, ``id`` and ``task`` there."""
    for name, value in header.items():
        check = _CHECKS.get(name)
        if check is not None and not check[0](value):
            raise MessageError(f"envelope field {name!r} must be {check[1]}, got {value!r:.80}")
    if "id" not in header or "task" not in header:
        raise MessageError("envelope is missing fields: id and task are required")


def envelope_from(header: Mapping[str, Any]) -> Message:
    """The message an envelope (a parsed header) describes, each field's type checked."""
    check_envelope(header)
    try:
        known = {k: v for k, v in header.items() if k in _FIELDS}
        known["attempts"] = tuple(known.get("attempts", ()))
        return Message(**known)
    except TypeError as exc:
        raise MessageError(f"envelope is missing fields: {exc}") from exc
