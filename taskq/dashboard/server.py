"""The dashboard's HTTP server: the page, its JSON endpoints, and the guard on actions.

Reading needs nothing. An action that changes the broker (retry, purge) is a
POST that must carry the token printed at start (``X-Taskq-Token`` header or a
``token`` form field, compared in constant time) and must not come from
another site: a browser on this machine could be made to post here by any page
it opens, so a POST whose ``Origin`` is not this dashboard is refused. On a
loopback address it answers only to loopback host names (and those allowed),
so that a page whose name is pointed at 127.0.0.1 cannot read it either.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import TaskqError
from .panels import NotFound, Panels

log = logging.getLogger("taskq.dashboard")

TOKEN_HEADER = "X-Taskq-Token"
MAX_BODY = 64 * 1024
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Scripts and styles only from this server (the page works offline); never framed.
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


def host_name(host: str | None) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:5555`` -> ``::1``."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def foreign_host(host: str | None, allowed: frozenset[str] | None) -> str | None:
    """Why a request's ``Host`` is not this dashboard's, or None if it is.

    A dashboard on loopback answers only to loopback names and ``allowed``: a web
    page whose name an attacker points at 127.0.0.1 (DNS rebinding) cannot read
    it. ``allowed`` None (listening on every address) accepts any name."""
    name = host_name(host)
    if allowed is None or is_loopback(name) or name in allowed:
        return None
    return (
        f"this dashboard does not answer to host {name or '(none)'!r}: if you reach it "
        "by that name (a reverse proxy), start it with --allow-host NAME"
    )


def cross_origin(origin: str | None, host: str | None, fetch_site: str | None) -> str | None:
    """Why a POST comes from another site than this dashboard, or None if it does not.

    A browser sends ``Origin`` with every cross-site POST; a request without it
    comes from a script or curl (which still needs the token)."""
    if origin is None:
        if fetch_site in (None, "same-origin", "none"):
            return None
        return f"a POST from another site (Sec-Fetch-Site: {fetch_site}) is refused"
    if origin == "null" or not host or urlsplit(origin).netloc.lower() != host.lower():
        return f"a POST from {origin} is refused: it is not this dashboard ({host})"
    return None


def check_token(given: str | None, token: str) -> str | None:
    """Why ``given`` does not authorize an action, or None if it does."""
    if not given:
        return (
            f"this action changes the broker: send the token `taskq dashboard` printed "
            f"at start (header {TOKEN_HEADER} or form field token)"
        )
    if not hmac.compare_digest(given.encode(), token.encode()):
        return "wrong token: use the one `taskq dashboard` printed at start"
    return None


class PooledHTTPServer(HTTPServer):
    """``http.server`` answering from a bounded pool of threads (not one per request)."""

    def __init__(self, address: tuple[str, int], threads: int = 8) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="taskq-dashboard")
        super().__init__(address, Handler)
        self.panels: Panels
        self.token: str
        self.allowed_hosts: frozenset[str] | None = frozenset()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._answer, request, client_address)

    def _answer(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=True, cancel_futures=True)


class Handler(BaseHTTPRequestHandler):
    server: PooledHTTPServer
    timeout = 10  # a client that stops sending does not hold a thread for long
    server_version = "taskq-dashboard"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        if self._foreign_host():
            return
        path = urlsplit(self.path).path
        if path in STATIC:
            name, kind = STATIC[path]
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, kind)
            return
        panels = self.server.panels
        readers = {
            "/api/queues": panels.queues,
            "/api/workers": panels.workers,
            "/api/failures": panels.failures,
            "/api/dead": panels.dead,
        }
        parts = path.split("/")
        if path in readers:
            self._answer(readers[path])
        elif len(parts) == 4 and path.startswith("/api/dead/") and parts[3]:
            self._answer(lambda: panels.show(unquote(parts[3])))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no page {path} on this dashboard")

    def do_POST(self) -> None:
        if self._foreign_host():
            return
        url = urlsplit(self.path)
        form = self._form()
        if form is None:
            return
        # The token never in the query string: URLs end up in logs and histories.
        given = self.headers.get(TOKEN_HEADER) or form.get("token")
        why = cross_origin(
            self.headers.get("Origin"), self.headers.get("Host"), self.headers.get("Sec-Fetch-Site")
        ) or check_token(given, self.server.token)
        if why:
            self._error(HTTPStatus.FORBIDDEN, why)
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        action = self._action(url.path.split("/"), form.get("queue") or query.get("queue"))
        if action is None:
            self._error(HTTPStatus.NOT_FOUND, f"no action {url.path} on this dashboard")
        else:
            self._answer(action)

    def _foreign_host(self) -> bool:
        why = foreign_host(self.headers.get("Host"), self.server.allowed_hosts)
        if why:
            self._error(HTTPStatus.FORBIDDEN, why)
        return why is not None

    def _action(self, parts: list[str], queue: str | None) -> Any:
        """/api/dead/retry, /api/dead/purge (all) or /api/dead/ID/retry, /api/dead/ID/purge."""
        panels = self.server.panels
        if parts[:3] != ["", "api", "dead"] or len(parts) not in (4, 5):
            return None
        verb = parts[-1]
        target = unquote(parts[3]) if len(parts) == 5 and parts[3] else None
        if len(parts) == 5 and target is None:
            return None
        if verb == "retry":
            return lambda: panels.retry(target)
        if verb == "purge":
            return lambda: panels.purge(target, queue)
        return None

    def _form(self) -> dict[str, str] | None:
        """The POST's form fields (an empty body is none); None after refusing the body."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "Content-Length is not a number")
            return None
        if length > MAX_BODY or length < 0:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body over {MAX_BODY} bytes")
            return None
        body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
        return {k: v[-1] for k, v in parse_qs(body).items()}

    def _answer(self, read: Any) -> None:
        try:
            data = read()
        except NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except TaskqError as exc:
            self._error(HTTPStatus.CONFLICT, str(exc))
        except Exception as exc:  # the broker failed (Redis down, a disk error)
            log.warning("dashboard: %s failed: %s", self.path, exc)
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"the broker failed: {exc}")
        else:
            self._json(HTTPStatus.OK, data)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message})

    def _json(self, status: HTTPStatus, data: Any) -> None:
        body = json.dumps(data, default=str).encode()
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
