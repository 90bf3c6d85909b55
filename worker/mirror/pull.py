"""``pull``: fill a local module directory from the store (a new server).

Each object is streamed to a temporary file beside its target, checked against the listing's
MD5 where the store gives one, renamed into place and given the object's time; the index learns
the file's stat, MD5 and the listed ETag, so the next ``sync`` reads nothing and uploads nothing.
The local folder is the truth: a file that exists locally with other content is kept, and
reported.  Keys that would escape the folder are refused; ignored keys are not pulled.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import IntegrityError, SyncError, UnsafePath
from worker.mirror import localtree
from worker.mirror.index import IndexEntry
from worker.mirror.results import Failure, PassResult, Progress
from worker.stores.modules import STORE_FILES, ObjectInfo, file_md5, names

if TYPE_CHECKING:
    from worker.mirror.context import MirrorContext

_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Missing:
    """No local file of that name: the object is fetched."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The object cannot be brought into this folder (``why``): it is held in the store, never
    deleted by a later pass from here."""

    why: str


@dataclass(frozen=True, slots=True)
class KeptLocal:
    """A local file of that name holds other content: the local one is kept (``why``)."""

    why: str


def pull(
    ctx: MirrorContext, containers: list[str] | None, progress: Progress | None = None
) -> PassResult:
    started = time.monotonic()
    result = PassResult()
    ctx.root.mkdir(parents=True, exist_ok=True)
    ctx.rules.reload()
    names = [localtree.nfc(c) for c in containers] if containers else ctx.store.containers()
    if not containers and ctx.store.holds_store_files:
        names.append(STORE_FILES)  # the server's apps.json comes back to the root
    todo: list[tuple[str, ObjectInfo]] = []
    for name in names:
        if name != STORE_FILES and (
            "/" in name or name.startswith(".") or ctx.rules.container_ignored(name)
        ):
            result.warnings.append(f"{name}: not a usable app folder name; not pulled")
            continue
        listing = ctx.listing(name)
        if listing is None:
            if name != STORE_FILES:  # no configRoot container yet: no store files
                result.failures.append(Failure(name, None, "no such container in the store"))
            continue
        result.containers.append(name)
        index = ctx.index.load(name)
        rows: dict[str, IndexEntry] = {}
        held: dict[str, str] = {}
        folders = _folders(listing)
        for info in listing.values():
            if ctx.rules.ignored_path(name, info.key):
                result.warnings.append(f"{name}/{info.key}: ignored; not pulled")
                continue  # ignored objects are never deleted anyway
            problem = _refuse(name, info.key) or _clash(name, info.key, folders) or (
                f"{ctx.store.store_files_location()}: {info.key!r} is in a folder; store files "
                "lie at the root; not pulled" if name == STORE_FILES and "/" in info.key else None
            )
            if problem:
                result.warnings.append(problem)
                held[info.key] = problem
                continue
            state = _local_state(ctx, name, info, index.get(info.key))
            if isinstance(state, Missing):
                todo.append((name, info))
            elif isinstance(state, IndexEntry):
                rows[info.key] = state
                result.unchanged += 1
            else:
                result.warnings.append(state.why)
                if isinstance(state, Refused):
                    held[info.key] = state.why
        ctx.index.put_many(name, rows)
        # What cannot be brought here is never deleted by a later pass from this folder.
        ctx.index.hold(name, held)
    if progress is not None:
        progress.planned(len(todo), sum(i.size for _, i in todo))
    pool = ThreadPoolExecutor(ctx.transfers, thread_name_prefix="synchro-get")
    try:
        for name, info, outcome in pool.map(lambda t: (*t, _fetch(ctx, *t)), todo):
            if isinstance(outcome, Failure):
                result.failures.append(outcome)
                ctx.index.hold(name, {info.key: str(outcome)})
                continue
            ctx.index.put(name, info.key, outcome)
            ctx.index.release(name, [info.key])
            result.uploaded += 1
            result.bytes += info.size
            if progress is not None:
                progress.advance(1, info.size)
    except KeyboardInterrupt:  # Ctrl-C: fetches in flight finish (each renamed in whole)
        result.interrupted = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    result.seconds = time.monotonic() - started
    return result


def _folders(listing: dict[str, ObjectInfo]) -> dict[str, str]:
    """Each folder the keys imply (``a/b`` for ``a/b/c``), with one key under it."""
    out: dict[str, str] = {}
    for key in listing:
        parts = key.split("/")
        for depth in range(1, len(parts)):
            out.setdefault("/".join(parts[:depth]), key)
    return out


def _clash(container: str, key: str, folders: dict[str, str]) -> str | None:
    """A key that is both a file and a folder in the store (``x`` and ``x/y``): the folder's
    files are pulled, the file cannot be (it is held, never deleted)."""
    if key not in folders:
        return None
    return (
        f"{container}/{key}: the store holds both a file {key!r} and files under {key + '/'!r} "
        f"(e.g. {folders[key]!r}); a folder here cannot also be a file, so the file is not "
        "pulled (kept in the store)"
    )


def _refuse(container: str, key: str) -> str | None:
    try:
        clean = localtree.resolve_key(key)
    except UnsafePath as exc:
        return f"{container}/{key!r}: {exc}; not pulled"
    if clean != key or not key:
        return f"{container}/{key!r}: not a file name this folder can hold; not pulled"
    return None


def _local_state(
    ctx: MirrorContext, container: str, info: ObjectInfo, entry: IndexEntry | None
) -> Missing | IndexEntry | Refused | KeptLocal:
    """What the local folder has of the object: nothing, the same content (its index row), a
    path that cannot be used, or another file."""
    path = localtree.folder_of(ctx.root, container) / info.key
    try:
        st = localtree.stat_path(ctx.root, container, info.key)
    except UnsafePath as exc:
        return Refused(f"{exc}; not pulled")
    except OSError:
        st = None
    if st is None:
        return Missing()
    f = localtree.LocalFile.from_stat(info.key, st)
    hashed_ns = time.time_ns()
    if entry is not None and entry.vouches_for(f):
        md5 = entry.md5
    elif f.size == info.size:
        md5 = file_md5(path)
    else:
        md5 = ""
    remote_md5 = info.md5 or (entry.md5 if entry and entry.etag == info.etag else None)
    if md5 and md5 == remote_md5:
        return IndexEntry.of(f, md5, info.etag, hashed_ns)
    return KeptLocal(f"{container}/{info.key}: a different local file exists; kept the local one")


def _fetch(ctx: MirrorContext, container: str, info: ObjectInfo) -> IndexEntry | Failure:
    path = localtree.folder_of(ctx.root, container) / info.key
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not localtree.within(ctx.root, path.parent):
            return Failure(container, info.key, "a folder on the way leads out of the root")
        return _download(ctx, container, info, path)
    except (SyncError, OSError) as exc:
        return Failure(container, info.key, str(exc))


def _download(ctx: MirrorContext, container: str, info: ObjectInfo, path: Path) -> IndexEntry:
    fd, tmp = tempfile.mkstemp(prefix=names.TEMP_PREFIX, dir=path.parent)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, ctx.store.open(container, info.key) as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        md5 = digest.hexdigest()
        if info.md5 is not None and md5 != info.md5:
            raise IntegrityError(
                f"downloaded MD5 {md5} differs from the listing's {info.md5}",
                container=container, key=info.key,
            )
        os.chmod(tmp, 0o644)
        mtime_ns = int(info.modified * 1e9)
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
        if os.path.lexists(path):
            what = "a folder" if os.path.isdir(path) else "a file"
            raise SyncError(f"{what} of that name appeared locally meanwhile; kept it")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    f = localtree.LocalFile.from_stat(info.key, os.stat(path))
    return IndexEntry.of(f, md5, info.etag, time.time_ns())
