"""Watching task sources for ``--reload``: what is watched, what counts as a change.

The supervisor never imports user code, so it finds the source trees of the
``-A`` modules without importing them. A change is a file whose content
differs: a save of identical bytes, a touch or an access is not one.
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
from collections.abc import Iterable, Iterator, Sequence
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
    files: tuple[Path, ...] = ()  # single files watched wherever they are (the config file)

    def wants(self, path: Path) -> bool:
        """Whether a change to ``path`` may call for a reload."""
        if path in self.files:
            return True
        if not self.wants_dir(path.parent):
            return False
        if any(fnmatch.fnmatch(path.name, g) for g in IGNORED_FILES):
            return False
        text = self._relative(path).as_posix()
        if any(fnmatch.fnmatch(text, g) or fnmatch.fnmatch(path.name, g) for g in self.exclude):
            return False
        return any(fnmatch.fnmatch(path.name, g) or fnmatch.fnmatch(text, g) for g in self.include)

    def wants_dir(self, path: Path) -> bool:
        """Whether files in folder ``path`` are watched at all."""
        if any(path == p or p in path.parents for p in self.ignored_paths):
            return False
        relative = self._relative(path)
        if relative.is_absolute():
            return False  # outside every root
        text = relative.as_posix()
        # "generated/*" or "generated" both exclude the folder itself.
        if any(fnmatch.fnmatch(text, g.rstrip("/*") or g) for g in self.exclude):
            return False
        return not any(part in IGNORED_DIRS or part in self.exclude for part in relative.parts)

    def _relative(self, path: Path) -> Path:
        for root in self.roots:
            if root == path or root in path.parents:
                return path.relative_to(root)
        return path

    def walk(self, top: Path | None = None) -> Iterator[tuple[Path, list[Path]]]:
        """Each watched folder under ``top`` (default: every root) with its watched files."""
        for root in [top] if top is not None else self.roots:
            for folder, dirs, files in os.walk(root):
                here = Path(folder)
                if not self.wants_dir(here):
                    dirs[:] = []
                    continue
                dirs[:] = [d for d in dirs if self.wants_dir(here / d)]
                yield here, [here / f for f in files if self.wants(here / f)]


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
        for _, files in spec.walk():
            for path in files:
                self._hashes[path] = _digest(path)
        for path in spec.files:
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


class SourceWatcher:
    """Collects file events from watchdog and reports debounced content changes.

    Each watched folder gets its own non-recursive watch, so ignored trees
    (virtualenvs, node_modules, the broker directory and its churn) cost
    nothing. ``fileno()`` becomes readable when an event arrives, so the
    supervisor waits on it with everything else; ``poll()`` returns the
    changed files once no event has come for ``debounce`` seconds.
    """

    def __init__(self, spec: WatchSpec, debounce: float = 0.25) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self.spec = spec
        self.debounce = debounce
        self.tracker = ContentTracker(spec)
        self._pending: set[Path] = set()
        self._new_dirs: set[Path] = set()
        self._watched: set[Path] = set()
        self._last_event = 0.0
        self._lock = threading.Lock()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        reloader = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                reloader._note([Path(os.fsdecode(p)) for p in paths if p], event.is_directory)

        self._handler = Handler()
        self._observer: Any = Observer()
        for folder, _ in spec.walk():
            self._watch(folder)
        for path in spec.files:  # its folder alone, not the tree below it
            if path.parent.is_dir():
                self._watch(path.parent)
        self._observer.daemon = True
        self._observer.start()

    def _watch(self, folder: Path) -> None:
        if folder not in self._watched:
            self._watched.add(folder)
            self._observer.schedule(self._handler, str(folder), recursive=False)

    def _note(self, paths: Sequence[Path], is_directory: bool) -> None:
        if is_directory:
            wanted = [p for p in paths if self.spec.wants_dir(p) and p not in self._watched]
        else:
            wanted = [p for p in paths if self.spec.wants(p)]
        if not wanted:
            return
        with self._lock:
            (self._new_dirs if is_directory else self._pending).update(wanted)
            self._last_event = time.monotonic()
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wfd, b"x")

    def fileno(self) -> int:
        return self._rfd

    def next_deadline(self) -> float | None:
        """When (monotonic) ``poll`` may next have something, or None if nothing is pending."""
        with self._lock:
            busy = self._pending or self._new_dirs
            return self._last_event + self.debounce if busy else None

    def poll(self) -> list[Path]:
        """Files whose content changed, once the debounce window has passed; else []."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._rfd, 4096):
                pass
        with self._lock:
            if time.monotonic() < self._last_event + self.debounce:
                return []
            pending, self._pending = self._pending, set()
            new_dirs, self._new_dirs = self._new_dirs, set()
        for top in new_dirs:  # a new package: watch it, and count what it already holds
            for folder, files in self.spec.walk(top):
                self._watch(folder)
                pending.update(files)
        return self.tracker.changed(pending) if pending else []

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
