"""The session-store contract: what snapshots, the CLI and ``config check`` rely on.

A session is what the Synchro server keeps: a JSON object whose ``"id"`` is the session's id
(``{"id": "<id>", ...}``), plus the worker's own optional absolute expiry.  Every store keeps
them by id; an expired session is never returned by any method.  Besides the per-session
calls (create, get, put, delete) each store offers a *raw stream* of sessions whose state is
still JSON text (:data:`RawSession`): snapshots, export, import and copy move sessions through
it in batches, so that memory stays flat with the number of sessions and nothing is parsed and
re-serialised on the way (Redis already holds the JSON text).
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

import msgspec

from worker.errors import StoreError, TransientStoreError

#: One session on the wire: ``(id, the session's JSON object text exactly as the server wrote
#: it (UTF-8), expiry in epoch ms or None)``.  A plain tuple because hundreds of thousands of
#: them go by per second, and bytes because that is what Redis returns and what a snapshot
#: file holds.
RawSession = tuple[str, bytes, int | None]

#: Sessions per batch for streaming reads and writes (a Redis pipeline, a snapshot block).
BATCH_SIZE = 1000


class OnConflict(enum.StrEnum):
    """What a write does with a session whose id the target store already holds."""

    SKIP = "skip"
    OVERWRITE = "overwrite"
    #: Refuse: a restore or copy checks every id first and writes nothing if one exists.
    FAIL = "fail"


class StreamRestarted(TransientStoreError):
    """The store came back as a different server in the middle of a stream (a restart, a
    failover): a SCAN cursor is no longer valid and writes may have been lost, so the whole
    stream must start again.  Snapshots and restores do so, a bounded number of times."""


#: Why a key or entry of a store is not a session (the counters of :attr:`SessionStore.skipped`).
NOT_JSON = "not JSON"
NOT_OBJECT = "not an object"
ID_MISMATCH = "id differs from the key"
NOT_UTF8_KEY = "key not UTF-8"
WRONG_TYPE = "not a string value"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Strict JSON as the server's ``JSON.parse`` reads it: no NaN or Infinity.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


class _IdOnly(msgspec.Struct):
    id: str


#: A JSON object's ``"id"``: msgspec checks the whole text's syntax but builds only the id (a
#: third of the cost of building every value; a snapshot checks every session).  It does
#: not check the UTF-8 of the strings it skips, which :func:`session_reason` does.
_ID_OF = msgspec.json.Decoder(_IdOnly).decode
_SKIP_FAST = (msgspec.MsgspecError, RecursionError)


def _is_utf8(text: bytes) -> bool:
    try:
        text.decode()
    except UnicodeDecodeError:
        return False
    return True


def _check_loads(text: bytes) -> Any:
    """Parse only to check: msgspec (in C), the standard library where msgspec refuses what
    ``JSON.parse`` reads (an escaped lone surrogate)."""
    try:
        return msgspec.json.decode(text)
    except msgspec.MsgspecError:
        pass
    return _DECODER.decode(text.decode())


def _reason(sid: str, value: Any) -> str | None:
    if not isinstance(value, dict):
        return NOT_OBJECT
    if value.get("id") != sid:
        return ID_MISMATCH
    return None


def parse_session_text(sid: str, text: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``(session, None)`` when ``text`` is a JSON object whose ``id`` is ``sid``, else
    ``(None, reason)``.  Strict JSON, as the server's ``JSON.parse`` (no NaN/Infinity); every
    number as written (big integers exact)."""
    try:
        value = _DECODER.decode(text.decode())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, NOT_JSON
    why = _reason(sid, value)
    return (None, why) if why else (value, None)


def session_reason(sid: str, text: bytes) -> str | None:
    """Why ``text`` is not the session ``sid`` (None: it is); the check of every key a walk
    of a store reads."""
    try:
        if _ID_OF(text).id == sid and (text.isascii() or _is_utf8(text)):
            return None
    except _SKIP_FAST:
        pass
    try:
        value = _check_loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return NOT_JSON
    return _reason(sid, value)


def skipped_summary(skipped: Mapping[str, int]) -> str:
    """``3 (2 not JSON, 1 id differs from the key)``, or ``0``."""
    total = sum(skipped.values())
    if not total:
        return "0"
    ordered = sorted(skipped.items(), key=lambda item: (-item[1], item[0]))
    parts = ", ".join(f"{n} {why}" for why, n in ordered)
    return f"{total} ({parts})"


@dataclass(slots=True)
class Session:
    """A session: its id, its state (the server's JSON object, whose ``"id"`` is :attr:`id`)
    and its absolute expiry (UTC) or None."""

    id: str
    state: dict[str, Any]
    expires_at: datetime | None = None

    @property
    def expires_ms(self) -> int | None:
        if self.expires_at is None:
            return None
        return int(self.expires_at.timestamp() * 1000)

    def expired(self, now_ms: int | None = None) -> bool:
        ms = self.expires_ms
        return ms is not None and ms <= (now_ms if now_ms is not None else now_epoch_ms())

    def to_raw(self) -> RawSession:
        return (self.id, session_json(self.id, self.state), self.expires_ms)

    @classmethod
    def from_raw(cls, raw: RawSession) -> Session:
        sid, text, expires_ms = raw
        state, why = parse_session_text(sid, text)
        if state is None:
            raise StoreError(f"session {sid!r} is not a session object ({why})")
        return cls(sid, state, ms_to_datetime(expires_ms))


