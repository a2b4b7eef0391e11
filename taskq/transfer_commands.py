"""What ``taskq export``, ``import`` and ``migrate`` open and write, around ``transfer``:
the brokers a command names, its file (written beside and renamed when whole)
or standard stream, and its progress bar."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from typing import IO

from .brokers.base import Broker
from .config import Settings
from .errors import TaskqError
from .keys import Keyring
from .progress import progress
from .transfer import Summary, check, export, import_, migrate


def export_to(
    settings: Settings, path: str, queues: Collection[str] | None, out: IO[str] | None = None
) -> Summary:
    """``taskq export``: to ``path`` (written beside, renamed when complete, mode
    0600: it holds the calls' arguments), or to ``out`` for ``-``."""
    from .app import App

    app = App.from_settings(settings)
    broker, key = app.broker, app.key
    names = None
    if queues:  # a name given must be a queue of the broker: a typo is not an empty backup
        known = broker.counts()
        missing = [q for q in queues if q not in known]
        if missing:
            raise TaskqError(f"no queue named {', '.join(missing)} on broker {settings.broker}")
        names = sorted(queues)
    with progress("export", lambda: _depth(broker, names)) as tick:
        if out is not None:
            return export(broker, key, out, names, tick)
        partial = f"{path}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with open(fd, "w", encoding="utf-8") as file:
                summary = export(broker, key, file, names, tick)
                file.flush()
                os.fsync(file.fileno())
            os.rename(partial, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise
    return summary


def import_from(
    settings: Settings, path: str, keys_from: str | None, stdin: IO[str] | None = None
) -> Summary:
    """``taskq import``: ``path`` (``stdin`` for ``-``); lines verified with the key
    of broker ``keys_from`` if given, all of them before anything is imported."""
    from .app import App

    app = App.from_settings(settings)
    source_key = None
    if keys_from:
        source_key = _keys_of(settings.replace(broker=keys_from, secret_key=""))
    with contextlib.ExitStack() as stack:
        if stdin is not None:
            source, where = stdin, "<stdin>"
        else:
            try:
                source = stack.enter_context(open(path, encoding="utf-8"))
            except OSError as exc:
                raise TaskqError(f"cannot read {path}: {exc.strerror}") from None
            where = path
        with progress("check", None) as tick:
            verified = stack.enter_context(
                check(app.broker, app.key, source, source_key=source_key, where=where, tick=tick)
            )
        with progress("import", verified.count) as tick:
            return import_(app.broker, app.key, verified, tick=tick)


def _depth(broker: Broker, queues: Collection[str] | None) -> int:
    """How many messages ``queues`` (all if None) hold: the length of a progress bar."""
    counts = broker.counts()
    return sum(
        c.ready + c.scheduled + c.claimed + c.dead
        for q, c in counts.items()
        if queues is None or q in queues
    )


def _keys_of(settings: Settings) -> Keyring:
    """The keys kept in the broker of ``settings`` (``--keys-from``), which must exist:
    opening a missing folder would make a new, empty broker with a key of its own."""
    from .app import App
    from .brokers import local_directory

    folder = local_directory(settings)
    if folder is not None and not folder.is_dir():
        raise TaskqError(
            f"--keys-from: no broker at {folder.absolute()}: the folder does not exist"
        )
    return App.from_settings(settings).broker.keys()


def migrate_to(settings: Settings, url: str) -> Summary:
    """``taskq migrate --to URL``: the broker of ``settings`` into broker ``url``
    (a folder made durable: each batch is on disk before the source lets it go)."""
    from .app import App
    from .brokers import local_directory

    source = App.from_settings(settings)
    target = settings.replace(broker=url)
    if local_directory(target) is not None:
        target = target.replace(durable=True)
    destination = App.from_settings(target)
    with progress("migrate", lambda: _depth(source.broker, None)) as tick:
        return migrate(source.broker, source.key, destination.broker, destination.key, tick)
