"""``sync_path``: what a live-sync task does for one path.

The task syncs the path's state *when it runs*, not what the event said, under a per-path lock
shared by every worker process on the host (:mod:`worker.coord.locks`), so duplicate and late
deliveries are harmless and the upload that finishes last is of the content current when it
started (the file is stat'ed again after the upload, and the upload redone if it changed):

* a file present and different from what the index says was uploaded -> upload;
* a path absent -> delete it from the store, and everything under it if it was a folder;
* a folder -> plan and sync what is inside it (one listing of that folder's prefix).

Ignored paths are skipped; a path that escapes the root (``..``, a symlink out) is refused with
:class:`~worker.errors.UnsafePath`.  An app folder that is missing or empty deletes nothing.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from typing import TYPE_CHECKING

from worker.errors import SyncError
from worker.mirror import apps, localtree, passes, safeopen, transfer
from worker.mirror.index import IndexEntry
from worker.mirror.results import PassResult, PathResult
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
        stream = passes.plan(
            ctx, container, prefix, guard_empty=not key, disk_prefix=disk + "/" if disk else ""
        )
        result = PassResult()
        passes.execute(ctx, [stream], result,
                       gate=lambda s: ctx.withhold_live_delete(container, s.delete_count()))
        if result.withheld:
            return PathResult(container, key, "withheld", uploaded=result.uploaded,
                              bytes=result.bytes, reason=result.withheld[0].error)
        if result.failures:
            raise SyncError("; ".join(str(f) for f in result.failures))
        return PathResult(
            container, key, "folder", uploaded=result.uploaded + result.copied,
            deleted=result.deleted, bytes=result.bytes,
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
