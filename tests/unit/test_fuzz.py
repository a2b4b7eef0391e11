"""Fuzzing every file the worker and the CLI read: messages, results, dead
records, worker states. Whatever the bytes, the reader answers or raises one
of taskq's own errors, the worker loop survives, and bytes that are not signed
with the key are never unpickled."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dill
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskq import task
from taskq.admin import format_dead
from taskq.app import App
from taskq.brokers.base import DeadLetter, Delivery
from taskq.brokers.file import FileBroker
from taskq.brokers.fs import hold_lock, release_lock
from taskq.brokers.names import scheduled_name
from taskq.errors import MessageError, SerializationError, TaskqError
from taskq.keys import Keyring
from taskq.message import MAGIC, Message, decode, dump_call, encode, seal, unseal
from taskq.results import AsyncResult
from taskq.worker import Worker

RAW_KEY = b"fuzz-key" * 4
KEY = Keyring(RAW_KEY)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@task(max_retries=1, retry_backoff=0.0, retry_jitter=False)
def echo(*args: Any, **kwargs: Any) -> Any:
    return args


GOOD = encode(Message(id="m1", task=echo.name, created=1.0), dump_call(echo.name, (1,), {}), KEY)


@contextlib.contextmanager
def unpickling_recorded() -> Iterator[list[bytes]]:
    """Every call of pickle.loads and dill.loads (the two load_value uses)."""
    calls: list[bytes] = []
    real_pickle, real_dill = pickle.loads, dill.loads

    def recorded(real: Any) -> Any:
        def loads(data: bytes, *args: Any, **kwargs: Any) -> Any:
            calls.append(bytes(data))
            return real(data, *args, **kwargs)

        return loads

    pickle.loads, dill.loads = recorded(real_pickle), recorded(real_dill)  # type: ignore[assignment]
    try:
        yield calls
    finally:
        pickle.loads, dill.loads = real_pickle, real_dill  # type: ignore[assignment]


# -- strategies -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
FIELDS = ["id", "task", "queue", "priority", "created", "eta", "expires", "retries"]
FIELDS += ["max_retries", "retry_backoff", "retry_backoff_max", "retry_jitter", "time_limit"]
FIELDS += ["soft_time_limit", "ignore_result", "attempts", "headers", "status", "done"]
# Values of the right kind turn up often enough to get past the first check.
likely = st.sampled_from(["SUCCESS", "FAILURE", "RETRY", "PENDING", "default", 0, 2.5, True])
hostile_headers = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=8), json_values | likely, max_size=8
).map(lambda h: {"id": "m1", "task": echo.name, **h})
RECORD_FIELDS = ["id", "task", "queue", "reason", "died_at", "exc_type", "exc_message"]
RECORD_FIELDS += ["traceback", "attempts", "retries"]
records = st.dictionaries(
    st.sampled_from(RECORD_FIELDS) | st.text(max_size=8),
    json_values
    | st.lists(st.dictionaries(st.sampled_from(["at", "worker", "outcome"]), json_values)),
    max_size=6,
)
# Signed payloads: pickles of plain values (whole or cut short), or bytes of no
# known kind. Random bytes are never handed to pickle, even signed.
payloads = (
    st.integers().map(lambda v: b"p" + pickle.dumps((v,), protocol=5))
    | st.tuples(st.text(max_size=10), st.integers(0, 30)).map(
        lambda t: b"p" + pickle.dumps(((t[0],), {}), protocol=5)[: t[1]]
    )
    | st.binary(max_size=40).map(lambda b: b"x" + b)
    | st.just(dump_call(echo.name, (1,), {}))
)


@st.composite
def mutated(draw: st.DrawFn, original: bytes = GOOD) -> bytes:
    """``original`` with a byte flipped, cut short, or extended."""
    how = draw(st.sampled_from(["flip", "truncate", "extend"]))
    if how == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if how == "extend":
        return original + draw(st.binary(min_size=1, max_size=20))
    at = draw(st.integers(0, len(original) - 1))
    flip = draw(st.integers(1, 255))
    return original[:at] + bytes([original[at] ^ flip]) + original[at + 1 :]


def signed(header: dict[str, Any], payload: bytes, key: Keyring = KEY) -> bytes:
    return seal(header, payload, key)


# A body length of 4 GiB in front of a few bytes.
HUGE_BODY_LENGTH = MAGIC + b"\xff\xff\xff\xff" + bytes(32) + b"\x00\x00\x00\x02{}"


def huge_header_length(key: Keyring = KEY) -> bytes:
    """Rightly signed, with a header length far past the end of the body."""
    import hashlib
    import hmac

    body = b"\xff\xff\xff\xf0{}"
    return (
        MAGIC + len(body).to_bytes(4, "big") + hmac.digest(key.current, body, hashlib.sha256) + body
    )


# -- the decoder -------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400) | mutated())
@example(HUGE_BODY_LENGTH)
@example(huge_header_length())
def test_decoder_rejects_unsigned_bytes_with_its_own_errors(data: bytes) -> None:
    with unpickling_recorded() as calls:
        try:
            message, _ = decode(data, KEY)
        except TaskqError:
            pass
        else:  # only the untouched message passes
            assert data == GOOD and message.id == "m1"
    assert calls == []


@FUZZ
@given(hostile_headers, payloads)
def test_decoder_refuses_a_signed_header_of_wrong_types(
    header: dict[str, Any], payload: bytes
) -> None:
    try:
        message, _ = decode(signed(header, payload), KEY)
    except TaskqError:
        return
    # What it accepts has the types the rest of taskq relies on.
    assert isinstance(message.id, str) and isinstance(message.task, str)
    assert message.name and isinstance(message.attempts, tuple)
    assert scheduled_name(message.replace(eta=message.created + message.retry_backoff))


# -- the worker, through Worker.process ----------------------------------------------


class _Consumer:
    name = "fuzz-1-0-000000"

    def claim(self, timeout: float) -> Delivery | None:
        return None

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def fuzz_broker() -> Iterator[FileBroker]:
    with tempfile.TemporaryDirectory() as root:
        broker = FileBroker(Path(root) / "b")
        (broker.queue_dir("default") / "claimed" / _Consumer.name).mkdir()
        yield broker


def process(broker: FileBroker, data: bytes) -> tuple[Path, str]:
    """Claim ``data`` as a message file and let a worker process it; where it went."""
    name = f"9-00000000000000001-{os.urandom(8).hex()}"
    qdir = broker.queue_dir("default")
    claimed = qdir / "claimed" / _Consumer.name / name
    claimed.write_bytes(data)
    Worker(broker, KEY, _Consumer()).process(Delivery("default", name, data, _Consumer.name))
    assert not claimed.exists()  # settled, one way or another
    return qdir, name


@FUZZ
@given(data=st.binary(max_size=400) | mutated())
def test_worker_dead_letters_unsigned_bytes_without_unpickling(
    fuzz_broker: FileBroker, data: bytes
) -> None:
    with unpickling_recorded() as calls:
        qdir, name = process(fuzz_broker, data)
    if data == GOOD:
        return
    assert calls == []
    record = json.loads((qdir / "dead" / f"{name}.json").read_text())
    assert record["reason"] in ("undecodable", "bad-signature")
    assert (qdir / "dead" / name).read_bytes() == data


@FUZZ
@given(header=hostile_headers, payload=payloads)
def test_worker_survives_any_signed_message(
    fuzz_broker: FileBroker, header: dict[str, Any], payload: bytes
) -> None:
    qdir, name = process(fuzz_broker, signed(header, payload))
    dead = (qdir / "dead" / f"{name}.json").exists()
    acked = (fuzz_broker.root / "spare" / name).exists()
    assert dead or acked  # an expired or finished message is acked, the rest dead-lettered


# -- results, as a caller reads them ---------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_app() -> Iterator[App]:
    with tempfile.TemporaryDirectory() as root:
        app = App(broker=str(Path(root) / "b"), secret_key=RAW_KEY.decode())
        assert app.broker.root.is_dir()  # made on first use
        yield app


def answer(call: Callable[[], Any]) -> Any:
    """What ``call`` returns, or the taskq error (or get's TimeoutError) it raises."""
    try:
        return call()
    except (TaskqError, TimeoutError) as exc:
        return exc


def check_result(app: App, data: bytes, is_signed: bool) -> None:
    task_id = "r" + os.urandom(8).hex()
    (Path(app.settings.broker) / "results" / task_id).write_bytes(data)
    result: AsyncResult[Any] = AsyncResult(task_id, app)
    with unpickling_recorded() as calls:
        status = answer(lambda: result.status)
        value = result.result  # never raises: a result it cannot trust gives the error why
        got = answer(lambda: result.get(timeout=0))
    assert isinstance(status, str | TaskqError)
    if not is_signed:
        assert calls == []
        for outcome in (status, value, got):
            assert isinstance(outcome, MessageError), outcome


@FUZZ
@given(data=st.binary(max_size=300) | mutated())
def test_result_file_of_any_bytes_gives_taskq_errors(fuzz_app: App, data: bytes) -> None:
    check_result(fuzz_app, data, is_signed=False)


@FUZZ
@given(header=hostile_headers, payload=payloads)
def test_signed_result_with_a_hostile_header_gives_taskq_errors(
    fuzz_app: App, header: dict[str, Any], payload: bytes
) -> None:
    check_result(fuzz_app, seal(header, payload, KEY), is_signed=True)


# -- what the CLI reads: dead records and worker states -------------------------------


@FUZZ
@given(
    record=st.binary(max_size=200) | (json_values | records).map(lambda v: json.dumps(v).encode())
)
def test_dead_record_of_any_content_is_listed_and_shown(
    fuzz_broker: FileBroker, record: bytes
) -> None:
    dead = fuzz_broker.queue_dir("default") / "dead"
    for name in os.listdir(dead):
        os.unlink(dead / name)
    name = f"9-00000000000000001-{os.urandom(8).hex()}"
    (dead / name).write_bytes(b"x")
    (dead / f"{name}.json").write_bytes(record)

    [letter] = fuzz_broker.dead_letters()
    assert letter.name == name and isinstance(letter.id, str)
    assert isinstance(format_dead(letter), str)


@FUZZ
@given(state=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_worker_state_of_any_content_never_fails_the_listing(
    fuzz_broker: FileBroker, state: bytes
) -> None:
    folder = fuzz_broker.root / "workers"
    folder.mkdir(exist_ok=True)
    fd = hold_lock(folder / "fuzz.lock")
    try:
        (folder / "fuzz.json").write_bytes(state)
        states = fuzz_broker.worker_states()
    finally:
        release_lock(fd)
    try:
        expected = json.loads(state)
    except ValueError:
        expected = None
    assert states == ([expected] if isinstance(expected, dict) else [])


def test_the_unpickling_recorder_sees_every_call() -> None:
    # The checks above would pass vacuously if the recorder saw nothing at all.
    with unpickling_recorded() as calls:
        loaded = pickle.loads(pickle.dumps(1)), dill.loads(dill.dumps(2))
    assert loaded == (1, 2) and len(calls) == 2
    with pytest.raises(TaskqError):
        unseal(GOOD[:-1] + bytes([GOOD[-1] ^ 1]), KEY)


# -- what the fuzzer found, kept as plain examples ----------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task", ["x"]),  # unhashable: the registry lookup raised TypeError in the worker loop
        ("priority", "default"),  # the file name of a retry raised TypeError
        ("retry_backoff", None),  # the retry's ETA raised TypeError
        ("created", float("nan")),  # int(nan): ValueError naming the retry
        ("eta", float("inf")),  # int(inf): OverflowError
        ("created", 1e300),  # a 300-digit file name: ENAMETOOLONG, retried forever
        ("soft_time_limit", 1e12),  # setitimer: OverflowError before the task ran
        ("retries", -1),
        ("attempts", 3),
        ("headers", "x"),
        ("id", "../../x"),  # the result would be stored outside results/
    ],
)
def test_signed_envelope_field_of_a_wrong_type_is_refused_naming_it(field: str, value: Any) -> None:
    header = {"id": "m1", "task": echo.name, field: value}
    with pytest.raises(MessageError, match=f"envelope field '{field}' must be"):
        decode(signed(header, dump_call(echo.name, (), {})), KEY)


