"""``synchro-sync sessions ...``: export, import, snapshot, list, restore, copy.

A store on the command line is ``memory:``, ``file:PATH``, ``redis://[:password@]host:port[/db]``
or ``rediss://...``; omitted, it is the configured session store.  A snapshot destination is
a folder or ``modulestore:CONTAINER``; omitted, it is ``BACKUP.dest``.  Long work shows a
progress line on a terminal; every command ends with a one-line summary.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from worker.backups.dest import MODULESTORE_SCHEME, open_destination
from worker.backups.snapshots import (
    copy_sessions,
    export_sessions,
    find_snapshot,
    list_snapshots,
    restore_snapshot,
    take_snapshot,
)
from worker.backups.transfer import import_sessions, spool_stdin
from worker.cli.state import CliState, pass_state
from worker.errors import UsageError
from worker.stores.sessions import SPEC_HELP, OnConflict, open_session_store, unreachable_reason
from worker.stores.sessions.base import skipped_summary

CONFLICT = click.Choice([m.value for m in OnConflict])
DEST_HELP = "Folder or modulestore:CONTAINER (default: the BACKUP.dest setting)."
CONFLICT_HELP = (
    "What to do with a session the target holds already: skip it, overwrite it, or fail "
    "(the default: every id is checked first and nothing is written)."
)


def _store(state: CliState, spec: str | None) -> Any:
    return open_session_store(spec if spec else state.settings())


def _dest(state: CliState, spec: str | None) -> Any:
    if spec is None:
        spec = state.settings().BACKUP.dest
    needs_settings = spec.startswith(MODULESTORE_SCHEME)
    return open_destination(spec, state.settings() if needs_settings else None)


@contextmanager
def _progress(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A rich progress line on a terminal (stderr); nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns.append(BarColumn())
    columns += [MofNCompleteColumn() if total is not None else TextColumn("{task.completed}"),
                TextColumn("sessions"), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


class _Run:
    """The seconds a command has taken so far, for its summary line."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def took(self) -> str:
        return f"in {time.monotonic() - self.started:.1f} s"


@contextmanager
def _running(
    label: str, *resources: Any, total: Callable[[], int] | None = None
) -> Iterator[Callable[[int], None]]:
    """The progress line of one command's work (out of ``total()`` sessions, if given);
    ``resources`` (stores, destinations) are closed after it, whatever happened."""
    try:
        with _progress(label, total() if total is not None else None) as progress:
            yield progress
    finally:
        for resource in resources:
            resource.close()


def _not_sessions(store: Any) -> str:
    """``, keys skipped: 3 (2 not JSON, ...)`` when the source held keys that are not
    sessions, else nothing."""
    skipped = getattr(store, "skipped", None)
    return f", keys skipped: {skipped_summary(skipped)}" if skipped else ""


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit}"
    return f"{seconds:.0f}s"


@click.group("sessions")
def sessions_group() -> None:
    """Export, import, snapshot, list, restore and copy sessions."""


sessions_group.help = (
    "Export, import, snapshot, list, restore and copy sessions.\n\n"
    f"A store S is {SPEC_HELP}; omitted, the configured session store. DEST is a folder or "
    "modulestore:CONTAINER; omitted, the BACKUP.dest setting."
)


@sessions_group.command("export")
@click.option("--store", "spec", metavar="S", help="Store to read (default: configured).")
@click.option("-o", "--output", metavar="FILE", default="-", help="Output file (default stdout).")
@pass_state
def export_cmd(state: CliState, spec: str | None, output: str) -> None:
    """Write every live session as JSON lines: {"id", "state", "expires_at"}."""
    store = _store(state, spec)
    run = _Run()
    with _running("exporting", store) as progress:
        if output == "-":
            count = export_sessions(store, sys.stdout.buffer, progress=progress)
            sys.stdout.buffer.flush()
        else:
            with open(output, "wb") as out:
                count = export_sessions(store, out, progress=progress)
    where = "stdout" if output == "-" else output
    skipped = _not_sessions(store)
    click.echo(
        f"exported {count} sessions from {store.describe()} to {where}"
        f"{' (' + skipped[2:] + ')' if skipped else ''} {run.took()}",
        err=True,
    )


@sessions_group.command("import")
@click.argument("file", metavar="FILE")
@click.option("--store", "spec", metavar="S", help="Store to write (default: configured).")
@click.option("--on-conflict", type=CONFLICT, default="fail", show_default=True, help=CONFLICT_HELP)
@pass_state
def import_cmd(state: CliState, file: str, spec: str | None, on_conflict: str) -> None:
    """Read JSON lines (as written by export, or a snapshot file) into a store.

    The whole file is checked first: a bad line means nothing is written.  Sessions already
    expired are dropped.  FILE may be - for stdin.
    """
    path = spool_stdin(sys.stdin.buffer) if file == "-" else Path(file)
    if not path.is_file():
        raise UsageError(f"no such file: {file}")
    store = _store(state, spec)
    run = _Run()
    try:
        with _running("importing", store) as progress:
            result = import_sessions(store, path, OnConflict(on_conflict), progress=progress)
    finally:
        if file == "-":
            path.unlink(missing_ok=True)
    click.echo(
        f"imported {result.written} sessions into {store.describe()} ({result.skipped} "
        f"skipped, {result.expired} expired dropped) {run.took()}"
    )


