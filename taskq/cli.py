"""The ``taskq`` command. Each command reads settings, calls one function, prints.

A ``TaskqError`` (a user's mistake) becomes one line on stderr and exit code 1,
never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import admin, keys, monitor
from .brokers import display_url, local_directory, open_broker
from .config import Settings, config_file_path, load_settings
from .errors import TaskqError
from .logs import setup_logging
from .progress import progress
from .results import FAILURE, REVOKED

F = TypeVar("F", bound=Callable[..., Any])


def _errors_as_one_line(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TaskqError as exc:
            click.echo(f"taskq: error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _settings(ctx: click.Context, *, create: bool = False, **flags: Any) -> Settings:
    """The settings of this command. Only ``create`` (the worker) may make a file
    broker's folder: a command that inspects or changes a broker needs one there."""
    root = ctx.find_root().params
    flags = dict(flags)
    broker = flags.pop("broker", None) or ctx.meta.get("broker") or root.get("broker")
    config = flags.pop("config", None) or ctx.meta.get("config") or root.get("config")
    settings = load_settings(config, {"broker": broker, **flags})
    folder = local_directory(settings)
    if not create and folder is not None and not folder.exists():
        raise TaskqError(
            f"no broker at {folder.absolute()}: the folder does not exist (a worker or "
            "the first .delay() makes it); give the broker with --broker, TASKQ_BROKER "
            "or `broker` in taskq.toml"
        )
    return settings


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[param.name] = value  # ctx.meta is shared with the whole command line


