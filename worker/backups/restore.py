"""What a restore checks and reads of a snapshot before and while it writes (see
:func:`worker.backups.snapshots.restore_snapshot`): a local copy whose sha256 matches the manifest,
every other checksum of it, then its sessions in batches."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from worker.backups.dest import SnapshotDestination
from worker.backups.format import SnapshotReader, v1_sessions
from worker.backups.manifest import SnapshotInfo
from worker.errors import CorruptFile, NotFound
from worker.stores.sessions.base import BATCH_SIZE, RawSession
from worker.stores.sessions.lines import decode_block, decode_ids


def check_before_restore(path: Path, info: SnapshotInfo, where: str) -> None:
    """Every checksum of a snapshot, before anything of it is written anywhere: the file's
    sha256 and size (checked by :class:`LocalCopy`), every zstd frame's own checksum, the
    session lines' sha256 and count against the trailer, and the trailer and header against
    the manifest.  A manifest edited to match a changed file still fails on the trailer; a
    trailer edited too fails on the manifest's ``sha256``."""
    for _ in verified_batches(path, info, where, decode=False):
        pass


def verified_batches(
    path: Path, info: SnapshotInfo, where: str, ids_only: bool = False, decode: bool = True
) -> Iterator[list[RawSession]]:
    """:func:`snapshot_batches` that checks everything :func:`check_before_restore` names as
    it reads, and raises CorruptFile after the last batch if anything differs: for a pass that
    writes nothing (the conflict check of ``--on-conflict fail`` is also the verification)."""
    name = f"{where}/{info.data_name}"
    with open(path, "rb") as f:
        try:
            reader = SnapshotReader(f, name)  # verify=True: lines hashed and counted
            try:
                for block in reader.blocks():
                    if decode:
                        yield from _batches(
                            decode_ids(block) if ids_only else decode_block(block)
                        )
            finally:
                reader.close()
        except CorruptFile as exc:
            raise CorruptFile(f"{exc.message}; nothing was restored", key=name) from None
        size = reader.file_size
    header, trailer = reader.header, reader.trailer or {}
    problems = []
    if header.get("id") != info.id:
        problems.append(f"its header names snapshot {header.get('id')!r}")
    if trailer.get("sha256") != info.sha256:
        problems.append("the session checksum differs from its manifest")
    if trailer.get("count") != info.count:
        problems.append(f"{trailer.get('count')} sessions, its manifest says {info.count}")
    if size != info.size or (info.frames and info.frames[-1] != info.size):
        problems.append("its size differs from its manifest")
    if problems:
        raise CorruptFile(
            "; ".join(problems) + "; nothing was restored", store=where, key=info.data_name
        )


def _batches(sessions: list[RawSession]) -> Iterator[list[RawSession]]:
    for start in range(0, len(sessions), BATCH_SIZE):
        yield sessions[start : start + BATCH_SIZE]


class LocalCopy:
    """The snapshot's data as a local file whose sha256 matches the manifest."""

    def __init__(self, dest: SnapshotDestination, info: SnapshotInfo) -> None:
        self.dest, self.info = dest, info
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        path = self.dest.local_path(self.info.data_name)
        if path is not None and not path.is_file():
            raise NotFound("its data file is missing", store=self.dest.describe(),
                           key=self.info.data_name)
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


def snapshot_batches(
    path: Path, info: SnapshotInfo, ids_only: bool = False
) -> Iterator[list[RawSession]]:
    """Batches of the snapshot's sessions; ``ids_only`` (the conflict check) leaves the
    states empty and skips parsing them."""
    with open(path, "rb") as f:
        reader = SnapshotReader(f, str(path), verify=False)
        v1 = reader.header.get("version") == 1  # states without their id: given it
        try:
            for block in reader.blocks():
                if ids_only:
                    yield from _batches(decode_ids(block))
                else:
                    sessions = decode_block(block)
                    yield from _batches(v1_sessions(sessions) if v1 else sessions)
        finally:
            reader.close()
        assert reader.trailer is not None
        if reader.trailer["count"] != info.count:
            raise CorruptFile("trailer count differs from the manifest", key=info.data_name)
