"""``synchro-sync run / watch / worker / beat / status``: running the live sync.

``run`` is the whole job in one process on the embedded default (no server): the watcher feeds
an in-process queue, the start-up full pass runs first, then live syncs, with the scheduled
passes and backups on a timer thread (the runtime is :mod:`worker.live.embedded`; this module
only parses options and calls it).  With ``BROKER_URL`` set, ``watch``, ``worker`` and ``beat``
are separate processes, on any hosts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import worker
from worker.cli import EXIT_FAILED, CliState, pass_state
from worker.errors import ConfigError
from worker.live.dispatch import CeleryDispatcher
from worker.live.embedded import check_module_store, run_embedded
from worker.live.watcher import Watcher
from worker.logs import formatter
from worker.ops.health import check_line
from worker.ops.report import UNREADABLE, collect_status, render
from worker.ops.web import serve
from worker.stores.sessions import backup_note

if TYPE_CHECKING:
    from worker.config import Settings

log = logging.getLogger("synchro_sync.run")

_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def _overrides(debounce: float | None, polling: bool | None) -> dict[str, Any]:
    return {"SYNC.debounce": debounce, "SYNC.polling": polling}


def _need_broker(settings: Settings, command: str) -> str:
    if not settings.BROKER_URL:
        raise ConfigError(
            "BROKER_URL",
            settings.origin("BROKER_URL"),
            f"not set; `{command}` needs a Redis or RabbitMQ broker "
            "(use `synchro-sync run` for the embedded, single-process mode)",
        )
    return settings.BROKER_URL


def _log_to_stderr(settings: Settings) -> None:
    """Our log lines (with container and path) on stderr at LOG_LEVEL."""
    logger = logging.getLogger("synchro_sync")
    logger.setLevel(settings.LOG_LEVEL)
    if not any(getattr(h, "_synchro", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._synchro = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    for each in logger.handlers:
        each.setFormatter(formatter(settings.LOG_FORMAT))


@contextmanager
def _until_signal() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT, with the previous handlers restored afterwards."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("run")
@click.option("--debounce", type=float, help="Seconds of quiet before a path is synced.")
@click.option("--polling/--no-polling", default=None, help="Poll instead of inotify.")
@pass_state
def run_command(state: CliState, debounce: float | None, polling: bool | None) -> None:
    """Watcher, worker and scheduler in one process, no server needed.

    Runs a full pass first, then mirrors every save as it happens; a full pass again every
    SYNC.fullPassInterval seconds and a session backup every BACKUP.interval.  Work is queued
    in this process (BROKER_URL is not used: see `watch`, `worker` and `beat` for that).
    """
    settings = state.settings(**_overrides(debounce, polling))
    if settings.BROKER_URL:
        settings = settings.model_copy(update={"BROKER_URL": None})
        log.warning("run is the embedded mode; BROKER_URL is not used by it")
    _log_to_stderr(settings)
    root = Path(settings.APP_ROOT_PATH)
    if not root.exists() and settings.origin("APP_ROOT_PATH") == "default":
        # First run on the embedded default: make the folder to put apps in.
        root.mkdir(parents=True)
        log.warning("created %s: put one folder per app in it", root)
    check_module_store(settings)
    store = settings.MODULESTORE
    dest = getattr(store, "directory", None) or getattr(store, "provider", "")
    with _until_signal() as stop:
        run_embedded(
            settings,
            stop,
            ready=lambda: click.echo(
                f"synchro-sync: live: {settings.APP_ROOT_PATH} -> {dest} (embedded)", err=True
            ),
            say=lambda line: click.echo(line, err=True),
        )


# --- distributed ----------------------------------------------------------------------------


@click.command("watch")
@click.option("--debounce", type=float, help="Seconds of quiet before a path is synced.")
@click.option("--polling/--no-polling", default=None, help="Poll instead of inotify.")
@pass_state
def watch_command(state: CliState, debounce: float | None, polling: bool | None) -> None:
    """The watcher alone: queue every save on BROKER_URL for this host's workers."""
    settings = state.settings(**_overrides(debounce, polling))
    _need_broker(settings, "watch")
    _log_to_stderr(settings)
    dispatcher = CeleryDispatcher(_celery_app(settings), settings)
    watcher = Watcher(settings, dispatcher)
    with _until_signal() as stop:
        watcher.start()
        serve(settings, role="watch", watcher=watcher, dispatcher=dispatcher, stop=stop)
        # The watcher is a hint: a full pass at start-up finds what changed while it was down.
        try:
            dispatcher.request_full_pass("watcher started")
        except Exception as exc:  # the broker is away: the hand-off retries it
            log.warning("full pass (watcher started) not queued (%s); will retry", exc)
            watcher.handoff.owe("watcher started")
        click.echo(
            f"synchro-sync: watching {settings.APP_ROOT_PATH} -> queue {settings.host_queue()}",
            err=True,
        )
        try:
            stop.wait()
        finally:
            watcher.stop()
            dispatcher.close()


