"""taskq export / import / migrate, as commands against a real broker and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import itasks
import itasks_delivery
from helpers import wait_for
from itasks import lines

from taskq.app import App

MODULES = "itasks,itasks_delivery"


def taskq(
    *args: str, cwd: Path, input_: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m taskq ARGS` with no TASKQ_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        cwd=cwd,
        env=clean,
        input=input_,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run(*args: str, broker: str, cwd: Path) -> str:
    done = taskq("--broker", broker, *args, cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def dead_letters(app: App, runs: Path, count: int) -> set[str]:
    """``count`` calls that fail at once (max_retries=0) and land in dead/."""
    results = [
        itasks_delivery.fails_unless.delay(str(runs), str(runs) + ".flag") for _ in range(count)
    ]
    ids = {r.id for r in results}
    wait_for(lambda: ids <= {d.id for d in app.broker.dead_letters()}, 20, "the dead letters")
    return ids


def test_export_purge_import_runs_every_message_once_and_keeps_eta_and_dead_letters(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    broker, cwd = str(broker_dir), tmp_path
    start_worker("-Q", "default", modules=MODULES)
    dead = dead_letters(taskq_app, tmp_path / "attempts", 2)
    ran = tmp_path / "ran"
    # "held" has no worker yet: its messages stay ready until one starts.
    held = [itasks.record.apply_async((str(ran), f"ready-{n}"), queue="held") for n in range(5)]
    eta = time.time() + 8
    later = itasks.record.apply_async((str(ran), "scheduled"), eta=eta)
    backup = tmp_path / "backup.jsonl"

    out = run("export", str(backup), broker=broker, cwd=cwd)

    assert "exported 8 message(s) (ready 5, scheduled 1, claimed 0, dead 2)" in out
    assert (backup.stat().st_mode & 0o777) == 0o600
    run("purge", "held", "--yes", broker=broker, cwd=cwd)
    run("purge", "default", "--yes", broker=broker, cwd=cwd)
    run("dead", "purge", "--yes", broker=broker, cwd=cwd)
    assert taskq_app.broker.find(later.id) is None

    out = run("import", str(backup), broker=broker, cwd=cwd)

    assert "imported 8 message(s) (ready 5, scheduled 1, claimed 0, dead 2)" in out
    assert {d.id for d in taskq_app.broker.dead_letters()} == dead
    assert taskq_app.broker.find(later.id) == "scheduled"
    again = run("import", str(backup), broker=broker, cwd=cwd)
    assert "imported 0 message(s)" in again and "8 skipped as duplicates" in again
    start_worker("-Q", "held", modules=MODULES)
    for result in [*held, later]:
        result.get(timeout=30)
    done = lines(str(ran))
    values = sorted(line.split()[0] for line in done)
    assert values == sorted([*(f"ready-{n}" for n in range(5)), "scheduled"])  # once each
    (scheduled_at,) = [float(line.split()[1]) for line in done if line.startswith("scheduled")]
    assert scheduled_at >= eta
    assert {d.id for d in taskq_app.broker.dead_letters()} == dead  # still dead
    assert len(lines(str(tmp_path / "attempts"))) == 2  # the dead ones never ran again


def test_a_line_changed_by_hand_is_refused_with_its_number_and_nothing_is_imported(
    broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    for n in range(3):
        itasks.add.delay(n, n)
    backup = tmp_path / "backup.jsonl"
    run("export", str(backup), broker=str(broker_dir), cwd=tmp_path)
    rows = backup.read_text().splitlines()
    assert json.loads(rows[1])["headers"]["retries"] == 0
    rows[1] = rows[1].replace('"retries":0', '"retries":7')
    backup.write_text("\n".join(rows) + "\n")
    taskq_app.broker.purge("default")

    done = taskq("--broker", str(broker_dir), "import", str(backup), cwd=tmp_path)

    assert done.returncode == 1
    assert f"{backup}, line 2: signature does not match" in done.stderr
    assert "nothing was imported" in done.stderr
    assert list(taskq_app.broker.message_ids()) == []


def test_import_from_stdin_into_another_broker_takes_the_key_from_the_source(
    broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    sent = itasks.add.delay(2, 3)
    other = tmp_path / "other"
    App(broker=str(other)).broker.keys()  # a broker of its own, with its own key
    exported = taskq("--broker", str(broker_dir), "export", "-", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr

    refused = taskq("--broker", str(other), "import", "-", cwd=tmp_path, input_=exported.stdout)
    assert refused.returncode == 1 and "line 1: signature does not match" in refused.stderr

    args = ("--broker", str(other), "import", "-", "--keys-from", str(broker_dir))
    done = taskq(*args, cwd=tmp_path, input_=exported.stdout)

    assert done.returncode == 0, done.stderr
    assert "imported 1 message(s) (ready 1" in done.stdout
    moved = App(broker=str(other))
    assert moved.broker.find(sent.id) == "ready"
    assert moved.join() == 1  # re-signed with the destination's key: it verifies there
    assert moved.AsyncResult(sent.id).get(timeout=5) == 5


def test_migrate_moves_a_folder_broker_to_redis_and_a_rerun_adds_nothing(
    broker_dir: Path, tmp_path: Path, taskq_app: App, redis_url: str
) -> None:
    runs = tmp_path / "attempts"
    dead = itasks_delivery.fails_unless.delay(str(runs), str(runs) + ".flag")
    assert taskq_app.join(fail_fast=False) == 1
    ready = [itasks.add.delay(n, n) for n in range(4)]
    later = itasks.add.apply_async((1, 1), countdown=3600)
    backup = tmp_path / "backup.jsonl"
    run("export", str(backup), broker=str(broker_dir), cwd=tmp_path)
    ids = {r.id for r in ready} | {later.id}

    out = run("migrate", "--to", redis_url, broker=str(broker_dir), cwd=tmp_path)

    assert "moved 6 message(s) (ready 4, scheduled 1, claimed 0, dead 1)" in out
    destination = App(broker=redis_url)
    assert sorted(destination.broker.message_ids()) == sorted(ids | {dead.id})
    assert list(taskq_app.broker.message_ids()) == []
    # An interrupted run leaves messages in both: the rerun removes them from the
    # source and adds nothing.
    run("import", str(backup), broker=str(broker_dir), cwd=tmp_path)
    out = run("migrate", "--to", redis_url, broker=str(broker_dir), cwd=tmp_path)
    assert "moved 0 message(s)" in out and "skipped as duplicates" in out
    assert sorted(destination.broker.message_ids()) == sorted(ids | {dead.id})
    assert list(taskq_app.broker.message_ids()) == []
    counts = destination.broker.counts()["default"]
    assert (counts.ready, counts.scheduled, counts.dead) == (4, 1, 1)


def test_import_into_a_folder_not_made_yet_makes_the_broker(
    broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    sent = itasks.add.delay(1, 1)
    backup = tmp_path / "backup.jsonl"
    run("export", str(backup), broker=str(broker_dir), cwd=tmp_path)
    fresh = tmp_path / "new-machine"

    out = run(
        "import", str(backup), "--keys-from", str(broker_dir), broker=str(fresh), cwd=tmp_path
    )

    assert "imported 1 message(s)" in out
    assert App(broker=str(fresh)).broker.find(sent.id) == "ready"
