"""Tests for taskq.config: sources, precedence, parsing and the errors users see."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from taskq.config import DEFAULTS, Settings, describe_keys, load_settings
from taskq.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
ALL_KEYS = [f.name for f in dataclasses.fields(Settings)]


def load(cwd: Path, env: dict[str, str] | None = None, **kwargs: Any) -> Settings:
    """load_settings that never reads the real environment or working directory."""
    return load_settings(environ=env or {}, cwd=cwd, **kwargs)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- sources and precedence -------------------------------------------------------


def test_no_file_env_or_flags_gives_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path) == Settings()
    assert Settings().queues == ("default",)
    assert Settings().broker == ".taskq"


@pytest.mark.parametrize(
    ("key", "in_file", "from_file", "in_env", "from_env", "flag"),
    [
        ("broker", '"file-dir"', "file-dir", "env-dir", "env-dir", "flag-dir"),
        ("concurrency", "2", 2, "3", 3, 4),
        ("queues", '["a", "b"]', ("a", "b"), "c, d", ("c", "d"), ("e",)),
        ("durable", "true", True, "off", False, True),
        ("shutdown_timeout", "5", 5.0, "7.5", 7.5, 9.0),
    ],
)
def test_file_then_env_then_flags_each_override_the_last(
    tmp_path: Path,
    key: str,
    in_file: str,
    from_file: object,
    in_env: str,
    from_env: object,
    flag: object,
) -> None:
    write(tmp_path / "taskq.toml", f"{key} = {in_file}\n")
    env = {f"TASKQ_{key.upper()}": in_env}
    assert getattr(load(tmp_path), key) == from_file
    assert getattr(load(tmp_path, env), key) == from_env
    assert getattr(load(tmp_path, env, overrides={key: flag}), key) == flag


def test_sources_combine_key_by_key(tmp_path: Path) -> None:
    write(tmp_path / "taskq.toml", 'broker = "/srv/q"\nconcurrency = 2\nloglevel = "debug"\n')
    settings = load(tmp_path, {"TASKQ_CONCURRENCY": "6"}, overrides={"loglevel": "error"})
    assert (settings.broker, settings.concurrency, settings.loglevel) == ("/srv/q", 6, "ERROR")
    assert settings.result_expires == 86400.0


def test_override_whose_value_is_none_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "taskq.toml", "concurrency = 2\n")
    settings = load(tmp_path, overrides={"concurrency": None, "broker": None})
    assert settings.concurrency == 2
    assert settings.broker == ".taskq"


def test_broker_is_kept_exactly_as_given(tmp_path: Path) -> None:
    assert load(tmp_path, {"TASKQ_BROKER": "../rel/dir"}).broker == "../rel/dir"


def test_pyproject_tool_taskq_table_is_read(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n[tool.taskq]\nqueues = "hi,lo"\n')
    assert load(tmp_path).queues == ("hi", "lo")


def test_pyproject_without_tool_taskq_is_not_a_config_file(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.ruff]\nline-length = 100\n[tool.other]\nx = 1\n")
    assert load(tmp_path) == Settings()


def test_taskq_toml_wins_over_pyproject(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.taskq]\nconcurrency = 8\nbroker = 'p'\n")
    write(tmp_path / "taskq.toml", "concurrency = 3\n")
    settings = load(tmp_path)
    assert (settings.concurrency, settings.broker) == (3, ".taskq")


def test_taskq_config_env_var_names_the_file_relative_to_cwd(tmp_path: Path) -> None:
    write(tmp_path / "taskq.toml", "concurrency = 3\n")
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "prod.toml", "concurrency = 5\n")
    assert load(tmp_path, {"TASKQ_CONFIG": "conf/prod.toml"}).concurrency == 5


def test_explicit_config_file_wins_over_taskq_config(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", "concurrency = 1\n")
    write(tmp_path / "b.toml", "concurrency = 2\n")
    env = {"TASKQ_CONFIG": str(tmp_path / "a.toml")}
    assert load(tmp_path, env, config_file=tmp_path / "b.toml").concurrency == 2


def test_explicit_pyproject_file_reads_its_tool_taskq_table(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "pyproject.toml", "[tool.taskq]\ndurable = true\n")
    assert load(tmp_path, config_file="sub/pyproject.toml").durable is True


def test_explicit_pyproject_without_tool_taskq_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"has no \[tool\.taskq\] table"):
        load(tmp_path, config_file=path)


def test_missing_explicit_file_error_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, config_file="nope.toml")
    assert str(info.value) == f"config file not found: {tmp_path / 'nope.toml'}"


def test_missing_taskq_config_file_error_says_where_the_name_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"TASKQ_CONFIG": "/no/such/taskq.toml"})
    assert "/no/such/taskq.toml" in str(info.value)
    assert "TASKQ_CONFIG" in str(info.value)


def test_invalid_toml_error_names_the_file_and_the_parser_message(tmp_path: Path) -> None:
    path = write(tmp_path / "taskq.toml", 'broker = ".taskq"\nconcurrency = = 4\n')
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    message = str(info.value)
    assert message.startswith(f"invalid TOML in {path}: ")
    assert "line 2" in message


# -- unknown keys -----------------------------------------------------------------


def test_unknown_key_in_file_names_key_file_and_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "taskq.toml", "concurency = 4\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    message = str(info.value)
    assert message.startswith(f"unknown key 'concurency' from {path}")
    assert "did you mean 'concurrency'?" in message
    valid = message.split("valid keys: ")[1].split(", ")
    assert sorted(valid) == sorted(ALL_KEYS)


def test_a_taskq_table_in_taskq_toml_is_an_unknown_key(tmp_path: Path) -> None:
    write(tmp_path / "taskq.toml", "[taskq]\nconcurrency = 4\n")
    with pytest.raises(ConfigError, match="unknown key 'taskq'"):
        load(tmp_path)


def test_unknown_key_in_pyproject_names_the_table(tmp_path: Path) -> None:
    path = write(tmp_path / "pyproject.toml", "[tool.taskq]\nworkers = 4\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value).startswith(f"unknown key 'workers' from {path} [tool.taskq]; valid keys")


def test_unknown_environment_variable_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"TASKQ_BROKR": "x", "HOME": "/root"})
    message = str(info.value)
    assert "unknown key 'brokr' from environment variable TASKQ_BROKR" in message
    assert "valid keys: broker, broker_group, broker_users, concurrency," in message


def test_crash_hook_variable_is_not_taken_for_a_setting(tmp_path: Path) -> None:
    # Every process of the crash-point test inherits it, the producer included.
    assert load(tmp_path, {"TASKQ_CRASH_AT": "run.done"}) == load(tmp_path, {})


def test_unknown_override_is_reported_as_an_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'colour' from option; valid keys: "):
        load(tmp_path, overrides={"colour": "red"})


# -- types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('concurrency = "4"', "concurrency from {path} must be an integer, got '4' (str)"),
        ("concurrency = 4.0", "concurrency from {path} must be an integer, got 4.0 (float)"),
        ("concurrency = true", "concurrency from {path} must be an integer, got True (bool)"),
        ("durable = 1", "durable from {path} must be a boolean, got 1 (int)"),
        ("broker = 5", "broker from {path} must be a string, got 5 (int)"),
        ("shutdown_timeout = false", "shutdown_timeout from {path} must be a number, got False"),
        ("queues = [1, 2]", "queues from {path} must be a list of strings or a comma-separated"),
    ],
)
def test_wrong_type_error_names_key_source_expected_type_and_value(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = write(tmp_path / "taskq.toml", line + "\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value).startswith(expected.format(path=path))


def test_float_keys_accept_integers_and_store_floats(tmp_path: Path) -> None:
    write(tmp_path / "taskq.toml", "shutdown_timeout = 10\npoll_interval = 2\n")
    settings = load(tmp_path)
    assert settings.shutdown_timeout == 10.0
    assert isinstance(settings.shutdown_timeout, float)
    assert isinstance(settings.poll_interval, float)


def test_list_keys_accept_a_comma_separated_string_in_the_file(tmp_path: Path) -> None:
    write(tmp_path / "taskq.toml", 'modules = "app.tasks, app.mail,"\n')
    assert load(tmp_path).modules == ("app.tasks", "app.mail")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[("true", True), ("TRUE", True), ("1", True), ("yes", True), ("On", True)],
        *[("false", False), ("0", False), ("No", False), ("off", False), (" OFF ", False)],
    ],
)
def test_environment_booleans(tmp_path: Path, text: str, expected: bool) -> None:
    assert load(tmp_path, {"TASKQ_DURABLE": text}).durable is expected


def test_environment_boolean_that_is_not_one_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"TASKQ_DURABLE": "maybe"})
    assert str(info.value) == (
        "durable from environment variable TASKQ_DURABLE must be a boolean"
        " (true/false, 1/0, yes/no, on/off), got 'maybe' (str)"
    )


def test_environment_lists_are_comma_separated_with_blanks_dropped(tmp_path: Path) -> None:
    env = {"TASKQ_QUEUES": " high , default,,low ", "TASKQ_MODULES": ""}
    settings = load(tmp_path, env)
    assert settings.queues == ("high", "default", "low")
    assert settings.modules == ()


def test_environment_numbers_are_parsed(tmp_path: Path) -> None:
    env = {"TASKQ_CONCURRENCY": "8", "TASKQ_RESULT_EXPIRES": "3600", "TASKQ_POLL_INTERVAL": "0.25"}
    settings = load(tmp_path, env)
    assert (settings.concurrency, settings.result_expires, settings.poll_interval) == (
        8,
        3600.0,
        0.25,
    )


@pytest.mark.parametrize(
    ("var", "text", "expected"),
    [
        ("TASKQ_CONCURRENCY", "four", "must be an integer, got 'four'"),
        ("TASKQ_CONCURRENCY", "2.5", "must be an integer, got '2.5'"),
        ("TASKQ_SHUTDOWN_TIMEOUT", "soon", "must be a number, got 'soon'"),
    ],
)
def test_environment_number_that_does_not_parse_is_an_error(
    tmp_path: Path, var: str, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {var: text})
    assert f"from environment variable {var} {expected}" in str(info.value)


# -- values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "concurrency",
        "max_tasks_per_child",
        "max_memory_per_child",
        "shutdown_timeout",
        "result_expires",
        "poll_interval",
    ],
)
def test_negative_counts_and_timeouts_are_errors_naming_the_key(tmp_path: Path, key: str) -> None:
    with pytest.raises(
        ConfigError, match=f"^{key} from option must be a finite number >= 0, got -1"
    ):
        load(tmp_path, overrides={key: -1})


def test_zero_poll_interval_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"poll_interval from environment variable \S+ must be greater than 0"
    ):
        load(tmp_path, {"TASKQ_POLL_INTERVAL": "0"})


def test_not_a_number_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"result_expires from .* must be a finite number"):
        load(tmp_path, {"TASKQ_RESULT_EXPIRES": "nan"})


def test_loglevel_is_case_insensitive_and_stored_upper_case(tmp_path: Path) -> None:
    assert load(tmp_path, {"TASKQ_LOGLEVEL": "warning"}).loglevel == "WARNING"


def test_unknown_loglevel_is_an_error_listing_the_levels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, overrides={"loglevel": "verbose"})
    assert str(info.value) == (
        "loglevel from option must be one of DEBUG, INFO, WARNING, ERROR, got 'verbose'"
    )


def test_empty_queue_list_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="queues from environment variable TASKQ_QUEUES must not"):
        load(tmp_path, {"TASKQ_QUEUES": " , "})


# -- Settings ---------------------------------------------------------------------


def test_replace_returns_a_validated_copy(tmp_path: Path) -> None:
    base = Settings()
    changed = base.replace(loglevel="debug", queues=["a", "b"], shutdown_timeout=5)
    assert (changed.loglevel, changed.queues, changed.shutdown_timeout) == (
        "DEBUG",
        ("a", "b"),
        5.0,
    )
    assert base == Settings()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"concurrency": "4"}, "concurrency from Settings.replace() must be an integer, got '4'"),
        ({"concurrency": -2}, "concurrency from Settings.replace() must be a finite number >= 0"),
        ({"workers": 4}, "unknown key 'workers' from Settings.replace(); valid keys: "),
    ],
)
def test_replace_rejects_what_loading_rejects(changes: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings().replace(**changes)
    assert str(info.value).startswith(expected)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"durable from Settings\(\) must be a boolean"):
        Settings(durable="yes")  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().concurrency = 3  # type: ignore[misc]


def test_worker_count_is_concurrency_or_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert Settings().worker_count == 6
    assert Settings(concurrency=3).worker_count == 3


def test_secret_key_is_kept_out_of_the_repr() -> None:
    settings = Settings(secret_key="hunter2")
    assert settings.secret_key == "hunter2"
    assert "hunter2" not in repr(settings)


# -- the table, describe_keys and config.example.toml ---------------------------------


def test_defaults_table_matches_settings() -> None:
    assert [row.key for row in DEFAULTS] == ALL_KEYS
    assert {row.key: row.default for row in DEFAULTS} == dataclasses.asdict(Settings())
    assert all(row.help and "\n" not in row.help for row in DEFAULTS)


def toml_defaults() -> dict[str, object]:
    """Settings' defaults as tomllib returns them (lists, not tuples)."""
    defaults = dataclasses.asdict(Settings())
    return {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}


def types_of(table: dict[str, object]) -> dict[str, type]:
    return {key: type(value) for key, value in table.items()}


def test_describe_keys_gives_each_default_as_toml_text() -> None:
    rows = describe_keys()
    assert [key for key, _, _ in rows] == ALL_KEYS
    parsed = tomllib.loads("\n".join(f"{key} = {default}" for key, default, _ in rows))
    assert parsed == toml_defaults()
    assert types_of(parsed) == types_of(toml_defaults())


def test_example_file_sets_exactly_the_settings_keys_to_their_defaults() -> None:
    table = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert list(table) == ALL_KEYS
    assert table == toml_defaults()
    assert types_of(table) == types_of(toml_defaults())


def test_example_file_explains_each_key_with_its_help_line() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for key, default, help_text in describe_keys():
        index = lines.index(f"{key} = {default}")
        assert lines[index - 1] == f"# {help_text}"


def test_example_file_loads_as_a_config_file(tmp_path: Path) -> None:
    assert load(tmp_path, config_file=EXAMPLE) == Settings()