def _broker_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--broker`` and ``--config`` after a command too (``taskq status --broker X``),
    as Celery takes them."""
    command = click.option(
        "--config",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=_remember,
        help="Config file (also accepted before the command).",
    )(command)
    return click.option(
        "--broker",
        "-b",
        expose_value=False,
        callback=_remember,
        help="Broker directory or URL (also accepted before the command).",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--broker", "-b", help="Broker directory or URL (default: ./.taskq or config).")
@click.option("--config", type=click.Path(dir_okay=False), help="Config file (taskq.toml).")
@click.version_option(package_name="taskq")
def main(broker: str | None, config: str | None) -> None:
    """taskq: background tasks with no server to install."""


@main.command()
@click.option("--app", "-A", "modules", help="Task modules to import, comma-separated.")
@_broker_options
@click.option("--concurrency", "-c", type=int, help="Worker processes (default: CPUs).")
@click.option(
    "--hostname",
    "-n",
    help="This worker's name on the broker; %h is the host name (default: HOST-PID).",
)
@click.option("--queues", "-Q", help="Queues to consume, comma-separated, in priority order.")
@click.option("--loglevel", "-l", help="DEBUG, INFO, WARNING or ERROR.")
@click.option("--logfile", "-f", help="Log to this file (appended) instead of stderr.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="text (default) or json.")
@click.option("--max-tasks-per-child", type=int, help="Recycle a process after N tasks.")
@click.option("--max-memory-per-child", type=int, help="Recycle a process above N MB RSS.")
@click.option("--shutdown-timeout", type=float, help="Seconds a warm shutdown waits.")
@click.option("--reload", is_flag=True, default=None, help="Reload workers when code changes.")
@click.option("--reload-dir", "reload_dirs", multiple=True, help="Another folder to watch.")
@click.option("--reload-include", help="File globs that trigger a reload, comma-separated.")
@click.option("--reload-exclude", help="File globs or folders never watched, comma-separated.")
@click.option("--events/--no-events", default=None, help="Record events (taskq events).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics.")
@click.option("--metrics-host", help="Address of the metrics port (default: 127.0.0.1).")
@click.option(
    "--no-schedule",
    "schedule",
    flag_value=False,
    default=None,
    help="Do not run the @periodic tasks' schedule in this worker.",
)
@click.pass_context
@_errors_as_one_line
def worker(ctx: click.Context, /, **flags: Any) -> None:
    """Run a supervisor and a pool of worker processes."""
    from .supervisor import Supervisor, worker_name

    hostname = flags.pop("hostname")
    for key in ("modules", "queues", "reload_include", "reload_exclude"):
        flags[key] = _csv(flags[key])
    flags["reload_dirs"] = flags["reload_dirs"] or None

    def reread() -> Settings:
        return _settings(ctx, create=True, **flags)

    settings = reread()
    if not settings.modules:
        raise TaskqError("no task modules: give -A MODULE (or `modules` in taskq.toml)")
    setup_logging(settings.loglevel, settings.logfile, settings.log_format)
    root = ctx.find_root().params
    config_file = config_file_path(ctx.meta.get("config") or root.get("config"))
    name = worker_name(hostname)
    sys.exit(Supervisor(settings, reread=reread, config_file=config_file, name=name).run())


@main.command()
@_broker_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="A health check: exit 1, saying why on stderr, when no worker is live.",
)
@click.option(
    "--max-depth",
    type=click.IntRange(min=0),
    metavar="N",
    help="With --check: also exit 1 when a queue has more than N messages ready.",
)
@click.option("--active", is_flag=True, help="Also what each worker process runs now.")
@click.pass_context
@_errors_as_one_line
def status(
    ctx: click.Context, as_json: bool, check: bool, max_depth: int | None, active: bool
) -> None:
    """Queue depths, live workers and dead letters."""
    if max_depth is not None and not check:
        raise click.UsageError("--max-depth is a limit of --check: give --check too")
    report = admin.status(_settings(ctx))
    click.echo(json.dumps(report, indent=2) if as_json else admin.format_status(report))
    if active and not as_json:  # --json holds every process already
        click.echo("\nactive:\n" + monitor.format_active(monitor.processes_of(report["workers"])))
    if check:
        problems = admin.health_problems(report, max_depth)
        for problem in problems:
            click.echo(f"unhealthy: {problem}", err=True)
        if problems:
            sys.exit(1)


@main.group()
def dead() -> None:
    """Inspect and retry dead letters."""


@dead.command("list")
@_broker_options
@click.option("--queue", "-Q", help="Only this queue.")
@click.pass_context
@_errors_as_one_line
def dead_list(ctx: click.Context, queue: str | None) -> None:
    """One line per dead message: id, queue, task, reason, when."""
    letters = admin.dead_letters(_settings(ctx), queue)
    for letter in letters:
        r = letter.record
        click.echo(
            f"{letter.id}  {letter.queue}  {r.get('task')}  {r.get('reason')}  "
            f"{r.get('died_at')}  {r.get('exc_type')}: {r.get('exc_message')}"
        )
    if not letters:
        click.echo("no dead letters")


@dead.command("show")
@_broker_options
@click.argument("message_id")
@click.pass_context
@_errors_as_one_line
def dead_show(ctx: click.Context, message_id: str) -> None:
    """The whole record of one dead message, with traceback and attempts."""
    letter = admin.find_dead(_settings(ctx), message_id)
    click.echo(admin.format_dead(letter))


@dead.command("retry")
@_broker_options
@click.argument("message_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead message.")
@click.pass_context
@_errors_as_one_line
def dead_retry(ctx: click.Context, message_id: str | None, retry_all: bool) -> None:
    """Send a dead message (or all) back to ready/ with its attempts reset."""
    if bool(message_id) == retry_all:
        raise TaskqError("give one message id, or --all")
    settings = _settings(ctx)
    total = (lambda: len(admin.dead_letters(settings))) if retry_all else 1
    with progress("dead retry", total) as tick:
        count, skipped = admin.retry_dead(settings, None if retry_all else message_id, tick)
    click.echo(f"requeued {count} message(s)")
    for reason in skipped:
        click.echo(f"taskq: skipped: {reason}", err=True)
    if skipped:
        sys.exit(1)


@dead.command("purge")
@_broker_options
@click.option("--yes", is_flag=True, help="Confirm: delete every dead message.")
@click.option("--queue", "-Q", help="Only this queue.")
@click.pass_context
@_errors_as_one_line
def dead_purge(ctx: click.Context, yes: bool, queue: str | None) -> None:
    """Delete dead messages for good."""
    if not yes:
        raise TaskqError("this deletes dead messages for good: add --yes to confirm")
    click.echo(f"deleted {admin.purge_dead(_settings(ctx), queue)} dead message(s)")


@main.command()
@_broker_options
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Confirm: delete every waiting message.")
@click.pass_context
@_errors_as_one_line
def purge(ctx: click.Context, queue: str, yes: bool) -> None:
    """Delete every ready and scheduled message of QUEUE."""
    if not yes:
        raise TaskqError(f"this deletes every waiting message of {queue!r}: add --yes to confirm")
    settings = _settings(ctx)
    with progress("purge", None) as tick:
        deleted = admin.purge_queue(settings, queue)
        tick(deleted)
    click.echo(f"deleted {deleted} message(s) from {queue}")


@main.command()
@_broker_options
@click.argument("task_id")
@click.option("--wait", type=float, help="Wait up to this many seconds for it.")
@click.pass_context
@_errors_as_one_line
def result(ctx: click.Context, task_id: str, wait: float | None) -> None:
    """A task's status and result (or error and traceback).

    Exits with 1 when the task failed (FAILURE) or was revoked (REVOKED): it will
    not succeed, and scripts can tell."""
    record = admin.result(_settings(ctx), task_id, wait)
    failed = record["status"] in (FAILURE, REVOKED)
    click.echo(admin.format_result(record))
    if failed:
        sys.exit(1)


@main.command()
@_broker_options
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True, help="Kill the worker process of a running one.")
@click.pass_context
@_errors_as_one_line
def revoke(ctx: click.Context, task_ids: tuple[str, ...], terminate: bool) -> None:
    """Revoke tasks by id: not started if waiting; running ones finish unless --terminate.

    Ids not found are revoked all the same (a message may be sent under one later)."""
    for task_id, state in admin.revoke(_settings(ctx), list(task_ids), terminate):
        effect = _REVOKE_EFFECT[state]
        if state == "running" and terminate:
            effect = "killed within about a second"
        click.echo(f"{task_id}: {state}, {effect}")


_REVOKE_EFFECT = {
    "queued": "will not start",
    "scheduled": "will not start",
    "running": "finishes (no --terminate)",
    "dead": "dead-lettered already; will not start if retried",
    "finished": "finished already",
    "unknown": "revoked in case it is sent",
}


@main.group()
def key() -> None:
    """Rotate the signing key of the broker, and drop old keys."""


@key.command("rotate")
@_broker_options
@click.pass_context
@_errors_as_one_line
def key_rotate(ctx: click.Context) -> None:
    """Sign with a new key; the old one verifies until pruned."""
    settings = _settings(ctx)
    keys.rotate(settings, open_broker(settings))
    click.echo(
        f"new signing key in {display_url(settings.broker)}: running workers and producers take it "
        "within a second; the previous key still verifies until `taskq key prune`"
    )


@key.command("prune")
@_broker_options
@click.pass_context
@_errors_as_one_line
def key_prune(ctx: click.Context) -> None:
    """Drop old keys once nothing in the broker needs them."""
    settings = _settings(ctx)
    dropped = keys.prune(settings, open_broker(settings))
    click.echo(f"dropped {dropped} previous key(s)" if dropped else "no previous key to drop")


# -- backup, restore and migration (taskq export / import / migrate) ------------------


@main.command("export")
@_broker_options
@click.argument("file")
@click.option("--queue", "-Q", "queues", multiple=True, help="Only this queue (repeatable).")
@click.pass_context
@_errors_as_one_line
def export_command(ctx: click.Context, file: str, queues: tuple[str, ...]) -> None:
    """Write every ready, scheduled, claimed and dead message to FILE (- for stdout)
    as JSON Lines, each line signed with the broker's key."""
    from . import transfer_commands as transfer

    out = sys.stdout if file == "-" else None
    summary = transfer.export_to(_settings(ctx), file, queues or None, out)
    click.echo(summary.describe("exported"), err=file == "-")


