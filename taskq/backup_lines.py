"""One message as a line of a backup (JSON Lines), signed so that it can be trusted back.

A line holds what a person reads (``id``, ``type``, ``payload.args`` and
``payload.kwargs`` when they are plain JSON, ``headers``) and what a restore
needs exactly (``payload.data``: the pickled call, base64; ``envelope``: the
rest of the message's fields). ``sig``, the line's last field, is an HMAC-SHA256
with the exporting broker's signing key over the exact text of the line
without it: a line changed by hand (even its spacing) no longer verifies, and
it is checked before the line is parsed, so its pickled bytes are never
enqueued.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import io
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .brokers.base import CLAIMED, DEAD, MESSAGE_STATES
from .errors import MessageError
from .keys import Keyring
from .message import Message, envelope_from

_SIG = ',"sig":"'
_PLAIN = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, default=str)
# Envelope fields a line shows under ``headers`` (by the names users know).
_HEADERS = {"created": "timestamp", "priority": "priority", "eta": "eta", "expires": "expires"}
_HEADERS |= {"retries": "retries", "queue": "queue"}
# The fields a line's ``envelope`` holds (those not shown elsewhere), and the
# defaults of those ``headers`` shows.
_ENVELOPE = frozenset(f.name for f in dataclasses.fields(Message)) - {"id", "task", *_HEADERS}
_DEFAULT = {f.name: f.default for f in dataclasses.fields(Message) if f.name in _HEADERS}


@dataclass(frozen=True, slots=True)
class Line:
    """A verified line: the message (with its original state) and its pickled call."""

    message: Message
    payload: bytes
    state: str
    record: Mapping[str, Any] | None


def to_line(
    header: Mapping[str, Any],
    payload: bytes,
    state: str,
    record: Mapping[str, Any] | None,
    key: Keyring,
) -> str:
    """The signed JSON line of one message, from its checked header (the fields not
    at their default, as ``message.envelope`` gives them and a message file holds)."""
    headers = {shown: header.get(name, _DEFAULT[name]) for name, shown in _HEADERS.items()}
    headers["state"] = state
    if state == DEAD:
        headers["dead"] = json.loads(_PLAIN.encode(dict(record or {})))
    args, kwargs = _as_json(payload)
    fields = {
        "id": header["id"],
        "type": header["task"],
        "payload": {"args": args, "kwargs": kwargs, "data": base64.b64encode(payload).decode()},
        "headers": headers,
        "envelope": {k: v for k, v in header.items() if k in _ENVELOPE},
    }
    text = _PLAIN.encode(fields)
    mac = hmac.digest(key.signing_key(), text.encode(), hashlib.sha256)
    return f'{text[:-1]}{_SIG}{mac.hex()}"}}'


def from_line(text: str, key: Keyring) -> Line:
    """Verify a line (before anything in it is parsed), then rebuild its message.

    Raises ``MessageError`` saying what is wrong: no or a wrong signature, not
    JSON, a field of the wrong type.
    """
    text = text.rstrip("\r\n")
    head, found, tail = text.rpartition(_SIG)
    if not found or not tail.endswith('"}'):
        raise MessageError(
            'no signature ("sig" as the last field, as taskq export writes it): not an '
            "export line, or one re-formatted"
        )
    try:
        mac = bytes.fromhex(tail[:-2])
    except ValueError:
        raise MessageError("the signature (sig) is not hex") from None
    body = (head + "}").encode()
    if not _verifies(mac, body, key):
        raise MessageError(
            "signature does not match: the line was changed after export, or it was "
            "exported from a broker with another key (give it with --keys-from)"
        )
    try:
        fields = json.loads(body)
    except ValueError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise MessageError("not a JSON object")
    return _rebuild(fields)


def _rebuild(fields: dict[str, Any]) -> Line:
    payload_field, headers = fields.get("payload"), fields.get("headers")
    if not isinstance(payload_field, dict) or not isinstance(headers, dict):
        raise MessageError("payload and headers must be JSON objects")
    try:
        payload = base64.b64decode(payload_field.get("data", ""), validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise MessageError(f"payload.data is not base64: {exc}") from None
    state = headers.get("state")
    if state not in MESSAGE_STATES:
        raise MessageError(f"headers.state must be one of {', '.join(MESSAGE_STATES)}")
    envelope = fields.get("envelope")
    if not isinstance(envelope, dict):
        raise MessageError("envelope must be a JSON object")
    header = {**envelope, "id": fields.get("id"), "task": fields.get("type")}
    header |= {f: headers.get(h) for f, h in _HEADERS.items()}
    # Each field's type checked as for a message a worker reads.
    message = envelope_from(header)
    record = headers.get("dead") if state == DEAD else None
    if state == DEAD and not isinstance(record, dict):
        raise MessageError("headers.dead (the record of why it died) must be a JSON object")
    return Line(message, payload, state, record)


def restored_state(state: str) -> str:
    """The state a message goes back into: a claim is not a consumer's any more."""
    return "ready" if state == CLAIMED else state


def _verifies(mac: bytes, body: bytes, key: Keyring) -> bool:
    current = hmac.digest(key.current, body, hashlib.sha256)
    return hmac.compare_digest(mac, current) or key.verify_other(mac, body)


class _PlainOnly(pickle.Unpickler):
    """Loads plain data only: any class or function reference is refused, so
    showing the arguments imports and runs nothing."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def _as_json(payload: bytes) -> tuple[Any, Any]:
    """The call's args and kwargs when they are plain JSON values, else (None, None)."""
    if payload[:1] != b"p":  # dill: needs code to load, never shown
        return None, None
    try:
        args, kwargs = _PlainOnly(io.BytesIO(payload[1:])).load()
    except Exception:
        return None, None
    if not (type(args) is tuple and all(map(_plain, args)) and _plain(kwargs)):
        return None, None
    return list(args), kwargs


def _plain(value: Any) -> bool:
    """Whether JSON gives ``value`` back as it is (no tuple, NaN or non-string key)."""
    kind = type(value)
    if kind in (str, int, bool) or value is None:
        return True
    if kind is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if kind is list:
        return all(map(_plain, value))
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False
