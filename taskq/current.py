"""The default app: the one the bare ``@task`` and ``AsyncResult(id)`` use.

Kept apart from ``app.py``, which imports ``task.py`` and ``results.py``: they
reach the default app here without importing ``app.py`` back. The app is made
on first use only (from taskq.toml and ``TASKQ_*``), so importing a tasks
module never reads configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import App

_default: App | None = None


def default_app() -> App:
    """The app the bare ``@task`` decorator uses, configured from taskq.toml / env."""
    global _default
    if _default is None:
        # The one import of app.py from below it, run once: by now app.py is loaded
        # (taskq/__init__ imports it), so this is a lookup, not a cycle at import.
        from .app import App

        _default = App()
    return _default


def set_default_app(app: App) -> None:
    """Make ``app`` the default (the worker does this before importing task modules)."""
    global _default
    _default = app
