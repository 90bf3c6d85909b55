"""``synchro-sync watch / worker / beat``: the live sync as separate processes on ``BROKER_URL``.

The watcher queues every save for this host's workers; the workers are Celery's (``celery -A
worker worker`` is the same); beat schedules the full passes and the session backups.  Only
these commands load Celery (the group imports a command's module when it runs).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import click

import worker
from worker.cli.state import CliState, live_overrides, log_to_stderr, pass_state, until_signal
from worker.errors import ConfigError
from worker.live.dispatch import CeleryDispatcher
from worker.live.watcher import Watcher
from worker.ops.web import serve
from worker.queue.app import create_app
from worker.stores.sessions import backup_note

if TYPE_CHECKING:
    from worker.config import Settings

log = logging.getLogger("synchro_sync.run")

_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def _need_broker(settings: Settings, command: str) -> str:
    if not settings.BROKER_URL:
        raise ConfigError(
            "BROKER_URL",
            settings.origin("BROKER_URL"),
            f"not set; `{command}` needs a Redis or RabbitMQ broker "
            "(use `synchro-sync run` for the embedded, single-process mode)",
        )
    return settings.BROKER_URL


@click.command("watch")
@click.option("--debounce", type=float, help="Seconds of quiet before a path is synced.")
@click.option("--polling/--no-polling", default=None, help="Poll instead of inotify.")
@pass_state
def watch_command(state: CliState, debounce: float | None, polling: bool | None) -> None:
    """The watcher alone: queue every save on BROKER_URL for this host's workers."""
    settings = state.settings(**live_overrides(debounce, polling))
    _need_broker(settings, "watch")
    log_to_stderr(settings)
    dispatcher = CeleryDispatcher(create_app(settings), settings)
    watcher = Watcher(settings, dispatcher)
    with until_signal() as stop:
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
    log_to_stderr(settings)
    app = _as_default_app(create_app(settings))
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
    log_to_stderr(settings)
    if note := backup_note(settings):
        log.warning("%s", note)
    os.makedirs(settings.STATE_DIR, exist_ok=True)
    app = _as_default_app(create_app(settings))
    code = app.start(["beat", "--loglevel", settings.LOG_LEVEL, *ctx.args])
    if code:
        ctx.exit(code)


def _as_default_app(app: Any) -> Any:
    """Make ``worker.celery`` this app, so prefork children do not build a second one."""
    worker._app = app
    return app
