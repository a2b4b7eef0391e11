"""``@periodic``: declaration errors, the schedule's arithmetic and time zones, and
the scheduler's rounds (one publisher, missed ticks, takeover) on a memory broker."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from taskq import App, periodic
from taskq.config import load_settings
from taskq.errors import ConfigError, TaskqError
from taskq.periodic import Periodic, Schedule, periodic_tasks
from taskq.scheduler import Scheduler, lease_name, tick_id


def at(*fields: int, tz: Any = UTC) -> float:
    return datetime(*fields, tzinfo=tz).timestamp()


def nothing() -> None:
    return None


@pytest.fixture
def app() -> App:
    app = App(broker="memory://periodic-tests")
    app.broker.reset()  # type: ignore[attr-defined]
    return app


def declare(app: App, name: str, **schedule: Any) -> Periodic:
    app.periodic(name=f"tests.periodic.{name}", **schedule)(nothing)
    return periodic_tasks()[f"tests.periodic.{name}"]


def ready(app: App) -> list[str]:
    broker = app.broker
    consumer = broker.open_consumer(["default"], f"c-{id(object())}")
    names = []
    while (delivery := consumer.claim(0)) is not None:
        names.append(delivery.name)
        broker.ack(delivery)
    consumer.close()
    return names


# -- declaring -----------------------------------------------------------------


def test_invalid_cron_fails_at_declaration_naming_the_task_and_the_expression() -> None:
    with pytest.raises(TaskqError) as error:
        periodic(cron="61 * * * *", name="tests.periodic.bad_cron")(nothing)
    assert "tests.periodic.bad_cron" in str(error.value) and "'61 * * * *'" in str(error.value)
    assert "tests.periodic.bad_cron" not in periodic_tasks()


@pytest.mark.parametrize(
    ("schedule", "says"),
    [
        ({}, "either cron=... or every=..."),
        ({"cron": "* * * * *", "every": 5}, "either cron=... or every=..."),
        ({"every": 0.5}, "at least 1 second"),
        ({"every": "5"}, "timedelta or seconds"),
        ({"every": 5, "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"every": 5, "missed": "burst"}, "missed must be one of run_once, skip"),
    ],
)
def test_a_bad_schedule_is_refused_saying_what_is_wrong(
    schedule: dict[str, Any], says: str
) -> None:
    with pytest.raises(TaskqError, match=r"tests\.periodic\.refused") as error:
        periodic(name="tests.periodic.refused", **schedule)(nothing)
    assert says in str(error.value)


def test_a_function_that_needs_arguments_is_refused_at_declaration() -> None:
    def report(day: str) -> None:
        return None

    with pytest.raises(TaskqError, match=r"called with no arguments, but report\(day\) needs more"):
        periodic(every=60, name="tests.periodic.needs_arguments")(report)
    with pytest.raises(TaskqError, match=r"called with self only \(bind=True\)"):
        periodic(every=60, bind=True, name="tests.periodic.needs_more")(lambda self, day: None)


def test_a_periodic_task_is_still_a_task_with_its_options_and_delay(app: App) -> None:
    entry = declare(app, "plain", every=timedelta(seconds=30), queue="default", max_retries=7)
    assert entry.schedule.every == 30.0 and entry.task.options.max_retries == 7
    entry.task.delay()
    assert len(ready(app)) == 1


def test_the_timezone_setting_is_checked_by_name() -> None:
    assert load_settings(overrides={"timezone": "Europe/Paris"}).timezone == "Europe/Paris"
    with pytest.raises(ConfigError, match=r"timezone .* IANA time zone"):
        load_settings(overrides={"timezone": "Paris"})


# -- the schedule's arithmetic --------------------------------------------------


def test_every_ticks_on_multiples_of_the_interval_so_all_workers_agree() -> None:
    schedule = Schedule(every=30.0)
    now = at(2026, 3, 1, 12, 0, 47)
    assert schedule.latest(now, UTC) == at(2026, 3, 1, 12, 0, 30)
    assert schedule.next_after(now, UTC) == at(2026, 3, 1, 12, 1, 0)
    assert schedule.ticks_between(at(2026, 3, 1, 12, 0, 0), at(2026, 3, 1, 12, 2, 0), UTC) == 3


def test_cron_is_read_in_its_time_zone() -> None:
    schedule = Schedule(cron="0 9 * * *")
    paris = ZoneInfo("Europe/Paris")
    now = at(2026, 7, 1, 12, 0)  # 14:00 in Paris (summer time, UTC+2)
    assert schedule.latest(now, paris) == at(2026, 7, 1, 7, 0)  # 09:00 Paris
    assert schedule.latest(now, UTC) == at(2026, 7, 1, 9, 0)
    assert schedule.next_after(now, paris) == at(2026, 7, 2, 7, 0)
    assert schedule.latest(at(2026, 7, 1, 9, 0), UTC) == at(2026, 7, 1, 9, 0)  # at the tick


# -- the scheduler's rounds -----------------------------------------------------


def test_only_the_lease_holder_publishes_and_each_tick_once(app: App) -> None:
    entry = declare(app, "every_second", every=1)
    one = Scheduler(app.broker, [entry], "one", renew_every=0)
    two = Scheduler(app.broker, [entry], "two", renew_every=0)
    start = at(2026, 3, 1, 12, 0, 0)
    published = []
    for tenth in range(50):  # five seconds of rounds, both schedulers each round
        now = start + tenth / 10
        published.append(one.step(now) + two.step(now))
    assert sum(published) == 5 and one.owning and not two.owning
    names = ready(app)
    assert len(names) == 5 and all(
        tick_id(entry.task.name, start + s) in str(names) for s in range(5)
    )


def test_the_lease_passes_to_another_scheduler_when_its_owner_goes_silent(app: App) -> None:
    entry = declare(app, "takeover", every=1)
    one = Scheduler(app.broker, [entry], "one", renew_every=0)
    two = Scheduler(app.broker, [entry], "two", renew_every=0)
    start = at(2026, 3, 1, 12, 0, 0)
    assert one.step(start) == 1 and two.step(start) == 0
    # "one" dies here; the memory broker's lease lapses LEASE_TTL seconds (monotonic) later.
    app.broker._leases[lease_name(entry.task.name)] = ("one", 0.0)  # type: ignore[attr-defined]
    assert two.step(start + 1) == 1 and two.owning
    assert len(ready(app)) == 2


def test_a_new_owner_finds_a_tick_published_but_not_recorded_and_does_not_repeat_it(
    app: App,
) -> None:
    entry = declare(app, "crash_window", every=60)
    tick = at(2026, 3, 1, 12, 0, 0)
    app.broker.record_tick(entry.task.name, tick - 60)
    entry.task.apply_async(task_id=tick_id(entry.task.name, tick))  # then the owner died
    new_owner = Scheduler(app.broker, [entry], "next")
    assert new_owner.step(tick + 1) == 1  # the tick is settled: recorded...
    assert app.broker.last_tick(entry.task.name) == tick
    assert len(ready(app)) == 1  # ...and published once, not twice


def test_missed_ticks_run_once_on_start_never_as_a_burst(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    entry = declare(app, "run_once", every=3600)
    now = at(2026, 3, 1, 12, 30, 0)
    app.broker.record_tick(entry.task.name, at(2026, 3, 1, 7, 0, 0))  # 5 ticks missed
    with caplog.at_level(logging.WARNING, "taskq.schedule"):
        assert Scheduler(app.broker, [entry], "s").step(now) == 1
    assert len(ready(app)) == 1
    assert app.broker.last_tick(entry.task.name) == at(2026, 3, 1, 12, 0, 0)
    assert "missed 5 tick(s)" in caplog.text and "running it once now" in caplog.text


def test_missed_ticks_are_skipped_with_missed_skip(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    entry = declare(app, "skip", every=3600, missed="skip")
    now = at(2026, 3, 1, 12, 30, 0)
    app.broker.record_tick(entry.task.name, at(2026, 3, 1, 7, 0, 0))
    scheduler = Scheduler(app.broker, [entry], "s")
    with caplog.at_level(logging.WARNING, "taskq.schedule"):
        assert scheduler.step(now) == 0
        assert scheduler.step(now + 1) == 0
    assert ready(app) == []
    # The broker records runs only: the last run is still the one before the gap.
    assert app.broker.last_tick(entry.task.name) == at(2026, 3, 1, 7, 0, 0)
    assert caplog.text.count("missed 5 tick(s)") == 1 and "skipped" in caplog.text
    assert scheduler.step(at(2026, 3, 1, 13, 0, 1)) == 1  # the next tick runs on time
    assert app.broker.last_tick(entry.task.name) == at(2026, 3, 1, 13, 0, 0)


def test_a_task_never_run_starts_at_its_next_tick_not_with_a_late_one(app: App) -> None:
    entry = declare(app, "fresh", cron="0 * * * *")
    scheduler = Scheduler(app.broker, [entry], "s")
    assert scheduler.step(at(2026, 3, 1, 12, 30, 0)) == 0
    assert app.broker.last_tick(entry.task.name) is None  # `taskq schedule`: never ran
    assert scheduler.step(at(2026, 3, 1, 13, 0, 0)) == 1
    assert len(ready(app)) == 1


def test_workers_that_import_different_tasks_each_run_the_ones_they_know(app: App) -> None:
    mine, theirs = declare(app, "mine", every=1), declare(app, "theirs", every=1)
    one = Scheduler(app.broker, [mine], "one", renew_every=0)
    two = Scheduler(app.broker, [mine, theirs], "two", renew_every=0)
    start = at(2026, 3, 1, 12, 0, 0)
    assert one.step(start) == 1  # takes mine's lease first
    assert two.step(start) == 1  # theirs: nobody else knows it
    assert (one.owned, two.owned) == ({mine.task.name}, {theirs.task.name})
    assert len(ready(app)) == 2


@pytest.mark.parametrize("night", [(2026, 3, 29), (2026, 10, 25)], ids=["spring", "autumn"])
def test_a_daily_cron_at_a_time_daylight_saving_skips_or_repeats_runs_once(
    app: App, night: tuple[int, int, int]
) -> None:
    entry = declare(app, f"dst_{night[1]}", cron="30 2 * * *", tz="Europe/Paris")
    scheduler = Scheduler(app.broker, [entry], "s")
    start = at(*night, 0, 0) - 3600  # 23:00 UTC the evening before
    published = sum(scheduler.step(start + minute * 60) for minute in range(6 * 60))
    assert published == 1
    assert len(ready(app)) == 1
