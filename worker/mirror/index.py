"""The local index: what the mirror knows about each file without reading it again.

One row per (store, container, key) in a small SQLite database under ``STATE_DIR``, holding two
facts learned together:

* *local*: a file with this size, mtime, ctime and inode had this MD5 (so an unchanged file is
  never re-read), and
* *remote*: the object we last wrote for it got this ETag (so a listing without MD5, e.g. of
  a multipart upload, is still matched without a request per object).

Rows are hints, never the truth: the planner trusts a row only while the file's stat matches it
exactly and its mtime is older than the moment it was hashed by a safe margin (a write in the same
timestamp tick as our read would otherwise go unnoticed: git's "racy clean" problem).  The store
identity (service, provider, endpoint, bucket, folder) is part of the key, so pointing the worker
at another store starts from an empty index instead of trusting the old one.

WAL mode with a busy timeout lets several worker processes on one host share the file; each
process opens its own connection; a connection is used by one thread at a time (a lock).  A new
file is set up (WAL, tables) under an ``flock`` beside it, one process at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import SyncError
from worker.mirror.localtree import LocalFile

#: Live deletes of a container within one window that always go ahead (a small app's few
#: files); above this, ``SYNC.maxDeleteShare`` of the container applies.
LIVE_DELETE_FLOOR = 5

#: Index rows read per query by :meth:`MirrorIndex.rows`.
ROWS_PAGE = 1000

#: A file whose mtime is within this of the moment it was hashed is re-hashed next time.
RACY_NS = 2_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    store     TEXT    NOT NULL,
    container TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    ctime_ns  INTEGER NOT NULL,
    inode     INTEGER NOT NULL,
    md5       TEXT    NOT NULL,
    etag      TEXT,
    hashed_ns INTEGER NOT NULL,
    PRIMARY KEY (store, container, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held (
    store     TEXT    NOT NULL,
    container TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    PRIMARY KEY (store, container, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live_deletes (
    store     TEXT    NOT NULL,
    container TEXT    NOT NULL,
    at_ns     INTEGER NOT NULL,
    n         INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the index remembers for one key (see the module docstring)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    md5: str
    etag: str | None
    hashed_ns: int

    def vouches_for(self, f: LocalFile) -> bool:
        """Whether ``f`` is certainly the content this row hashed (same stat, not racy)."""
        return (
            self.size == f.size
            and self.mtime_ns == f.mtime_ns
            and self.ctime_ns == f.ctime_ns
            and self.inode == f.inode
            and f.mtime_ns < self.hashed_ns - RACY_NS
        )

    @classmethod
    def of(cls, f: LocalFile, md5: str, etag: str | None, hashed_ns: int) -> IndexEntry:
        return cls(f.size, f.mtime_ns, f.ctime_ns, f.inode, md5, etag, hashed_ns)


def store_identity(settings: Any) -> str:
    """A short stable id of the configured module store (secrets left out)."""
    cfg = settings.MODULESTORE
    data: dict[str, Any] = {"service": settings.MODULESTORE_SERVICE}
    for name, value in cfg.model_dump(mode="python").items():
        if value is None or type(value).__name__ == "SecretStr":
            continue
        if name in ("keyId", "username", "projectId", "keyFilename"):
            continue  # credentials may rotate; the place stays the same
        data[name] = value
    if settings.MODULESTORE_SERVICE == "FileModuleStore":
        data["directory"] = str(Path(str(data.get("directory", ""))).resolve())
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class MirrorIndex:
    """The index database of one store; safe to share between processes on one host."""

    def __init__(self, state_dir: str | Path, store: str) -> None:
        self.path = Path(state_dir) / "index.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.store = store
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA busy_timeout=30000")
        # Switching a new database to WAL takes a lock SQLite does not wait for (two `sync`
        # started at once on a new host: "database is locked" at once): the set-up runs under
        # a host lock, the kernel's, so a killed process never leaves it held.
        fd = os.open(self.path.with_name("index.sqlite.setup-lock"), os.O_RDWR | os.O_CREAT,
                     0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable enough: a lost row only costs a re-hash, never a wrong result.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:  # a full disk, a damaged file: one line naming the file
            self._db.close()
            raise SyncError(f"the mirror index {self.path} (under STATE_DIR) cannot be "
                            f"opened: {exc}") from exc
        finally:
            os.close(fd)

    def load(self, container: str, prefix: str = "") -> dict[str, IndexEntry]:
        """Every row of ``container`` (whose key starts with ``prefix``), by key."""
        sql = (
            "SELECT key, size, mtime_ns, ctime_ns, inode, md5, etag, hashed_ns FROM entries "
            "WHERE store=? AND container=?"
        )
        args: tuple[Any, ...] = (self.store, container)
        if prefix:
            sql += " AND key >= ? AND key < ?"
            args += (prefix, prefix + "\U0010ffff")
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return {r[0]: IndexEntry(*r[1:]) for r in rows}

    def rows(self, container: str, prefix: str = "") -> Iterator[tuple[str, IndexEntry]]:
        """The rows of ``container`` under ``prefix`` in key order (SQLite's BINARY order of
        the UTF-8 text: the store's), read a page at a time so a million rows are never held
        and the connection is free between pages for the writes of the same pass."""
        end = prefix + "\U0010ffff"
        after, op = prefix, ">="
        while True:
            with self._lock:
                page = self._db.execute(
                    "SELECT key, size, mtime_ns, ctime_ns, inode, md5, etag, hashed_ns FROM "
                    f"entries WHERE store=? AND container=? AND key {op} ? AND key < ? "
                    "ORDER BY key LIMIT ?",
                    (self.store, container, after, end, ROWS_PAGE),
                ).fetchall()
            for r in page:
                yield r[0], IndexEntry(*r[1:])
            if len(page) < ROWS_PAGE:
                return
            after, op = page[-1][0], ">"

    def get(self, container: str, key: str) -> IndexEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT size, mtime_ns, ctime_ns, inode, md5, etag, hashed_ns FROM entries "
                "WHERE store=? AND container=? AND key=?",
                (self.store, container, key),
            ).fetchone()
        return IndexEntry(*row) if row else None

    def has_under(self, container: str, prefix: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM entries WHERE store=? AND container=? AND key >= ? AND key < ? "
                "LIMIT 1",
                (self.store, container, prefix, prefix + "\U0010ffff"),
            ).fetchone()
        return row is not None

    def put_many(self, container: str, entries: Mapping[str, IndexEntry]) -> None:
        """Insert or replace rows in one transaction."""
        if not entries:
            return
        rows = [
            (self.store, container, key, e.size, e.mtime_ns, e.ctime_ns, e.inode, e.md5,
             e.etag, e.hashed_ns)
            for key, e in entries.items()
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?)", rows
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, container: str, key: str, entry: IndexEntry) -> None:
        self.put_many(container, {key: entry})

    def forget(self, container: str, keys: Iterable[str]) -> None:
        rows = [(self.store, container, k) for k in keys]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "DELETE FROM entries WHERE store=? AND container=? AND key=?", rows
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- live deletes over a sliding window ---------------------------------------------
    #
    # A full pass withholds deletes above ``SYNC.maxDeleteShare`` of a container; the live path
    # deletes one path at a time, so the same share is applied to what it deleted in the last
    # ``SYNC.deleteWindow`` seconds, counted here so that every worker process on the host
    # (they share this file) is held to one budget.

    def claim_live_delete(
        self, container: str, n: int, share: float, window_s: float
    ) -> tuple[bool, int, int]:
        """Record ``n`` live deletes if they keep the container's deleted share within ``share``
        over the window: (allowed, deleted in the window before these, objects at its start)."""
        now = time.time_ns()
        since = now - int(window_s * 1e9)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "DELETE FROM live_deletes WHERE store=? AND at_ns < ?", (self.store, since)
                )
                recent = self._db.execute(
                    "SELECT COALESCE(SUM(n), 0) FROM live_deletes WHERE store=? AND container=?",
                    (self.store, container),
                ).fetchone()[0]
                have = self._db.execute(
                    "SELECT COUNT(*) FROM entries WHERE store=? AND container=?",
                    (self.store, container),
                ).fetchone()[0]
                base = max(have + recent, n)
                allowed = n == 0 or recent + n <= max(share * base, LIVE_DELETE_FLOOR)
                if allowed:
                    self._db.execute(
                        "INSERT INTO live_deletes VALUES (?,?,?,?)", (self.store, container, now, n)
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return allowed, int(recent), int(base)

    # --- objects held in the store -------------------------------------------------------
    #
    # ``pull`` could not bring some objects into this folder (a name it cannot hold, a clash,
    # a failed download).  They are absent locally although nobody deleted them, so a later
    # pass from this folder must never delete them: they are held, with the reason.

    def hold(self, container: str, reasons: Mapping[str, str]) -> None:
        rows = [(self.store, container, k, r) for k, r in reasons.items()]
        if rows:
            with self._lock:
                self._db.executemany("INSERT OR REPLACE INTO held VALUES (?,?,?,?)", rows)

    def held(self, container: str, prefix: str = "") -> dict[str, str]:
        """Held keys of ``container`` (under ``prefix``) and why they are held."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, reason FROM held WHERE store=? AND container=? AND key >= ? "
                "AND key < ?",
                (self.store, container, prefix, prefix + "\U0010ffff"),
            ).fetchall()
        return dict(rows)

    def release(self, container: str, keys: Iterable[str]) -> None:
        rows = [(self.store, container, k) for k in keys]
        if rows:
            with self._lock:
                self._db.executemany(
                    "DELETE FROM held WHERE store=? AND container=? AND key=?", rows
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def now_ns() -> int:
    return time.time_ns()
