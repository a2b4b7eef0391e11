"""`taskq dashboard` in a real headless browser, on a real worker's broker.

Debian's ``chromium`` driven by playwright (never ``playwright install``: the
browser is the system's). Without one the test skips saying why; on CI (``CI``
set) it fails instead: there the page must be tested, not skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import itasks_delivery
import pytest
from helpers import wait_for
from itasks import lines

from taskq.app import App
from taskq.results import AsyncResult
from taskq.testing import WorkerProcess

MODULES = "itasks,itasks_delivery"

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails on CI) saying why
    expect = None


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why}, and CI must test the dashboard in a browser")
    pytest.skip(why)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Debian chromium under playwright, closed after the test."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _unavailable("no chromium browser is installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class DashboardProcess:
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    token: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM by PID, then SIGKILL if it has not stopped in ``timeout`` s."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        return self.popen.returncode


@pytest.fixture
def dashboard(broker_dir: Path, tmp_path: Path) -> Iterator[Callable[[], DashboardProcess]]:
    """A factory starting `taskq dashboard` on the test's broker, on a free port."""
    started: list[DashboardProcess] = []

    def start() -> DashboardProcess:
        log_path = tmp_path / f"dashboard-{len(started)}.log"
        command = [sys.executable, "-m", "taskq", "--broker", str(broker_dir), "dashboard"]
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [*command, "--port", "0", "--interval", "0.5"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        board = DashboardProcess(popen, log_path)
        started.append(board)
        wait_for(
            lambda: popen.poll() is not None or "#token=" in board.log(),
            timeout=20,
            what="the dashboard to print its address",
        )
        found = re.search(r"open (http://\S+/)#token=(\S+)", board.log())
        assert found, board.log()
        board.url, board.token = found.groups()
        return board

    yield start
    for board in started:
        board.stop()
        print(f"dashboard log:\n{board.log()}")  # shown when the test failed


def test_a_dead_letter_shows_on_the_page_and_retry_there_runs_the_task_once_given_the_token(
    start_worker: Callable[..., WorkerProcess],
    dashboard: Callable[[], DashboardProcess],
    browser: Any,
    taskq_app: App,
    tmp_path: Path,
) -> None:
    worker = start_worker(modules=MODULES)
    runs, flag = tmp_path / "runs", tmp_path / "flag"
    failed = itasks_delivery.fails_unless.delay(str(runs), str(flag))
    with pytest.raises(RuntimeError, match="missing"):
        failed.get(timeout=20)
    wait_for(
        lambda: failed.id in {d.id for d in taskq_app.broker.dead_letters()},
        timeout=10,
        what="the dead letter",
    )
    board = dashboard()
    page = browser.new_page()
    page.goto(board.url)

    dead_row = page.locator(f'#dead tr[data-id="{failed.id}"]')
    dead_row.wait_for(timeout=15_000)
    assert "itasks_delivery.fails_unless" in dead_row.inner_text()
    assert "RuntimeError" in dead_row.inner_text()
    failure = page.locator(f'#failures tr[data-id="{failed.id}"]')
    failure.wait_for(timeout=15_000)
    assert "missing" in failure.inner_text()
    queue_row = page.locator('#queues tr[data-queue="default"]')
    queue_row.wait_for(timeout=15_000)
    assert queue_row.locator("td").all_inner_texts() == ["default", "0", "0", "0", "1"]
    workers = page.locator("#workers [data-worker]")
    workers.wait_for(timeout=15_000)
    for pid in [worker.pid, *worker.child_pids()]:
        assert f"pid {pid}" in workers.inner_text()
    assert page.locator("#chart polyline").count() == 1

    dead_row.get_by_role("button", name="show").click()
    record = page.locator("#dead-record")
    expect(record).to_contain_text(f"id: {failed.id}", timeout=5_000)
    expect(record).to_contain_text("traceback:")
    expect(record).to_contain_text("RuntimeError: flag")

    # No token: the page asks for it and the broker is left alone.
    message = page.locator("#message")
    dead_row.get_by_role("button", name="retry").click()
    expect(message).to_contain_text("type the actions token", timeout=5_000)
    page.fill("#token", "not-the-token")
    dead_row.get_by_role("button", name="retry").click()
    expect(message).to_contain_text("refused: wrong token", timeout=5_000)
    assert [d.id for d in taskq_app.broker.dead_letters()] == [failed.id]

    flag.touch()
    page.fill("#token", board.token)
    dead_row.get_by_role("button", name="retry").click()

    dead_row.wait_for(state="detached", timeout=15_000)
    expect(message).to_contain_text(f"retry {failed.id}: requeued 1 message(s)")
    assert AsyncResult[str](failed.id, app=taskq_app).get(timeout=20) == "ok"
    assert lines(str(runs)) == ["attempt", "attempt"]
    assert taskq_app.broker.dead_letters() == []


def test_the_printed_link_gives_the_page_its_token_out_of_the_address_bar_and_sigterm_stops_it(
    dashboard: Callable[[], DashboardProcess], browser: Any, taskq_app: App
) -> None:
    itasks_delivery.fails_unless.apply_async(("unused", "unused"), countdown=600)
    board = dashboard()
    page = browser.new_page()

    page.goto(f"{board.url}#token={board.token}")

    page.locator('#queues tr[data-queue="default"]').wait_for(timeout=15_000)
    assert page.input_value("#token") == board.token
    assert "token" not in page.url
    assert board.stop() == 0
    assert "Traceback" not in board.log()


def test_the_command_on_a_missing_broker_or_a_busy_port_fails_in_one_line(
    tmp_path: Path, taskq_app: App, broker_dir: Path
) -> None:
    taskq_app.broker.counts()  # the broker folder exists
    taskq = [sys.executable, "-m", "taskq", "--broker"]
    missing = subprocess.run(
        [*taskq, str(tmp_path / "nosuch"), "dashboard"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [*taskq, str(broker_dir), "dashboard", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert missing.returncode == busy.returncode == 1
    assert missing.stderr.startswith("taskq: error: no broker at ")
    assert busy.stderr == (
        f"taskq: error: the dashboard cannot listen on 127.0.0.1:{port}: Address already in "
        "use; give another --port or --host\n"
    )
    assert not (tmp_path / "nosuch").exists()