@click.command("worker", context_settings=_PASSTHROUGH)
@click.pass_context
def worker_command(ctx: click.Context) -> None:
    """A Celery worker for the queued work (same as `celery -A worker worker`).

    Consumes this host's queue (HOST_QUEUE, default files.<hostname>) and the shared `sessions`
    queue; extra options go to Celery (e.g. `-Q sessions` on a host without the module files,
    `-c 4`, `-P threads`).
    """
    state = ctx.ensure_object(CliState)
    settings = state.settings()
    _need_broker(settings, "worker")
    _log_to_stderr(settings)
    app = _as_default_app(_celery_app(settings))
    app.worker_main(["worker", "--loglevel", settings.LOG_LEVEL, *ctx.args])


@click.command("beat", context_settings=_PASSTHROUGH)
@click.pass_context
def beat_command(ctx: click.Context) -> None:
    """The scheduler (same as `celery -A worker beat`): full passes and session backups.

    Only one beat runs: a second one waits as a standby until the first one's lock expires.
    """
    state = ctx.ensure_object(CliState)
    settings = state.settings()
    _need_broker(settings, "beat")
    _log_to_stderr(settings)
    if note := backup_note(settings):
        log.warning("%s", note)
    os.makedirs(settings.STATE_DIR, exist_ok=True)
    app = _as_default_app(_celery_app(settings))
    code = app.start(["beat", "--loglevel", settings.LOG_LEVEL, *ctx.args])
    if code:
        ctx.exit(code)


def _as_default_app(app: Any) -> Any:
    """Make ``worker.celery`` this app, so prefork children do not build a second one."""
    worker._app = app
    return app


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--limit", type=int, default=10, show_default=True,
              help="How many pending paths, failures and retries to list.")
@click.option("--check", is_flag=True,
              help="One line; exit 1 unless healthy (scripts, container health checks).")
@pass_state
def status_command(state: CliState, as_json: bool, limit: int, check: bool) -> None:
    """Queue depth, pending paths, last full pass per container, last snapshot, recent
    failures and retries.  Exit code 1 if the broker or the status store does not answer."""
    if check:
        healthy, line = check_line(state.settings())
        click.echo(line)
        sys.exit(0 if healthy else EXIT_FAILED)

    report = collect_status(state.settings(), limit=limit)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        click.echo(render(report))
    if report.has(UNREADABLE):
        sys.exit(EXIT_FAILED)


def register(main: click.Group) -> None:
    for command in (run_command, watch_command, worker_command, beat_command, status_command):
        main.add_command(command)


def _celery_app(settings: Settings) -> Any:
    """The Celery app, loaded only by the commands that need it (``status`` and ``run`` never
    import Celery)."""
    from worker.queue.app import create_app

    return create_app(settings)
