"""One container's part of a pass, as a stream: the tree walked in key order, the index rows and
the store's listing merged (:func:`worker.mirror.plan.merge`), each key judged as it comes.

:meth:`ContainerStream.actions` yields what must be sent (or hashed first) while it counts what
is unchanged, writes the index rows learned on the way in batches, and keeps the deletes and the
index rows to drop in :class:`KeySpool` s (on disk past a few thousand) for the end of the pass:
deletes run after every upload, and only once the whole tree was seen.  So a pass holds one
folder of the tree, one page of the listing and of the index, and the keys in flight, whatever
the size of the tree.

What is never deleted: objects under a path the walk could not see (``ScanResult.unsure``:
vanished or unreadable while walked; the walk records them before it passes their keys, so the
merge always knows in time), ignored objects, objects ``pull`` could not bring here (held), and
anything when the tree of the container is empty or its folder was replaced during the walk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import pickle
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING

from worker.errors import StoreError
from worker.mirror import localtree
from worker.mirror.index import IndexEntry
from worker.mirror.plan import (
    Action,
    ContainerPlan,
    Keep,
    OutOfOrder,
    Remote,
    Renames,
    Upload,
    judge,
    known_md5,
    merge,
)
from worker.stores.modules import STORE_FILES, ContainerNotFound, ObjectInfo

if TYPE_CHECKING:
    from worker.mirror.context import MirrorContext
    from worker.stores.modules import ModuleStore

#: Index rows are committed in batches of this size during a pass.
INDEX_BATCH = 1000
#: New keys held back (while the listing may still name a rename's source) before they are
#: simply uploaded.
PENDING_NEW = 10_000


class KeySpool:
    """Keys kept for later, in memory up to ``batch`` at a time, the rest pickled to a
    temporary file in batches."""

    def __init__(self, batch: int = 1000) -> None:
        self.batch = batch
        self._keys: list[str] = []
        self._file: IO[bytes] | None = None
        self.count = 0

    def add(self, key: str) -> None:
        self._keys.append(key)
        self.count += 1
        if len(self._keys) >= self.batch:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="synchro-keys-")  # noqa: SIM115
            pickle.dump(self._keys, self._file)
            self._keys = []

    def __len__(self) -> int:
        return self.count

    def batches(self) -> Iterator[list[str]]:
        """The keys in the order added, ``batch`` at a time."""
        if self._file is not None:
            self._file.seek(0)
            while True:
                try:
                    yield pickle.load(self._file)
                except EOFError:
                    break
            self._file.seek(0, 2)
        if self._keys:
            yield list(self._keys)

    def clear(self) -> None:
        self.close()
        self._keys, self.count = [], 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ContainerStream:
    """One container (or the folder ``prefix``, ending in '/') of a pass; see the module
    docstring.  Call :meth:`open`, then consume :meth:`actions`; the counts and spools are
    final when it is used up."""

    def __init__(
        self, ctx: MirrorContext, container: str, prefix: str = "", *,
        guard_empty: bool = True, disk_prefix: str | None = None, record: bool = False,
        listing: list[ObjectInfo] | None = None,
    ) -> None:
        self.ctx = ctx
        #: The container's whole listing, when the pass has it already (``list_together``).
        self.listed = listing
        self.container = container
        self.prefix = prefix
        self.guard_empty = guard_empty
        self.disk_prefix = disk_prefix
        #: Every action and delete in lists as well (``--dry-run`` prints them).
        self.plan = ContainerPlan(container) if record else None
        self.scan = localtree.ScanResult()
        self.exists = True
        self.can_copy = False
        self.local_count = 0
        self.remote_count = 0
        self.unchanged = 0
        self.deletes = KeySpool()
        self.forgets = KeySpool()
        self.renames = Renames()
        self.rows: dict[str, IndexEntry] = {}
        self.held: dict[str, str] = {}
        self.kept: list[str] = []
        self.allow_deletes = True
        #: (device, inode) of the local folder walked: deletes run only while it is still there.
        self.source: tuple[int, int] | None = None
        self.opened = False
        self._listing: Iterator[ObjectInfo] = iter(())
        self._materialised: list[Action] | None = None

    # --- the three streams ---------------------------------------------------------------

    def open(self) -> bool:
        """Start the listing (its first page); False when the container does not exist.
        Raises StoreError when the store cannot be listed."""
        self.opened = True
        if self.listed is not None:
            self._listing, self.listed = iter(self.listed), None
            return True
        listing = iter(self.ctx.store.list(self.container, self.prefix))
        try:
            first = next(listing, None)
        except ContainerNotFound:
            self.exists = False
            return False
        self._listing = itertools.chain([first], listing) if first is not None else iter(())
        return True

    def actions(self) -> Iterator[Action]:
        """What must be sent or hashed, key by key (see the class docstring)."""
        if self._materialised is not None:
            yield from self._materialised
            return
        try:
            yield from self._merge(Remote(self._listing))
        except OutOfOrder as exc:
            if exc.stream != "store listing":
                raise
            # A store that lists in another order (a non-ASCII collation): this container's
            # listing is sorted here instead, and the merge starts again.  What was already
            # sent is found in the store (or sent again: the same content).
            self._restart()
            listing = sorted(self.ctx.store.list(self.container, self.prefix),
                             key=lambda i: i.key)
            yield from self._merge(Remote(listing))

    def materialise(self) -> None:
        """Walk and merge now, keeping the actions in a list (a few files: tests, a folder)."""
        self._materialised = list(self.actions())

    def _restart(self) -> None:
        self.scan = localtree.ScanResult()
        self.local_count = self.remote_count = self.unchanged = 0
        self.deletes.clear()
        self.forgets.clear()
        self.renames = Renames()
        self.kept = []
        if self.plan is not None:
            self.plan = ContainerPlan(self.container)

    def _merge(self, remote: Remote) -> Iterator[Action]:
        ctx, c = self.ctx, self.container
        folder = localtree.folder_of(ctx.root, c)
        self.source = localtree.folder_id(folder)
        self.held = ctx.index.held(c, self.prefix)
        self.can_copy = ctx.store.supports_server_side_copy
        now = time.time_ns()
        local = localtree.walk(ctx.root, c, ctx.rules, self.scan, self.prefix, self.disk_prefix)
        pending: list[tuple[localtree.LocalFile, str | None]] = []
        for key, f, entry, r in merge(local, ctx.index.rows(c, self.prefix), remote):
            if f is not None:
                self.local_count += 1
                if r is not None:
                    self.remote_count += 1
                    done = judge(f, entry, r, now)
                    if isinstance(done, Keep):
                        self.unchanged += 1
                        if done.row is not None:
                            self.row(key, done.row)
                        continue
                    yield done
                    continue
                md5 = known_md5(f, entry)
                if not self.can_copy or remote.done and not self.renames:
                    yield Upload(f, md5)
                elif remote.done:
                    yield self.renames.resolve(f, md5)
                elif len(pending) < PENDING_NEW:
                    pending.append((f, md5))
                else:
                    yield Upload(f, md5)
            elif r is not None:
                self._gone(key, r, entry)
            elif entry is not None and not self.scan.is_unsure(key):
                self.forgets.add(key)
            if pending and remote.done:
                for pf, md5 in pending:
                    yield self.renames.resolve(pf, md5)
                pending = []
        for pf, md5 in pending:
            yield self.renames.resolve(pf, md5)
        if self.source is None or localtree.folder_id(folder) != self.source:
            self.scan.unsure.add("")  # the app folder (or the root) moved away during the walk
        if self.exists and len(self.kept) < len(self.held):
            kept = set(self.kept)
            ctx.index.release(c, [k for k in self.held if k not in kept])

    def _gone(self, key: str, r: ObjectInfo, entry: IndexEntry | None) -> None:
        """An object the tree lacks: a delete, unless it is held, ignored or unsure."""
        if key in self.held:
            self.kept.append(key)
        elif self.scan.is_unsure(key):
            return
        elif not self.ctx.rules.ignored_path(self.container, key):
            self.remote_count += 1
            self.deletes.add(key)
            if self.can_copy:
                self.renames.add(key, r, entry)
            return
        if entry is not None:
            self.forgets.add(key)

    def row(self, key: str, entry: IndexEntry) -> None:
        """An index row learned; written with the next batch (or at :meth:`flush`)."""
        self.rows[key] = entry
        if len(self.rows) >= INDEX_BATCH and self.plan is None:
            self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, {}
        if self.plan is None:
            self.ctx.index.put_many(self.container, rows)

    # --- after the merge -----------------------------------------------------------------

    @property
    def empty_source(self) -> bool:
        """The tree was empty where the store is not: nothing is deleted (an unmounted volume
        must never empty the store), unless this is a folder the live sync saw go."""
        return self.guard_empty and self.local_count == 0 and len(self.deletes) > 0

    def delete_count(self) -> int:
        """Deletes the pass may do (none when the tree was empty or not wholly seen)."""
        if self.empty_source or "" in self.scan.unsure:
            return 0
        return len(self.deletes)

    def delete_share(self) -> float:
        """Deleted share of the store's objects, renames (copy sources) not counted."""
        if not self.remote_count:
            return 0.0
        return (self.delete_count() - len(self.renames.sources)) / self.remote_count

    def warnings(self) -> list[str]:
        c, prefix = self.container, self.prefix
        out = self.scan.warnings()
        if self.scan.unsure:
            out.append(_unsure_warning(c, prefix, self.scan.unsure))
        if self.kept:
            out.append(
                f"{c}/{prefix}: kept {len(self.kept)} object(s) in the store that pull could "
                f"not bring into this folder (e.g. {self.kept[0]!r}: {self.held[self.kept[0]]}); "
                "never deleted"
            )
        if self.empty_source and c != STORE_FILES:
            out.append(f"{c}/{prefix}: the local folder is empty; deleted nothing in the store")
        return out

    def close(self) -> None:
        self.deletes.close()
        self.forgets.close()


