"""Settings: one table of keys, read from defaults < file < ``TASKQ_*`` env < flags.

The fields of :class:`Settings` are the table: each carries its default, its
type and one line of help, and :data:`DEFAULTS` is the same table as plain
rows. :func:`load_settings` is the only place that reads files or the
environment; everything else receives a frozen ``Settings``.
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, get_origin, get_type_hints

from taskq.errors import ConfigError

__all__ = [
    "DEFAULTS",
    "LOGLEVELS",
    "Key",
    "Settings",
    "config_file_path",
    "describe_keys",
    "load_settings",
]

LOGLEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")

_T = TypeVar("_T")


def _key(default: _T, doc: str, *, secret: bool = False) -> _T:
    return field(default=default, repr=not secret, metadata={"help": doc})


@dataclass(frozen=True)
class Settings:
    """Validated configuration; build it with :func:`load_settings` or :meth:`replace`."""

    broker: str = _key(
        ".taskq", "a directory (the file broker), redis://host:6379/0 (Redis) or memory://"
    )
    secret_key: str = _key(
        "",
        'HMAC key signing messages and results; "" = generate once into <broker>/secret',
        secret=True,  # keep the key out of reprs and logs
    )
    previous_secret_keys: tuple[str, ...] = _key(
        (),
        "keys of before a rotation of secret_key: still verify (never sign) until dropped",
        secret=True,
    )
    broker_users: tuple[str, ...] = _key(
        (), "users (names or uids) besides this one and root trusted to own the broker's files"
    )
    broker_group: str = _key(
        "", 'group sharing the broker: folders 2770, files 0660, key 0640; "" = private (0700)'
    )
    trust_check_interval: float = _key(
        60.0, "seconds between a worker's re-checks of the owners and modes of the broker"
    )
    queues: tuple[str, ...] = _key(("default",), "queues a worker consumes, in priority order")
    modules: tuple[str, ...] = _key((), "task modules a worker imports (what -A sets)")
    concurrency: int = _key(0, "worker processes; 0 = number of CPUs")
    loglevel: str = _key("INFO", "log level: DEBUG, INFO, WARNING or ERROR")
    logfile: str = _key("", 'file the worker logs to (appended); "" = standard error')
    log_format: str = _key("text", "text, or json: one object per line, with task fields")
    max_tasks_per_child: int = _key(0, "recycle a worker process after N tasks; 0 = never")
    max_memory_per_child: int = _key(0, "recycle a worker process above this RSS in MB; 0 = never")
    shutdown_timeout: float = _key(30.0, "seconds a warm shutdown waits for in-flight tasks")
    default_time_limit: float = _key(
        3600.0, "a task with no time_limit of its own is killed after this (seconds); 0 = no limit"
    )
    result_expires: float = _key(86400.0, "seconds results are kept")
    dead_letter_expires: float = _key(
        604800.0, "seconds dead letters are kept (7 days), then deleted; 0 = until purged"
    )
    durable: bool = _key(
        False,
        "file broker: fsync messages (and their folders) before publish returns; batch: one flush",
    )
    poll_interval: float = _key(
        1.0, "file broker: seconds between listings when filesystem events are unavailable"
    )
    eager: bool = _key(
        False, "tests: .delay() runs the task at once in the caller, on a private memory broker"
    )
    reload: bool = _key(False, "reload worker code when task sources change (development)")
    reload_dirs: tuple[str, ...] = _key((), "more folders to watch besides the -A modules' trees")
    reload_include: tuple[str, ...] = _key(("*.py",), "file globs whose changes cause a reload")
    reload_exclude: tuple[str, ...] = _key((), "file globs and folder names never watched")
    reload_debounce: float = _key(0.25, "seconds of quiet after a change before reloading")
    reload_grace: float = _key(
        30.0, "seconds a reload waits for tasks in flight before requeueing them uncounted"
    )
    # -- monitoring (docs/monitoring.md) --
    events: bool = _key(False, "record every message's state changes in the broker (taskq events)")
    metrics_port: int = _key(0, "port the worker serves Prometheus metrics on; 0 = none")
    metrics_host: str = _key("127.0.0.1", "address the metrics port listens on")
    schedule: bool = _key(True, "taskq worker runs the @periodic tasks' schedule (--no-schedule)")
    timezone: str = _key("UTC", "time zone of cron schedules without tz= (an IANA name)")

    def __post_init__(self) -> None:
        for name in _NAMES:
            # Frozen: normalised values (upper-case loglevel, list -> tuple) go in this way.
            object.__setattr__(self, name, _coerce(name, getattr(self, name), "Settings()"))

    def replace(self, **changes: object) -> Settings:
        """Return a copy with ``changes`` applied, validated like a loaded value."""
        return dataclasses.replace(self, **_validated(changes, "Settings.replace()"))

    @property
    def worker_count(self) -> int:
        """Worker processes to start: ``concurrency``, or the number of CPUs when it is 0."""
        return self.concurrency or os.cpu_count() or 1


class Key(NamedTuple):
    """One row of :data:`DEFAULTS`; ``type`` is str, int, float, bool or tuple (of str)."""

    key: str
    default: object
    type: builtins.type
    help: str


def _table() -> tuple[Key, ...]:
    # tuple[str, ...] -> tuple: the row names the container; its items are always str.
    kinds = {name: get_origin(hint) or hint for name, hint in get_type_hints(Settings).items()}
    return tuple(
        Key(f.name, f.default, kinds[f.name], f.metadata["help"])
        for f in dataclasses.fields(Settings)
    )


DEFAULTS: tuple[Key, ...] = _table()
"""Every key with its default, type and help, in the order of ``Settings``' fields."""

