"""Sessions as JSON lines: the one line format of export, import and snapshots.

One session a line, keys in this order::

    {"id":"...","expires_at":"2026-11-27T04:11:21.123Z","state":{...}}

``expires_at`` is ISO-8601 UTC or ``null``; ``state`` is the session's JSON text exactly as the
store held it (the server's bytes).  Writing is string concatenation around that text (never
a parse and re-serialise).  A text that cannot sit on one line as it is (a pretty-printed value
with newlines, leading or trailing blanks) goes as a JSON string instead, ``"text":"..."``, so
that its bytes still come back unchanged.  Reading accepts any valid JSON object with those
keys; lines in exactly the written layout take a fast path that only checks the framing, which
is safe for snapshots (their checksum is verified before anything is written) but not for a
file a person made, so :func:`decode_line` parses fully unless told ``trusted``.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from typing import Any

from worker.errors import CorruptFile
from worker.stores.sessions.base import (
    RawSession,
    iso_to_ms,
    ms_to_iso,
    session_json,
    session_reason,
)

_SAFE_CHARS = (string.ascii_letters + string.digits + "._:~+/=@-").encode()
_HEAD = b'{"id":"'
_MID = b',"expires_at":'
_STATE = b',"state":'
# Expiry times are formatted and parsed from small tables and a per-day memo: strftime and
# fromisoformat cost ~3 us each, which is most of a snapshot's line building when sessions
# expire at many different seconds.
_MILLIS = [b".%03dZ\"" % i for i in range(1000)]
_HHMM = [b"%02d:%02d:" % divmod(minute, 60) for minute in range(1440)]
_SS = [b"%02d" % i for i in range(60)]
_DAY_MS = 86_400_000
_DAYS: dict[int, bytes] = {}
_DAY_EPOCH: dict[bytes, int] = {}


def _day_prefix(days: int) -> bytes:
    """``"2026-11-27T`` (with the opening quote) for a day number since the epoch."""
    prefix = _DAYS.get(days)
    if prefix is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        prefix = _DAYS[days] = b'"' + ms_to_iso(days * _DAY_MS)[:11].encode()
    return prefix


def encode_batch(batch: Sequence[RawSession]) -> bytes:
    """The JSON lines of a batch of sessions (each ending with a newline)."""
    ids = [sid.encode() for sid, _, _ in batch]
    # One C-speed check for the whole batch: ids made of safe characters need no escaping.
    all_safe = not b"".join(ids).translate(None, _SAFE_CHARS)
    parts: list[bytes] = []
    extend = parts.extend
    day_prefix, hhmm, ss, millis_of = _day_prefix, _HHMM, _SS, _MILLIS
    for bid, (sid, state, expires_ms) in zip(ids, batch, strict=True):
        if not all_safe and (not bid or bid.translate(None, _SAFE_CHARS)):
            bid = json.dumps(sid).encode()[1:-1]
        field = _STATE
        if state[:1] != b"{" or state[-1:] != b"}" or b"\n" in state or b"\r" in state:
            field = _TEXT
            state = json.dumps(state.decode(), ensure_ascii=False).encode()
        if expires_ms is None:
            extend((_HEAD, bid, _NO_EXPIRY_FIELD[field], state, b"}\n"))
        else:
            days, rest = divmod(expires_ms, _DAY_MS)
            minute, rest = divmod(rest, 60_000)
            second, millis = divmod(rest, 1000)
            extend((_HEAD, bid, _EXPIRY, day_prefix(days), hhmm[minute], ss[second],
                    millis_of[millis], field, state, b"}\n"))
    return b"".join(parts)


_TEXT = b',"text":'
_NO_EXPIRY_FIELD = {
    _STATE: b'","expires_at":null,"state":',
    _TEXT: b'","expires_at":null,"text":',
}
_EXPIRY = b'","expires_at":'

_LINE = re.compile(
    rb'^\{"id":"([^"\\\n]+)","expires_at":(?:null|"(\d{4}-\d\d-\d\d)T(\d\d):(\d\d):(\d\d)'
    rb'\.(\d{3})Z"),"state":(\{[^\n]*\})\}\n',
    re.MULTILINE,  # anchored at line starts: a nested look-alike object never matches
)


def _day_epoch(day: bytes) -> int:
    base = _DAY_EPOCH.get(day)
    if base is None:
        if len(_DAY_EPOCH) > 4096:
            _DAY_EPOCH.clear()
        base = _DAY_EPOCH[day] = iso_to_ms(day.decode() + "T00:00:00.000Z")
    return base


