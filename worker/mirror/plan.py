"""The pure part of a mirror pass: local tree + index + one store listing -> a plan.

Nothing here touches the disk or the network, so every rule is tested with plain values.

How a file is judged (no request per object, no re-reading of unchanged files):

* its local MD5 is known without reading it when the index row still vouches for its stat
  (:meth:`~worker.mirror.index.IndexEntry.vouches_for`); otherwise the planner asks the caller
  to hash it (``to_hash``) -- but only when the answer matters: a key the store does not have is
  uploaded without a hash first (the upload computes it while reading the file once);
* the store's copy equals the file when the sizes match and either the listing's MD5 equals the
  file's, or the listing's ETag is the one our own upload of that very MD5 got (the index row);
  size alone never decides (rclone ``--size-only`` misses same-size edits);
* a key in the store but not in the tree is deleted -- unless the tree of that container is
  empty (an unmounted volume must never empty the store);
* a new key whose content is already in the store under a key being deleted (a rename or a
  move: same inode in the index, or same size and MD5) is a server-side copy, where the store
  can copy, instead of an upload.

Order of execution (in :mod:`worker.mirror.passes`): uploads and copies first, deletes last.

``MirrorContext`` (the interface the live sync uses) is re-exported from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker.mirror.index import RACY_NS, IndexEntry
from worker.mirror.localtree import LocalFile
from worker.stores.modules.base import ObjectInfo

if TYPE_CHECKING:
    from worker.mirror.passes import MirrorContext, PassResult, PathResult

__all__ = [
    "ContainerPlan",
    "Copy",
    "MirrorContext",
    "PassResult",
    "PathResult",
    "Upload",
    "plan_container",
    "remote_matches",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the pure planner never imports the store machinery.
    if name in ("MirrorContext", "PassResult", "PathResult"):
        from worker.mirror import passes

        return getattr(passes, name)
    raise AttributeError(name)


@dataclass(frozen=True, slots=True)
class Upload:
    """Send the file; ``md5`` is None when it is not known yet (computed while reading)."""

    file: LocalFile
    md5: str | None


@dataclass(frozen=True, slots=True)
class Copy:
    """Create ``file.key`` by a server-side copy of ``src`` (whose content is ``md5``)."""

    src: str
    file: LocalFile
    md5: str


@dataclass
class ContainerPlan:
    """What one container needs.  Empty ``to_hash`` means the plan is final."""

    container: str
    uploads: list[Upload] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    #: Index rows to write although nothing is sent (touched files, rows learned from listings).
    refresh: dict[str, IndexEntry] = field(default_factory=dict)
    #: Index rows to drop (keys gone from the tree).
    forget: list[str] = field(default_factory=list)
    unchanged: int = 0
    unchanged_bytes: int = 0
    #: Objects in the store (within the planned prefix) before the pass.
    remote_count: int = 0
    #: True when the tree was empty and deletes were withheld.
    empty_source: bool = False
    #: Keys whose MD5 the caller must compute before the plan can be final.
    to_hash: list[str] = field(default_factory=list)
    #: (device, inode) of the local folder scanned: deletes run only while it is still there.
    source: tuple[int, int] | None = None

    @property
    def upload_bytes(self) -> int:
        return sum(u.file.size for u in self.uploads)

    @property
    def changes(self) -> int:
        return len(self.uploads) + len(self.copies) + len(self.deletes)

    def delete_share(self) -> float:
        """Deleted share of the store's objects, renames (copy sources) not counted."""
        if not self.remote_count:
            return 0.0
        moved = {c.src for c in self.copies}
        return sum(1 for k in self.deletes if k not in moved) / self.remote_count


def remote_matches(
    size: int, md5: str, remote: ObjectInfo, entry: IndexEntry | None
) -> bool:
    """Whether the store's object holds the content ``md5`` (see the module docstring)."""
    if remote.size != size:
        return False
    if remote.md5 is not None:
        return remote.md5 == md5
    return (
        entry is not None
        and entry.etag is not None
        and entry.etag == remote.etag
        and entry.md5 == md5
    )


