"""Workflows (taskq.canvas) run through App.join, the worker's own path: signatures,
chain, group, chord, links, and what each does when a task fails for good."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskq import App, ChordFailed, TaskqError, chain, chord, group
from taskq.brokers.memory import MemoryBroker
from taskq.canvas import GroupResult

CALLS: list[tuple[str, Any]] = []  # what the tasks below were called with, in order


@pytest.fixture(params=["memory", "file"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    url = f"memory://{request.node.name}" if request.param == "memory" else str(tmp_path / "b")
    app = App(broker=url)
    CALLS.clear()
    yield app
    if isinstance(app.broker, MemoryBroker):
        app.broker.reset()


class Tasks:
    """The tasks of one test's app (names of their own: the registry is global)."""

    def __init__(self, app: App) -> None:
        def declare(fn: Any, **options: Any) -> Any:
            return app.task(fn, name=f"tests.canvas.{fn.__name__}", **options)

        self.add = declare(add)
        self.mul = declare(mul)
        self.total = declare(total)
        self.boom = declare(boom, max_retries=0)
        self.flaky = declare(flaky, bind=True, max_retries=2, retry_backoff=0.0)
        self.record = declare(record)


def add(a: int, b: int) -> int:
    CALLS.append(("add", (a, b)))
    return a + b


def mul(a: int, b: int) -> int:
    CALLS.append(("mul", (a, b)))
    return a * b


def total(values: list[int], offset: int = 0) -> int:
    CALLS.append(("total", values))
    return sum(values) + offset


def boom(*args: Any) -> None:
    CALLS.append(("boom", args))
    raise ValueError(f"boom {args}")


def flaky(self: Any, value: int) -> int:
    if self.request.retries == 0:
        raise ConnectionError("first attempt fails")
    return value


def record(*args: Any) -> str:
    CALLS.append(("record", args))
    return "recorded"


def run(app: App) -> None:
    app.join(fail_fast=False, run_scheduled=True)


def test_a_chain_passes_each_result_to_the_next_task(app: App) -> None:
    t = Tasks(app)
    result = chain(t.add.s(1, 1), t.add.s(10), t.mul.s(3)).apply_async()
    run(app)

    assert result.get(timeout=1) == 36
    assert CALLS == [("add", (1, 1)), ("add", (2, 10)), ("mul", (12, 3))]


def test_each_step_a_worker_publishes_is_recorded_as_published(tmp_path: Path) -> None:
    app = App(broker=str(tmp_path / "b"), events=True)
    t = Tasks(app)
    result = chain(t.add.s(1, 1), t.add.s(10), t.mul.s(3)).apply_async()
    run(app)
    assert app.events is not None
    app.events.flush()

    events, _ = app.broker.read_events()
    published = [(e["task"], e["id"]) for e in events if e["event"] == "published"]
    succeeded = [e["id"] for e in events if e["event"] == "succeeded"]
    assert [task for task, _ in published] == [
        "tests.canvas.add",
        "tests.canvas.add",
        "tests.canvas.mul",
    ]
    assert [task_id for _, task_id in published] == succeeded  # each step, as it ran
    assert published[-1][1] == result.id


def test_chain_delay_gives_its_arguments_to_the_first_task_and_pipes_build_chains(
    app: App,
) -> None:
    t = Tasks(app)
    result = (t.add.s(1) | t.mul.s(2)).delay(4)
    run(app)
    assert result.get(timeout=1) == 10


def test_an_immutable_signature_ignores_the_parents_result(app: App) -> None:
    t = Tasks(app)
    result = chain(t.add.s(1, 1), t.add.si(5, 5)).apply_async()
    run(app)

    assert result.get(timeout=1) == 10
    assert CALLS == [("add", (1, 1)), ("add", (5, 5))]


def test_a_chain_stops_at_the_failing_step_and_get_raises_its_error(app: App) -> None:
    t = Tasks(app)
    result = chain(t.add.s(1, 1), t.boom.s(), t.record.s("never")).apply_async()
    run(app)

    with pytest.raises(ValueError, match=r"boom \(2,\)"):
        result.get(timeout=1)
    assert [name for name, _ in CALLS] == ["add", "boom"]  # the last step never ran
    assert [d.record["task"] for d in app.broker.dead_letters()] == ["tests.canvas.boom"]


def test_signature_set_routes_and_delays_the_call(app: App) -> None:
    t = Tasks(app)
    app.broker.counts()
    result = t.add.s(2, 2).set(queue="other", countdown=3600).delay()

    assert app.broker.find(result.id) == "scheduled"
    assert app.join("other", run_scheduled=True) == 1
    assert result.get(timeout=1) == 4


