"""Hot reload: on a debounced source change, prove the new code imports, then
hand the supervisor the settings for a fresh pool.

A save that does not import is refused before a single worker is retired:
the pool keeps serving the last code that imported cleanly, and the next
save that imports is picked up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .brokers import local_directory
from .config import Settings
from .errors import ConfigError
from .watch import SourceWatcher, WatchSpec, drop_stale_bytecode, source_roots

log = logging.getLogger("taskq.reload")


def try_import(context: Any, modules: Sequence[str], timeout: float = 60.0) -> str | None:
    """Import ``modules`` in a throwaway child; the error (file and line) or None.

    The child is forked from the supervisor, which never imported user code,
    so it sees the code exactly as the next pool of workers will.
    """
    from .child import describe_import_error, import_modules

    receiver, sender = context.Pipe(duplex=False)

    def probe() -> None:
        try:
            import_modules(tuple(modules))
        except BaseException as exc:  # an exit() at module level is a failure too
            sender.send_bytes(describe_import_error(exc).encode())
            return
        sender.send_bytes(b"")

    child = context.Process(target=probe, name="taskq-import-check", daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            return f"importing {', '.join(modules)} took longer than {timeout:.0f} s"
        error = receiver.recv_bytes().decode()
        return error or None
    except EOFError:
        return f"the import check died (exit code {child.exitcode})"
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join(5)


# Settings of the watching itself: read once, when the supervisor starts.
_FIXED_AT_START = (
    "reload",
    "reload_dirs",
    "reload_include",
    "reload_exclude",
    "reload_debounce",
)


class HotReload:
    """Watches the sources of a worker's task modules and decides when to reload."""

    def __init__(
        self,
        settings: Settings,
        reread: Callable[[], Settings],
        context: Any,
        config_file: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.settings = settings
        self._reread = reread
        self._context = context
        cwd = cwd or Path.cwd()
        roots = source_roots(settings.modules, cwd)
        roots += [(cwd / d).resolve() for d in settings.reload_dirs]
        # A config change reloads too (the new pool runs with the new settings),
        # and so does a taskq.toml created after the start.
        config = (config_file or cwd / "taskq.toml").resolve()
        self.spec = WatchSpec(
            roots=tuple(dict.fromkeys(roots)),
            include=settings.reload_include,
            exclude=settings.reload_exclude,
            ignored_paths=tuple(p.resolve() for p in [local_directory(settings)] if p),
            files=(config,),
        )
        # watchdog logs every inotify event at DEBUG and its shutdown at ERROR: ours suffice.
        logging.getLogger("watchdog").setLevel(logging.CRITICAL)
        self.watcher = SourceWatcher(self.spec, debounce=settings.reload_debounce)
        self.serving_since = _clock()
        self.refused = False  # the last save did not import: the code on disk is broken
        watched = [*self.spec.roots, *self.spec.files]
        log.info("Watching for changes: %s", ", ".join(str(p) for p in watched))

    def fileno(self) -> int:
        return self.watcher.fileno()

    def timeout(self, default: float) -> float:
        """How long the supervisor may sleep before the debounce window closes."""
        deadline = self.watcher.next_deadline()
        return default if deadline is None else max(0.0, min(default, deadline - time.monotonic()))

    def check(self) -> tuple[Settings, list[Path]] | None:
        """New settings and the changed files when a reload should happen now, else None.

        Refusals (bad config, code that does not import) are logged here, loudly,
        and the running pool is left alone.
        """
        changed = self.watcher.poll()
        if not changed:
            return None
        drop_stale_bytecode(changed)
        names = ", ".join(_short(p) for p in changed)
        try:
            settings = self._reread()
        except ConfigError as exc:
            self._refuse(names, f"the configuration is invalid: {exc}")
            return None
        for key in ("broker", "secret_key"):
            if getattr(settings, key) != getattr(self.settings, key):
                self._refuse(names, f"{key} changed: restart the worker to change it")
                return None
        fixed = [k for k in _FIXED_AT_START if getattr(settings, k) != getattr(self.settings, k)]
        if fixed:
            log.warning("%s changed: it takes effect when the worker restarts", ", ".join(fixed))
        error = try_import(self._context, settings.modules)
        if error is not None:
            self._refuse(names, error)
            return None
        self.settings = settings
        self.serving_since = _clock()
        self.refused = False
        return settings, changed

    def _refuse(self, names: str, why: str) -> None:
        self.refused = True
        log.error(
            "RELOAD REFUSED after changes to %s: %s. Still serving the code loaded at %s; "
            "fix it and save again.",
            names,
            why,
            self.serving_since,
        )
        return None

    def child_failed_import(self, slot: int) -> None:
        """Say why a respawned child cannot serve while the last save was refused:
        a new process imports the code on disk, not the code that was checked."""
        if self.refused:
            log.warning(
                "Worker %s restarted into the code on disk, whose last save was refused: it "
                "serves nothing until a save imports cleanly; the other workers keep the code "
                "loaded at %s",
                slot,
                self.serving_since,
            )

    def stop(self) -> None:
        self.watcher.stop()


def _clock() -> str:
    """The wall clock as the log lines give it (the CLI logs in UTC), so the
    "still serving the code loaded at" time matches a line of the log."""
    return time.strftime("%H:%M:%S", logging.Formatter.converter(time.time()))


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
