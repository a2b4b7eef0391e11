"""The dashboard's HTTP endpoints on a memory broker: JSON shapes, and the guard on actions."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from taskq.app import App
from taskq.brokers import display_url
from taskq.brokers.base import Delivery
from taskq.config import Settings
from taskq.dashboard import Dashboard
from taskq.dashboard.panels import DepthHistory, Panels, recent_failures
from taskq.dashboard.server import foreign_host
from taskq.errors import TaskqError
from taskq.message import Message, dump_call, encode, new_id


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture(params=["memory", "file", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Each broker in turn: the dashboard reads and acts through the contract only."""
    if request.param == "redis":
        return Settings(broker=request.getfixturevalue("redis_url"))
    if request.param == "file":
        return Settings(broker=str(tmp_path / "broker"))
    return Settings(broker=f"memory://dashboard-{new_id()[:12]}")


@pytest.fixture
def board(settings: Settings) -> Iterator[Dashboard]:
    dashboard = Dashboard(settings, port=0, interval=0.05).start()
    try:
        yield dashboard
    finally:
        dashboard.close()


def request(
    board: Dashboard,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: str = "",
) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", board.port, timeout=10)
    try:
        sent = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        connection.request(method, path, body=body or None, headers={**sent, **(headers or {})})
        response = connection.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def dead_letter(settings: Settings, task: str, error: str, died_at: str) -> str:
    """A message of ``task`` published, claimed and dead-lettered; its id."""
    app = App.from_settings(settings)
    message = Message(id=new_id(), task=task, created=1.0)
    app.broker.publish(message, encode(message, dump_call(task, (), {}), app.key))
    consumer = app.broker.open_consumer(["default"], f"c-{message.id}")
    delivery = consumer.claim(timeout=1)
    assert isinstance(delivery, Delivery)
    record = {
        "id": message.id,
        "task": task,
        "reason": "max-retries",
        "died_at": died_at,
        "exc_type": "ValueError",
        "exc_message": error,
    }
    app.broker.dead_letter(delivery, record)
    consumer.close()
    return message.id


def test_read_endpoints_answer_each_panel_as_json_without_a_token(
    board: Dashboard, settings: Settings
) -> None:
    broker = App.from_settings(settings).broker
    letter = dead_letter(settings, "app.resize", "<b>no such file</b>", "2026-01-01T00:00:00")
    broker.register_worker("w1")
    child = {"pid": 42, "task": "app.resize", "task_id": "abc", "started_at": 1.0, "done": 3}
    broker.publish_worker_state(
        "w1", {"name": "w1", "pid": 7, "host": "h", "queues": ["default"], "children": [child]}
    )
    board.panels.history.sample()

    queues = request(board, "GET", "/api/queues").json()
    workers = request(board, "GET", "/api/workers").json()
    failures = request(board, "GET", "/api/failures").json()
    dead = request(board, "GET", "/api/dead").json()
    shown = request(board, "GET", f"/api/dead/{letter}")

    assert queues["broker"] == display_url(settings.broker)
    assert queues["queues"]["default"] == {"ready": 0, "scheduled": 0, "claimed": 0, "dead": 1}
    assert queues["history"][-1]["queues"]["default"]["dead"] == 1
    assert isinstance(queues["history"][-1]["at"], float)
    assert workers["workers"][0]["children"] == [child]
    assert isinstance(workers["now"], float)
    summary = {
        "id": letter,
        "queue": "default",
        "task": "app.resize",
        "reason": "max-retries",
        "died_at": "2026-01-01T00:00:00",
        "error": "ValueError: <b>no such file</b>",
    }
    assert failures == {"failures": [summary]}
    assert dead == {"total": 1, "dead": [summary]}
    assert shown.status == 200
    assert "reason: max-retries" in shown.json()["text"]
    assert shown.headers["Content-Type"] == "application/json"


def test_the_page_and_its_assets_come_from_the_package_and_load_nothing_from_elsewhere(
    board: Dashboard,
) -> None:
    page = request(board, "GET", "/")
    script = request(board, "GET", "/static/dashboard.js")
    style = request(board, "GET", "/static/dashboard.css")

    assert page.status == script.status == style.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert b'src="static/dashboard.js"' in page.body
    for answer in (page, script, style):
        assert b"https://" not in answer.body and b"//cdn" not in answer.body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    # Values from the broker enter the page as text only.
    assert b"innerHTML" not in script.body