_NAMES = tuple(k.key for k in DEFAULTS)
_KINDS = {k.key: k.type for k in DEFAULTS}
_EXPECTED = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    tuple: "a list of strings or a comma-separated string",
}
_BOOLS = dict.fromkeys(("true", "1", "yes", "on"), True)
_BOOLS |= dict.fromkeys(("false", "0", "no", "off"), False)


def describe_keys() -> list[tuple[str, str, str]]:
    """Return ``(key, default as TOML text, help)`` for every key, for docs and ``--help``."""
    return [(k.key, _toml(k.default), k.help) for k in DEFAULTS]


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Settings:
    """Build ``Settings`` from defaults < config file < ``TASKQ_*`` variables < ``overrides``.

    With no ``config_file``: ``$TASKQ_CONFIG``, else ``taskq.toml`` in ``cwd``, else
    ``[tool.taskq]`` of ``pyproject.toml`` in ``cwd``, else no file. Override keys whose
    value is None are ignored. Raises ConfigError naming the key and where it came from.
    """
    env = os.environ if environ is None else environ
    base = Path(os.getcwd() if cwd is None else cwd)
    values = _validated(*_find_file(config_file, env, base))
    values |= _from_environ(env)
    values |= _validated({k: v for k, v in (overrides or {}).items() if v is not None}, "option")
    return Settings(**values)


def config_file_path(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Path | None:
    """The file :func:`load_settings` reads with these arguments, or None (for --reload)."""
    env = os.environ if environ is None else environ
    _, name = _find_file(config_file, env, Path(os.getcwd() if cwd is None else cwd))
    return Path(name.removesuffix(" [tool.taskq]")) if name else None


def _find_file(
    config_file: str | os.PathLike[str] | None, env: Mapping[str, str], cwd: Path
) -> tuple[Mapping[str, object], str]:
    """Return the config table and its name for messages; ``({}, "")`` when there is none."""
    via = ""
    if config_file is None and env.get("TASKQ_CONFIG"):
        config_file, via = env["TASKQ_CONFIG"], " (named by TASKQ_CONFIG)"
    if config_file is not None:
        path = cwd / config_file
        data = _read_toml(path, via)
        if path.name == "pyproject.toml":
            return _tool_table(data, path, required=True)
        return data, str(path)
    if (cwd / "taskq.toml").is_file():
        return _read_toml(cwd / "taskq.toml", ""), str(cwd / "taskq.toml")
    if (cwd / "pyproject.toml").is_file():
        return _tool_table(_read_toml(cwd / "pyproject.toml", ""), cwd / "pyproject.toml")
    return {}, ""


def _read_toml(path: Path, via: str) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}{via}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}{via}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"invalid TOML in {path}: {e}") from None