@dataclass(slots=True)
class WriteResult:
    """What a streaming write did."""

    written: int = 0
    #: Sessions left alone because the target already held their id (``--on-conflict skip``).
    skipped: int = 0
    #: Sessions dropped because they had expired before they could be written.
    expired: int = 0

    def add(self, other: WriteResult) -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.expired += other.expired


class SessionStore(Protocol):
    """What every session store does.  Implementations: memory.py, file.py, redis.py."""

    #: Service name as in the configuration (``RedisSessionStore``...).
    service: ClassVar[str]
    #: Whether sessions outlive the process (False for the memory store).
    persistent: ClassVar[bool]
    #: Keys (entries) the last :meth:`iter_raw` passed over because they are not sessions,
    #: by reason (:data:`NOT_JSON`, :data:`ID_MISMATCH`...).
    skipped: Counter[str]

    def describe(self) -> str:
        """Where the store is, secrets masked (``redis://127.0.0.1:6379/0 prefix session:``)."""
        ...

    def create(self, state: dict[str, Any], ttl: float | timedelta | None = None) -> Session:
        """Store a new session with a fresh id; ``ttl`` in seconds (or a timedelta)."""
        ...

    def get(self, session_id: str) -> Session | None: ...

    def put(self, session: Session) -> None:
        """Create or replace the session; its expiry becomes ``session.expires_at``."""
        ...

    def delete(self, session_id: str) -> bool:
        """Remove the session; True if it existed."""
        ...

    def iter_sessions(self) -> Iterator[Session]:
        """Every live session, streamed in batches (never all in memory for Redis)."""
        ...

    def count(self) -> int: ...

    def iter_raw(self, batch_size: int = BATCH_SIZE) -> Iterator[list[RawSession]]:
        """Every live session as batches of :data:`RawSession`; expired ones never appear."""
        ...

    def existing(self, ids: Sequence[str]) -> list[str]:
        """Which of ``ids`` the store holds (for ``--on-conflict fail`` checks)."""
        ...

    def empty(self) -> bool:
        """True only when the store holds no key at all, known at once (Redis: ``DBSIZE``):
        a write into it can meet no id, so ``--on-conflict fail`` need not ask about each."""
        ...

    def write_raw(
        self, batches: Iterable[Sequence[RawSession]], on_conflict: OnConflict
    ) -> WriteResult:
        """Write batches of live sessions; ``FAIL`` raises AlreadyExists at the first conflict
        (callers check with :meth:`existing` first so that nothing is written)."""
        ...

    def check(self) -> str:
        """Show that the store works: a short description, or raise a StoreError."""
        ...

    def close(self) -> None: ...


# --- helpers shared by the stores -----------------------------------------------------------


def now_epoch_ms() -> int:
    return time.time_ns() // 1_000_000


def new_session_id() -> str:
    """A random UUID (version 4), as the server's ``uuid.v4()``."""
    return str(uuid.uuid4())


def ttl_to_expires_ms(ttl: float | timedelta | None, now_ms: int | None = None) -> int | None:
    if ttl is None:
        return None
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if seconds <= 0:
        raise ValueError("ttl must be positive")
    return (now_ms if now_ms is not None else now_epoch_ms()) + int(seconds * 1000)


def ms_to_datetime(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


def state_to_json(state: dict[str, Any]) -> bytes:
    """Compact JSON text, as the server's ``JSON.stringify`` writes it."""
    if not isinstance(state, dict):
        raise TypeError(f"session state must be a JSON object (a dict), not {type(state).__name__}")
    return json.dumps(
        state, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def with_id(sid: str, state: dict[str, Any]) -> dict[str, Any]:
    """A new session's state: ``{"id": sid, ...state}`` (an ``"id"`` in ``state`` replaced)."""
    if not isinstance(state, dict):
        raise TypeError(f"session state must be a JSON object (a dict), not {type(state).__name__}")
    return {"id": sid, **{k: v for k, v in state.items() if k != "id"}}


def session_json(sid: str, state: dict[str, Any]) -> bytes:
    """The server's text of session ``sid``: ``state`` with ``"id"`` first when it had none;
    a state naming another id is refused."""
    if not isinstance(state, dict):
        raise TypeError(f"session state must be a JSON object (a dict), not {type(state).__name__}")
    if "id" not in state:
        state = {"id": sid, **state}
    elif state["id"] != sid:
        raise ValueError(f"session {sid!r}: its state names id {state['id']!r}")
    return state_to_json(state)


_ISO_CACHE: dict[int, str] = {}


def ms_to_iso(ms: int) -> str:
    """``2026-11-27T04:11:21.123Z``; the per-second prefix is cached (snapshots format many)."""
    seconds, millis = divmod(ms, 1000)
    prefix = _ISO_CACHE.get(seconds)
    if prefix is None:
        if len(_ISO_CACHE) > 4096:
            _ISO_CACHE.clear()
        prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _ISO_CACHE[seconds] = prefix
    return f"{prefix}.{millis:03d}Z"


_EPOCH_CACHE: dict[str, int] = {}


def iso_to_ms(text: str) -> int:
    """Parse an ISO-8601 time (``Z`` or an offset; naive means UTC) to epoch milliseconds."""
    # Fast path for our own form: YYYY-MM-DDTHH:MM:SS.mmmZ
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and text[20:23].isdigit():
        head = text[:19]
        base = _EPOCH_CACHE.get(head)
        if base is None:
            if len(_EPOCH_CACHE) > 4096:
                _EPOCH_CACHE.clear()
            base = int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()) * 1000
            _EPOCH_CACHE[head] = base
        return base + int(text[20:23])
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
