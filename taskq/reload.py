"""Hot reload: watch the task sources, debounce, test-import, then ask for a new pool.

The supervisor never imports user code, so it finds the source trees of the
``-A`` modules without importing them, and checks that new code imports in a
throwaway child before it retires a single worker. A save that does not
import is refused: the pool keeps serving the last code that imported.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Folders that never hold code a worker runs, or change without a save.
IGNORED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        "env",
        ".env",
        "site-packages",
        "node_modules",
        ".idea",
        ".vscode",
        "build",
        "dist",
        ".taskq",
    }
)
# Editors' temporary and swap files: a save touches them, they are never imported.
IGNORED_FILES = ("*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913", "*.tmp", ".*.kate-swp")


@dataclass(frozen=True, slots=True)
class WatchSpec:
    roots: tuple[Path, ...]
    include: tuple[str, ...] = ("*.py",)
    exclude: tuple[str, ...] = ()
    ignored_paths: tuple[Path, ...] = ()  # the broker directory, say

    def wants(self, path: Path) -> bool:
        """Whether a change to ``path`` may call for a reload."""
        if any(path == p or p in path.parents for p in self.ignored_paths):
            return False
        root = next((r for r in self.roots if r == path or r in path.parents), None)
        if root is None:
            return False
        relative = path.relative_to(root)
        if any(part in IGNORED_DIRS for part in relative.parts[:-1]):
            return False
        if any(fnmatch.fnmatch(path.name, g) for g in IGNORED_FILES):
            return False
        text = relative.as_posix()
        if any(fnmatch.fnmatch(text, g) or fnmatch.fnmatch(path.name, g) for g in self.exclude):
            return False
        if any(part in self.exclude for part in relative.parts[:-1]):
            return False
        return any(fnmatch.fnmatch(path.name, g) or fnmatch.fnmatch(text, g) for g in self.include)


def source_roots(modules: Iterable[str], cwd: Path) -> list[Path]:
    """The folders holding the given modules' top-level packages, found without importing.

    A top-level module ``tasks`` (tasks.py) gives its folder; a package
    ``app.tasks`` gives the ``app`` package's folder.
    """
    search = [str(cwd), *sys.path]
    roots: list[Path] = []
    for module in modules:
        top = module.partition(".")[0]
        spec = importlib.machinery.PathFinder.find_spec(top, search)
        if spec is None:
            continue
        if spec.origin and spec.has_location:
            root = Path(spec.origin).parent.resolve()
        elif spec.submodule_search_locations:  # a namespace package
            root = Path(next(iter(spec.submodule_search_locations))).resolve()
        else:
            continue
        if root not in roots:
            roots.append(root)
    return roots


class ContentTracker:
    """Remembers each watched file's content hash, so a save of identical bytes,
    a touch or an access is not a change."""

    def __init__(self, spec: WatchSpec) -> None:
        self.spec = spec
        self._hashes: dict[Path, str | None] = {}
        for root in spec.roots:
            for folder, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if d not in IGNORED_DIRS]
                for name in files:
                    path = Path(folder, name)
                    if spec.wants(path):
                        self._hashes[path] = _digest(path)

    def changed(self, paths: Iterable[Path]) -> list[Path]:
        """The paths whose content differs from what was last seen (updating it)."""
        out = []
        for path in sorted(set(paths)):
            digest = _digest(path)
            if self._hashes.get(path, "absent") != digest:
                self._hashes[path] = digest
                out.append(path)
        return out


def _digest(path: Path) -> str | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None


class Reloader:
    """Collects file events from watchdog and reports debounced content changes.

    ``fileno()`` becomes readable when an event arrives, so the supervisor
    waits on it with everything else; ``poll()`` returns the changed files
    once no event has come for ``debounce`` seconds.
    """

    def __init__(self, spec: WatchSpec, debounce: float = 0.25) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self.spec = spec
        self.debounce = debounce
        self.tracker = ContentTracker(spec)
        self._pending: set[Path] = set()
        self._last_event = 0.0
        self._lock = threading.Lock()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        reloader = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write") or event.is_directory:
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                reloader._note([Path(os.fsdecode(p)) for p in paths if p])

        self._observer: Any = Observer()
        for root in spec.roots:
            self._observer.schedule(Handler(), str(root), recursive=True)
        self._observer.daemon = True
        self._observer.start()

    def _note(self, paths: Sequence[Path]) -> None:
        wanted = [p for p in paths if self.spec.wants(p)]
        if not wanted:
            return
        with self._lock:
            self._pending.update(wanted)
            self._last_event = time.monotonic()
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wfd, b"x")

    def fileno(self) -> int:
        return self._rfd

    def next_deadline(self) -> float | None:
        """When (monotonic) ``poll`` may next have something, or None if nothing is pending."""
        with self._lock:
            return self._last_event + self.debounce if self._pending else None

    def poll(self) -> list[Path]:
        """Files whose content changed, once the debounce window has passed; else []."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._rfd, 4096):
                pass
        with self._lock:
            if not self._pending or time.monotonic() < self._last_event + self.debounce:
                return []
            pending, self._pending = self._pending, set()
        return self.tracker.changed(pending)

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=2)
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


def drop_stale_bytecode(paths: Iterable[Path]) -> None:
    """Delete cached bytecode of changed sources.

    Python trusts a .pyc whose recorded mtime (in whole seconds) and size match
    the source, so an edit that keeps the size within the same second would
    load the old code.
    """
    for path in paths:
        if path.suffix == ".py":
            with contextlib.suppress(OSError, ValueError, NotImplementedError):
                os.unlink(importlib.util.cache_from_source(str(path)))


def try_import(context: Any, modules: Sequence[str], timeout: float = 60.0) -> str | None:
    """Import ``modules`` in a throwaway child; the error (file and line) or None.

    The child is forked from the supervisor, which never imported user code,
    so it sees the code exactly as the next pool of workers will.
    """
    from .worker import describe_import_error, import_modules

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
