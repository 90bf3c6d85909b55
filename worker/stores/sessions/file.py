"""``FileSessionStore``: sessions in memory, backed by one JSON file a person can read.

Configuration: ``sessionStateFile`` (default ``sessions.json``).

The file is **the Synchro server's**: one JSON object whose members are the sessions by id,
each the server's session object, ``{"<id>": {"id": "<id>", ...}, ...}``; the server reads it
with ``JSON.parse(file)[id]``.  An empty file and ``{}`` hold no sessions.  Each session's
text is kept byte for byte as it was in the file (or in the store it was copied from), and
written back one session a line::

    {
    "<id>": {"id":"<id>",...},
    ...
    }

Members that are not sessions (not an object, or an ``"id"`` other than the member's name)
are counted in :attr:`skipped` and written back unchanged, never dropped.

Expiry is the worker's own idea (the server never expires these sessions): it is kept beside
the file, in ``<file>.expiry.json`` (``{"<id>": "2026-11-27T04:11:21.123Z", ...}``), only while
some session has one, so the server never sees it.  Sessions past their expiry are not
listed, copied or snapshotted by the worker, and are dropped from the file at its next write.

The files are rewritten atomically after every change (a temp file in the same folder, fsync,
rename, fsync of the folder; the expiry file first), so a reader -- the server at its start, a
person with ``less``, this store after a crash -- always sees a complete file.  A file that
is not valid (corrupt, truncated, not an object) is refused with :class:`CorruptFile` naming
it, and never written over.  Several processes may share the file: every change takes an
exclusive ``fcntl`` lock on ``<file>.lock``, re-reads the file if another process replaced it
since we last saw it, applies the change on top and writes.  A running Synchro server keeps
its sessions in memory and rewrites the whole file at each change, so write to the file (a
restore, a copy) while the server is stopped.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from worker.errors import CorruptFile, StoreError
from worker.stores.sessions.base import (
    OnConflict,
    RawSession,
    WriteResult,
    iso_to_ms,
    ms_to_iso,
    session_reason,
    skipped_summary,
)
from worker.stores.sessions.memory import MemorySessionStore

EXPIRY_SUFFIX = ".expiry.json"
_KEEP = "; the file was left as it was (fix it, or move it away to start empty)"
_WS = re.compile(r"[ \t\n\r]*")


class FileSessionStore(MemorySessionStore):
    """A :class:`MemorySessionStore` whose every change is written to ``path`` atomically."""

    service: ClassVar[str] = "FileSessionStore"
    persistent: ClassVar[bool] = True

    def __init__(
        self, path: str | os.PathLike[str] = "sessions.json",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.path = Path(path)
        self.expiry_path = self.path.with_name(self.path.name + EXPIRY_SUFFIX)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._seen: tuple[Any, Any] | None = None
        self._locked = 0
        #: Members of the file that are not sessions, as they were: written back unchanged.
        self._foreign: dict[str, bytes] = {}
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
        count = self.count()
        other = (
            f" (entries that are not sessions, kept as they are: "
            f"{skipped_summary(self.skipped)})" if self.skipped else ""
        )
        return f"file {self.path} ({state}), {count} sessions{other}"

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

    def _stage(self, puts: Sequence[RawSession]) -> None:
        for raw in puts:
            self._foreign.pop(raw[0], None)
        super()._stage(puts)

    def write_raw(
        self, batches: Iterable[Sequence[RawSession]], on_conflict: OnConflict
    ) -> WriteResult:
        # One lock and one file write for the whole stream, not one per batch.
        with self._lock, self._file_lock():
            return super().write_raw(batches, on_conflict)

    # --- the files -----------------------------------------------------------------------

    def _stat(self) -> tuple[Any, Any] | None:
        out: list[tuple[int, int, int] | None] = []
        for path in (self.path, self.expiry_path):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                out.append(None)
                continue
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return None if out == [None, None] else (out[0], out[1])

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

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read: {exc}", store=f"file:{path}") from None

    def _load(self) -> None:
        seen = self._stat()
        raw = self._read(self.path)
        sessions, foreign, skipped = parse_server_file(raw or b"", self.path)
        expiry = parse_expiry_file(self._read(self.expiry_path), self.expiry_path)
        self._data = {sid: (text, expiry.get(sid)) for sid, text in sessions.items()}
        self._foreign = foreign
        self.skipped = skipped
        self._seen = seen

    def _write(self) -> None:
        now = self._now_ms()
        live = [
            (sid, text, exp)
            for sid, (text, exp) in self._data.items()
            if exp is None or exp > now
        ]
        expiring = [(sid, exp) for sid, _, exp in live if exp is not None]
        if expiring:
            body = b",\n".join(
                json.dumps(sid, ensure_ascii=False).encode() + b': "' + ms_to_iso(exp).encode()
                + b'"'
                for sid, exp in expiring
            )
            self._replace(self.expiry_path, [b"{\n", body, b"\n}\n"])
        elif self.expiry_path.exists():
            self.expiry_path.unlink()
        members = [(sid, text) for sid, text, _ in live] + list(self._foreign.items())
        parts = [b"{\n"]
        for i, (sid, text) in enumerate(members):
            parts += [json.dumps(sid, ensure_ascii=False).encode(), b": ", text]
            parts.append(b",\n" if i + 1 < len(members) else b"\n")
        parts.append(b"}\n")
        self._replace(self.path, parts)
        self._data = {sid: (text, exp) for sid, text, exp in live}
        self._seen = self._stat()

    def _replace(self, path: Path, parts: list[bytes]) -> None:
        folder = path.parent if str(path.parent) else Path(".")
        tmp = folder / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as f:
                for part in parts:
                    f.write(part)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write: {exc}", store=f"file:{path}") from None
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def parse_server_file(
    raw: bytes, path: Path
) -> tuple[dict[str, bytes], dict[str, bytes], Counter[str]]:
    """The server's session file -> (sessions by id as their exact text, members that are
    not sessions as their text, why those were skipped).  Empty means no sessions."""
    sessions: dict[str, bytes] = {}
    foreign: dict[str, bytes] = {}
    skipped: Counter[str] = Counter()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptFile(f"session file {path} is not UTF-8 text{_KEEP}") from None
    if not text.strip():
        return sessions, foreign, skipped
    try:
        for sid, value in _members(text):
            why = session_reason(sid, value)
            if why is None:
                sessions[sid] = value
                foreign.pop(sid, None)
            else:
                foreign[sid] = value
                sessions.pop(sid, None)
                skipped[why] += 1
    except json.JSONDecodeError as exc:
        raise CorruptFile(
            f"session file {path} is not valid JSON (line {exc.lineno} column {exc.colno}: "
            f"{exc.msg}; truncated or corrupt){_KEEP}"
        ) from None
    except RecursionError:
        raise CorruptFile(f"session file {path} is nested too deeply{_KEEP}") from None
    return sessions, foreign, skipped


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _members(text: str) -> Iterator[tuple[str, bytes]]:
    """The members of the JSON object ``text``, each value as its exact text (UTF-8).
    Any other document, or invalid JSON anywhere, raises JSONDecodeError with its place."""
    decoder = json.JSONDecoder(parse_constant=_no_constant)

    def fail(msg: str, pos: int) -> json.JSONDecodeError:
        return json.JSONDecodeError(msg, text, pos)

    i = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if text[i : i + 1] != "{":
        raise fail("the file must hold one JSON object of sessions by id", i)
    i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    if text[i : i + 1] == "}":
        i += 1
    else:
        while True:
            if text[i : i + 1] != '"':
                raise fail("expected a session id in double quotes", i)
            key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if text[i : i + 1] != ":":
                raise fail("expected ':'", i)
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
            try:
                _, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                raise
            except ValueError as exc:  # NaN, Infinity
                raise fail(str(exc), i) from None
            yield key, text[i:end].encode()
            i = _WS.match(text, end).end()  # type: ignore[union-attr]
            sep = text[i : i + 1]
            i += 1
            if sep == "}":
                break
            if sep != ",":
                raise fail("expected ',' or '}'", i - 1)
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
    if _WS.match(text, i).end() != len(text):  # type: ignore[union-attr]
        raise fail("extra data after the object", i)


def parse_expiry_file(raw: bytes | None, path: Path) -> dict[str, int]:
    """``<file>.expiry.json`` -> {id: expiry ms}; missing or empty means none."""
    if raw is None or not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CorruptFile(f"expiry file {path} is not valid JSON{_KEEP}") from None
    if not isinstance(doc, dict):
        raise CorruptFile(f"expiry file {path} must hold one JSON object{_KEEP}")
    out: dict[str, int] = {}
    for sid, when in doc.items():
        try:
            out[sid] = iso_to_ms(when)
        except (ValueError, TypeError):
            raise CorruptFile(
                f"expiry file {path}: session {sid!r} has a bad time {when!r}{_KEEP}"
            ) from None
    return out