def test_an_unknown_signature_option_is_refused_by_name(app: App) -> None:
    t = Tasks(app)
    with pytest.raises(TaskqError, match=r"unknown option.*countdwn"):
        t.add.s(1, 1).set(countdwn=3)
    with pytest.raises(TaskqError, match="chain takes task signatures"):
        chain(t.add.s(1, 1), group([t.add.s(2, 2)]))  # type: ignore[arg-type]
    with pytest.raises(TaskqError, match=r"group takes task signatures.*int"):
        group([t.add.s(1, 1), 3])


def test_a_group_collects_its_results_in_order(app: App) -> None:
    t = Tasks(app)
    result = group(t.add.s(i, i) for i in range(10)).apply_async()
    run(app)

    assert isinstance(result, GroupResult)
    assert result.get(timeout=1) == [2 * i for i in range(10)]
    assert result.ready() and result.successful() and result.completed_count() == 10


def test_a_groups_get_raises_the_first_failure_in_order(app: App) -> None:
    t = Tasks(app)
    result = group([t.add.s(1, 1), t.boom.s(1), t.boom.s(2)]).apply_async()
    run(app)

    with pytest.raises(ValueError, match=r"boom \(1,\)"):
        result.get(timeout=1)
    values = result.get(timeout=1, propagate=False)
    assert values[0] == 2 and [str(v).splitlines()[0] for v in values[1:]] == [
        "boom (1,)",
        "boom (2,)",
    ]
    assert result.failed()


def test_a_chord_calls_back_once_with_every_result_in_order(app: App) -> None:
    t = Tasks(app)
    result = chord([t.add.s(i, 0) for i in range(20)], t.total.s(offset=1000)).apply_async()
    run(app)

    assert result.get(timeout=1) == sum(range(20)) + 1000
    assert [values for name, values in CALLS if name == "total"] == [list(range(20))]


def test_a_chord_whose_member_fails_dead_letters_its_callback_naming_the_member(
    app: App,
) -> None:
    t = Tasks(app)
    members = [t.add.s(1, 1), t.boom.s("x"), t.add.s(2, 2)]
    result = chord(members, t.total.s()).apply_async()
    run(app)

    with pytest.raises(ChordFailed, match=r"chord member 1 \(task tests.canvas.boom\[") as exc:
        result.get(timeout=1)
    assert "ValueError: boom ('x',)" in str(exc.value)
    assert not [c for c in CALLS if c[0] == "total"]
    dead = {d.record["task"]: d.record for d in app.broker.dead_letters()}
    assert dead["tests.canvas.total"]["reason"] == "chord-failed"
    assert "chord member 1" in dead["tests.canvas.total"]["exc_message"]


def test_a_chord_member_retried_then_successful_counts_once(app: App) -> None:
    t = Tasks(app)
    result = chord([t.flaky.s(5), t.add.s(1, 1)], t.total.s()).apply_async()
    run(app)

    assert result.get(timeout=1) == 7
    assert [values for name, values in CALLS if name == "total"] == [[5, 2]]


def test_an_empty_chord_calls_back_with_no_results(app: App) -> None:
    t = Tasks(app)
    result = chord([], t.total.s(offset=7)).apply_async()
    run(app)
    assert result.get(timeout=1) == 7


def test_chord_called_with_its_callback_as_celery_spells_it(app: App) -> None:
    t = Tasks(app)
    result = chord(t.add.s(i, i) for i in range(3))(t.total.s())
    run(app)
    assert result.get(timeout=1) == 6


def test_link_gets_the_result_and_link_error_the_failed_tasks_id(app: App) -> None:
    t = Tasks(app)
    ok = t.add.apply_async((2, 3), link=t.record.s("after"))
    failed = t.boom.apply_async(("y",), link=t.record.s("never"), link_error=t.record.s("err"))
    run(app)

    assert ok.get(timeout=1) == 5
    with pytest.raises(ValueError):
        failed.get(timeout=1)
    assert {args for name, args in CALLS if name == "record"} == {(5, "after"), (failed.id, "err")}


def test_link_on_a_signature_and_on_a_chain_follows_its_last_task(app: App) -> None:
    t = Tasks(app)
    chain(t.add.s(1, 1), t.mul.s(5)).apply_async(link=t.record.s("chain"))
    t.add.s(3, 3).apply_async(link=t.record.si("immutable"))
    run(app)

    assert {args for name, args in CALLS if name == "record"} == {(10, "chain"), ("immutable",)}