def test_an_unknown_page_or_dead_letter_is_404_naming_it(board: Dashboard) -> None:
    page = request(board, "GET", "/nosuch")
    letter = request(board, "GET", "/api/dead/nosuch-id")

    assert page.status == 404 and "/nosuch" in page.json()["error"]
    assert letter.status == 404 and "nosuch-id" in letter.json()["error"]


def test_an_action_without_the_token_or_with_a_wrong_one_is_refused_and_changes_nothing(
    board: Dashboard, settings: Settings
) -> None:
    letter = dead_letter(settings, "app.t", "boom", "2026-01-01T00:00:00")

    missing = request(board, "POST", f"/api/dead/{letter}/retry")
    wrong = request(board, "POST", f"/api/dead/{letter}/purge", {"X-Taskq-Token": "guess"})
    wrong_field = request(board, "POST", "/api/dead/purge", body="token=guess")
    in_url = request(board, "POST", f"/api/dead/purge?token={board.token}")

    assert missing.status == 403
    assert "token" in missing.json()["error"] and "X-Taskq-Token" in missing.json()["error"]
    assert wrong.status == wrong_field.status == in_url.status == 403
    assert "wrong token" in wrong.json()["error"]
    assert [d["id"] for d in request(board, "GET", "/api/dead").json()["dead"]] == [letter]
    assert App.from_settings(settings).broker.counts()["default"].ready == 0


def test_a_post_from_another_site_is_refused_even_with_the_token(
    board: Dashboard, settings: Settings
) -> None:
    letter = dead_letter(settings, "app.t", "boom", "2026-01-01T00:00:00")
    token = {"X-Taskq-Token": board.token}

    other = request(board, "POST", "/api/dead/retry", {**token, "Origin": "http://evil.test"})
    sandboxed = request(board, "POST", "/api/dead/retry", {**token, "Origin": "null"})
    cross_site = request(
        board, "POST", "/api/dead/retry", {**token, "Sec-Fetch-Site": "cross-site"}
    )

    assert other.status == sandboxed.status == cross_site.status == 403
    assert "http://evil.test" in other.json()["error"]
    assert "cross-site" in cross_site.json()["error"]
    assert [d["id"] for d in request(board, "GET", "/api/dead").json()["dead"]] == [letter]


def test_retry_with_the_token_requeues_the_dead_letter_from_this_origin(
    board: Dashboard, settings: Settings
) -> None:
    letter = dead_letter(settings, "app.t", "boom", "2026-01-01T00:00:00")
    origin = urlsplit(board.url)
    headers = {"X-Taskq-Token": board.token, "Origin": f"http://{origin.netloc}"}

    done = request(board, "POST", f"/api/dead/{letter}/retry", headers)
    again = request(board, "POST", f"/api/dead/{letter}/retry", headers)

    assert done.status == 200 and done.json() == {"requeued": 1, "skipped": []}
    assert again.status == 404 and letter in again.json()["error"]
    counts = App.from_settings(settings).broker.counts()["default"]
    assert (counts.ready, counts.dead) == (1, 0)


def test_retry_all_requeues_every_dead_letter(board: Dashboard, settings: Settings) -> None:
    dead_letter(settings, "app.t", "one", "2026-01-01T00:00:00")
    dead_letter(settings, "app.t", "two", "2026-01-01T00:00:01")

    done = request(board, "POST", "/api/dead/retry", {"X-Taskq-Token": board.token})

    assert done.json() == {"requeued": 2, "skipped": []}
    assert App.from_settings(settings).broker.counts()["default"].ready == 2


def test_purge_takes_the_token_as_a_form_field_one_letter_or_all(
    board: Dashboard, settings: Settings
) -> None:
    first = dead_letter(settings, "app.t", "one", "2026-01-01T00:00:00")
    dead_letter(settings, "app.t", "two", "2026-01-01T00:00:01")
    dead_letter(settings, "app.t", "three", "2026-01-01T00:00:02")

    one = request(board, "POST", f"/api/dead/{first}/purge", body=f"token={board.token}")
    rest = request(board, "POST", "/api/dead/purge", body=f"token={board.token}&queue=default")

    assert one.json() == {"deleted": 1}
    assert rest.json() == {"deleted": 2}
    assert request(board, "GET", "/api/dead").json() == {"total": 0, "dead": []}


def test_a_body_too_large_is_refused_before_it_is_read(board: Dashboard) -> None:
    answer = request(board, "POST", "/api/dead/purge", body="x" * (65 * 1024))

    assert answer.status == 413 and "bytes" in answer.json()["error"]


