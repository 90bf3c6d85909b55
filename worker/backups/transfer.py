"""Moving sessions between stores and files: copy, export and import as JSON lines.

Everything streams in batches (memory stays flat with the number of sessions).  A write that
the target's restart interrupts (:class:`StreamRestarted`) starts again from the beginning, a
bounded number of times.  ``--on-conflict fail`` checks every id first: nothing is written
if the target holds any of them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.backups.format import ZSTD_MAGIC, SnapshotReader
from worker.errors import AlreadyExists, UsageError
from worker.stores.sessions.base import (
    BATCH_SIZE,
    OnConflict,
    RawSession,
    SessionStore,
    StreamRestarted,
    WriteResult,
)
from worker.stores.sessions.lines import decode_line, encode_batch

Progress = Callable[[int], None]
#: How often a stream starts again when its store restarts under it (see StreamRestarted).
STREAM_RESTARTS = 3
log = logging.getLogger("synchro_sync.sessions")


def counted(
    batches: Iterator[list[RawSession]], progress: Progress | None
) -> Iterator[list[RawSession]]:
    for batch in batches:
        yield batch
        if progress:
            progress(len(batch))


def refuse_conflicts(batches: Iterator[Sequence[RawSession]], target: SessionStore) -> None:
    """AlreadyExists if ``target`` holds any of the sessions: before a ``FAIL`` write, so that
    a conflict writes nothing.  Skipped by the callers when the target is :meth:`empty`; its
    ``NX`` writes still refuse a session that appears meanwhile, as after this check."""
    with _closing(batches):
        for batch in batches:
            found = target.existing([raw[0] for raw in batch])
            if not found:
                continue
            raise AlreadyExists(
                f"the target holds {len(found)} or more of these sessions already, "
                f"e.g. {found[0]!r}; nothing was written (choose --on-conflict skip or "
                "overwrite)",
                store=target.describe(),
            )


@contextmanager
def _closing(stream: Iterator[Any]) -> Iterator[None]:
    """Close a generator stream (its file, its prefetch thread) even when abandoned early."""
    try:
        yield
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def copy_sessions(
    src: SessionStore,
    dst: SessionStore,
    on_conflict: OnConflict = OnConflict.FAIL,
    *,
    progress: Progress | None = None,
) -> WriteResult:
    """Copy every live session from ``src`` to ``dst``, streaming, expiry kept."""
    if src.describe() == dst.describe():
        raise UsageError(f"source and target are the same store ({src.describe()})")
    if on_conflict is OnConflict.FAIL and not dst.empty():
        refuse_conflicts(src.iter_raw(), dst)
    return write_restartable(dst, src.iter_raw, on_conflict, progress)


def write_restartable(
    target: SessionStore,
    batches: Callable[[], Iterator[list[RawSession]]],
    on_conflict: OnConflict,
    progress: Progress | None,
) -> WriteResult:
    """``target.write_raw`` over a fresh stream, run again from the start if the target (or
    the source) restarted under it.  A rerun after FAIL's check uses SKIP: what the first run
    wrote is ours, and the target's check counts an equal value as written."""
    mode = on_conflict
    for restart in range(STREAM_RESTARTS + 1):
        stream = batches()
        try:
            with _closing(stream):
                return target.write_raw(counted(stream, progress), mode)
        except StreamRestarted:
            if restart == STREAM_RESTARTS:
                raise
            log.warning("%s restarted during the write; starting again", target.describe())
            if mode is OnConflict.FAIL:
                mode = OnConflict.SKIP
    raise AssertionError("unreachable")


def export_sessions(store: SessionStore, out: Any, *, progress: Progress | None = None) -> int:
    """Write every live session as JSON lines to the binary file ``out``; returns the count."""
    count = 0
    for batch in store.iter_raw():
        out.write(encode_batch(batch))
        count += len(batch)
        if progress:
            progress(len(batch))
    return count


def import_sessions(
    store: SessionStore,
    path: Path,
    on_conflict: OnConflict = OnConflict.FAIL,
    *,
    progress: Progress | None = None,
) -> WriteResult:
    """Import JSON lines (or a snapshot file) from ``path``.  The whole file is checked
    first, so a bad line (reported with its line number) means nothing was written.  An id
    that appears twice in the file is one session; which of its lines wins is not defined
    (batches are written concurrently)."""
    for _ in _file_batches(path):
        pass
    if on_conflict is OnConflict.FAIL and not store.empty():
        refuse_conflicts(_file_batches(path), store)
    return store.write_raw(counted(_file_batches(path), progress), on_conflict)


def _file_batches(path: Path) -> Iterator[list[RawSession]]:
    with open(path, "rb") as f:
        if f.read(4) == ZSTD_MAGIC:
            f.seek(0)
            reader = SnapshotReader(f, str(path))
            lineno = 1
            try:
                for block in reader.blocks():
                    lines = block.split(b"\n")[:-1]
                    yield [
                        decode_line(ln, where=f"{path}:{lineno + i + 1}")
                        for i, ln in enumerate(lines)
                    ]
                    lineno += len(lines)
            finally:
                reader.close()
            return
        f.seek(0)
        batch: list[RawSession] = []
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            batch.append(decode_line(line, where=f"{path}:{lineno}"))
            if len(batch) >= BATCH_SIZE:
                yield batch
                batch = []
        if batch:
            yield batch


def spool_stdin(stream: Any) -> Path:
    """Copy a non-seekable input (stdin) to a temp file, for import's two passes."""
    fd, name = tempfile.mkstemp(prefix="sessions-import.", suffix=".jsonl")
    with open(fd, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    return Path(name)