@main.command("import")
@_broker_options
@click.argument("file")
@click.option(
    "--keys-from",
    metavar="BROKER",
    help="Verify the lines with the key kept in this broker (the one exported from).",
)
@click.pass_context
@_errors_as_one_line
def import_command(ctx: click.Context, file: str, keys_from: str | None) -> None:
    """Put the messages of an export (FILE, or - for stdin) into the broker.

    Every line is verified first; one that does not is named and nothing is imported.
    Ids the broker holds already are skipped: importing twice adds nothing."""
    from . import transfer_commands as transfer

    stdin = sys.stdin if file == "-" else None
    # A restore may go into a broker not made yet (a new machine): import may make it.
    summary = transfer.import_from(_settings(ctx, create=True), file, keys_from, stdin)
    click.echo(summary.describe("imported"))


@main.command("migrate")
@_broker_options
@click.option("--to", "url", required=True, help="The destination broker (folder or URL).")
@click.pass_context
@_errors_as_one_line
def migrate_command(ctx: click.Context, url: str) -> None:
    """Move every message of the broker (--broker) into the broker --to.

    A message leaves the source once the destination holds it: run it again after
    an interruption to finish, with no duplicates. Stop the source's workers first."""
    from . import transfer_commands as transfer

    summary = transfer.migrate_to(_settings(ctx), url)
    click.echo(summary.describe("moved"))


