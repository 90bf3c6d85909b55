"""Session snapshots: take, verify, list, prune, restore; and copying between stores.

Plain functions (the CLI and the Celery tasks call them).  A snapshot ``<id>`` is two files at
its destination (:mod:`worker.snapshot_dest`):

* ``<id>.jsonl.zst`` -- the data (:mod:`worker.snapshot_format`), written to a staging file,
  published, then **re-read from the destination** to verify count and checksums;
* ``<id>.manifest.json`` -- written last, only after verification.  Only snapshots with a
  manifest are listed, restored or counted by prune, so a failed or interrupted one never
  looks complete.

Ids are the UTC start time plus a random tail (``20261127T041121.123Z-1a2b``), so they sort
by time and ``latest`` is the last one.  Everything streams in batches: memory stays flat
with the number of sessions.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.errors import AlreadyExists, CorruptFile, IntegrityError, NotFound, UsageError
from worker.snapshot_dest import SnapshotDestination
from worker.snapshot_format import FORMAT, VERSION, SnapshotReader, SnapshotWriter, prefetch
from worker.stores.sessions.base import (
    BATCH_SIZE,
    OnConflict,
    RawSession,
    SessionStore,
    WriteResult,
    iso_to_ms,
    now_epoch_ms,
)
from worker.stores.sessions.lines import decode_block, decode_line, encode_batch

DATA_SUFFIX = ".jsonl.zst"
MANIFEST_SUFFIX = ".manifest.json"
LATEST = "latest"

Progress = Callable[[int], None]


@dataclass(frozen=True)
class SnapshotInfo:
    """What a manifest records about one verified snapshot."""

    id: str
    count: int
    size: int
    sha256: str
    file_sha256: str
    started_at: str
    ended_at: str
    source: str
    format: str = FORMAT
    version: int = VERSION

    @property
    def data_name(self) -> str:
        return self.id + DATA_SUFFIX

    @property
    def age_seconds(self) -> float:
        return max(0.0, (now_epoch_ms() - iso_to_ms(self.ended_at)) / 1000)


@dataclass
class RestoreResult(WriteResult):
    snapshot: str = ""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_snapshot_id() -> str:
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(2)}"


# --- take ---------------------------------------------------------------------------------


def take_snapshot(
    source: SessionStore,
    dest: SnapshotDestination,
    *,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> SnapshotInfo:
    """Stream every live session of ``source`` into a new snapshot at ``dest``, verify it by
    re-reading it from ``dest``, then write its manifest.  On any failure nothing is listed
    and the partial data is removed."""
    snap_id = new_snapshot_id()
    started = _now_iso()
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
        with open(staging, "wb") as out:
            writer = SnapshotWriter(out, header)
            try:
                for batch in source.iter_raw(batch_size):
                    writer.write_block(encode_batch(batch), len(batch))
                    if progress:
                        progress(len(batch))
                lines_sha, file_sha, md5, size = writer.finish(
                    {"end": True, "ended_at": _now_iso()}
                )
            finally:
                writer.abort()
            out.flush()
            os.fsync(out.fileno())
        dest.publish(staging, name, md5)
        published = True
        info = SnapshotInfo(
            id=snap_id, count=writer.count, size=size, sha256=lines_sha, file_sha256=file_sha,
            started_at=started, ended_at=_now_iso(), source=source.describe(),
        )
        verify_snapshot(dest, info)
        dest.write_small(snap_id + MANIFEST_SUFFIX, _manifest_bytes(info))
        return info
    except BaseException:
        dest.discard(staging)
        if published:
            dest.delete([name])
        raise


def verify_snapshot(dest: SnapshotDestination, info: SnapshotInfo) -> None:
    """Re-read the data from ``dest``: header, count, session-lines and file checksums."""
    with dest.open(info.data_name) as f:
        reader = SnapshotReader(f, f"{dest.describe()}/{info.data_name}")
        try:
            reader.drain()
        finally:
            reader.close()
    problems = []
    if reader.header.get("id") != info.id:
        problems.append(f"header names snapshot {reader.header.get('id')!r}")
    if reader.count != info.count:
        problems.append(f"{reader.count} sessions read back, {info.count} written")
    if reader.lines_sha256.hexdigest() != info.sha256:
        problems.append("session checksum differs")
    if reader.file_sha256 != info.file_sha256 or reader.file_size != info.size:
        problems.append("file checksum or size differs")
    if problems:
        raise IntegrityError(
            "verification failed: " + "; ".join(problems), store=dest.describe(), key=info.id
        )


def _manifest_bytes(info: SnapshotInfo) -> bytes:
    return json.dumps(asdict(info), indent=1).encode() + b"\n"


# --- list and prune -----------------------------------------------------------------------


def list_snapshots(dest: SnapshotDestination) -> list[SnapshotInfo]:
    """Verified snapshots at ``dest``, oldest first.  An unreadable manifest is skipped."""
    names = dict(dest.names())
    infos = []
    for name in names:
        if not name.endswith(MANIFEST_SUFFIX):
            continue
        try:
            data = json.loads(dest.read_small(name))
            info = SnapshotInfo(**data)
        except (ValueError, TypeError, NotFound):
            continue
        if info.data_name in names:
            infos.append(info)
    return sorted(infos, key=lambda i: i.id)


def find_snapshot(dest: SnapshotDestination, snapshot: str) -> SnapshotInfo:
    infos = list_snapshots(dest)
    if not infos:
        raise NotFound("no snapshots here", store=dest.describe())
    if snapshot == LATEST:
        return infos[-1]
    for info in infos:
        if info.id == snapshot:
            return info
    raise NotFound(
        f"no snapshot {snapshot!r} (newest: {infos[-1].id}; see `sessions list`)",
        store=dest.describe(),
    )


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

    The file's checksum is checked before anything is written; expired sessions are dropped
    and the others keep their absolute expiry.  ``FAIL`` checks every id first and writes
    nothing if the target holds any of them.
    """
    info = find_snapshot(dest, snapshot)
    with _local_copy(dest, info) as path:
        if on_conflict is OnConflict.FAIL:
            _refuse_conflicts(_snapshot_batches(path, info), target)
        result = target.write_raw(
            _counted(prefetch(_snapshot_batches(path, info)), progress), on_conflict
        )
    return RestoreResult(result.written, result.skipped, result.expired, snapshot=info.id)


