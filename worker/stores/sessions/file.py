"""``FileSessionStore``: sessions in memory, backed by one JSON file a person can read.

Configuration: ``sessionStateFile`` (default ``sessions.json``).

The file is rewritten atomically after every change (a temp file in the same folder, fsync,
rename, fsync of the folder), so a reader -- a person with ``less``, or this store after a
restart or a crash -- always sees a complete file.  One session per line::

    {"format": "synchro-sessions", "version": 1, "sessions": {
    "<id>": {"expires_at": "2026-11-27T04:11:21.123Z", "state": {...}},
    ...
    }}

A file that is not valid (corrupt, truncated, empty) is refused with :class:`CorruptFile`
naming it, and never written over.  Several processes may share the file: every change takes
an exclusive ``fcntl`` lock on ``<file>.lock``, re-reads the file if another process replaced
it since we last saw it, applies the change on top and writes; so no process loses another's
sessions.  Reads re-read the file when it changed (one ``stat`` per read).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from worker.errors import CorruptFile, StoreError
from worker.stores.sessions.base import (
    OnConflict,
    RawSession,
    WriteResult,
    iso_to_ms,
    now_epoch_ms,
)
from worker.stores.sessions.lines import encode_batch
from worker.stores.sessions.memory import MemorySessionStore

FORMAT = "synchro-sessions"
VERSION = 1


class FileSessionStore(MemorySessionStore):
    """A :class:`MemorySessionStore` whose every change is written to ``path`` atomically."""

    service: ClassVar[str] = "FileSessionStore"
    persistent: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str] = "sessions.json") -> None:
        super().__init__()
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._seen: tuple[int, int, int] | None = None
        self._locked = 0
        self._lock_fd: int | None = None
        self._load()

    def describe(self) -> str:
        return f"file:{self.path}"

    def check(self) -> str:
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            raise StoreError(f"folder {folder} does not exist", store=self.describe())
        if not os.access(folder, os.W_OK):
            raise StoreError(f"folder {folder} is not writable", store=self.describe())
        state = "exists" if self.path.exists() else "not created yet"
        return f"file {self.path} ({state}), {self.count()} sessions"

    # --- hooks of MemorySessionStore -----------------------------------------------------

    def _before_read(self) -> None:
        if self._stat() != self._seen:
            self._load()

    def _commit(self) -> None:
        with self._file_lock():
            self._write()

    def _apply(self, puts: Sequence[RawSession], deletes: Sequence[str]) -> None:
        with self._lock, self._file_lock():
            self._before_read()
            super()._apply(puts, deletes)

    def write_raw(
        self, batches: Iterable[Sequence[RawSession]], on_conflict: OnConflict
    ) -> WriteResult:
        # One lock and one file write for the whole stream, not one per batch.
        with self._lock, self._file_lock():
            return super().write_raw(batches, on_conflict)

    # --- the file ------------------------------------------------------------------------

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Exclusive lock shared with other processes; re-entrant within this store."""
        if self._locked:
            self._locked += 1
            try:
                yield
            finally:
                self._locked -= 1
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._locked = 1
            try:
                yield
            finally:
                self._locked = 0
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _load(self) -> None:
        seen = self._stat()
        if seen is None:
            self._data = {}
            self._seen = None
            return
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read: {exc}", store=f"file:{self.path}") from None
        self._data = _parse(raw, self.path)
        self._seen = seen

    def _write(self) -> None:
        now = now_epoch_ms()
        live = [
            (sid, state, exp)
            for sid, (state, exp) in self._data.items()
            if exp is None or exp > now
        ]
        folder = self.path.parent if str(self.path.parent) else Path(".")
        tmp = folder / f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as f:
                f.write(b'{"format": "synchro-sessions", "version": 1, "sessions": {\n')
                for start in range(0, len(live), 1000):
                    f.write(_entries(live[start : start + 1000], last=start + 1000 >= len(live)))
                f.write(b"}}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write: {exc}", store=f"file:{self.path}") from None
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._data = {sid: (state, exp) for sid, state, exp in live}
        self._seen = self._stat()


def _entries(batch: Sequence[RawSession], last: bool) -> bytes:
    """``"<id>": {"expires_at": ..., "state": ...}`` lines, reusing the JSON-lines encoder."""
    out = []
    for line in encode_batch(batch).splitlines():
        # {"id":"X","expires_at":...,"state":{...}}  ->  "X": {"expires_at":...,"state":{...}}
        sid_end = line.index(b',"expires_at":')
        out.append(line[6:sid_end] + b": {" + line[sid_end + 1 :])
    return b",\n".join(out) + (b"\n" if last else b",\n")


def _parse(raw: bytes, path: Path) -> dict[str, tuple[bytes, int | None]]:
    where = f"{path}"
    keep = "; the file was left as it was (fix it, or move it away to start empty)"
    if not raw.strip():
        raise CorruptFile(f"session file {where} is empty{keep}")
    try:
        doc: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CorruptFile(
            f"session file {where} is not valid JSON (line {exc.lineno} column {exc.colno}: "
            f"{exc.msg}; truncated or corrupt){keep}"
        ) from None
    except UnicodeDecodeError:
        raise CorruptFile(f"session file {where} is not UTF-8 text{keep}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sessions"), dict):
        raise CorruptFile(f'session file {where} has no "sessions" object{keep}')
    if doc.get("format", FORMAT) != FORMAT or doc.get("version", VERSION) != VERSION:
        raise CorruptFile(
            f"session file {where} is format {doc.get('format')!r} version "
            f"{doc.get('version')!r}; this worker reads {FORMAT!r} version {VERSION}{keep}"
        )
    data: dict[str, tuple[bytes, int | None]] = {}
    for sid, entry in doc["sessions"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("state"), dict):
            raise CorruptFile(f'session file {where}: session {sid!r} has no "state" object{keep}')
        expires = entry.get("expires_at")
        try:
            exp = None if expires is None else iso_to_ms(expires)
        except (ValueError, TypeError):
            raise CorruptFile(
                f"session file {where}: session {sid!r} has a bad expires_at {expires!r}{keep}"
            ) from None
        state = json.dumps(entry["state"], separators=(",", ":"), ensure_ascii=False).encode()
        data[sid] = (state, exp)
    return data
