"""``synchro-sync config show`` and ``config check``."""

from __future__ import annotations

import json
from collections.abc import Callable

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from worker.cli.state import EXIT_FAILED, CliState, pass_state
from worker.config import Settings, effective_items
from worker.errors import SyncError
from worker.stores.modules import open_module_store
from worker.stores.sessions import open_session_store


@click.group("config")
def config_group() -> None:
    """Show the effective configuration, or check that every store answers."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON objects, one per setting.")
@pass_state
def show(state: CliState, as_json: bool) -> None:
    """Print every effective setting, its value and where it came from (secrets masked).

    The Synchro server's own settings (PORT, APPS, ...) and store keys meant for pkgcloud or the
    Redis client are listed too, with a note: the worker leaves them alone.
    """
    settings = state.settings()
    rows = effective_items(settings)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row._asdict()))
        return
    console = Console()
    if not console.is_terminal:  # piped: never cut a value to fit 80 columns
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        console = Console(width=max(80, sum(widths) + 12))
    table = Table("setting", "value", "source", "note", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # values as given: "[all]" is no markup
    console.print(table)


@config_group.command("check")
@pass_state
def check(state: CliState) -> None:
    """Connect to each configured store and say what works (exit 1 if anything does not)."""
    settings = state.settings()
    failed = False
    for label, probe in _probes(settings):
        try:
            detail = probe()
        except SyncError as exc:
            failed = True
            click.echo(f"FAIL  {label}: {exc}")
        else:
            click.echo(f"ok    {label}: {detail}")
    if failed:
        raise SystemExit(EXIT_FAILED)


def _probes(settings: Settings) -> list[tuple[str, Callable[[], str]]]:
    def session_probe() -> str:
        store = open_session_store(settings)
        try:
            return str(store.check())
        finally:
            store.close()

    def module_probe() -> str:
        store = open_module_store(settings)
        try:
            return str(store.check())
        finally:
            store.close()

    return [
        (f"session store ({settings.SESSIONSTORE_SERVICE})", session_probe),
        (f"module store ({settings.MODULESTORE_SERVICE})", module_probe),
    ]