def _remote_md5(remote: ObjectInfo, entry: IndexEntry | None) -> str | None:
    """The content MD5 of a listed object, from the listing or from our own upload's row."""
    if remote.md5 is not None:
        return remote.md5
    if entry is not None and entry.etag is not None and entry.etag == remote.etag:
        return entry.md5
    return None


def plan_container(
    container: str,
    local: Sequence[LocalFile],
    index: Mapping[str, IndexEntry],
    remote: Mapping[str, ObjectInfo],
    hashes: Mapping[str, str] | None = None,
    *,
    can_copy: bool = False,
    now_ns: int = 0,
) -> ContainerPlan:
    """Plan one container (or one folder of it: pass the matching subsets).

    ``remote`` must already leave out ignored keys (they are never deleted).  ``hashes`` are
    MD5s the caller computed for keys an earlier call listed in ``to_hash``.  ``now_ns`` stamps
    refreshed index rows (the time the hashes were taken).
    """
    hashes = hashes or {}
    plan = ContainerPlan(container, remote_count=len(remote))
    local_keys = {f.key for f in local}

    def known_md5(f: LocalFile) -> str | None:
        entry = index.get(f.key)
        if entry is not None and entry.vouches_for(f):
            return entry.md5
        return hashes.get(f.key)

    new: list[tuple[LocalFile, str | None]] = []
    for f in local:
        r = remote.get(f.key)
        md5 = known_md5(f)
        if r is None:
            new.append((f, md5))
            continue
        if md5 is None:
            if r.size != f.size:
                plan.uploads.append(Upload(f, None))
            else:
                plan.to_hash.append(f.key)
            continue
        entry = index.get(f.key)
        if remote_matches(f.size, md5, r, entry):
            plan.unchanged += 1
            plan.unchanged_bytes += f.size
            if entry is None or not entry.vouches_for(f) or entry.etag != r.etag:
                plan.refresh[f.key] = IndexEntry.of(f, md5, r.etag, now_ns)
        else:
            plan.uploads.append(Upload(f, md5))

    if local:
        plan.deletes = sorted(k for k in remote if k not in local_keys)
    else:
        plan.empty_source = bool(remote)
    plan.forget = sorted(k for k in index if k not in local_keys)

    _plan_new(plan, new, index, remote, hashes, can_copy)
    return plan


def _plan_new(
    plan: ContainerPlan,
    new: list[tuple[LocalFile, str | None]],
    index: Mapping[str, IndexEntry],
    remote: Mapping[str, ObjectInfo],
    hashes: Mapping[str, str],
    can_copy: bool,
) -> None:
    """Keys the store lacks: a copy of an object about to be deleted, or an upload."""
    if not (can_copy and plan.deletes):
        plan.uploads.extend(Upload(f, md5) for f, md5 in new)
        return
    # Content of the objects being deleted, by (size, md5); and their index rows by inode, so
    # that a plain `mv` is recognised without reading the moved file.
    by_content: dict[tuple[int, str], str] = {}
    by_inode: dict[tuple[int, int, int], IndexEntry] = {}
    sizes: set[int] = set()
    for key in plan.deletes:
        r = remote[key]
        entry = index.get(key)
        md5 = _remote_md5(r, entry)
        if md5 is not None:
            by_content.setdefault((r.size, md5), key)
            sizes.add(r.size)
        if entry is not None:
            by_inode[(entry.inode, entry.size, entry.mtime_ns)] = entry
    for f, md5 in new:
        if md5 is None:
            moved = by_inode.get((f.inode, f.size, f.mtime_ns))
            if moved is not None and f.mtime_ns < moved.hashed_ns - RACY_NS:
                md5 = moved.md5
            else:
                md5 = hashes.get(f.key)
        if md5 is None:
            if f.size in sizes and f.size > 0:
                plan.to_hash.append(f.key)
            else:
                plan.uploads.append(Upload(f, None))
            continue
        src = by_content.get((f.size, md5))
        if src is not None and f.size > 0:
            plan.copies.append(Copy(src, f, md5))
        else:
            plan.uploads.append(Upload(f, md5))