def decode_block(block: bytes) -> list[RawSession]:
    """All lines of a block of complete lines written by :func:`encode_batch` (trusted: a
    snapshot whose checksum was verified).  One regex pass; any other layout falls back to
    :func:`decode_line` line by line."""
    out: list[RawSession] = []
    append = out.append
    for sid, day, hh, mm, ss, millis, state in _LINE.findall(block):
        if day:
            at = (_day_epoch(day) + int(hh) * 3_600_000 + int(mm) * 60_000 + int(ss) * 1000
                  + int(millis))
            append((sid.decode(), state, at))
        else:
            append((sid.decode(), state, None))
    if len(out) != block.count(b"\n"):
        lines = block.split(b"\n")
        lines.pop()
        return [decode_line(line, trusted=True) for line in lines if line.strip()]
    return out


# The rest of the line is consumed by the match: a match that stopped after the id would make
# the engine try every following byte of the line as a line start (10x slower).
_ID = re.compile(rb'^\{"id":"([^"\\\n]+)"[^\n]*\n', re.MULTILINE)


def decode_ids(block: bytes) -> list[RawSession]:
    """The ids of a block like :func:`decode_block`'s, with empty states (conflict checks)."""
    ids = _ID.findall(block)
    if len(ids) != block.count(b"\n"):
        return [(sid, b"", None) for sid, _, _ in decode_block(block)]
    return [(sid.decode(), b"", None) for sid in ids]


def decode_line(line: bytes, *, trusted: bool = False, where: str = "") -> RawSession:
    """One JSON line (without its newline) to a :data:`RawSession`.

    ``trusted`` allows the framing-only fast path for lines in the exact written layout.
    Anything else is parsed fully; a line that is not a session raises :class:`CorruptFile`.
    """
    if trusted and line.startswith(_HEAD) and line.endswith(b"}"):
        end = line.find(b'"', 7)
        if end > 7 and line[end + 1 : end + 1 + len(_MID)] == _MID:
            sid = line[7:end]
            pos = end + 1 + len(_MID)
            if line[pos : pos + 4] == b"null":
                expires_ms: int | None = None
                pos += 4
            elif line[pos : pos + 1] == b'"' and line[pos + 25 : pos + 26] == b'"':
                expires_ms = iso_to_ms(line[pos + 1 : pos + 25].decode())
                pos += 26
            else:
                pos = -1
            if (
                pos > 0
                and b"\\" not in sid
                and line[pos : pos + len(_STATE)] == _STATE
                and line[pos + len(_STATE) : pos + len(_STATE) + 1] == b"{"
            ):
                return sid.decode(), line[pos + len(_STATE) : -1], expires_ms
    return _decode_full(line, where)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_full(line: bytes, where: str) -> RawSession:
    try:
        obj = json.loads(line, parse_constant=_no_constant)  # strict, as JSON.parse
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError too
        raise CorruptFile(f"not a JSON line: {exc}", key=where or None) from None
    if not isinstance(obj, dict):
        raise CorruptFile("a session line must be a JSON object", key=where or None)
    sid, state, expires = obj.get("id"), obj.get("state"), obj.get("expires_at")
    if not isinstance(sid, str) or not sid:
        raise CorruptFile('a session needs a non-empty string "id"', key=where or None)
    if "text" in obj and isinstance(obj["text"], str) and state is None:
        try:
            text = obj["text"].encode()
        except UnicodeEncodeError:
            raise CorruptFile(f'session {sid!r}: "text" is not UTF-8', key=where or None) from None
        why = session_reason(sid, text)
        if why is not None:
            raise CorruptFile(f'session {sid!r}: "text" is {why}', key=where or None)
    elif isinstance(state, dict):
        if state.get("id", sid) != sid:
            raise CorruptFile(f"session {sid!r}: its state names another id", key=where or None)
        text = _state_text(line, sid, state)
    else:
        raise CorruptFile(f'session {sid!r}: "state" must be a JSON object', key=where or None)
    if expires is None:
        expires_ms = None
    elif isinstance(expires, str):
        try:
            expires_ms = iso_to_ms(expires)
        except ValueError as exc:
            raise CorruptFile(f"session {sid!r}: {exc}", key=where or None) from None
    else:
        raise CorruptFile(
            f'session {sid!r}: "expires_at" must be an ISO-8601 time or null', key=where or None
        )
    return sid, text, expires_ms


def _state_text(line: bytes, sid: str, state: dict[str, Any]) -> bytes:
    """The state's own bytes in a line ``{"id":...,"expires_at":...,"state":TEXT}`` (an id
    with escapes lands here): the first ``,"state":`` cannot be inside the id or the time,
    whose quotes are escaped.  A state that names no id (an export of an older version) or
    a line in any other layout gets compact JSON with ``"id"`` first, as the server writes."""
    start = line.find(_STATE)
    if start > 0 and line.endswith(b"}") and "id" in state:
        text = line[start + len(_STATE) : -1]
        try:
            if text[:1] == b"{" and text[-1:] == b"}" and json.loads(text) == state:
                return text
        except ValueError:
            pass
    return session_json(sid, state)
