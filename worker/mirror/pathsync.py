"""``sync_path``: what a live-sync task does for one path.

The task syncs the path's state *when it runs*, not what the event said, under a per-path lock
shared by every worker process on the host (:mod:`worker.coord.locks`), so duplicate and late
deliveries are harmless and the upload that finishes last is of the content current when it
started (the file is stat'ed again after the upload, and the upload redone if it changed):

* a file present and different from what the index says was uploaded -> upload;
* a path absent -> delete it from the store, and everything under it if it was a folder;
* a folder -> upload what inside it is new or changed by the index (no listing: a burst of
  new files is sent as path syncs would send it, once each); only when the index knows of a
  file under it that is gone is the folder planned with one listing of its prefix, and its
  deletes done.

Every upload of a folder's file, like a single path's, runs under the path's lock and reads the
index again there, so a file that another worker process (or a path sync) has just sent is not
sent a second time: the index row is written before the lock is released.

Ignored paths are skipped; a path that escapes the root (``..``, a symlink out) is refused with
:class:`~worker.errors.UnsafePath`.  An app folder that is missing or empty deletes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.errors import StillChanging, SyncError, TransientStoreError
from worker.mirror import apps, localtree, passes, safeopen, transfer
from worker.mirror.index import IndexEntry
from worker.mirror.plan import OutOfOrder, merge
from worker.mirror.results import PassResult, PathResult
from worker.mirror.sender import INLINE_SEND
from worker.stores.modules import STORE_FILES, ContainerNotFound

if TYPE_CHECKING:
    from worker.mirror.context import MirrorContext


def sync_path(ctx: MirrorContext, container: str, relpath: str) -> PathResult:
    disk = ctx.check_path(container, relpath)
    key = localtree.nfc(disk)
    container = localtree.nfc(container)
    if ctx.rules.container_ignored(container):
        return PathResult(container, key, "skipped", reason="ignored")
    if container == STORE_FILES and not ctx.store.holds_store_files:
        return PathResult(container, key, "skipped", reason="no MODULESTORE.configRoot")
    if container != STORE_FILES and container == ctx.store.config_root:
        return PathResult(container, key, "skipped", reason="named as MODULESTORE.configRoot")
    if ctx.apps_only and container != STORE_FILES:
        if why := apps.not_served(ctx.root, container):
            return PathResult(container, key, "skipped", reason=f"not a Synchro app ({why})")
        if key == apps.PACKAGE_JSON:
            # The folder may have just become an app: the whole of it follows, not one file.
            disk = key = ""
    st = localtree.stat_path(ctx.root, container, disk)
    is_dir = st is not None and stat.S_ISDIR(st.st_mode)
    if key and ctx.rules.ignored_path(container, key, is_dir=is_dir):
        return PathResult(container, key, "skipped", reason="ignored")
    if not key or is_dir:
        if st is None:
            return PathResult(container, key, "skipped", reason="app folder missing")
        prefix = key + "/" if key else ""
        disk_prefix = disk + "/" if disk else ""
        sent = _send_folder(ctx, container, prefix, disk_prefix)
        if not sent.gone:
            return PathResult(container, key, "folder", uploaded=sent.uploaded, bytes=sent.bytes)
        # Something the index knows under it is gone: the store's listing says what to delete.
        stream = passes.plan(ctx, container, prefix, guard_empty=not key, disk_prefix=disk_prefix)
        result = PassResult()
        passes.execute(ctx, [stream], result,
                       gate=lambda s: ctx.withhold_live_delete(container, s.delete_count()))
        uploaded, nbytes = sent.uploaded + result.uploaded, sent.bytes + result.bytes
        if result.withheld:
            return PathResult(container, key, "withheld", uploaded=uploaded,
                              bytes=nbytes, reason=result.withheld[0].error)
        if result.failures:
            raise SyncError("; ".join(str(f) for f in result.failures))
        return PathResult(
            container, key, "folder", uploaded=uploaded + result.copied,
            deleted=result.deleted, bytes=nbytes,
        )
    if st is None:
        return _delete(ctx, container, key, disk)
    if not stat.S_ISREG(st.st_mode):
        return PathResult(container, key, "skipped", reason="not a regular file")
    with ctx.locks.hold(container, key):
        return _sync_file(ctx, container, key, disk)


def _sync_file(ctx: MirrorContext, container: str, key: str, disk: str) -> PathResult:
    where = f"{container}/{disk}"
    try:
        now = localtree.LocalFile.from_stat(key, safeopen.stat_file(ctx.root, where), disk)
    except (FileNotFoundError, NotADirectoryError):
        return _delete_locked(ctx, container, key)
    entry = ctx.index.get(container, key)
    if entry is not None and entry.etag is not None:
        if entry.vouches_for(now):
            return PathResult(container, key, "unchanged")
        if entry.size == now.size:
            # Touched, or rewritten with the same bytes: hash before sending anything.
            hashed_ns = time.time_ns()
            try:
                md5 = safeopen.md5(ctx.root, where)
                again = localtree.LocalFile.from_stat(key, safeopen.stat_file(ctx.root, where),
                                                      disk)
            except (FileNotFoundError, NotADirectoryError):
                return _delete_locked(ctx, container, key)
            if md5 == entry.md5 and again.same_stat(now):
                ctx.index.put(container, key, IndexEntry.of(now, md5, entry.etag, hashed_ns))
                return PathResult(container, key, "unchanged")
    done = transfer.upload_file(ctx, container, key, relpath=disk)
    if done is None:
        return _delete_locked(ctx, container, key)
    row, size = done
    ctx.index.put(container, key, row)
    return PathResult(container, key, "uploaded", uploaded=1, bytes=size)


@dataclass
class _FolderSent:
    """What :func:`_send_folder` did."""

    uploaded: int = 0
    bytes: int = 0
    #: The index knows of a file under the folder that the walk did not find.
    gone: bool = False
    failures: list[BaseException] = field(default_factory=list)


def _send_folder(ctx: MirrorContext, container: str, prefix: str, disk_prefix: str
                 ) -> _FolderSent:
    """Upload every file under the folder that the index does not vouch for, on a pool of
    ``SYNC.transfers`` threads (at most four times that many in flight); into a local folder
    small files are sent on this thread instead (``sender.INLINE_SEND``, as a full pass does:
    there a write is a few system calls, and 16 threads taking turns at the GIL and at the
    index spent 5x the time).  The tree is walked and merged with the index rows in key order;
    no listing is asked for."""
    out = _FolderSent()
    scan = localtree.ScanResult()
    local = localtree.walk(ctx.root, container, ctx.rules, scan, prefix, disk_prefix or None)
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(ctx.transfers * 4)
    inline = INLINE_SEND if ctx.store.writes_locally else -1

    def settle(send: Callable[[], PathResult], failed: type[BaseException]) -> None:
        """Count what ``send`` did, or keep what it raised (``failed`` and below)."""
        try:
            r = send()
        except StillChanging:
            return  # being written: its next write's event syncs it
        except failed as exc:
            with lock:
                out.failures.append(exc)
            return
        with lock:
            out.uploaded += r.uploaded
            out.bytes += r.bytes

    def collect(fut: Future[PathResult]) -> None:
        slots.release()
        settle(fut.result, BaseException)  # whatever the pool's thread raised

    with ThreadPoolExecutor(ctx.transfers, thread_name_prefix="synchro-put") as pool:
        try:
            for key, f, entry, _ in merge(local, ctx.index.rows(container, prefix), ()):
                if f is None:
                    out.gone = out.gone or not scan.is_unsure(key)
                    continue
                if entry is not None and entry.etag is not None and entry.vouches_for(f):
                    continue
                if f.size <= inline:  # on this thread: a stop or an interrupt goes through
                    settle(functools.partial(_send_file, ctx, container, f), Exception)
                    continue
                slots.acquire()
                pool.submit(_send_file, ctx, container, f).add_done_callback(collect)
        except OutOfOrder:
            out.gone = True  # the listing's plan sorts it out
    for exc in out.failures:
        if isinstance(exc, TransientStoreError):
            raise exc  # the task (or the embedded queue) tries the folder again later
    if out.failures:
        raise SyncError("; ".join(str(e) for e in out.failures[:10]))
    return out


def _send_file(ctx: MirrorContext, container: str, f: localtree.LocalFile) -> PathResult:
    """One file of a folder, under its lock, the index read again there."""
    with transfer.held(ctx, container, f.key, f.size):
        entry = ctx.index.get(container, f.key)
        if entry is not None and entry.etag is not None:
            if entry.vouches_for(f):
                return PathResult(container, f.key, "unchanged")  # just sent by someone else
            if entry.size == f.size:
                return _sync_file(ctx, container, f.key, f.relpath)  # hashed before sending
        done = transfer.upload_file(ctx, container, f.key, relpath=f.relpath)
        if done is None:
            return PathResult(container, f.key, "skipped", reason="gone")
        row, size = done
        ctx.index.put(container, f.key, row)
    return PathResult(container, f.key, "uploaded", uploaded=1, bytes=size)


def _app_folder_empty(ctx: MirrorContext, container: str) -> bool:
    try:
        with os.scandir(localtree.folder_of(ctx.root, container)) as it:
            return next(it, None) is None
    except (FileNotFoundError, NotADirectoryError):
        return True


def _delete(ctx: MirrorContext, container: str, key: str, disk: str) -> PathResult:
    with ctx.locks.hold(container, key):
        st = localtree.stat_path(ctx.root, container, disk)
        if st is None:
            return _delete_locked(ctx, container, key)
        if stat.S_ISREG(st.st_mode):
            return _sync_file(ctx, container, key, disk)
    return sync_path(ctx, container, disk)  # it came back as a folder


def _delete_locked(ctx: MirrorContext, container: str, key: str) -> PathResult:
    if _app_folder_empty(ctx, container):
        return PathResult(
            container, key, "skipped", reason="app folder missing or empty; nothing deleted"
        )
    prefix = key + "/"
    keys = [key]
    listing_keys: set[str] = set()
    if ctx.index.get(container, key) is None or ctx.index.has_under(container, prefix):
        # Possibly a folder: everything under it goes too (one listing of that prefix).
        listing = ctx.listing(container, prefix) or {}
        listing_keys = set(listing)
        held = ctx.index.held(container, prefix)
        keys += [
            k for k in listing if k not in held and not ctx.rules.ignored_path(container, k)
        ]
        keys += [k for k in ctx.index.load(container, prefix) if k not in listing]
    # Every key but the path itself came from the listing or the index: only it may be unknown
    # to the store (a delete of something never mirrored costs nothing of the budget).
    unknown = key not in listing_keys and ctx.index.get(container, key) is None
    known = len(keys) - unknown
    if why := ctx.withhold_live_delete(container, known):
        return PathResult(container, key, "withheld", reason=why)
    with contextlib.suppress(ContainerNotFound):  # nothing of this app in the store
        ctx.store.delete(container, keys)
    ctx.index.forget(container, keys)
    return PathResult(container, key, "deleted", deleted=len(keys))
