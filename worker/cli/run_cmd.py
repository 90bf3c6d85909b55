"""``synchro-sync run / watch / worker / beat / status``: running the live sync.

``run`` is the whole job in one process on the embedded default (no server): the watcher feeds
an in-process queue (:class:`~worker.live.dispatch.LocalDispatcher`), the start-up full pass runs
first, then live syncs, with the scheduled passes and backups on a timer thread.  With
``BROKER_URL`` set, ``watch``, ``worker`` and ``beat`` are separate processes, on any hosts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from worker.cli import EXIT_FAILED, CliState, pass_state
from worker.coord.locks import host_lock
from worker.errors import ConfigError, SyncError
from worker.live.embedded import RetryLater, Timers
from worker.ops.web import serve

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.live.dispatch import Dispatcher

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
    from worker.logs import formatter

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


def _make_watcher(settings: Settings, dispatcher: Dispatcher) -> Any:
    from worker.live.watcher import Watcher

    return Watcher(settings, dispatcher)


# --- run (embedded) -------------------------------------------------------------------------


def run_embedded(settings: Settings, stop: threading.Event, ready: Callable[[], None]) -> None:
    """Watcher + in-process worker + timers until ``stop`` is set (see the module docstring)."""
    from worker.coord.status import record_embedded_queue
    from worker.live.dispatch import LocalDispatcher
    from worker.mirror import pass_log
    from worker.queue import jobs

    later = RetryLater(settings)
    done = {"paths": 0, "passes": 0}

    def sync(container: str, relpath: str) -> object:
        try:
            result = jobs.sync_path(settings, container, relpath)
        except Exception as exc:
            later.failed(container, relpath, exc)
            raise
        later.succeeded(container, relpath)
        if getattr(result, "action", "") != "skipped":
            done["paths"] += 1
        return result

    def full_pass(containers: Any, reason: str) -> object:
        result = jobs.full_pass(settings, containers, reason)
        done["passes"] += result is not None
        return result

    with host_lock(settings, "run", timeout=0) as got:
        if not got:
            raise SyncError(f"another `synchro-sync run` uses STATE_DIR {settings.STATE_DIR}")
        record_embedded_queue(jobs.status_store(settings), [])
        dispatcher = LocalDispatcher(sync, full_pass, threads=2)
        later.submit = dispatcher.submit
        dispatcher.hold()  # events queue up while the start-up pass runs
        watcher = _make_watcher(settings, dispatcher)
        watcher.start()
        serve(settings, role="run", watcher=watcher, dispatcher=dispatcher, stop=stop)
        timers = Timers(settings, dispatcher, lambda: jobs.snapshot_sessions(settings, True))
        from worker.stores.sessions import backup_note

        if note := backup_note(settings):
            log.warning("%s", note)
        try:
            if Path(settings.APP_ROOT_PATH).is_dir():
                result = full_pass(None, "start-up")
                log.warning("start-up full pass: %s", _pass_summary(result))
            else:
                # An unmounted volume must not empty the store: wait for the folder; the
                # watcher asks for a full pass when it appears.
                log.warning(
                    "APP_ROOT_PATH %s does not exist; nothing is mirrored until it does "
                    "(create it with one folder per app, or set APP_ROOT_PATH to your apps' "
                    "folder)", settings.APP_ROOT_PATH,
                )
                pass_log.root_missing_said()
            dispatcher.release()
            timers.start()
            ready()
            stop.wait()
        finally:
            watcher.stop()
            timers.stop()
            dispatcher.wait_idle(5.0)
            dispatcher.close()
            left = dispatcher.pending()
            record_embedded_queue(jobs.status_store(settings), left)
            jobs.close_context()
            if stop.is_set():
                click.echo(_stopped_line(done, left), err=True)


def _stopped_line(done: dict[str, int], left: list[tuple[str, str]]) -> str:
    """The one line ``run`` prints when stopped (Ctrl-C, SIGTERM)."""
    did = f"{done['paths']} save(s) mirrored and {done['passes']} full pass(es) done"
    if not left:
        return (f"synchro-sync: stopped: {did}; nothing was waiting "
                "(the next start-up pass re-checks the whole tree)")
    first = ", ".join(f"{c}/{p}" for c, p in left[:3])
    more = f" and {len(left) - 3} more" if len(left) > 3 else ""
    return (
        f"synchro-sync: stopped: {did}; {len(left)} path(s) not synced yet ({first}{more}) "
        "are left for the next start-up pass"
    )


def _pass_summary(result: Any) -> str:
    fn = getattr(result, "summary", None)
    return str(fn()) if callable(fn) else str(result)


def _check_module_store(settings: Settings) -> None:
    """What ``config check`` does for the module store, before going live: a store ``run``
    cannot use stops it with one line (exit 2 for its configuration, 1 when it does not
    answer) instead of an ERROR at every save."""
    from worker.stores.modules import open_module_store

    what = f"module store ({settings.MODULESTORE_SERVICE})"
    retries = logging.getLogger("synchro_sync.retry")
    quiet = retries.level
    if not logging.getLogger("synchro_sync").isEnabledFor(logging.DEBUG):
        retries.setLevel(logging.ERROR)  # the verdict is the one line, not each retry
    try:
        store = open_module_store(settings)
        try:
            store.check()
        finally:
            store.close()
    except SyncError as exc:
        err = SyncError(f"{what} cannot be used, not starting: {exc}")
        err.exit_code = exc.exit_code
        raise err from None
    except Exception as exc:  # an SDK's own error: still one line, exit 1
        raise SyncError(
            f"{what} cannot be used, not starting: {exc.__class__.__name__}: {exc}"
        ) from None
    finally:
        retries.setLevel(quiet)


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
    _check_module_store(settings)
    store = settings.module_store
    dest = getattr(store, "directory", None) or getattr(store, "provider", "")
    with _until_signal() as stop:
        run_embedded(
            settings,
            stop,
            ready=lambda: click.echo(
                f"synchro-sync: live: {settings.APP_ROOT_PATH} -> {dest} (embedded)", err=True
            ),
        )


# --- distributed ----------------------------------------------------------------------------


@click.command("watch")
@click.option("--debounce", type=float, help="Seconds of quiet before a path is synced.")
@click.option("--polling/--no-polling", default=None, help="Poll instead of inotify.")
@pass_state
def watch_command(state: CliState, debounce: float | None, polling: bool | None) -> None:
    """The watcher alone: queue every save on BROKER_URL for this host's workers."""
    from worker.live.dispatch import CeleryDispatcher
    from worker.queue.app import create_app

    settings = state.settings(**_overrides(debounce, polling))
    _need_broker(settings, "watch")
    _log_to_stderr(settings)
    dispatcher = CeleryDispatcher(create_app(settings), settings)
    watcher = _make_watcher(settings, dispatcher)
    with _until_signal() as stop:
        watcher.start()
        serve(settings, role="watch", watcher=watcher, dispatcher=dispatcher, stop=stop)
        # The watcher is a hint: a full pass at start-up finds what changed while it was down.
        dispatcher.request_full_pass("watcher started")
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
    from worker.queue.app import create_app

    state = ctx.ensure_object(CliState)
    settings = state.settings()
    _need_broker(settings, "worker")
    _log_to_stderr(settings)
    app = _as_default_app(create_app(settings))
    app.worker_main(["worker", "--loglevel", settings.LOG_LEVEL, *ctx.args])


@click.command("beat", context_settings=_PASSTHROUGH)
@click.pass_context
def beat_command(ctx: click.Context) -> None:
    """The scheduler (same as `celery -A worker beat`): full passes and session backups.

    Only one beat runs: a second one waits as a standby until the first one's lock expires.
    """
    from worker.queue.app import create_app

    state = ctx.ensure_object(CliState)
    settings = state.settings()
    _need_broker(settings, "beat")
    _log_to_stderr(settings)
    from worker.stores.sessions import backup_note

    if note := backup_note(settings):
        log.warning("%s", note)
    os.makedirs(settings.STATE_DIR, exist_ok=True)
    app = _as_default_app(create_app(settings))
    code = app.start(["beat", "--loglevel", settings.LOG_LEVEL, *ctx.args])
    if code:
        ctx.exit(code)


def _as_default_app(app: Any) -> Any:
    """Make ``worker.celery`` this app, so prefork children do not build a second one."""
    import worker

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
    from worker.ops.report import UNREADABLE, collect_status, render

    if check:
        from worker.ops.health import check_line

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
