"""Events: the recorder's batches, what a settled delivery records, the file
broker's event log (rotation, cursors, files it must not trust), ``taskq events``'
ordering and the settings that turn monitoring on."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from taskq.app import App
from taskq.brokers.base import parse_events
from taskq.brokers.file import FileBroker
from taskq.brokers.memory import MemoryBroker
from taskq.config import load_settings
from taskq.errors import BrokerError, ConfigError
from taskq.events import BATCH, FLUSH_EVERY, Recorder
from taskq.message import Message, new_id
from taskq.monitor import SETTLE, events
from taskq.policy import Ack, Dead, Outcome, RetryAt
from taskq.slots import Slot
from taskq.tally import Tally
from taskq.worker import Worker


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail

    def append_events(self, events: Sequence[str]) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.batches.append([e for line in events for e in parse_events(line.encode())])

    def read_events(self, after: str = "", limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
        raise NotImplementedError


def message(retries: int = 0) -> Message:
    return Message(id=new_id(), task="t.add", created=time.time(), retries=retries)


def test_recorded_events_are_written_as_one_batch_when_flushed() -> None:
    sink = Sink()
    recorder = Recorder(sink, "w1")
    m = message()

    recorder.record("started", m, time_limit=5.0)
    recorder.record("succeeded", m, runtime=0.01)
    written_before_flush = list(sink.batches)
    recorder.flush()

    assert written_before_flush == []
    [batch] = sink.batches
    assert [e["event"] for e in batch] == ["started", "succeeded"]
    assert batch[0]["id"] == m.id and batch[0]["task"] == "t.add" and batch[0]["queue"] == "default"
    assert batch[0]["worker"] == "w1" and batch[0]["attempt"] == 1 and batch[0]["time_limit"] == 5.0
    assert batch[0]["pid"] == os.getpid() and batch[1]["runtime"] == 0.01


def test_started_gives_the_time_limit_or_null_for_none() -> None:
    sink = Sink()
    recorder = Recorder(sink, "w1")

    recorder.started(message(), 30.0, time.time())
    recorder.flush()
    recorder.started(message(retries=1), 0.0, time.time())
    recorder.flush()

    assert [(e["time_limit"], e["attempt"]) for [e] in sink.batches] == [(30.0, 1), (None, 2)]


def test_a_short_run_is_one_line_that_readers_see_as_started_then_succeeded() -> None:
    lines: list[str] = []

    class Lines(Sink):
        def append_events(self, events: Sequence[str]) -> None:
            lines.extend(events)

    recorder = Recorder(Lines(), "w1")
    m = message(retries=2)
    at = int(time.time()) - 0.75  # a second ago, in whole microseconds
    recorder.started(m, 30.0, at)
    recorder.settled(m, Outcome.SUCCEEDED, Ack(), None, 0.125)
    recorder.flush()

    [line] = lines
    assert json.loads(line)["started_us"] == int(at * 1e6)
    started, succeeded = parse_events(line.encode())
    at_us = int(at * 1e6)
    assert started == {"event": "started", "ts": at_us / 1e6, "time_limit": 30.0} | common(m)
    assert succeeded["event"] == "succeeded" and succeeded["runtime"] == 0.125
    assert succeeded["ts"] >= started["ts"] and succeeded.keys() - {"ts"} == {
        "event",
        "runtime",
        *common(m),
    }


def common(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "task": m.task,
        "queue": m.queue,
        "attempt": m.retries + 1,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "worker": "w1",
    }


def test_a_long_run_is_seen_started_by_the_flush_during_it_then_ends_on_its_own() -> None:
    sink = Sink()
    recorder = Recorder(sink, timer=True)
    m = message()

    recorder.started(m, 0.0, time.time())
    deadline = time.monotonic() + 10
    while not sink.batches and time.monotonic() < deadline:
        time.sleep(0.01)  # the task runs: the flusher writes its start meanwhile
    running = [e["event"] for e in sink.batches[0]] if sink.batches else []
    recorder.settled(m, Outcome.SUCCEEDED, Ack(), None, 0.3)
    recorder.flush()

    assert running == ["started"]
    assert [e["event"] for e in sink.batches[1]] == ["succeeded"]
    assert sink.batches[1][0]["runtime"] == 0.3 and not recorder.pending


def test_a_failed_run_writes_its_start_before_what_was_decided() -> None:
    sink = Sink()
    recorder = Recorder(sink)
    m = message()

    recorder.started(m, 0.0, time.time())
    recorder.settled(m, Outcome.FAILED, RetryAt(time.time() + 2, 2.0), ValueError("boom"), 0.5)
    recorder.flush()

    assert [e["event"] for e in sink.batches[0]] == ["started", "retried"]


def test_a_run_within_a_run_keeps_both_starts() -> None:
    sink = Sink()
    recorder = Recorder(sink)
    outer, inner = message(), message()

    recorder.started(outer, 0.0, time.time())
    recorder.started(inner, 0.0, time.time())  # an eager call inside the outer task
    recorder.settled(inner, Outcome.SUCCEEDED, Ack(), None, 0.1)
    recorder.settled(outer, Outcome.SUCCEEDED, Ack(), None, 0.2)
    recorder.flush()

    [batch] = sink.batches
    assert [(e["event"], e["id"]) for e in batch] == [
        ("started", outer.id),
        ("started", inner.id),
        ("succeeded", inner.id),
        ("succeeded", outer.id),
    ]


def test_a_line_of_the_older_layout_or_of_someone_else_is_read_as_written() -> None:
    old = {"event": "started", "ts": 1.5, "time_limit": None, "id": "x"}

    assert parse_events(json.dumps(old).encode()) == [old]
    assert parse_events(b'{"ts_us": "soon"}') == [{"ts_us": "soon"}]
    assert parse_events(b"[1, 2]") == [] and parse_events(b"{torn") == []


def test_a_buffer_older_than_flush_every_is_written_by_the_next_event() -> None:
    sink = Sink()
    recorder = Recorder(sink)
    recorder.record("published", message())
    recorder._since -= FLUSH_EVERY  # the first event has waited that long

    recorder.record("published", message())

    assert [len(b) for b in sink.batches] == [2]
    assert not recorder.pending


def test_a_producer_recorder_flushes_on_its_own_timer() -> None:
    sink = Sink()
    recorder = Recorder(sink, timer=True)
    recorder.record("published", message())

    deadline = time.monotonic() + 10
    while not sink.batches and time.monotonic() < deadline:
        time.sleep(0.01)

    assert [len(b) for b in sink.batches] == [1]


def test_with_a_flusher_the_recording_thread_never_writes_and_batches_stay_bounded() -> None:
    writers: list[tuple[int, int]] = []  # (thread, lines) of each write

    class Noting(Sink):
        def append_events(self, events: Sequence[str]) -> None:
            writers.append((threading.get_ident(), len(events)))

    recorder = Recorder(Noting(), timer=True)
    for _ in range(BATCH + 100):
        recorder.record("published", message())
    written_while_recording = list(writers)
    deadline = time.monotonic() + 10
    while sum(n for _, n in writers) < BATCH + 100 and time.monotonic() < deadline:
        time.sleep(0.01)

    assert written_while_recording == []
    assert [n for _, n in writers] == [BATCH, 100]  # one flush, in appends of BATCH lines
    assert threading.get_ident() not in {thread for thread, _ in writers}


@pytest.mark.filterwarnings("ignore:This process.*fork:DeprecationWarning")  # Python 3.12+
def test_one_flusher_thread_serves_every_batch_and_a_forked_child_gets_its_own() -> None:
    sink = Sink()
    recorder = Recorder(sink, timer=True)
    threads = threading.active_count()
    for n in range(3):  # three batches, each written by the flusher
        recorder.record("published", message())
        deadline = time.monotonic() + 10
        while len(sink.batches) <= n and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [len(b) for b in sink.batches] == [1, 1, 1]
    assert threading.active_count() == threads + 1  # one thread for the process's life

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is not here; a new one must flush
        try:
            child_sink = Sink()
            recorder.sink = child_sink
            recorder.record("published", message())
            deadline = time.monotonic() + 10
            while not child_sink.batches and time.monotonic() < deadline:
                time.sleep(0.01)
            os.write(write, str(len(child_sink.batches)).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 10) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def test_events_that_cannot_be_written_are_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(Sink(fail=True))
    for _ in range(2):
        recorder.record("published", message())
        recorder.flush()

    assert not recorder.pending
    assert [r.getMessage() for r in caplog.records].count(
        "Cannot write 1 event(s), dropped: [Errno 28] No space left on device"
    ) == 1


@pytest.mark.parametrize(
    ("outcome", "decision", "expected"),
    [
        (Outcome.SUCCEEDED, Ack(), ["succeeded"]),
        (Outcome.EXPIRED, Ack(), ["expired"]),
        (Outcome.FAILED, RetryAt(time.time() + 2, 2.0), ["retried"]),
        (Outcome.FAILED, Dead("max-retries"), ["failed", "dead-lettered"]),
        (Outcome.KILLED, Dead("poison"), ["failed", "dead-lettered"]),
        (Outcome.UNKNOWN_TASK, Dead("unknown-task"), ["dead-lettered"]),
    ],
)
def test_a_settled_delivery_records_what_was_decided(
    outcome: Outcome, decision: Any, expected: list[str]
) -> None:
    sink = Sink()
    recorder = Recorder(sink)

    recorder.settled(message(), outcome, decision, ValueError("boom"), 0.5)
    recorder.flush()

    [batch] = sink.batches
    assert [e["event"] for e in batch] == expected
    if expected[0] in ("retried", "failed"):
        assert batch[0]["error"] == "ValueError: boom" and batch[0]["runtime"] == 0.5
    if expected[-1] == "dead-lettered":
        assert batch[-1]["reason"] == decision.reason


# -- the file broker's log -------------------------------------------------------


def test_the_file_log_rotates_and_a_cursor_follows_it_across_the_rotation(
    tmp_path: Path,
) -> None:
    broker = FileBroker(tmp_path / "b")
    broker.rotate_bytes = 300  # about ten events a file
    read: list[int] = []
    cursor = ""

    for n in range(60):
        broker.append_events([json.dumps({"n": n, "pad": "x" * 20})])
        if n % 5 == 4:  # a reader keeping up: less than a rotation between reads
            seen, cursor = broker.read_events(cursor)
            read += [e["n"] for e in seen]

    assert read == list(range(60))
    assert (tmp_path / "b" / "events" / "events.1.jsonl").exists()
    kept, _ = broker.read_events(limit=10_000)
    assert [e["n"] for e in kept] == list(range(60 - len(kept), 60))
    assert len(kept) < 30  # the oldest were rotated out


def test_a_line_being_written_is_not_read_until_it_ends(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "b")
    broker.append_events([json.dumps({"n": 1})])
    log = tmp_path / "b" / "events" / "events.jsonl"
    with open(log, "ab") as f:
        f.write(b'{"n": 2')
    events1, cursor = broker.read_events()
    with open(log, "ab") as f:
        f.write(b"}\nnot json\n")

    events2, _ = broker.read_events(cursor)

    assert events1 == [{"n": 1}]
    assert events2 == [{"n": 2}]  # the garbage line is skipped


def test_an_event_in_two_lines_is_refused_and_nothing_written(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "b")

    with pytest.raises(ValueError, match="one line"):
        broker.append_events(['{"n":\n1}'])

    assert broker.read_events() == ([], "")


def test_a_symbolic_link_as_the_event_log_is_refused(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "b")
    broker.append_events([json.dumps({"n": 1})])
    log = tmp_path / "b" / "events" / "events.jsonl"
    log.unlink()
    log.symlink_to(tmp_path / "elsewhere")

    with pytest.raises(BrokerError, match="symbolic link"):
        broker.read_events()
    with pytest.raises(OSError):
        broker.append_events([json.dumps({"n": 2})])
    assert not (tmp_path / "elsewhere").exists()


# -- taskq events ------------------------------------------------------------------


def test_events_are_printed_in_the_order_they_happened() -> None:
    broker = MemoryBroker()
    broker.append_events([json.dumps({"event": "started", "ts": 2.0, "queue": "q", "task": "a"})])
    broker.append_events([json.dumps({"event": "published", "ts": 1.0, "queue": "q", "task": "a"})])
    broker.append_events(
        [json.dumps({"event": "published", "ts": 1.5, "queue": "other", "task": "b"})]
    )

    everything = [e["event"] for e in events(broker)]
    of_q = [e["ts"] for e in events(broker, queue="q")]
    of_b = [e["ts"] for e in events(broker, task="b")]

    assert everything == ["published", "published", "started"]
    assert of_q == [1.0, 2.0] and of_b == [1.5]


def test_following_holds_a_new_event_back_until_earlier_ones_had_time_to_arrive() -> None:
    broker = MemoryBroker()
    now = [100.0]
    broker.append_events([json.dumps({"event": "started", "ts": 100.0})])

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] == 100.0 + seconds:  # a late batch: written after, happened before
            broker.append_events([json.dumps({"event": "published", "ts": 99.9})])

    follow = events(broker, follow=True, sleep=sleep, clock=lambda: now[0])
    first, second = next(follow), next(follow)

    assert [first["event"], second["event"]] == ["published", "started"]
    assert now[0] >= 100.0 + SETTLE


# -- inspect and settings --------------------------------------------------------


def test_a_slot_posts_the_attempt_and_time_limit_of_the_task_it_runs() -> None:
    slot = Slot(0)
    slot.start("id1", "t.add", 10.0, 40.0, attempt=3, time_limit=30.0)
    busy = slot.read()
    slot.finish()

    assert (busy.attempt, busy.time_limit, busy.deadline) == (3, 30.0, 40.0)
    assert slot.read().attempt == 0 and not slot.read().busy


def test_events_and_metrics_are_off_by_default_and_metrics_port_must_be_a_port(
    tmp_path: Path,
) -> None:
    defaults = load_settings(None, environ={}, cwd=tmp_path)
    from_env = load_settings(
        None, environ={"TASKQ_EVENTS": "true", "TASKQ_METRICS_PORT": "9808"}, cwd=tmp_path
    )

    assert not defaults.events and defaults.metrics_port == 0
    assert defaults.metrics_host == "127.0.0.1"
    assert from_env.events and from_env.metrics_port == 9808
    with pytest.raises(ConfigError, match="metrics_port from option must be a TCP port"):
        load_settings(None, {"metrics_port": 70000}, environ={}, cwd=tmp_path)


# -- metrics tallies -------------------------------------------------------------


def test_tallies_count_outcomes_and_merge_across_processes() -> None:
    one, two = Tally(), Tally()
    one.settled("t.add", Outcome.SUCCEEDED, Ack(), 0.002)
    one.settled("t.add", Outcome.FAILED, RetryAt(0.0, 1.0), 0.5)
    two.settled("t.add", Outcome.FAILED, Dead("max-retries"), 0.5)
    two.settled("t.gone", Outcome.UNKNOWN_TASK, Dead("unknown-task"), None)
    two.recovered("t.add")

    total = Tally()
    total.merge(Tally.from_bytes(one.to_bytes()))
    total.merge(Tally.from_bytes(two.to_bytes()))

    assert total.tasks == {"t.add": {"succeeded": 1, "retried": 1, "failed": 1}}
    assert total.retries == {"t.add": 1} and total.recoveries == {"t.add": 1}
    assert total.dead == {"t.add": {"max-retries": 1}, "t.gone": {"unknown-task": 1}}
    assert sum(total.runtime["t.add"][:-1]) == 3 and total.runtime["t.add"][-1] == 1.002
    assert Tally.from_bytes(b"torn{").tasks == {}


def identity(x: int) -> int:
    return x


def test_the_tally_posted_between_tasks_leaves_the_events_to_the_flusher() -> None:
    writers: list[int] = []  # the thread of each write

    class Noting(Sink):
        def append_events(self, events: Sequence[str]) -> None:
            writers.append(threading.get_ident())

    app = App(broker=f"memory://tally-{new_id()}")
    task = app.task(identity, name="tests.events.identity", ignore_result=True)
    task.delay(1), task.delay(2)
    consumer = app.broker.open_consumer(["default"], "tally-worker")
    slot = Slot(1)
    worker = Worker(
        app.broker,
        app.key,
        consumer,
        slot,
        events=Recorder(Noting(), "w1", timer=True),
        tally=Tally(),
    )
    for _ in range(2):
        delivery = consumer.claim(timeout=1)
        assert delivery is not None
        worker.process(delivery)
        worker._post_at = time.monotonic() - 1  # the tally is due: the next task posts it
    written_by_the_tasks = list(writers)
    deadline = time.monotonic() + 10
    while not writers and time.monotonic() < deadline:
        time.sleep(0.01)
    consumer.close()

    assert Tally.from_bytes(slot.read_stats()).tasks == {"tests.events.identity": {"succeeded": 2}}
    assert written_by_the_tasks == [] and threading.get_ident() not in writers


def test_a_slot_posts_the_latest_tally_whole() -> None:
    slot = Slot(0)
    assert slot.read_stats() == b""
    tally = Tally()
    tally.settled("t.add", Outcome.SUCCEEDED, Ack(), 0.1)

    assert slot.post_stats(tally.to_bytes())
    assert Tally.from_bytes(slot.read_stats()).tasks == {"t.add": {"succeeded": 1}}
    assert not slot.post_stats(b"x" * (2 << 20))  # too big: the last one stays
    assert Tally.from_bytes(slot.read_stats()).tasks == {"t.add": {"succeeded": 1}}