@main.command()
@_broker_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback exposes the page to the network.",
)
@click.option(
    "--port",
    default=5555,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between samples of the queue depths.",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer to this host name (a reverse proxy's); repeatable.",
)
@click.pass_context
@_errors_as_one_line
def dashboard(
    ctx: click.Context, host: str, port: int, interval: float, allow_hosts: tuple[str, ...]
) -> None:
    """A web page of queues, workers and dead letters; retry and purge need the
    token printed at start."""
    from .dashboard import Dashboard

    settings = _settings(ctx)
    board = Dashboard(settings, host=host, port=port, interval=interval, allow_hosts=allow_hosts)
    click.echo(f"taskq dashboard of {display_url(settings.broker)} on {board.url}")
    click.echo(f"actions token (retry, purge): {board.token}")
    click.echo(f"open {board.url}#token={board.token} to act from the page; Ctrl-C stops")
    if not board.local_only:
        click.echo(
            f"taskq: warning: listening on {host}, not loopback: whoever reaches port "
            f"{board.port} reads the queues; put it behind a reverse proxy with auth",
            err=True,
        )
    board.run()


# -- monitoring (docs/monitoring.md) -------------------------------------------


@main.command()
@_broker_options
@click.option("--follow", "-f", is_flag=True, help="Wait for new events (stop with Ctrl-C).")
@click.option("--queue", "-Q", help="Only events of this queue.")
@click.option("--task", "-t", "task_name", help="Only events of this task.")
@click.pass_context
@_errors_as_one_line
def events(ctx: click.Context, follow: bool, queue: str | None, task_name: str | None) -> None:
    """Print the event log as JSON Lines, oldest first (events = true records it)."""
    import signal

    settings = _settings(ctx)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # stop like Ctrl-C
    try:
        for event in monitor.events(open_broker(settings), queue, task_name, follow):
            click.echo(json.dumps(event, separators=(",", ":")))
            if follow:
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass


@main.command()
@_broker_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_as_one_line
def inspect(ctx: click.Context, as_json: bool) -> None:
    """What each worker process runs now: task, since when, attempt, time limit."""
    processes = monitor.active(_settings(ctx))
    click.echo(json.dumps(processes, indent=2) if as_json else monitor.format_active(processes))


# -- periodic tasks (docs/periodic.md) ------------------------------------------


@main.command()
@click.option("--app", "-A", "modules", help="Task modules to import, comma-separated.")
@_broker_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors_as_one_line
def schedule(ctx: click.Context, modules: str | None, as_json: bool) -> None:
    """The periodic tasks of the -A modules: schedule, next run, last run."""
    import time

    from .scheduler import format_schedule, schedule_report

    settings = _settings(ctx, modules=_csv(modules))
    rows = schedule_report(settings, open_broker(settings), time.time())
    click.echo(json.dumps(rows, indent=2) if as_json else format_schedule(rows))
