"""``synchro-sync run``: the live sync in one process.

``run`` is the whole job in one process on the embedded default (no server): the watcher feeds
an in-process queue, the start-up full pass runs first, then live syncs, with the scheduled
passes and backups on a timer thread (the runtime is :mod:`worker.live.embedded`; this module
only parses options and calls it).  With ``BROKER_URL`` set, ``watch``, ``worker`` and ``beat``
are separate processes, on any hosts (:mod:`worker.cli.distributed_cmd`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from worker.cli.state import CliState, live_overrides, log_to_stderr, pass_state, until_signal
from worker.live.embedded import check_module_store, run_embedded

log = logging.getLogger("synchro_sync.run")


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
    settings = state.settings(**live_overrides(debounce, polling))
    if settings.BROKER_URL:
        settings = settings.model_copy(update={"BROKER_URL": None})
        log.warning("run is the embedded mode; BROKER_URL is not used by it")
    log_to_stderr(settings)
    root = Path(settings.APP_ROOT_PATH)
    if not root.exists() and settings.origin("APP_ROOT_PATH") == "default":
        # First run on the embedded default: make the folder to put apps in.
        root.mkdir(parents=True)
        log.warning("created %s: put one folder per app in it", root)
    check_module_store(settings)
    store = settings.MODULESTORE
    dest = getattr(store, "directory", None) or getattr(store, "provider", "")
    with until_signal() as stop:
        run_embedded(
            settings,
            stop,
            ready=lambda: click.echo(
                f"synchro-sync: live: {settings.APP_ROOT_PATH} -> {dest} (embedded)", err=True
            ),
            say=lambda line: click.echo(line, err=True),
        )
