"""A snapshot's manifest (:class:`SnapshotInfo`), its file names and its id; listing the
verified snapshots of a destination (a snapshot counts only once its manifest is written).
Times come from a ``clock`` (seconds since the epoch, :func:`time.time` unless a caller, a
test, gives another)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from worker.backups.dest import SnapshotDestination
from worker.backups.format import FORMAT, VERSION
from worker.errors import NotFound
from worker.stores.sessions.base import iso_to_ms, now_epoch_ms

DATA_SUFFIX = ".jsonl.zst"
MANIFEST_SUFFIX = ".manifest.json"
LATEST = "latest"


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
    #: Compressed end offset of each zstd frame (absent in a manifest without them).
    frames: list[int] | None = None
    #: Keys of the source passed over because they are not sessions, by reason.
    skipped: dict[str, int] | None = None

    @property
    def data_name(self) -> str:
        return self.id + DATA_SUFFIX

    @property
    def age_seconds(self) -> float:
        return max(0.0, (now_epoch_ms() - iso_to_ms(self.ended_at)) / 1000)


Clock = Callable[[], float]


def now_iso(clock: Clock = time.time) -> str:
    """``2026-11-27T04:11:21.123Z``: the clock's time, to the millisecond."""
    now = datetime.fromtimestamp(clock(), UTC)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_snapshot_id(clock: Clock = time.time) -> str:
    """``20261127T041121.123Z-1a2b``: the clock's time to the millisecond, a random tail."""
    now = datetime.fromtimestamp(clock(), UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(2)}"


def manifest_bytes(info: SnapshotInfo) -> bytes:
    return json.dumps(asdict(info), indent=1).encode() + b"\n"


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