def _unsure_warning(container: str, prefix: str, unsure: set[str]) -> str:
    where = sorted(unsure)
    first = ", ".join(f"{container}/{u}" for u in where[:3])
    more = f" and {len(where) - 3} more" if len(where) > 3 else ""
    return (
        f"{container}/{prefix}: {len(where)} path(s) vanished or could not be read during the "
        f"scan ({first}{more}); nothing under them was deleted"
    )


def list_together(
    store: ModuleStore, containers: Iterable[str], max_pages: int,
) -> dict[str, list[ObjectInfo]]:
    """With ``MODULESTORE.bucket``: the listings of those ``containers`` that one listing of
    the whole bucket, page after page, holds entirely (keys relative to each).  A pass of many
    small apps lists them in a request or two instead of one each; the others list themselves,
    as does every container without a shared bucket ({}).  Stops after ``max_pages`` pages
    (what is held), or after a page that completed no container (a big one: it lists itself),
    so it costs at most one request that it does not save."""
    if store.bucket is None:
        return {}
    bases: dict[str, str] = {}
    for c in containers:
        with contextlib.suppress(StoreError):  # a bad name: its own listing says so
            base = store.prefix_of(c)
            if base.count("/") == 1:
                bases[base] = c
    found: dict[str, list[ObjectInfo]] = {c: [] for c in bases.values()}
    done: dict[str, list[ObjectInfo]] = {}
    token: str | None = None
    for _ in range(max_pages):
        try:
            page = store.bucket_page(token)
        except StoreError:  # each container lists itself and says what is wrong
            return done
        for info in page.items:
            head, _, rest = info.key.partition("/")
            if (owner := bases.get(head + "/")) is not None:
                found[owner].append(dataclasses.replace(info, key=rest))
        last = page.items[-1].key if page.items else ""
        complete = [base for base in bases if page.token is None or (
            # Every key under ``base`` sorts before ``last`` in any store's order (a name in
            # ASCII compares the same in code points, UTF-8 and UTF-16).
            base.isascii() and base < last and not last.startswith(base))]
        for base in complete:
            c = bases.pop(base)
            done[c] = found.pop(c)
        if page.token is None or not complete:
            return done
        token = page.token
    return done