def _tool_table(
    data: Mapping[str, object], path: Path, required: bool = False
) -> tuple[Mapping[str, object], str]:
    tool = data.get("tool")
    table = tool.get("taskq") if isinstance(tool, dict) else None
    if table is None:
        if required:
            raise ConfigError(f"{path} has no [tool.taskq] table")
        return {}, ""
    if not isinstance(table, dict):
        raise ConfigError(f"tool.taskq in {path} must be a table, got {table!r}")
    return table, f"{path} [tool.taskq]"


# TASKQ_* variables that are not settings: the config file's path, and the
# test-only crash hook (taskq/crashpoints.py), which every process of a test reads.
_NOT_SETTINGS = frozenset({"TASKQ_CONFIG", "TASKQ_CRASH_AT"})


def _from_environ(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for var, text in env.items():
        if not var.startswith("TASKQ_") or var in _NOT_SETTINGS:
            continue
        key, source = var.removeprefix("TASKQ_").lower(), f"environment variable {var}"
        if key not in _KINDS:
            raise _unknown(key, source)
        values[key] = _coerce(key, _parse_env(key, text, source), source)
    return values


def _parse_env(key: str, text: str, source: str) -> object:
    kind, word = _KINDS[key], text.strip().lower()
    if kind is bool and word not in _BOOLS:
        raise _wrong_type(key, source, text, "a boolean (true/false, 1/0, yes/no, on/off)")
    if kind is bool:
        return _BOOLS[word]
    try:
        return kind(word) if kind is int or kind is float else text
    except ValueError:
        raise _wrong_type(key, source, text) from None


def _validated(values: Mapping[str, object], source: str) -> dict[str, Any]:
    for key in values:
        if key not in _KINDS:
            raise _unknown(key, source)
    return {key: _coerce(key, value, source) for key, value in values.items()}


def _coerce(key: str, value: object, source: str) -> object:
    """Check ``value``'s type (TOML rules) and range; return it normalised."""
    kind = _KINDS[key]
    result: object = None
    if isinstance(value, bool):
        result = value if kind is bool else None  # bool is an int subclass: never a count
    elif kind is float and isinstance(value, int | float):
        result = float(value)
    elif kind is tuple:
        result = _names(value)
    elif isinstance(value, kind):
        result = value
    if result is None:
        raise _wrong_type(key, source, value)
    return _check_range(key, result, source)


def _names(value: object) -> tuple[str, ...] | None:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(s, str) for s in items):
        return None
    return tuple(s.strip() for s in items if s.strip())


def _check_range(key: str, value: object, source: str) -> object:
    problem = ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            problem = "must be a finite number >= 0"
        elif key in ("poll_interval", "trust_check_interval") and value == 0:
            problem = "must be greater than 0"
    elif key == "loglevel" and isinstance(value, str):
        if value.upper() not in LOGLEVELS:
            problem = f"must be one of {', '.join(LOGLEVELS)}"
        else:
            value = value.upper()
    elif key == "log_format" and value not in LOG_FORMATS:
        problem = f"must be one of {', '.join(LOG_FORMATS)}"
    if key == "metrics_port" and isinstance(value, int) and value > 65535:
        problem = "must be a TCP port (1-65535), or 0 for none"
    elif key in ("broker", "queues") and not value:
        problem = "must not be empty"
    elif key == "timezone":
        problem = _zone_problem(str(value))
    if problem:
        raise ConfigError(f"{key} from {source} {problem}, got {value!r}")
    return value


def _zone_problem(name: str) -> str:
    """Why ``name`` is not a time zone zoneinfo knows, or "" (periodic tasks' ``timezone``)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "must be an IANA time zone name such as 'UTC' or 'Europe/Paris'"
    return ""


def _unknown(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, _NAMES, n=1, cutoff=0.8)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"unknown key {key!r} from {source}{hint}; valid keys: {', '.join(sorted(_NAMES))}"
    )


def _wrong_type(key: str, source: str, value: object, expected: str = "") -> ConfigError:
    expected = expected or _EXPECTED[_KINDS[key]]
    return ConfigError(
        f"{key} from {source} must be {expected}, got {value!r} ({type(value).__name__})"
    )


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)