@sessions_group.command("snapshot")
@click.option("--from", "spec", metavar="S", help="Store to snapshot (default: configured).")
@click.option("--dest", metavar="DEST", help=DEST_HELP)
@click.option(
    "--allow-empty", is_flag=True,
    help="Keep a snapshot of a store without sessions (else that is an error, exit 1).",
)
@pass_state
def snapshot_cmd(state: CliState, spec: str | None, dest: str | None, allow_empty: bool) -> None:
    """Take a snapshot now: stream, compress, verify, then list it."""
    if spec is None or spec.strip() == "memory:":
        why = unreachable_reason(state.settings() if spec is None else None)
        if why:
            raise UsageError(f"sessions snapshot: {why}; nothing to snapshot (see --from)")
    store = _store(state, spec)
    destination = _dest(state, dest)
    run = _Run()
    with _running("snapshot", store, destination) as progress:
        info = take_snapshot(store, destination, progress=progress, allow_empty=allow_empty)
    skipped = f"; keys skipped: {skipped_summary(info.skipped)}" if info.skipped else ""
    click.echo(
        f"snapshot {info.id}: {info.count} sessions, {_mb(info.size)}, verified{skipped}, "
        f"{run.took()} -> {destination.describe()}"
    )


@sessions_group.command("list")
@click.option("--dest", metavar="DEST", help=DEST_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per snapshot.")
@pass_state
def list_cmd(state: CliState, dest: str | None, as_json: bool) -> None:
    """List verified snapshots, oldest first, with age, count and size."""
    destination = _dest(state, dest)
    try:
        infos = list_snapshots(destination)
    finally:
        destination.close()
    if as_json:
        for info in infos:
            click.echo(json.dumps({**asdict(info), "age_seconds": round(info.age_seconds, 1)}))
        return
    if not infos:
        click.echo(f"no snapshots in {destination.describe()}")
        return
    click.echo(f"{'SNAPSHOT':<26} {'AGE':>6} {'SESSIONS':>10} {'SIZE':>10}  SOURCE")
    for info in infos:
        click.echo(
            f"{info.id:<26} {_age(info.age_seconds):>6} {info.count:>10} {_mb(info.size):>10}"
            f"  {info.source}"
        )
    click.echo(f"{len(infos)} snapshots in {destination.describe()}")


@sessions_group.command("restore")
@click.argument("snapshot", metavar="SNAPSHOT")
@click.option("--dest", metavar="DEST", help="Where the snapshot is (default BACKUP.dest).")
@click.option("--to", "spec", metavar="S", help="Store to restore into (default: configured).")
@click.option("--on-conflict", type=CONFLICT, default="fail", show_default=True, help=CONFLICT_HELP)
@pass_state
def restore_cmd(
    state: CliState, snapshot: str, dest: str | None, spec: str | None, on_conflict: str
) -> None:
    """Restore SNAPSHOT (an id from `list`, or latest).

    Expired sessions are dropped; the others keep their absolute expiry.
    """
    destination = _dest(state, dest)
    store = _store(state, spec)
    run = _Run()
    with _running(
        "restoring", store, destination, total=lambda: find_snapshot(destination, snapshot).count
    ) as progress:
        result = restore_snapshot(
            snapshot, destination, store, OnConflict(on_conflict), progress=progress
        )
    click.echo(
        f"restored {result.snapshot} into {store.describe()}: {result.written} written, "
        f"{result.skipped} skipped, {result.expired} expired dropped, {run.took()}"
    )


@sessions_group.command("copy")
@click.option("--from", "src", metavar="S", required=True, help="Store to read.")
@click.option("--to", "dst", metavar="S", required=True, help="Store to write.")
@click.option("--on-conflict", type=CONFLICT, default="fail", show_default=True, help=CONFLICT_HELP)
@pass_state
def copy_cmd(state: CliState, src: str, dst: str, on_conflict: str) -> None:
    """Copy every live session from one store to another, expiry kept."""
    source = _store(state, src)
    target = _store(state, dst)
    run = _Run()
    with _running("copying", source, target) as progress:
        result = copy_sessions(source, target, OnConflict(on_conflict), progress=progress)
    click.echo(
        f"copied {result.written} sessions from {source.describe()} to {target.describe()} "
        f"({result.skipped} skipped, {result.expired} expired dropped{_not_sessions(source)}) "
        f"{run.took()}"
    )
