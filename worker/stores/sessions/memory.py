"""``MemorySessionStore``: sessions in this process's memory (the default; not persistent).

Configuration: none.  Also the base of :class:`~worker.stores.sessions.file.FileSessionStore`,
which adds the disk file.

Expiry is judged against ``clock`` (seconds since the epoch, :func:`time.time` unless given):
a test hands in a clock it moves forward instead of waiting for a session to expire.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from worker.errors import AlreadyExists
from worker.stores.sessions.base import (
    BATCH_SIZE,
    OnConflict,
    RawSession,
    Session,
    WriteResult,
    ms_to_datetime,
    new_session_id,
    session_json,
    ttl_to_expires_ms,
    with_id,
)


class MemorySessionStore:
    """Sessions in a dict: id -> (state JSON text, expiry ms or None)."""

    service: ClassVar[str] = "MemorySessionStore"
    persistent: ClassVar[bool] = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, int | None]] = {}
        # The store may be shared by threads (a Celery worker pool, a snapshot thread).
        self._lock = threading.RLock()
        self.skipped: Counter[str] = Counter()

    def describe(self) -> str:
        return "memory:"

    # --- per session ---------------------------------------------------------------------

    def create(self, state: dict[str, Any], ttl: float | timedelta | None = None) -> Session:
        sid = new_session_id()
        state = with_id(sid, state)
        raw = (sid, session_json(sid, state), ttl_to_expires_ms(ttl, self._now_ms()))
        self._apply([raw], [])
        return Session(sid, state, ms_to_datetime(raw[2]))

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            self._before_read()
            entry = self._data.get(session_id)
        if entry is None or (entry[1] is not None and entry[1] <= self._now_ms()):
            return None
        return Session.from_raw((session_id, entry[0], entry[1]))

    def put(self, session: Session) -> None:
        self._apply([session.to_raw()], [])

    def delete(self, session_id: str) -> bool:
        with self._lock:
            self._before_read()
            entry = self._data.get(session_id)
            existed = entry is not None and (entry[1] is None or entry[1] > self._now_ms())
            if entry is not None:
                self._apply([], [session_id])
        return existed

    # --- streams -------------------------------------------------------------------------

    def iter_sessions(self) -> Iterator[Session]:
        for batch in self.iter_raw():
            for raw in batch:
                yield Session.from_raw(raw)

    def count(self) -> int:
        now = self._now_ms()
        with self._lock:
            self._before_read()
            return sum(1 for _, exp in self._data.values() if exp is None or exp > now)

    def iter_raw(self, batch_size: int = BATCH_SIZE) -> Iterator[list[RawSession]]:
        with self._lock:
            self._before_read()
            ids = list(self._data)
        # Walk a copy of the ids so writers are never blocked for the whole stream.
        for start in range(0, len(ids), batch_size):
            now = self._now_ms()
            batch: list[RawSession] = []
            with self._lock:
                for sid in ids[start : start + batch_size]:
                    entry = self._data.get(sid)
                    if entry is not None and (entry[1] is None or entry[1] > now):
                        batch.append((sid, entry[0], entry[1]))
            if batch:
                yield batch

    def existing(self, ids: Sequence[str]) -> list[str]:
        now = self._now_ms()
        with self._lock:
            self._before_read()
            found = []
            for sid in ids:
                entry = self._data.get(sid)
                if entry is not None and (entry[1] is None or entry[1] > now):
                    found.append(sid)
            return found

    def empty(self) -> bool:
        with self._lock:
            self._before_read()
            return not self._data

    def write_raw(
        self, batches: Iterable[Sequence[RawSession]], on_conflict: OnConflict
    ) -> WriteResult:
        result = WriteResult()
        pending: list[RawSession] = []
        with self._lock:
            self._before_read()
            now = self._now_ms()
            for batch in batches:
                for raw in batch:
                    if raw[2] is not None and raw[2] <= now:
                        result.expired += 1
                        continue
                    if on_conflict is not OnConflict.OVERWRITE:
                        entry = self._data.get(raw[0])
                        if entry is not None and (entry[1] is None or entry[1] > now):
                            if on_conflict is OnConflict.FAIL:
                                self._stage(pending)
                                self._commit()
                                raise AlreadyExists(
                                    f"session {raw[0]!r} exists already (--on-conflict fail); "
                                    f"{result.written} written before it",
                                    store=self.describe(),
                                )
                            result.skipped += 1
                            continue
                    pending.append(raw)
                    result.written += 1
                self._stage(pending)
                pending = []
            self._commit()
        return result

    def _now_ms(self) -> int:
        """Now by the store's clock, in milliseconds since the epoch."""
        return int(self._clock() * 1000)

    def check(self) -> str:
        return f"in memory (not persistent), {self.count()} sessions"

    def close(self) -> None:
        pass

    # --- what the file store extends -----------------------------------------------------

    def _before_read(self) -> None:
        """Hook: the file store reloads the file if another process changed it."""

    def _stage(self, puts: Sequence[RawSession]) -> None:
        """Apply puts to memory without persisting (streaming writes commit once at the end)."""
        for sid, state, expires_ms in puts:
            self._data[sid] = (state, expires_ms)

    def _commit(self) -> None:
        """Hook: the file store writes the file once after a streaming write."""

    def _apply(self, puts: Sequence[RawSession], deletes: Sequence[str]) -> None:
        with self._lock:
            self._stage(puts)
            for sid in deletes:
                self._data.pop(sid, None)
            self._commit()