def test_worker_dead_letters_a_signed_message_naming_a_list_as_its_task(
    fuzz_broker: FileBroker,
) -> None:
    qdir, name = process(fuzz_broker, signed({"id": "m1", "task": ["x"]}, b"p"))
    record = json.loads((qdir / "dead" / f"{name}.json").read_text())
    assert record["reason"] == "undecodable" and "'task'" in record["exc_message"]


def test_signed_result_without_a_status_is_a_message_error(fuzz_app: App) -> None:
    (Path(fuzz_app.settings.broker) / "results" / "nostatus").write_bytes(
        seal({"id": "nostatus"}, b"", KEY)
    )
    with pytest.raises(MessageError, match="stored result of task nostatus: its header holds"):
        _ = AsyncResult("nostatus", fuzz_app).status


def test_signed_success_that_cannot_be_unpickled_is_a_serialization_error(fuzz_app: App) -> None:
    (Path(fuzz_app.settings.broker) / "results" / "cut").write_bytes(
        seal({"status": "SUCCESS"}, b"p" + pickle.dumps(12345)[:-3], KEY)
    )
    with pytest.raises(SerializationError, match="stored result of task cut cannot be unpickled"):
        AsyncResult("cut", fuzz_app).get(timeout=0)


def test_dead_record_with_odd_attempts_is_still_shown() -> None:
    letter = DeadLetter("default", "n", {"attempts": [1, {"at": "then"}], "traceback": 7})
    shown = format_dead(letter)
    assert "  1. None on None: None (1)" in shown and "  2. then on None" in shown
    assert shown.endswith("traceback:\n7")


def test_worker_state_that_is_not_an_object_is_skipped(fuzz_broker: FileBroker) -> None:
    folder = fuzz_broker.root / "workers"
    folder.mkdir(exist_ok=True)
    (folder / "torn.json").write_bytes(b'{"name": "torn", "pi')
    (folder / "list.json").write_bytes(b"[1]")
    (folder / "good.json").write_bytes(b'{"name": "good"}')
    fds = [hold_lock(folder / f"{n}.lock") for n in ("torn", "list", "good")]
    try:
        assert fuzz_broker.worker_states() == [{"name": "good"}]
    finally:
        for fd in fds:
            release_lock(fd)