def test_a_failed_errback_retried_gets_the_id_once(app: App, tmp_path: Path) -> None:
    t = Tasks(app)
    flaky_errback = app.task(
        errback_flaky, name="tests.canvas.errback_flaky", bind=True, retry_backoff=0.0
    )
    failed = t.boom.apply_async((1,), link_error=flaky_errback.s("tag"))
    run(app)

    assert [args for name, args in CALLS if name == "errback"] == [
        (failed.id, "tag", 0),
        (failed.id, "tag", 1),
    ]


def errback_flaky(self: Any, task_id: str, tag: str) -> None:
    CALLS.append(("errback", (task_id, tag, self.request.retries)))
    if self.request.retries == 0:
        raise ConnectionError("errback fails once")


def test_workflows_run_in_eager_mode(tmp_path: Path) -> None:
    app = App(broker=str(tmp_path / "never-created"), eager=True)
    t = Tasks(app)
    assert chain(t.add.s(1, 2), t.mul.s(2)).delay().get(timeout=1) == 6
    assert chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).delay().get(timeout=1) == 6
    assert not (tmp_path / "never-created").exists()


def test_a_second_copy_of_a_chord_callback_is_dropped_unrun(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completing member's ack fails once after its callback went out: settling
    again sends a second copy (at-least-once), which must not run the callback."""
    t = Tasks(app)
    broker = app.broker
    real_ack, acks = broker.ack, []

    def ack_failing_once_for_the_second_member(delivery: Any) -> None:
        acks.append(delivery.name)
        if len(acks) == 2:
            raise OSError(28, "No space left on device")
        real_ack(delivery)

    monkeypatch.setattr(broker, "ack", ack_failing_once_for_the_second_member)
    result = chord([t.add.s(1, 1), t.add.s(2, 2)], t.total.s()).apply_async()
    run(app)

    assert result.get(timeout=1) == 6
    assert [values for name, values in CALLS if name == "total"] == [[2, 4]]
    counts = broker.counts()["default"]
    assert (counts.ready, counts.scheduled, counts.claimed, counts.dead) == (0, 0, 0, 0)
    assert len(acks) == 5  # two members, the failed ack again, two callback copies


def test_the_documented_example_runs_and_is_the_one_the_docs_show() -> None:
    root = Path(__file__).resolve().parents[2]
    example = root / "examples" / "workflows" / "pipeline.py"
    run = subprocess.run(
        [sys.executable, example.name],
        cwd=example.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0] == "sum: 5"
    assert run.stdout.splitlines()[1].startswith("failed task id: '")
    assert run.stdout.splitlines()[-1] == "all workflows ran"
    assert example.read_text() in (root / "docs" / "workflows.md").read_text()


def test_a_chord_member_file_replaced_by_a_link_fails_the_chord_unread(tmp_path: Path) -> None:
    from taskq.brokers.file import FileBroker

    broker = FileBroker(tmp_path / "b")
    broker.chord_add("c1", 0, 2, b"TQ1 whatever")
    member = tmp_path / "b" / "chords" / "c1" / "000000001"
    member.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_bytes(b"not ours")

    assert broker.chord_results("c1") == [b"TQ1 whatever", b""]


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_housekeeping_drops_chords_unchanged_since_results_expire(
    kind: str, tmp_path: Path
) -> None:
    from taskq.brokers.file import FileBroker

    broker: Any = MemoryBroker("chords") if kind == "memory" else FileBroker(tmp_path / "b")
    broker.chord_add("old", 0, 2, b"TQ1 old")
    time.sleep(0.05)
    cutoff = time.time()
    time.sleep(0.05)
    broker.chord_add("new", 0, 2, b"TQ1 new")

    assert sum(broker.housekeeping_steps(time.time(), cutoff)) == 1
    assert (broker.chord_results("old"), broker.chord_results("new")) == ([], [b"TQ1 new"])


def test_a_file_chord_past_the_file_systems_link_cap_counts_by_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from taskq.brokers import file_chords
    from taskq.brokers.file import FileBroker

    real_link = os.link

    def link(src: Any, dst: Any, **kw: Any) -> None:
        if Path(dst).name.startswith("n"):  # the count file's links
            raise OSError(errno.EMLINK, "Too many links")
        real_link(src, dst, **kw)

    monkeypatch.setattr(file_chords.os, "link", link)
    broker = FileBroker(tmp_path / "b")
    assert [broker.chord_add("c", i, 3, b"TQ1 %d" % i) for i in (2, 0, 1)] == [False, False, True]
    assert broker.chord_add("c", 1, 3, b"TQ1 again") is True
    assert broker.chord_results("c") == [b"TQ1 0", b"TQ1 1", b"TQ1 2"]