class _local_copy:
    """The snapshot's data as a local file whose sha256 matches the manifest."""

    def __init__(self, dest: SnapshotDestination, info: SnapshotInfo) -> None:
        self.dest, self.info = dest, info
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        import hashlib

        path = self.dest.local_path(self.info.data_name)
        digest = hashlib.sha256()
        if path is None:
            fd, name = tempfile.mkstemp(prefix=f"{self.info.id}.", suffix=".restore")
            self.tmp = path = Path(name)
            with self.dest.open(self.info.data_name) as src, open(fd, "wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        else:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        if digest.hexdigest() != self.info.file_sha256:
            self.__exit__()
            raise CorruptFile(
                "checksum differs from its manifest; nothing was restored",
                store=self.dest.describe(), key=self.info.data_name,
            )
        return path

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


def _snapshot_batches(path: Path, info: SnapshotInfo) -> Iterator[list[RawSession]]:
    with open(path, "rb") as f:
        reader = SnapshotReader(f, str(path), verify=False)
        try:
            for block in reader.blocks():
                sessions = decode_block(block)
                for start in range(0, len(sessions), BATCH_SIZE):
                    yield sessions[start : start + BATCH_SIZE]
        finally:
            reader.close()
        assert reader.trailer is not None
        if reader.trailer["count"] != info.count:
            raise CorruptFile("trailer count differs from the manifest", key=info.data_name)


def _counted(
    batches: Iterator[list[RawSession]], progress: Progress | None
) -> Iterator[list[RawSession]]:
    for batch in batches:
        yield batch
        if progress:
            progress(len(batch))


def _refuse_conflicts(batches: Iterator[Sequence[RawSession]], target: SessionStore) -> None:
    for batch in batches:
        found = target.existing([raw[0] for raw in batch])
        if found:
            raise AlreadyExists(
                f"the target holds {len(found)} or more of these sessions already, "
                f"e.g. {found[0]!r}; nothing was written (choose --on-conflict skip or overwrite)",
                store=target.describe(),
            )


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
    if on_conflict is OnConflict.FAIL:
        _refuse_conflicts(src.iter_raw(), dst)
    return dst.write_raw(_counted(src.iter_raw(), progress), on_conflict)


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
    first, so a bad line (reported with its line number) means nothing was written."""
    for _ in _file_batches(path):
        pass
    if on_conflict is OnConflict.FAIL:
        _refuse_conflicts(_file_batches(path), store)
    return store.write_raw(_counted(_file_batches(path), progress), on_conflict)


def _file_batches(path: Path) -> Iterator[list[RawSession]]:
    from worker.snapshot_format import ZSTD_MAGIC

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
