"""Brokers: the contract (``base``) and its implementations, chosen by URL here.

``open_broker`` is the one place that maps a ``broker`` setting to an
implementation: a new broker is a module and one entry in ``_OPENERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Settings
    from .base import Broker


def _open_file(settings: Settings, location: str) -> Broker:
    # Imported when chosen: a process that never opens a file broker does not
    # load its modules.
    from .file import FileBroker
    from .trust import trust_for

    return FileBroker(
        location,
        durable=settings.durable,
        poll_interval=settings.poll_interval,
        trust=trust_for(settings),
    )


def _open_memory(settings: Settings, name: str) -> Broker:
    # One broker per name in this process: Apps with the same URL share it.
    from .memory import named

    return named(name)


def _open_redis(settings: Settings, location: str, scheme: str = "redis") -> Broker:
    try:
        from .redis import RedisBroker
    except ImportError as exc:
        raise ConfigError(
            f"broker {settings.broker!r} needs redis-py: pip install 'taskq[redis]' ({exc})"
        ) from None
    if settings.durable:
        raise ConfigError(
            f"durable = true fsyncs the file broker's files; broker {display_url(settings.broker)} "
            "is Redis, whose durability is its own appendonly/appendfsync settings "
            "(see docs/scaling.md): drop durable, or set it in Redis"
        )
    url, options = _broker_options(f"{scheme}://{location}", {"prefix", "liveness_timeout"})
    prefix = options.get("prefix", "taskq:")
    try:
        liveness = float(options.get("liveness_timeout", "10"))
    except ValueError:
        liveness = -1.0
    if liveness <= 0:
        raise ConfigError(
            f"broker URL: liveness_timeout={options['liveness_timeout']!r} is not a positive "
            "number of seconds"
        )
    if not prefix:
        raise ConfigError("broker URL: prefix= is empty; give one (the default is taskq:)")
    return RedisBroker(
        url, prefix=prefix, liveness_timeout=liveness, result_expires=settings.result_expires
    )


def _broker_options(url: str, ours: set[str]) -> tuple[str, dict[str, str]]:
    """Split taskq's own query parameters off a URL; the rest stay for the client."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {k: v for k, v in query if k in ours}
    rest = urlencode([(k, v) for k, v in query if k not in ours])
    return urlunsplit(parts._replace(query=rest)), options


# scheme -> opener(settings, what follows "<scheme>://"); a bare path is "file".
_OPENERS: dict[str, Callable[[Settings, str], Broker]] = {
    "file": _open_file,
    "memory": _open_memory,
    "redis": _open_redis,
    "rediss": lambda settings, location: _open_redis(settings, location, "rediss"),
}


def open_broker(settings: Settings) -> Broker:
    """The broker a settings' ``broker`` value names: ``<scheme>://...`` or a
    directory path (the file broker)."""
    url = settings.broker
    scheme, location = _split(url)
    opener = _OPENERS.get(scheme)
    if opener is None:
        known = ", ".join(f"{name}://" for name in sorted(_OPENERS))
        raise ConfigError(
            f"broker {url!r}: unsupported scheme {scheme!r} (known: {known}); "
            "give a directory path for the file broker"
        )
    return opener(settings, location)


def display_url(url: str) -> str:
    """A broker URL fit for logs and messages: without its password."""
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not (separator and at):
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


def local_directory(settings: Settings) -> Path | None:
    """The directory a file broker keeps its state in (for ``--reload`` to ignore
    its changes); None for a broker kept elsewhere."""
    scheme, location = _split(settings.broker)
    return Path(location) if scheme == "file" else None


def _split(url: str) -> tuple[str, str]:
    """The scheme and what follows ``<scheme>://``; a bare path is the file broker's."""
    scheme, separator, location = url.partition("://")
    return (scheme, location) if separator else ("file", url)
