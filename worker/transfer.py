"""Sending one file: an upload of exactly the content current when it started, or a
server-side copy of content the store already holds (a rename).

The file is stat'ed before and after the store's upload (which itself verifies the bytes it
sent); if it changed, the upload is redone, so the last upload to finish is always of content
that was current when it began, and the index row returned describes exactly that content.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from worker import localtree
from worker.errors import IntegrityError
from worker.index import IndexEntry
from worker.mirror import Upload

if TYPE_CHECKING:
    from worker.passes import MirrorContext

#: Attempts at uploading a file that keeps changing under us.
CHANGE_ATTEMPTS = 4


def upload_file(
    ctx: MirrorContext, container: str, key: str, md5: str | None = None,
    planned: localtree.LocalFile | None = None, relpath: str | None = None,
) -> tuple[IndexEntry, int] | None:
    """Upload the file as it is now; redo while it changes under the upload.

    Returns the index row of exactly the content uploaded and its size, or None when the
    file is gone.  The store never holds a mix: the store layer verifies the bytes it sent.
    """
    path = ctx.root / container / (relpath or key)
    for _ in range(CHANGE_ATTEMPTS):
        try:
            before = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        now = localtree.LocalFile.from_stat(key, before)
        hashed_ns = time.time_ns()
        hint = md5 if planned is not None and planned.same_stat(now) else None
        try:
            info = ctx.store.put_file(container, key, path, md5_hex=hint)
            after = os.stat(path)
        except FileNotFoundError:
            return None
        if localtree.LocalFile.from_stat(key, after).same_stat(now) and info.md5:
            return IndexEntry.of(now, info.md5, info.etag, hashed_ns), now.size
        md5 = None
    raise IntegrityError(
        f"{path} kept changing during {CHANGE_ATTEMPTS} uploads", container=container, key=key
    )


def upload(ctx: MirrorContext, container: str, up: Upload) -> tuple[str, IndexEntry | None, int]:
    key = up.file.key
    with ctx.locks.hold(container, key):
        done = upload_file(ctx, container, key, up.md5, up.file, up.file.relpath)
    if done is None:
        return key, None, 0
    return key, done[0], done[1]


def copy(
    ctx: MirrorContext, container: str, src: str, f: localtree.LocalFile, md5: str
) -> tuple[str, IndexEntry | None, int]:
    path = ctx.root / container / f.relpath
    try:
        still = localtree.LocalFile.from_stat(f.key, os.stat(path), f.disk).same_stat(f)
    except FileNotFoundError:
        return f.key, None, 0
    if still:
        hashed_ns = time.time_ns()
        info = ctx.store.copy(container, src, f.key)
        if info.md5 is None or info.md5 == md5:
            return f.key, IndexEntry.of(f, md5, info.etag, hashed_ns), -1
    return upload(ctx, container, Upload(f, None))
