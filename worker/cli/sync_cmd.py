"""``synchro-sync sync`` and ``synchro-sync pull``: one mirror pass now, either way.

On a terminal a progress bar (files, bytes, rate); always a one-line summary (uploaded,
deleted, unchanged, bytes, seconds).  Exit 0 done, 1 something failed (each failure printed:
what and why), 2 bad usage or configuration.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

import click

from worker.cli.state import EXIT_FAILED, CliState, pass_state
from worker.config import Settings
from worker.errors import EXIT_INTERRUPTED, UsageError
from worker.mirror import passes
from worker.mirror.context import MirrorContext
from worker.mirror.pull import pull as pull_from_store
from worker.mirror.results import PassResult
from worker.mirror.runs import record_pass


class _Bar:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self._progress: Any = None
        self._files: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            # rich only on a terminal: its 56 modules (2.3 MB of a 52 MB sync) are not loaded
            # for a sync piped or run by cron.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files"),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
        return self

    def planned(self, files: int, nbytes: int) -> None:
        if self._progress is not None:
            self._files = self._progress.add_task(self.label, total=max(nbytes, 1))
            self._count = files
            self._done = 0
            self._progress.update(self._files, description=f"{self.label} 0/{files} files")

    def advance(self, files: int, nbytes: int) -> None:
        if self._progress is not None and self._files is not None:
            self._done += files
            self._progress.update(
                self._files,
                advance=nbytes,
                description=f"{self.label} {self._done}/{self._count} files",
            )

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()


def _report(result: PassResult, verb: str, dry_run: bool = False) -> None:
    for line in result.warnings:
        click.echo(f"synchro-sync: warning: {line}", err=True)
    for held in result.withheld:
        click.echo(f"synchro-sync: withheld: {held}", err=True)
    for failure in result.failures:
        click.echo(f"synchro-sync: failed: {failure}", err=True)
    click.echo(result.summary(verb, dry_run=dry_run))
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not result.ok:
        sys.exit(EXIT_FAILED)


def _print_plan(result: PassResult) -> None:
    for plan in result.plans:
        c = plan.container
        for up in plan.uploads:
            click.echo(f"upload  {c}/{up.file.key}  ({up.file.size} bytes)")
        for cp in plan.copies:
            click.echo(f"copy    {c}/{cp.src} -> {c}/{cp.file.key}")
        for key in plan.deletes:
            click.echo(f"delete  {c}/{key}")
    ups = sum(len(p.uploads) for p in result.plans)
    cps = sum(len(p.copies) for p in result.plans)
    dels = sum(len(p.deletes) for p in result.plans)
    nbytes = sum(p.upload_bytes for p in result.plans)
    result.uploaded, result.copied, result.deleted, result.bytes = ups, cps, dels, nbytes


def _record(settings: Settings, result: PassResult, whole: bool) -> None:
    """``status`` shows this pass's figures per container, as it does ``run``'s passes."""
    try:
        record_pass(settings, result, "sync", result.seconds, whole, say=False)
    except Exception as exc:  # status is best effort: the pass itself is done
        click.echo(f"synchro-sync: warning: status not recorded: {exc}", err=True)


def _open(state: CliState, transfers: int | None) -> MirrorContext:
    settings = state.settings(**{"SYNC.transfers": transfers})
    return MirrorContext.from_settings(settings)


@click.command("sync")
@click.argument("containers", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--force", is_flag=True, help="Allow deleting more than SYNC.maxDeleteShare.")
@click.option("--transfers", type=click.IntRange(1, 256), help="Parallel transfers.")
@pass_state
def sync(
    state: CliState, containers: tuple[str, ...], dry_run: bool, force: bool,
    transfers: int | None,
) -> None:
    """One full mirror pass now: APP_ROOT_PATH -> the module store.

    CONTAINER names app folders (default: every sub-folder of APP_ROOT_PATH).  Ctrl-C stops
    the pass at once: uploads in flight finish, nothing is deleted, the next pass does the rest
    (exit 130).
    """
    settings = state.settings(**{"SYNC.transfers": transfers})
    with MirrorContext.from_settings(settings) as ctx:
        local = ctx.local_containers()
        unknown = [c for c in containers if c not in local]
        if unknown:
            raise UsageError(
                f"no such app folder in {ctx.root}: {', '.join(unknown)} "
                f"(apps: {', '.join(local) or 'none'})"
            )
        with _Bar("sync") as bar:
            result = passes.full_pass(ctx, list(containers) or None, dry_run=dry_run, force=force,
                                   progress=bar)
    if not dry_run and not result.interrupted:  # status shows passes that ran to their end
        _record(settings, result, whole=not containers)
    if dry_run:
        _print_plan(result)
        click.echo("dry run: nothing was changed")
        _report(result, "upload", dry_run=True)
        return
    _report(result, "uploaded")


@click.command("pull")
@click.argument("containers", nargs=-1)
@click.option("--transfers", type=click.IntRange(1, 256), help="Parallel transfers.")
@pass_state
def pull(state: CliState, containers: tuple[str, ...], transfers: int | None) -> None:
    """Fill the local module directory from the store (a new server).

    The index learns every pulled file, so the next `sync` uploads nothing.  Local files are
    never overwritten.  CONTAINER names containers (default: every container in the store).
    Ctrl-C stops it at once: files in flight arrive whole (exit 130).
    """
    with _open(state, transfers) as ctx, _Bar("pull") as bar:
        result = pull_from_store(ctx, list(containers) or None, progress=bar)
    _report(result, "downloaded")
