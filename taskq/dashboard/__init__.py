"""``taskq dashboard``: a web page of queues, workers and dead letters.

``panels`` reads the broker (through its contract, so any broker works),
``server`` serves the page and its JSON and guards the actions, ``static/``
holds the page itself (no CDN: it works offline).
"""

from __future__ import annotations

import functools
import secrets
import signal
import threading
from collections.abc import Callable
from types import FrameType

from ..config import Settings
from ..errors import TaskqError
from .panels import Panels
from .server import PooledHTTPServer, is_loopback

__all__ = ["Dashboard"]


class Dashboard:
    """The server, its depth sampler and its token; ``start`` in threads or ``run``."""

    def __init__(
        self,
        settings: Settings,
        host: str = "127.0.0.1",
        port: int = 5555,
        interval: float = 2.0,
        history: int = 300,
        allow_hosts: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.token = secrets.token_urlsafe(24)
        self.panels = Panels(settings, interval, history)
        try:
            self.server = PooledHTTPServer((host, port))
        except OSError as exc:
            raise TaskqError(
                f"the dashboard cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "give another --port or --host"
            ) from None
        self.server.panels = self.panels
        self.server.token = self.token
        # Listening on every address, the names it is reached by are not known here.
        everywhere = host in ("", "0.0.0.0", "::")
        names = {host.lower(), *(name.lower() for name in allow_hosts)}
        self.server.allowed_hosts = None if everywhere else frozenset(names)
        self.port = int(self.server.server_address[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    @property
    def local_only(self) -> bool:
        """Whether only this machine can connect (a loopback address or localhost)."""
        return is_loopback(self.host)

    def start(self) -> Dashboard:
        """Sample and serve in background threads (tests, embedding); ``close`` stops them."""
        self._in_background(functools.partial(self.panels.history.run, self._stop))
        self._in_background(functools.partial(self.server.serve_forever, poll_interval=0.1))
        return self

    def run(self) -> None:
        """Serve in this thread until SIGINT or SIGTERM, then stop cleanly."""

        def stop(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        self._in_background(functools.partial(self.panels.history.run, self._stop))
        try:
            self.server.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop.set()
            self.server.server_close()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _in_background(self, target: Callable[[], object]) -> None:
        thread = threading.Thread(target=target, name="taskq-dashboard", daemon=True)
        thread.start()
        self._threads.append(thread)
