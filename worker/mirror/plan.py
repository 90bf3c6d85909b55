"""The pure part of a mirror pass: what to do with each key, from the local tree, the index and
the store listing, merged in key order.

Nothing here touches the disk or the network, so every rule is tested with plain values.

The three inputs are sorted streams (the tree walked in key order, the index rows by key, the
store's listing, which every store returns in that order): :func:`merge` walks them side by side
and yields each key once with what each side knows of it, so a pass holds one key of each at a
time, never the tree.  How a key is judged (no request per object, no re-reading of unchanged
files):

* its local MD5 is known without reading it when the index row still vouches for its stat
  (:meth:`~worker.mirror.index.IndexEntry.vouches_for`); otherwise the planner asks the caller to
  hash it (:class:`Check`) -- but only when the answer matters: a key the store does not have
  is uploaded without a hash first (the upload computes it while reading the file once);
* the store's copy equals the file when the sizes match and either the listing's MD5 equals the
  file's, or the listing's ETag is the one our own upload of that very MD5 got (the index row);
  size alone never decides (rclone ``--size-only`` misses same-size edits);
* a key in the store but not in the tree is deleted -- unless the tree of that container is
  empty (an unmounted volume must never empty the store);
* a new key whose content is already in the store under a key being deleted (a rename or a
  move: same inode in the index, or same size and MD5) is a server-side copy, where the store
  can copy, instead of an upload (:class:`Renames`).

Order of execution (in :mod:`worker.mirror.passes`): uploads and copies first, deletes last.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from worker.mirror.index import RACY_NS, IndexEntry
from worker.mirror.localtree import LocalFile
from worker.stores.modules.base import ObjectInfo

__all__ = [
    "Check",
    "ContainerPlan",
    "Copy",
    "Keep",
    "OutOfOrder",
    "Renames",
    "Upload",
    "judge",
    "merge",
    "plan_container",
    "remote_matches",
]


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


@dataclass(frozen=True, slots=True)
class Check:
    """Hash the file, then judge it again: the store holds an object of its size (``remote``)
    whose content the index cannot vouch for, or (``remote`` None) an object about to be deleted
    has its size (a rename's source, perhaps)."""

    file: LocalFile
    remote: ObjectInfo | None
    entry: IndexEntry | None


@dataclass(frozen=True, slots=True)
class Keep:
    """The store already holds the file; ``row`` is the index row to write (None: the row on
    record is right)."""

    key: str
    row: IndexEntry | None


#: What a key needs sent, or hashed first.
Action = Upload | Copy | Check


class OutOfOrder(Exception):
    """A stream given to :func:`merge` was not in strictly increasing key order."""

    def __init__(self, stream: str, key: str, after: str) -> None:
        super().__init__(f"the {stream} is not in key order: {key!r} came after {after!r}")
        self.stream = stream


class Remote:
    """The store's listing as :func:`merge` reads it; ``done`` once it is used up (then every
    object the store holds is known, so every delete of the pass is known too)."""

    def __init__(self, items: Iterable[ObjectInfo]) -> None:
        self._it = iter(items)
        self.done = False

    def __iter__(self) -> Remote:
        return self

    def __next__(self) -> ObjectInfo:
        try:
            return next(self._it)
        except StopIteration:
            self.done = True
            raise


Merged = tuple[str, LocalFile | None, IndexEntry | None, ObjectInfo | None]


def merge(
    local: Iterable[LocalFile], index: Iterable[tuple[str, IndexEntry]],
    remote: Iterable[ObjectInfo],
) -> Iterator[Merged]:
    """Each key of the three sorted streams once, in order: (key, file, index row, object),
    None where a stream lacks the key.  :class:`OutOfOrder` if a stream is not sorted (the
    caller must not act on a merge of unsorted streams)."""
    loc, idx, rem = iter(local), iter(index), iter(remote)
    f = next(loc, None)
    i = next(idx, None)
    r = next(rem, None)
    lk = f.key if f is not None else None
    ik = i[0] if i is not None else None
    rk = r.key if r is not None else None
    while lk is not None or ik is not None or rk is not None:
        key = min(k for k in (lk, ik, rk) if k is not None)
        mf = mi = mr = None
        if lk == key:
            mf = f
            f = next(loc, None)
            lk = _after("local tree", f.key if f is not None else None, key)
        if ik == key:
            mi = i[1] if i is not None else None
            i = next(idx, None)
            ik = _after("index", i[0] if i is not None else None, key)
        if rk == key:
            mr = r
            r = next(rem, None)
            rk = _after("store listing", r.key if r is not None else None, key)
        yield key, mf, mi, mr


def _after(stream: str, key: str | None, last: str) -> str | None:
    if key is not None and key <= last:
        raise OutOfOrder(stream, key, last)
    return key


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


def known_md5(f: LocalFile, entry: IndexEntry | None, md5: str | None = None) -> str | None:
    """The file's MD5 without reading it (the row vouches), else ``md5`` (a fresh hash)."""
    if entry is not None and entry.vouches_for(f):
        return entry.md5
    return md5


def judge(
    f: LocalFile, entry: IndexEntry | None, remote: ObjectInfo, now_ns: int,
    md5: str | None = None,
) -> Upload | Check | Keep:
    """A file the store holds an object of: keep, send, or hash first.  ``md5`` is a hash the
    caller took (at ``now_ns``) after a :class:`Check`."""
    md5 = known_md5(f, entry, md5)
    if md5 is None:
        return Upload(f, None) if remote.size != f.size else Check(f, remote, entry)
    if not remote_matches(f.size, md5, remote, entry):
        return Upload(f, md5)
    if entry is None or not entry.vouches_for(f) or entry.etag != remote.etag:
        return Keep(f.key, IndexEntry.of(f, md5, remote.etag, now_ns))
    return Keep(f.key, None)


def _remote_md5(remote: ObjectInfo, entry: IndexEntry | None) -> str | None:
    """The content MD5 of a listed object, from the listing or from our own upload's row."""
    if remote.md5 is not None:
        return remote.md5
    if entry is not None and entry.etag is not None and entry.etag == remote.etag:
        return entry.md5
    return None


class Renames:
    """The objects a pass is about to delete, by content and by inode, so that a new key with
    the same content becomes a copy of one instead of an upload.  Holds at most ``limit``
    objects (past that, new keys are uploaded: a copy only saves a transfer)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._content: dict[tuple[int, str], str] = {}
        self._inode: dict[tuple[int, int, int], IndexEntry] = {}
        self._sizes: set[int] = set()
        #: Objects that are the source of a copy (a rename is not a loss: see delete_share).
        self.sources: set[str] = set()

    def add(self, key: str, remote: ObjectInfo, entry: IndexEntry | None) -> None:
        if len(self._content) + len(self._inode) >= self.limit:
            return
        md5 = _remote_md5(remote, entry)
        if md5 is not None:
            self._content.setdefault((remote.size, md5), key)
            self._sizes.add(remote.size)
        if entry is not None:
            self._inode[(entry.inode, entry.size, entry.mtime_ns)] = entry

    def __bool__(self) -> bool:
        return bool(self._content or self._inode)

    def resolve(self, f: LocalFile, md5: str | None) -> Upload | Copy | Check:
        """A key the store lacks: a copy of an object being deleted, an upload, or hash first
        (an object being deleted has its size)."""
        if md5 is None:
            moved = self._inode.get((f.inode, f.size, f.mtime_ns))
            if moved is not None and f.mtime_ns < moved.hashed_ns - RACY_NS:
                md5 = moved.md5
        if md5 is None:
            if f.size in self._sizes and f.size > 0:
                return Check(f, None, None)
            return Upload(f, None)
        src = self._content.get((f.size, md5))
        if src is not None and f.size > 0:
            self.sources.add(src)
            return Copy(src, f, md5)
        return Upload(f, md5)


@dataclass
class ContainerPlan:
    """What one container needs, in lists: what ``--dry-run`` prints, and what
    :func:`plan_container` returns for a few files.  Empty ``to_hash`` means it is final."""

    container: str
    uploads: list[Upload] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    #: Index rows to write although nothing is sent (touched files, rows learned from listings).
    refresh: dict[str, IndexEntry] = field(default_factory=dict)
    #: Index rows to drop (keys gone from the tree).
    forget: list[str] = field(default_factory=list)
    unchanged: int = 0
    #: Objects in the store (within the planned prefix) before the pass.
    remote_count: int = 0
    #: True when the tree was empty and deletes were withheld.
    empty_source: bool = False
    #: Keys whose MD5 the caller must compute before the plan can be final.
    to_hash: list[str] = field(default_factory=list)

    @property
    def upload_bytes(self) -> int:
        return sum(u.file.size for u in self.uploads)

    def delete_share(self) -> float:
        """Deleted share of the store's objects, renames (copy sources) not counted."""
        if not self.remote_count:
            return 0.0
        moved = {c.src for c in self.copies}
        return sum(1 for k in self.deletes if k not in moved) / self.remote_count

    def add(self, action: Upload | Copy | Check) -> None:
        if isinstance(action, Upload):
            self.uploads.append(action)
        elif isinstance(action, Copy):
            self.copies.append(action)
        else:
            self.to_hash.append(action.file.key)


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
    """Plan a few files at once, by the rules of :func:`merge`, :func:`judge` and
    :class:`Renames`, as lists.

    ``remote`` must already leave out ignored keys (they are never deleted).  ``hashes`` are
    MD5s the caller computed for keys an earlier call listed in ``to_hash``.  ``now_ns`` stamps
    refreshed index rows (the time the hashes were taken).
    """
    hashes = hashes or {}
    plan = ContainerPlan(container, remote_count=len(remote))
    renames = Renames()
    new: list[tuple[LocalFile, str | None]] = []
    merged = merge(sorted(local, key=lambda f: f.key), sorted(index.items()),
                   sorted(remote.values(), key=lambda r: r.key))
    for key, f, entry, r in merged:
        if f is None:
            if r is not None:
                plan.deletes.append(key)
                if can_copy:
                    renames.add(key, r, entry)
            if entry is not None:
                plan.forget.append(key)
        elif r is None:
            new.append((f, known_md5(f, entry, hashes.get(key))))
        else:
            done = judge(f, entry, r, now_ns, hashes.get(key))
            if isinstance(done, Keep):
                plan.unchanged += 1
                if done.row is not None:
                    plan.refresh[key] = done.row
            else:
                plan.add(done)
    if not local:
        plan.empty_source, plan.deletes = bool(plan.deletes), []
    for f, md5 in new:
        plan.add(renames.resolve(f, md5) if renames else Upload(f, md5))
    return plan
