"""The reload machinery the supervisor uses: what is watched, what is a change,
debouncing, and the throwaway import check."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import multiprocess
import pytest

from taskq.reload import try_import
from taskq.watch import (
    ContentTracker,
    SourceWatcher,
    WatchSpec,
    drop_stale_bytecode,
    source_roots,
)


def make_project(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "tasks.py").write_text("VALUE = 1\n")
    (root / "app" / "notes.txt").write_text("not code\n")
    (root / "solo.py").write_text("X = 1\n")
    return root


def test_source_roots_are_found_without_importing(tmp_path: Path) -> None:
    make_project(tmp_path)
    (tmp_path / "app" / "__init__.py").write_text("raise SystemExit('imported!')\n")
    roots = source_roots(["app.tasks", "solo"], tmp_path)
    assert roots == [(tmp_path / "app").resolve(), tmp_path.resolve()]
    assert "app" not in sys.modules


def test_watch_spec_filters_ignored_folders_editor_files_and_globs(tmp_path: Path) -> None:
    broker = tmp_path / "broker"
    spec = WatchSpec(roots=(tmp_path,), exclude=("generated/*",), ignored_paths=(broker,))
    assert spec.wants(tmp_path / "app" / "tasks.py")
    assert not spec.wants(tmp_path / "app" / "notes.txt")
    for path in [
        tmp_path / ".git" / "x.py",
        tmp_path / "app" / "__pycache__" / "tasks.py",
        tmp_path / ".venv" / "lib" / "mod.py",
        tmp_path / "node_modules" / "m.py",
        broker / "queues" / "default" / "ready" / "m.py",
        tmp_path / "generated" / "out.py",
        tmp_path / "app" / ".tasks.py.swp",
        tmp_path / "app" / "tasks.py~",
        tmp_path / "elsewhere.txt",
        Path("/somewhere/else/tasks.py"),
    ]:
        assert not spec.wants(path), path
    assert WatchSpec(roots=(tmp_path,), include=("*.toml", "*.py")).wants(tmp_path / "taskq.toml")


def test_content_tracker_ignores_saves_of_identical_bytes(tmp_path: Path) -> None:
    make_project(tmp_path)
    tracker = ContentTracker(WatchSpec(roots=(tmp_path,)))
    tasks = tmp_path / "app" / "tasks.py"
    tasks.write_text("VALUE = 1\n")  # same bytes
    tasks.touch()
    assert tracker.changed([tasks]) == []
    tasks.write_text("VALUE = 2\n")
    assert tracker.changed([tasks]) == [tasks]
    assert tracker.changed([tasks]) == []  # seen now
    new = tmp_path / "app" / "new.py"
    new.write_text("")
    assert tracker.changed([new]) == [new]


def wait_for_changes(reloader: SourceWatcher, timeout: float = 5.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        changes = reloader.poll()
        if changes:
            return changes
        time.sleep(0.02)
    return []


def test_reloader_debounces_a_burst_of_saves_into_one_change(tmp_path: Path) -> None:
    make_project(tmp_path)
    files = [tmp_path / "app" / f"m{i}.py" for i in range(10)]
    reloader = SourceWatcher(WatchSpec(roots=(tmp_path,)), debounce=0.3)
    try:
        time.sleep(0.2)
        for path in files:
            path.write_text("A = 1\n")
            time.sleep(0.005)
        assert reloader.poll() == []  # still inside the debounce window
        assert sorted(wait_for_changes(reloader)) == sorted(files)
        time.sleep(0.5)
        assert reloader.poll() == []  # one burst, one change
    finally:
        reloader.stop()


def test_reloader_reports_nothing_for_touch_or_ignored_files(tmp_path: Path) -> None:
    make_project(tmp_path)
    reloader = SourceWatcher(WatchSpec(roots=(tmp_path,)), debounce=0.1)
    try:
        time.sleep(0.2)
        (tmp_path / "app" / "tasks.py").touch()
        (tmp_path / "app" / "tasks.py").write_text("VALUE = 1\n")
        (tmp_path / "app" / "notes.txt").write_text("changed\n")
        (tmp_path / "__pycache__").mkdir()
        (tmp_path / "__pycache__" / "x.py").write_text("A = 2\n")
        assert wait_for_changes(reloader, timeout=1.0) == []
    finally:
        reloader.stop()


def test_drop_stale_bytecode_removes_the_cached_pyc(tmp_path: Path) -> None:
    import importlib.util
    import py_compile

    source = tmp_path / "mod.py"
    source.write_text("A = 1\n")
    cached = Path(py_compile.compile(str(source)))
    assert cached == Path(importlib.util.cache_from_source(str(source)))
    drop_stale_bytecode([source])
    assert not cached.exists()


@pytest.fixture
def fork() -> object:
    return multiprocess.get_context("fork")


def test_try_import_reports_syntax_error_with_file_and_line(
    tmp_path: Path, fork: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken_mod.py").write_text("def f(:\n    pass\n")
    error = try_import(fork, ["broken_mod"])
    assert error is not None
    assert "SyntaxError" in error and "broken_mod.py" in error and "line 1" in error
    assert "broken_mod" not in sys.modules


def test_try_import_reports_module_level_exception_and_success(
    tmp_path: Path, fork: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raising_mod.py").write_text("x = 1\nraise RuntimeError('boom at import')\n")
    (tmp_path / "fine_mod.py").write_text("x = 1\n")
    error = try_import(fork, ["raising_mod"])
    assert error is not None and "RuntimeError: boom at import" in error and "line 2" in error
    assert try_import(fork, ["fine_mod"]) is None


def test_a_watched_config_file_does_not_make_its_folder_a_watched_tree(tmp_path: Path) -> None:
    make_project(tmp_path)
    config = tmp_path / "taskq.toml"
    spec = WatchSpec(roots=(tmp_path / "app",), files=(config,))

    assert spec.wants(config)
    assert spec.wants(tmp_path / "app" / "tasks.py")
    assert not spec.wants(tmp_path / "solo.py")  # beside the config file, outside the roots
    assert not spec.wants(tmp_path / "tests" / "test_x.py")


def test_a_config_file_created_after_the_start_is_a_change(tmp_path: Path) -> None:
    make_project(tmp_path)
    config = tmp_path / "taskq.toml"
    reloader = SourceWatcher(WatchSpec(roots=(tmp_path / "app",), files=(config,)), debounce=0.1)
    try:
        time.sleep(0.2)
        (tmp_path / "solo.py").write_text("X = 2\n")  # same folder, not watched
        config.write_text("concurrency = 3\n")
        assert wait_for_changes(reloader) == [config]
    finally:
        reloader.stop()
