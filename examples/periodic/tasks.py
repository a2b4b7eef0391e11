"""Periodic tasks: run `taskq worker -A tasks` in this folder, `taskq schedule -A tasks`
to see when each runs next."""

from datetime import timedelta

from taskq import periodic, task


@periodic(every=timedelta(seconds=10))
def heartbeat():
    print("still here")


@periodic(cron="0 9 * * 1-5", tz="Europe/Paris", missed="skip")
def morning_report():
    return "report sent"


@periodic(cron="*/5 * * * *", queue="default", max_retries=5)
def sync_accounts():
    return "synced"


@task
def add(x, y):
    return x + y
