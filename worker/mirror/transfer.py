"""Sending one file: an upload of exactly the content current when it started, or a
server-side copy of content the store already holds (a rename).

The file is stat'ed before and after the store's upload (which itself verifies the bytes it
sent); if it changed, the upload is redone, so the last upload to finish is always of content
that was current when it began, and the index row returned describes exactly that content.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from worker.errors import StillChanging
from worker.mirror import localtree, safeopen
from worker.mirror.index import IndexEntry
from worker.mirror.plan import Upload

if TYPE_CHECKING:
    from worker.mirror.context import MirrorContext

#: Attempts at uploading a file that keeps changing under us.
CHANGE_ATTEMPTS = 4
#: Bytes of file content held in memory by all uploads of one process at once.  A file up to
#: 8 MiB is read whole; a larger one holds what its backend says (:func:`upload_memory`).
MEMORY_BUDGET = 32 * 1024 * 1024
_PART = 8 * 1024 * 1024


class ByteBudget:
    """A weighted semaphore: uploads wait until their bytes fit in the budget, so 16 threads
    sending 8 MiB files never hold 128 MiB (the pass stays under 100 MB)."""

    def __init__(self, limit: int = MEMORY_BUDGET) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """Wait until ``size`` bytes fit (at most the whole budget), hold them meanwhile."""
        need = min(max(size, 1), self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.used + need <= self.limit)
            self.used += need
        try:
            yield
        finally:
            with self._cond:
                self.used -= need
                self._cond.notify_all()


_BUDGET = ByteBudget()


def upload_file(
    ctx: MirrorContext, container: str, key: str, md5: str | None = None,
    planned: localtree.LocalFile | None = None, relpath: str | None = None,
) -> tuple[IndexEntry, int] | None:
    """Upload the file as it is now; redo while it changes under the upload.

    The file is opened from the root's descriptor without following a symlink out of the root
    (:mod:`worker.mirror.safeopen`), so a folder swapped for a link to ``/etc`` after the scan is
    refused, never read; the content sent is that of the descriptor opened, whose ``fstat``
    is what the scan's hint is checked against.  Returns the index row of exactly the content
    uploaded and its size, or None when the file is gone.  The store never holds a mix: the
    store layer verifies the bytes it sent.
    """
    where = f"{container}/{relpath or key}"
    for _ in range(CHANGE_ATTEMPTS):
        try:
            with safeopen.open_file(ctx.root, where) as f:
                now = localtree.LocalFile.from_stat(key, os.fstat(f.fileno()))
                hashed_ns = time.time_ns()
                hint = md5 if planned is not None and planned.same_stat(now) else None
                info = ctx.store.put_file(container, key, f, md5_hex=hint)
            # The path must still name the file that was sent (an editor's rename-over-save
            # during the upload means it is redone with the new file).
            after = safeopen.stat_again(ctx.root, where)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if localtree.LocalFile.from_stat(key, after).same_stat(now) and info.md5:
            return IndexEntry.of(now, info.md5, info.etag, hashed_ns), now.size
        md5 = None
    raise StillChanging(
        f"{ctx.root / where} kept changing during {CHANGE_ATTEMPTS} uploads",
        container=container, key=key,
    )


def upload_memory(ctx: MirrorContext, size: int) -> int:
    """Bytes of content an upload of ``size`` holds at once: what the store's backend says
    (S3 streams through 1 MiB, Azure stages 4 blocks at once), else the file up to 8 MiB and
    one 8 MiB part above."""
    backend = getattr(ctx.store, "backend", None)
    held = getattr(backend, "upload_memory", None)
    return int(held(size)) if callable(held) else min(size, _PART)


@contextmanager
def held(ctx: MirrorContext, container: str, key: str, size: int) -> Iterator[None]:
    """What an upload of ``key`` holds while it runs: its bytes of the memory budget and the
    path's lock (shared by every worker process of the host)."""
    with _BUDGET.hold(upload_memory(ctx, size)), ctx.locks.hold(container, key):
        yield


def upload(ctx: MirrorContext, container: str, up: Upload) -> tuple[str, IndexEntry | None, int]:
    key = up.file.key
    with held(ctx, container, key, up.file.size):
        done = upload_file(ctx, container, key, up.md5, up.file, up.file.relpath)
    if done is None:
        return key, None, 0
    return key, done[0], done[1]


def copy(
    ctx: MirrorContext, container: str, src: str, f: localtree.LocalFile, md5: str
) -> tuple[str, IndexEntry | None, int]:
    try:
        st = safeopen.stat_file(ctx.root, f"{container}/{f.relpath}")
        still = localtree.LocalFile.from_stat(f.key, st, f.disk).same_stat(f)
    except (FileNotFoundError, NotADirectoryError):
        return f.key, None, 0
    if still:
        hashed_ns = time.time_ns()
        info = ctx.store.copy(container, src, f.key)
        if info.md5 is None or info.md5 == md5:
            return f.key, IndexEntry.of(f, md5, info.etag, hashed_ns), -1
    return upload(ctx, container, Upload(f, None))
