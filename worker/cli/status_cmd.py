"""``synchro-sync status``: what every process of this deployment did and waits for."""

from __future__ import annotations

import json
import sys

import click

from worker.cli.state import EXIT_FAILED, CliState, pass_state
from worker.ops.health import check_line
from worker.ops.report import UNREADABLE, collect_status, render


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
