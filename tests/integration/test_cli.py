"""The `taskq` command, run as a subprocess against a real broker and worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import itasks
import itasks_delivery
import pytest
from helpers import wait_for

from taskq.app import App
from taskq.results import SUCCESS

MODULES = "itasks,itasks_delivery"
HERE = Path(__file__).parent
COMMANDS = [
    (),
    ("worker",),
    ("status",),
    ("dead",),
    ("dead", "list"),
    ("dead", "show"),
    ("dead", "retry"),
    ("dead", "purge"),
    ("purge",),
    ("result",),
    ("revoke",),
    ("key",),
    ("key", "rotate"),
    ("key", "prune"),
    ("export",),
    ("import",),
    ("migrate",),
    ("dashboard",),
    ("events",),
    ("inspect",),
    ("schedule",),
]


def taskq(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `python -m taskq ARGS` with no TASKQ_* variables but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(*args: str, broker_dir: Path) -> str:
    done = taskq("--broker", str(broker_dir), *args, cwd=broker_dir.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


def fails_in_one_line(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def queue_files(broker_dir: Path, queue: str, state: str) -> list[str]:
    return sorted(os.listdir(broker_dir / "queues" / queue / state))


def dead_failures(app: App, path: str, flag: str, count: int) -> list[str]:
    """``count`` calls that fail once and land in dead/ (until ``flag`` exists)."""
    results = [itasks_delivery.fails_unless.delay(path, flag) for _ in range(count)]
    for result in results:
        with pytest.raises(RuntimeError, match="missing"):
            result.get(timeout=20)
    # The result is stored just before the message moves to dead/; a letter is
    # listed once its message is there.
    ids = {r.id for r in results}
    wait_for(
        lambda: ids <= {letter.id for letter in app.broker.dead_letters()},
        timeout=10,
        what="the dead letters",
    )
    return [r.id for r in results]


def test_status_shows_queue_depths_and_the_live_worker_with_its_pids(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    w = start_worker(modules=MODULES)
    dead_failures(taskq_app, str(tmp_path / "runs"), str(tmp_path / "flag"), 1)
    for n in range(3):
        itasks.add.apply_async((n, n), queue="other")  # no worker consumes "other"
    itasks.add.apply_async((1, 1), countdown=60)

    out = ok("status", broker_dir=broker_dir)

    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["queue"] == ["ready", "scheduled", "in-flight", "dead"]
    assert rows["default"] == ["0", "1", "0", "1"]
    assert rows["other"] == ["3", "0", "0", "0", "(no", "live", "worker", "consumes", "it)"]
    assert "workers: 1 live" in out
    assert f"(pid {w.pid}) queues default" in out
    children = w.child_pids()
    assert len(children) == 2
    for pid in children:
        assert f"pid {pid}: " in out

    report = json.loads(ok("status", "--json", broker_dir=broker_dir))
    assert report["queues"]["other"]["ready"] == 3
    (state,) = report["workers"]
    assert state["pid"] == w.pid
    assert sorted(c["pid"] for c in state["children"]) == sorted(children)


def test_status_check_fails_with_no_live_worker_or_a_deep_queue_and_passes_with_a_worker(
    start_worker, broker_dir: Path, taskq_app: App
) -> None:
    args = ("--broker", str(broker_dir), "status", "--check")
    for _ in range(3):
        itasks.add.apply_async((1, 1), queue="other")  # no worker consumes "other"

    alone = taskq(*args, cwd=broker_dir.parent)
    assert alone.returncode == 1
    assert alone.stderr.strip() == f"unhealthy: no worker is live on broker {broker_dir}"

    start_worker(modules=MODULES)
    wait_for(lambda: "workers: 1 live" in ok("status", broker_dir=broker_dir), 20, "the worker")
    healthy = taskq(*args, cwd=broker_dir.parent)
    assert (healthy.returncode, healthy.stderr) == (0, ""), healthy.stderr
    assert "workers: 1 live" in healthy.stdout

    deep = taskq(*args, "--max-depth", "2", cwd=broker_dir.parent)
    assert deep.returncode == 1
    assert deep.stderr.strip() == ("unhealthy: queue other has 3 message(s) ready, more than 2")
    assert taskq(*args, "--max-depth", "3", cwd=broker_dir.parent).returncode == 0


def test_dead_list_show_retry_and_purge(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    start_worker(modules=MODULES)
    path, flag = str(tmp_path / "runs"), tmp_path / "flag"
    first, second, third = dead_failures(taskq_app, path, str(flag), 3)

    listed = ok("dead", "list", broker_dir=broker_dir).splitlines()
    assert len(listed) == 3
    assert sorted(line.split()[0] for line in listed) == sorted([first, second, third])
    for line in listed:
        assert itasks_delivery.fails_unless.name in line
        assert "max-retries" in line
        assert "RuntimeError: flag" in line

    shown = ok("dead", "show", first, broker_dir=broker_dir)
    assert f"id: {first}" in shown
    assert "reason: max-retries" in shown
    assert "error: RuntimeError: flag" in shown
    assert "attempts:\n  1. " in shown
    assert "traceback:\nTraceback (most recent call last):" in shown

    # Retry one: it runs again (the flag now lets it succeed) and leaves dead/.
    flag.touch()
    assert "requeued 1 message(s)" in ok("dead", "retry", first, broker_dir=broker_dir)
    wait_for(lambda: taskq_app.AsyncResult(first).status == SUCCESS, 20, "the retried task")
    assert taskq_app.AsyncResult(first).get(timeout=1) == "ok"
    remaining = ok("dead", "list", broker_dir=broker_dir)
    assert first not in remaining
    assert second in remaining
    assert third in remaining

    assert "requeued 2 message(s)" in ok("dead", "retry", "--all", broker_dir=broker_dir)
    for task_id in (second, third):
        wait_for(lambda t=task_id: taskq_app.AsyncResult(t).status == SUCCESS, 20, "retried")
    assert ok("dead", "list", broker_dir=broker_dir).strip() == "no dead letters"
    assert len(itasks.lines(path)) == 6  # 3 failures, then each ran once more

    # Purge: refused without --yes, then done.
    flag.unlink()
    dead_failures(taskq_app, path, str(flag), 2)
    refused = taskq("--broker", str(broker_dir), "dead", "purge", cwd=tmp_path)
    fails_in_one_line(refused, "--yes")
    assert len(ok("dead", "list", broker_dir=broker_dir).splitlines()) == 2
    assert "deleted 2 dead message(s)" in ok("dead", "purge", "--yes", broker_dir=broker_dir)
    assert ok("dead", "list", broker_dir=broker_dir).strip() == "no dead letters"
    assert queue_files(broker_dir, "default", "dead") == []


def test_purge_queue_deletes_its_waiting_messages_only_with_yes(
    broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    for n in range(3):
        itasks.add.apply_async((n, n), queue="other")
    itasks.add.apply_async((1, 1), queue="other", countdown=60)
    itasks.add.delay(1, 1)

    refused = taskq("--broker", str(broker_dir), "purge", "other", cwd=tmp_path)
    fails_in_one_line(refused, "--yes", "other")
    assert len(queue_files(broker_dir, "other", "ready")) == 3

    out = ok("purge", "other", "--yes", broker_dir=broker_dir)
    assert "deleted 4 message(s) from other" in out
    assert queue_files(broker_dir, "other", "ready") == []
    assert queue_files(broker_dir, "other", "scheduled") == []
    assert len(queue_files(broker_dir, "default", "ready")) == 1

    typo = taskq("--broker", str(broker_dir), "purge", "othre", "--yes", cwd=tmp_path)
    fails_in_one_line(typo, "no queue named 'othre'", "queues: default, other")


def test_result_shows_a_success_a_failure_with_traceback_and_pending(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    start_worker(modules=MODULES)
    success = itasks.add.delay(2, 3)
    assert success.get(timeout=10) == 5
    (failure,) = dead_failures(taskq_app, str(tmp_path / "runs"), str(tmp_path / "flag"), 1)

    shown = json.loads(ok("result", success.id, broker_dir=broker_dir))
    assert shown["id"] == success.id
    assert shown["status"] == "SUCCESS"
    assert shown["task"] == itasks.add.name
    assert shown["result"] == "5"

    failed = taskq("--broker", str(broker_dir), "result", failure, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr  # scripts see the failure
    text, _, tb = failed.stdout.partition("\n}\n")
    shown = json.loads(text + "\n}")
    assert shown["status"] == "FAILURE"
    assert shown["exc_type"] == "builtins.RuntimeError"
    assert "missing" in shown["exc_message"]
    assert tb.startswith("Traceback (most recent call last):")
    assert "in fails_unless" in tb
    assert "RuntimeError: flag" in tb

    assert json.loads(ok("result", "0123abcd", broker_dir=broker_dir))["status"] == "PENDING"
    later = itasks.add.apply_async((4, 4), countdown=0.5)
    waited = json.loads(ok("result", "--wait", "10", later.id, broker_dir=broker_dir))
    assert waited["status"] == "SUCCESS"
    assert waited["result"] == "8"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "taskq")
def test_help_works_for_every_command(tmp_path: Path, command: tuple[str, ...]) -> None:
    done = taskq(*command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: ")
    assert " ".join(command) in done.stdout.splitlines()[0]
    assert os.listdir(tmp_path) == []  # --help creates no broker


def test_celery_habits_broker_after_the_command_c_for_concurrency_and_h_for_help(
    broker_dir: Path, tmp_path: Path, start_worker, taskq_app: App
) -> None:
    itasks.add.apply_async((1, 1), queue="other")  # to broker_dir, where nobody consumes
    after = taskq("status", "--broker", str(broker_dir), "--json", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["queues"]["other"]["ready"] == 1
    (config := tmp_path / "elsewhere.toml").write_text(f'broker = "{broker_dir}"\n')
    via_config = taskq("dead", "list", "--config", str(config), cwd=tmp_path)
    assert (via_config.returncode, via_config.stdout) == (0, "no dead letters\n"), via_config

    w = start_worker("-c", "3", modules=MODULES)  # after the fixture's --concurrency 2
    assert len(w.child_pids()) == 3

    helped = taskq("dead", "show", "-h", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "taskq dead show [OPTIONS] MESSAGE_ID" in helped.stdout.splitlines()[0]


def test_hostname_names_the_worker_and_a_second_live_one_of_that_name_is_refused(
    broker_dir: Path, tmp_path: Path, start_worker
) -> None:
    w = start_worker("-n", "mail@%h", modules=MODULES)
    host = socket.gethostname()
    assert f"mail@{host} (pid {w.pid})" in ok("status", broker_dir=broker_dir)

    again = taskq("--broker", str(broker_dir), "worker", "-A", MODULES, "-n", "mail@%h", cwd=HERE)
    fails_in_one_line(again, f"a live worker named 'mail@{host}' is registered", "-n/--hostname")
    bad = taskq("--broker", str(broker_dir), "worker", "-A", MODULES, "-n", "../x", cwd=HERE)
    fails_in_one_line(bad, "invalid worker name '../x'")
    assert w.popen.poll() is None


def test_json_log_to_a_file_carries_each_tasks_name_id_attempt_outcome_and_duration(
    tmp_path: Path, start_worker, taskq_app: App
) -> None:
    logfile = tmp_path / "worker.jsonl"
    start_worker("--logfile", str(logfile), "--log-format", "json", modules=MODULES)
    add = itasks.add.delay(2, 3)
    assert add.get(timeout=10) == 5
    flaky = itasks.flaky.delay(str(tmp_path / "flaky"), 1)  # fails once, then succeeds
    assert flaky.get(timeout=20) == 1

    def ended_runs() -> dict[tuple[str, int], dict[str, Any]]:
        text = logfile.read_text()
        whole = text[: text.rfind("\n") + 1]  # not a line being written
        entries = [json.loads(line) for line in whole.splitlines()]  # JSON, all
        assert {"time", "level", "process", "pid", "logger", "message"} <= set(entries[0])
        return {(e["task_id"], e["attempt"]): e for e in entries if "outcome" in e}

    # A task's end is logged after its result is stored, which .get() saw.
    def logged() -> bool:
        ended = ended_runs()
        return (flaky.id, 2) in ended and (add.id, 1) in ended

    wait_for(logged, 10, "the log lines of the tasks' ends")
    ended = ended_runs()
    flaky_runs = [ended[(flaky.id, 1)], ended[(flaky.id, 2)]]
    assert [e["outcome"] for e in flaky_runs] == ["failed", "succeeded"]
    assert flaky_runs[0]["level"] == "WARNING" and "retry in" in flaky_runs[0]["message"]
    (added,) = [e for e in ended.values() if e["task"] == itasks.add.name]
    assert added["outcome"] == "succeeded" and added["attempt"] == 1
    assert isinstance(added["duration_ms"], float) and added["duration_ms"] >= 0


def test_what_a_task_prints_is_logged_naming_the_task(start_worker, taskq_app: App) -> None:
    w = start_worker(modules=MODULES)
    shouted = itasks.shout.delay("hello from a task")
    assert shouted.get(timeout=10) is None

    def printed() -> list[str]:
        return [line for line in w.log().splitlines() if "hello from a task" in line.lower()]

    wait_for(lambda: len(printed()) == 2, 10, "both printed lines in the log")
    out, err = printed()
    assert "INFO worker-" in out and f"Task {itasks.shout.name}[{shouted.id}] stdout: hello" in out
    # A line left without its newline is written when the task ends, still as its own.
    assert "WARNING" in err and f"[{shouted.id}] stderr: HELLO FROM A TASK" in err


def test_unknown_config_key_in_taskq_toml_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "taskq.toml").write_text('brokr = "elsewhere"\n')
    done = taskq("status", cwd=tmp_path)
    fails_in_one_line(done, "'brokr'", "did you mean 'broker'", str(tmp_path / "taskq.toml"))
    assert sorted(os.listdir(tmp_path)) == ["taskq.toml"]


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (("worker",), {}, ("no task modules", "-A")),
        (("status",), {"TASKQ_CONCURRENCY": "many"}, ("concurrency", "TASKQ_CONCURRENCY")),
        (("status",), {"TASKQ_COLOR": "1"}, ("unknown key 'color'", "TASKQ_COLOR")),
        (("dead", "show", "nosuchid"), {}, ("nosuchid",)),
        (("dead", "retry"), {}, ("--all",)),
        (("result", "../etc"), {}, ("../etc",)),
    ],
    ids=["worker-without-A", "bad-env-value", "unknown-env-key", "dead-show", "retry", "bad-id"],
)
def test_user_errors_exit_nonzero_in_one_line(
    broker_dir: Path,
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    fragments: tuple[str, ...],
) -> None:
    broker_dir.mkdir()
    done = taskq("--broker", str(broker_dir), *args, cwd=tmp_path, env=env)
    fails_in_one_line(done, *fragments)


def test_a_worker_whose_task_modules_cannot_be_imported_exits_nonzero_saying_why(
    broker_dir: Path, tmp_path: Path
) -> None:
    done = taskq("--broker", str(broker_dir), "worker", "-A", "nosuchmodule", cwd=tmp_path)

    assert done.returncode == 3, done.stderr
    assert (
        "Cannot import the task modules: ModuleNotFoundError: No module named 'nosuchmodule'"
        in (done.stderr)
    )
    assert "Not starting" in done.stderr


@pytest.mark.parametrize(
    "args",
    [("status",), ("dead", "list"), ("result", "0123abcd"), ("purge", "default", "--yes")],
    ids=lambda args: "-".join(args[:2]),
)
def test_a_command_on_a_missing_broker_folder_says_where_it_looked_and_creates_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    done = taskq("--broker", "nosuch", *args, cwd=tmp_path)

    fails_in_one_line(done, f"no broker at {tmp_path / 'nosuch'}: the folder does not exist")
    assert not (tmp_path / "nosuch").exists()


def test_broker_path_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    done = taskq("--broker", str(not_a_dir), "status", cwd=tmp_path)
    fails_in_one_line(done, str(not_a_dir), "not a directory")
