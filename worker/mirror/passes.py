"""The full pass (``synchro-sync sync``), and the two steps it is made of, for the live sync of
a folder too: :func:`plan` (a container as a stream) and :func:`execute` (send, then delete).

Every container is a :class:`~worker.mirror.stream.ContainerStream` (the tree walked in key
order, merged with the index rows and the store's listing, one listing request per 1,000 keys),
a few merged at once; what they yield goes to one pool of ``SYNC.transfers`` threads as it comes
(:mod:`worker.mirror.sender`), then the deletes in batches.  Memory does not grow with the tree:
no list of its files, rows or objects is ever made.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from worker.errors import StoreError
from worker.mirror import apps, localtree, sender
from worker.mirror.context import MirrorContext
from worker.mirror.results import Failure, PassResult, Progress
from worker.mirror.sender import Gate
from worker.mirror.stream import ContainerStream, list_together
from worker.stores.modules import STORE_FILES

__all__ = ["execute", "full_pass", "plan"]

#: Containers merged at once (each: a walk and a listing page).
PLAN_THREADS = 8
#: ... into a store that writes locally (``ModuleStore.writes_locally``: a FileModuleStore):
#: one.  There every step is CPU on this machine (the walk of the store's folders, small files
#: written on the merging thread), so a second merge only hands the GIL over at each system
#: call: 20,000 files in 20 apps took 6.4-6.6 s with two, 4.6-4.8 s with one, and a no-change
#: pass the same either way.
FILE_PLAN_THREADS = 1
#: A pass of this many containers or more in one bucket (``MODULESTORE.bucket``) lists the
#: bucket once for all the small ones (``stream.list_together``), holding at most this
#: many pages (1,000 keys each) of it.
LISTED_TOGETHER_FROM = 8
LISTED_TOGETHER_PAGES = 10


def plan(
    ctx: MirrorContext, container: str, prefix: str = "", *, guard_empty: bool = True,
    disk_prefix: str | None = None, record: bool = False,
) -> ContainerStream:
    """One container (or the folder ``prefix``, ending in '/') as a stream, its listing
    started (``stream.exists`` says whether the container exists)."""
    stream = ContainerStream(ctx, container, prefix, guard_empty=guard_empty,
                             disk_prefix=disk_prefix, record=record)
    stream.open()
    return stream


def execute(
    ctx: MirrorContext, streams: list[ContainerStream], result: PassResult,
    progress: Progress | None = None, *, gate: Gate | None = None,
    dry_run: bool = False, admit: Callable[[ContainerStream], Failure | None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Send what the streams yield, then their deletes (see :mod:`worker.mirror.sender`)."""
    ensure = None if dry_run else functools.partial(_ensure, ctx)
    threads = FILE_PLAN_THREADS if ctx.store.writes_locally else PLAN_THREADS
    sender.execute(ctx, streams, result, progress, gate=gate, dry_run=dry_run, ensure=ensure,
                   admit=admit, threads=threads, stop=stop)


def _ensure(ctx: MirrorContext, stream: ContainerStream) -> Callable[[], None] | None:
    """What creates a missing container before its first send (None: it exists)."""
    if stream.exists:
        return None

    def make() -> None:
        try:
            ctx.store.ensure_container(stream.container)
        except StoreError as exc:
            raise StoreError(f"cannot create the container: {exc}") from exc
        stream.exists = True

    return make


def full_pass(
    ctx: MirrorContext,
    containers: list[str] | None = None,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> PassResult:
    """One full mirror pass (``synchro-sync sync``); see the module docstring.  ``stop`` set
    (or Ctrl-C) ends it early, ``interrupted``: nothing more sent, nothing deleted."""
    started = time.monotonic()
    result = PassResult()
    ctx.rules.reload()
    local = ctx.local_containers()
    names = containers if containers else local
    wanted: list[str] = []
    for name in (localtree.nfc(n) for n in names):
        if name not in local:
            result.failures.append(
                Failure(name, None, f"no such app folder in {ctx.root} (nothing was deleted)")
            )
        elif name == ctx.store.config_root:
            result.failures.append(Failure(
                name, None, "this app folder has the name of MODULESTORE.configRoot, the "
                "container of the server's store files; not mirrored"
            ))
        elif _serves(ctx, name, result):
            wanted.append(name)
    _say_not_served(ctx, result)
    if not containers:
        _add_store_files(ctx, wanted, result)

    result.containers += wanted
    # Opened where they are merged (a few at once), so that only those hold a listing page;
    # many containers in one bucket: as many as one listing of it holds, in a page or a few.
    listed = list_together(ctx.store, wanted, LISTED_TOGETHER_PAGES) \
        if len(wanted) >= LISTED_TOGETHER_FROM else {}
    streams = [ContainerStream(ctx, name, record=dry_run, listing=listed.pop(name, None))
               for name in wanted]

    def admit(stream: ContainerStream) -> Failure | None:
        if stream.exists or ctx.store.bucket is None:
            return None
        # The one bucket every container lives in is missing: one line for the pass, not one
        # failed upload per file.
        return Failure(None, None, (
            f"MODULESTORE.bucket {ctx.store.bucket!r} does not exist in the "
            f"{ctx.store.provider} store; create it (the worker never creates the bucket it "
            "is given); nothing was sent"
        ))

    def gate(stream: ContainerStream) -> str:
        share = stream.delete_share()
        if share <= ctx.max_delete_share or force:
            return ""
        return (
            f"would delete {stream.delete_count()} of "
            f"{stream.remote_count} objects ({share:.0%} > SYNC.maxDeleteShare "
            f"{ctx.max_delete_share:.0%}); nothing deleted, use --force"
        )

    execute(ctx, streams, result, progress, gate=gate, dry_run=dry_run, admit=admit, stop=stop)
    result.seconds = time.monotonic() - started
    return result


def _serves(ctx: MirrorContext, container: str, result: PassResult) -> bool:
    """Whether to mirror an app folder; notes the folders a server will not serve."""
    why = apps.not_served(ctx.root, container)
    if not why:
        return True
    result.not_served[container] = why
    return not ctx.apps_only


def _say_not_served(ctx: MirrorContext, result: PassResult) -> None:
    """One line naming the folders a Synchro server will not serve, and why."""
    if not result.not_served:
        return
    names = sorted(result.not_served)
    shown = "; ".join(f"{n} ({result.not_served[n]})" for n in names[:10])
    more = f"; and {len(names) - 10} more" if len(names) > 10 else ""
    done = "not mirrored (SYNC.appsOnly)" if ctx.apps_only else (
        "mirrored all the same (SYNC.appsOnly leaves them out)"
    )
    result.warnings.append(
        f"{len(names)} folder(s) a Synchro server will not serve: {shown}{more}; {done}"
    )


def _add_store_files(ctx: MirrorContext, wanted: list[str], result: PassResult) -> None:
    """The server's store files (apps.json) join the pass where the store has a place for
    them; otherwise one warning names them."""
    if ctx.store.holds_store_files:
        wanted.append(STORE_FILES)
        return
    names = localtree.store_file_names(ctx.root)
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        result.warnings.append(
            f"{len(names)} store file(s) at the root of {ctx.root} ({shown}) are not "
            "mirrored: set MODULESTORE.configRoot to the container the server reads them from"
        )
