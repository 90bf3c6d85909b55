"""Session snapshots: take, verify, list, prune, restore; and copying between stores.

Plain functions (the CLI and the Celery tasks call them).  A snapshot ``<id>`` is two files at
its destination (:mod:`worker.backups.dest`):

* ``<id>.jsonl.zst`` -- the data (:mod:`worker.backups.format`), written to a staging file
  and **verified as it is written** (each frame, the bytes written to the file, decompressed
  and counted in a thread of its own: count, header, trailer), published, then **re-read from
  the destination**: its sha256 and size must be those of the bytes verified;
* ``<id>.manifest.json`` -- written last, only after verification.  Only snapshots with a
  manifest are listed, restored or counted by prune, so a failed or interrupted one never
  looks complete.

Ids are the UTC start time plus a random tail (``20261127T041121.123Z-1a2b``), so they sort
by time and ``latest`` is the last one.  Everything streams in batches: memory stays flat
with the number of sessions.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.backups.dest import SnapshotDestination
from worker.backups.format import (
    FORMAT,
    VERSION,
    SnapshotReader,
    SnapshotWriter,
)
from worker.backups.manifest import (
    DATA_SUFFIX,
    LATEST,
    MANIFEST_SUFFIX,
    Clock,
    SnapshotInfo,
    find_snapshot,
    list_snapshots,
    manifest_bytes,
    new_snapshot_id,
    now_iso,
)
from worker.backups.restore import (
    LocalCopy,
    check_before_restore,
    snapshot_batches,
    verified_batches,
)
from worker.backups.transfer import (
    STREAM_RESTARTS,
    Progress,
    copy_sessions,
    export_sessions,
    import_sessions,
    refuse_conflicts,
    write_restartable,
)
from worker.backups.verify import FrameCheck, FrameChecker, check_frames, stored_digest
from worker.errors import IntegrityError, StoreError, UsageError
from worker.stores.sessions.ahead import prefetch
from worker.stores.sessions.base import (
    BATCH_SIZE,
    OnConflict,
    SessionStore,
    StreamRestarted,
    WriteResult,
    skipped_summary,
)
from worker.stores.sessions.lines import encode_batch

__all__ = [
    "LATEST",
    "SnapshotInfo",
    "copy_sessions",
    "export_sessions",
    "find_snapshot",
    "import_sessions",
    "list_snapshots",
    "prune_snapshots",
    "restore_snapshot",
    "take_snapshot",
    "verify_snapshot",
]

log = logging.getLogger("synchro_sync.snapshots")


@dataclass
class RestoreResult(WriteResult):
    snapshot: str = ""


# --- take ---------------------------------------------------------------------------------


class EmptySource(StoreError):
    """The source holds no sessions: no snapshot was kept (unless asked to allow it)."""


def take_snapshot(
    source: SessionStore,
    dest: SnapshotDestination,
    *,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
    allow_empty: bool = False,
    clock: Clock = time.time,
) -> SnapshotInfo:
    """Stream every live session of ``source`` into a new snapshot at ``dest``, verify it by
    re-reading it from ``dest``, then write its manifest.  On any failure nothing is listed
    and the partial data is removed.  A source without sessions raises :class:`EmptySource`
    (naming what it skipped) and keeps nothing, unless ``allow_empty``.  Its id and times
    come from ``clock``."""
    snap_id = new_snapshot_id(clock)
    started = now_iso(clock)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "id": snap_id,
        "source": source.describe(),
        "started_at": started,
    }
    name = snap_id + DATA_SUFFIX
    staging = dest.staging(name)
    published = False
    try:
        for restart in range(STREAM_RESTARTS + 1):
            try:
                writer, check, md5 = _write_data(
                    source, staging, header, progress, batch_size, dest.wants_md5, clock
                )
                break
            except StreamRestarted:
                if restart == STREAM_RESTARTS:
                    raise
                log.warning("snapshot %s: the source restarted; starting again", snap_id)
        skipped = dict(getattr(source, "skipped", None) or {})
        if writer.count == 0 and not allow_empty:
            raise EmptySource(
                f"holds no sessions (keys skipped: {skipped_summary(skipped)}); no snapshot "
                "was kept (--allow-empty to take one anyway)",
                store=source.describe(),
            )
        info = SnapshotInfo(
            id=snap_id, count=writer.count, size=check.size, sha256=writer.lines_sha256.hexdigest(),
            file_sha256=check.file_sha256, started_at=started, ended_at=now_iso(clock),
            source=source.describe(), frames=writer.frames, skipped=skipped or None,
        )
        _raise_problems(dest, info, check)  # what was written, checked while it was written
        dest.publish(staging, name, md5)
        published = True
        with dest.open(info.data_name) as f:  # what was stored: the bytes checked
            stored_sha, stored_size = stored_digest(f)
        if (stored_sha, stored_size) != (info.file_sha256, info.size):
            raise IntegrityError(
                "verification failed: the stored file differs from the one written "
                f"({stored_size} bytes read back, {info.size} written)",
                store=dest.describe(), key=info.id,
            )
        dest.write_small(snap_id + MANIFEST_SUFFIX, manifest_bytes(info))
        return info
    except BaseException:
        dest.discard(staging)
        if published:
            dest.delete([name])
        raise


def _write_data(
    source: SessionStore,
    staging: Path,
    header: dict[str, Any],
    progress: Progress | None,
    batch_size: int,
    md5: bool,
    clock: Clock,
) -> tuple[SnapshotWriter, FrameCheck, str | None]:
    """Write the data to ``staging``, each frame checked as it is written; then fsync."""
    with open(staging, "wb") as out:
        checker = FrameChecker(str(staging), out.fileno())
        try:
            writer = SnapshotWriter(out, header, md5=md5, on_frame=checker.add)
            try:
                for batch in source.iter_raw(batch_size):
                    writer.write_block(encode_batch(batch), len(batch))
                    if progress:
                        progress(len(batch))
                trailer = {"end": True, "ended_at": now_iso(clock)}
                _, file_sha, md5_hex, size = writer.finish(trailer)
            finally:
                writer.abort()
            check = checker.result(file_sha, size)
        finally:
            checker.close()
        out.flush()
        os.fsync(out.fileno())
    return writer, check, md5_hex


def verify_snapshot(dest: SnapshotDestination, info: SnapshotInfo) -> None:
    """Re-read the data from ``dest``, streaming: the sha256 of the stored bytes must be the
    one written, the data must decompress (zstd checks its own content checksum) to a header
    naming this snapshot, ``count`` session lines, and the trailer written with them.  (The
    sha256 of the session lines is not recomputed: equal stored bytes that decompress cleanly
    hold the same lines; the trailer keeps it for anyone checking a file without its
    manifest, and ``import`` does.)"""
    trailer: dict[str, Any] | None
    name = f"{dest.describe()}/{info.data_name}"
    with dest.open(info.data_name) as f:
        if info.frames:
            back = check_frames(f, info.frames, name)
            header, trailer, count = back.header, back.trailer, back.count
            file_sha256, size = back.file_sha256, back.size
        else:
            reader = SnapshotReader(f, name, hash_lines=False)
            try:
                reader.drain()
            finally:
                reader.close()
            header, trailer, count = reader.header, reader.trailer, reader.count
            file_sha256, size = reader.file_sha256, reader.file_size
    _raise_problems(dest, info, FrameCheck(count, header, trailer or {}, file_sha256, size))


def _raise_problems(dest: SnapshotDestination, info: SnapshotInfo, back: FrameCheck) -> None:
    """IntegrityError unless what was read back (``back``) is the snapshot ``info`` says."""
    header, trailer, count = back.header, back.trailer, back.count
    problems = []
    if header.get("format") != FORMAT or header.get("id") != info.id:
        problems.append(f"header names snapshot {header.get('id')!r}")
    if count != info.count or (trailer or {}).get("count") != info.count:
        problems.append(f"{count} sessions read back, {info.count} written")
    if trailer.get("sha256") != info.sha256:
        problems.append("the trailer's session checksum differs")
    if back.file_sha256 != info.file_sha256 or back.size != info.size:
        problems.append("file checksum or size differs")
    if problems:
        raise IntegrityError(
            "verification failed: " + "; ".join(problems), store=dest.describe(), key=info.id
        )


# --- list and prune -----------------------------------------------------------------------


def prune_snapshots(dest: SnapshotDestination, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` verified snapshots, and data files without a
    manifest older than the oldest kept one (left by a crash); returns the deleted ids."""
    if keep < 1:
        raise UsageError("keep must be at least 1")
    infos = list_snapshots(dest)
    old = infos[:-keep] if len(infos) > keep else []
    for info in old:
        # Manifest first: from that moment the snapshot is no longer listed.
        dest.delete([info.id + MANIFEST_SUFFIX])
        dest.delete([info.data_name])
    deleted = [i.id for i in old]
    kept = infos[-keep:]
    if kept:
        listed = {i.data_name for i in kept}
        orphans = [
            n for n, _ in dest.names()
            if n.endswith(DATA_SUFFIX) and n not in listed and n < kept[0].data_name
        ]
        dest.delete(orphans)
    return deleted


# --- restore, copy, export, import --------------------------------------------------------


def restore_snapshot(
    snapshot: str,
    dest: SnapshotDestination,
    target: SessionStore,
    on_conflict: OnConflict = OnConflict.FAIL,
    *,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore snapshot ``snapshot`` (an id or ``latest``) from ``dest`` into ``target``.

    Every checksum (file, frames, session lines, trailer, manifest: see
    :func:`check_before_restore`) is checked before anything is written; expired sessions
    are dropped and the others keep their absolute expiry.  ``FAIL`` checks every id first
    and writes nothing if the target holds any of them.
    """
    info = find_snapshot(dest, snapshot)
    with LocalCopy(dest, info) as path:
        where = dest.describe()
        if on_conflict is OnConflict.FAIL and not target.empty():
            # One pass that writes nothing checks every id and every checksum.
            refuse_conflicts(prefetch(verified_batches(path, info, where, ids_only=True)), target)
        else:
            check_before_restore(path, info, where)
        result = write_restartable(
            target, lambda: prefetch(snapshot_batches(path, info)), on_conflict, progress
        )
    return RestoreResult(result.written, result.skipped, result.expired, snapshot=info.id)