def test_a_broker_that_fails_gives_503_saying_why_and_the_server_keeps_serving(
    board: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail() -> list[Any]:
        raise OSError("disk on fire")

    monkeypatch.setattr(board.panels.broker, "worker_states", fail)

    answer = request(board, "GET", "/api/workers")

    assert answer.status == 503 and "disk on fire" in answer.json()["error"]
    assert request(board, "GET", "/api/dead").status == 200


def test_depth_history_keeps_the_latest_samples_only() -> None:
    values = iter(range(5))
    history = DepthHistory(
        lambda: {"q": {"ready": next(values), "scheduled": 0, "claimed": 0, "dead": 0}}, 1.0, 3
    )

    for _ in range(5):
        history.sample()

    assert [s["queues"]["q"]["ready"] for s in history.samples()] == [2, 3, 4]


def test_recent_failures_are_the_newest_dead_letters_first(settings: Settings) -> None:
    for n in range(12):
        dead_letter(settings, f"app.t{n}", "boom", f"2026-01-01T00:00:{n:02d}")

    failures = recent_failures(App.from_settings(settings).broker, limit=10)

    assert [f["task"] for f in failures] == [f"app.t{n}" for n in range(11, 1, -1)]


def test_with_events_on_recent_failures_are_the_failed_attempts_of_the_event_log(
    settings: Settings,
) -> None:
    dead_letter(settings, "app.old", "boom", "2026-01-01T00:00:00")
    panels = Panels(settings)
    assert [f["task"] for f in panels.failures()["failures"]] == ["app.old"]  # events off

    def event(kind: str, task_id: str, ts: float, **fields: Any) -> str:
        common = {"id": task_id, "task": f"app.{task_id}", "queue": "q", "attempt": 1}
        return json.dumps({"event": kind, "ts": ts, **common, **fields})

    panels.broker.append_events(
        [
            event("succeeded", "ok", 1.0),
            event("retried", "flaky", 2.0, retry_in=1.5, error="IOError: later"),
            event("failed", "bad", 3.0, error="ValueError: no"),
            event("dead-lettered", "bad", 3.0, reason="max-retries"),
        ]
    )
    first = panels.failures()["failures"]
    panels.broker.append_events([event("dead-lettered", "ghost", 4.0, reason="unknown-task")])
    rows = panels.failures()["failures"]

    assert first == rows[1:]
    assert [(r["task"], r["reason"], r["error"]) for r in rows] == [
        ("app.ghost", "dead-lettered (unknown-task) (attempt 1)", ""),
        ("app.bad", "dead-lettered (max-retries) (attempt 1)", "ValueError: no"),
        ("app.flaky", "retried in 1.5 s (attempt 1)", "IOError: later"),
    ]
    assert rows[0]["died_at"] == "1970-01-01T00:00:04.000+00:00"


def test_a_port_in_use_is_an_error_naming_it(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TaskqError, match=f"cannot listen on 127.0.0.1:{port}"):
            Dashboard(settings, port=port)


def test_only_a_loopback_address_counts_as_local(settings: Settings) -> None:
    local = Dashboard(settings, host="127.0.0.1", port=0)
    everywhere = Dashboard(settings, host="0.0.0.0", port=0)
    try:
        assert local.local_only and not everywhere.local_only
        # On every address the names it is reached by are unknown: any is answered.
        assert everywhere.server.allowed_hosts is None
        assert foreign_host("10.1.2.3:5555", everywhere.server.allowed_hosts) is None
        assert foreign_host("10.1.2.3:5555", local.server.allowed_hosts) is not None
        assert everywhere.url.startswith("http://127.0.0.1:")
    finally:
        local.server.server_close()
        everywhere.server.server_close()


def test_on_loopback_a_request_for_another_host_name_is_refused_unless_allowed(
    settings: Settings,
) -> None:
    # DNS rebinding: a page at evil.test whose name now points at 127.0.0.1.
    board = Dashboard(settings, port=0, allow_hosts=("taskq.example.com",)).start()
    try:
        read = request(board, "GET", "/api/dead", {"Host": f"evil.test:{board.port}"})
        act = request(
            board,
            "POST",
            "/api/dead/retry",
            {"Host": "evil.test", "Origin": "http://evil.test", "X-Taskq-Token": board.token},
        )
        local = request(board, "GET", "/api/dead", {"Host": f"localhost:{board.port}"})
        ipv6 = request(board, "GET", "/api/dead", {"Host": f"[::1]:{board.port}"})
        proxied = request(board, "GET", "/api/dead", {"Host": "TASKQ.example.com"})
    finally:
        board.close()

    assert read.status == act.status == 403
    assert "'evil.test'" in read.json()["error"] and "--allow-host" in read.json()["error"]
    assert local.status == ipv6.status == proxied.status == 200
