"""The session snapshot file: zstd-compressed JSON lines, streamed in and out.

::

    {"format":"synchro-sessions-snapshot","version":1,"id":...,"source":...,"started_at":...}
    {"id":"...","expires_at":"2026-11-27T04:11:21.123Z","state":{...}}      one per session
    ...
    {"end":true,"ended_at":...,"count":N,"sha256":"<hex of all session lines>"}

The session lines are exactly those of ``sessions export`` (see
:mod:`worker.stores.sessions.lines`), so a snapshot is portable: ``zstd -d`` gives a header, the
sessions, and a trailer.  The writer hashes and compresses in a background thread (zstd and
hashlib release the GIL) while the caller fetches the next batch from the store, and hands
each frame it completes, as written to the file, to ``on_frame`` (the snapshot's check).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO

import zstandard

from worker.errors import CorruptFile
from worker.stores.sessions.ahead import prefetch
from worker.stores.sessions.base import RawSession, session_json

FORMAT = "synchro-sessions-snapshot"
#: 2: each state is the server's session text, ``{"id": ...}`` (or a ``"text"`` string).
#: 1 (read too): states without the id, as this worker wrote them before it spoke the
#: server's format; :func:`v1_sessions` gives them their id.
VERSION = 2
READS = (1, 2)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: zstd level 1: on ~1 KB JSON sessions as small as level 3 and gzip -9 (2.6x), twice as fast
#: as level 3 (~400 MB/s here) and fifty times faster than gzip -9.
LEVEL = 1
READ_SIZE = 1 << 20
#: Session lines per zstd frame (uncompressed); verification holds two frames at a time.
FRAME_BYTES = 4 << 20
#: Enough of the end of a stream to hold its trailer line.
TAIL = 1 << 16


class _HashingWriter:
    """A file wrapper that hashes the compressed bytes as they are written (sha256, and md5
    for destinations that verify uploads with it), and keeps those of the current frame when
    asked (``keep``)."""

    def __init__(self, raw: IO[bytes], md5: bool, keep: bool = False) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self.size = 0
        self.parts: list[bytes] | None = [] if keep else None

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        if self.parts is not None:
            self.parts.append(bytes(data))
        self.size += len(data)
        return self.raw.write(data)

    def frame(self) -> bytes:
        """The bytes written since the last call (one whole frame), flushed to the file."""
        self.raw.flush()
        data = b"".join(self.parts or ())
        self.parts = []
        return data

    def flush(self) -> None:
        self.raw.flush()


class SnapshotWriter:
    """Write header, blocks of session lines, trailer; hashing + compression in a thread.
    ``on_frame(data, last)`` gets each frame's bytes once they are written to ``out``."""

    def __init__(
        self, out: IO[bytes], header: dict[str, Any], level: int = LEVEL, md5: bool = False,
        on_frame: Callable[[bytes, bool], None] | None = None,
    ) -> None:
        self._on_frame = on_frame
        self._file = _HashingWriter(out, md5, keep=on_frame is not None)
        self._zw = zstandard.ZstdCompressor(level=level, write_checksum=True).stream_writer(
            self._file,  # type: ignore[arg-type]  # only write() and flush() are used
            closefd=False,
            write_return_read=True,
        )
        self.lines_sha256 = hashlib.sha256()
        self.count = 0
        #: Compressed end offset of every zstd frame (a frame each FRAME_BYTES of lines), so
        #: that verification can decompress frames in parallel.
        self.frames: list[int] = []
        self._since_frame = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._zw.write(_json_line(header))
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                block = self._queue.get()
                if block is None:
                    return
                self.lines_sha256.update(block)
                self._zw.write(block)
                self._since_frame += len(block)
                if self._since_frame >= FRAME_BYTES:
                    self._end_frame(last=False)
                    self._since_frame = 0
        except BaseException as exc:  # handed to the producer on its next call
            self._error = exc
            while self._queue.get() is not None:  # unblock the producer until it stops
                pass

    def _end_frame(self, last: bool) -> None:
        self._zw.flush(zstandard.FLUSH_FRAME)
        self.frames.append(self._file.size)
        if self._on_frame is not None:
            self._on_frame(self._file.frame(), last)

    def write_block(self, block: bytes, count: int) -> None:
        """A block of complete session lines holding ``count`` sessions."""
        if self._error is not None:
            raise self._error
        self.count += count
        self._queue.put(block)

    def finish(self, trailer: dict[str, Any]) -> tuple[str, str, str | None, int]:
        """Write the trailer; return (lines sha256, file sha256, file md5, file size)."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        lines_hex = self.lines_sha256.hexdigest()
        self._zw.write(_json_line({**trailer, "count": self.count, "sha256": lines_hex}))
        self._end_frame(last=True)
        self._file.flush()
        md5 = self._file.md5.hexdigest() if self._file.md5 is not None else None
        return lines_hex, self._file.sha256.hexdigest(), md5, self._file.size

    def abort(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _HashingReader:
    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


class SnapshotReader:
    """Stream a snapshot: :attr:`header` first, then blocks of complete session lines (each
    ending with a newline), then :attr:`trailer` once the blocks are exhausted.

    With ``verify=True`` the session lines are counted and (unless ``hash_lines=False``)
    hashed, and checked against the trailer at the end; the sha256 of the compressed bytes is
    in :attr:`file_sha256`.  zstd checks its own content checksum of every frame.
    Any damage (not zstd, truncated, no trailer, wrong count or checksum) is CorruptFile.
    """

    def __init__(
        self, source: BinaryIO, name: str, verify: bool = True, hash_lines: bool = True
    ) -> None:
        self.name = name
        self.verify = verify
        self.hash_lines = verify and hash_lines
        self._raw = _HashingReader(source)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self._raw,  # type: ignore[arg-type]  # only read() is used
            read_size=READ_SIZE,
            read_across_frames=True,
        )
        self.lines_sha256 = hashlib.sha256()
        self.count = 0
        self.trailer: dict[str, Any] | None = None
        self._pending = b""
        # Decompression runs a few chunks ahead in a thread (zstd releases the GIL), in
        # parallel with the hashing and parsing of the chunks already read.
        self._chunks = prefetch(self._decompressed())
        self.header = self._read_header()

    def _decompressed(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._reader.read(READ_SIZE)
            except zstandard.ZstdError as exc:
                raise CorruptFile(f"not a readable zstd stream: {exc}", key=self.name) from None
            if not chunk:
                return
            yield chunk

    def _read(self) -> bytes:
        return next(self._chunks, b"")

    def close(self) -> None:
        self._chunks.close()

    def _read_header(self) -> dict[str, Any]:
        buf = b""
        while b"\n" not in buf:
            chunk = self._read()
            if not chunk:
                raise CorruptFile("no header line (empty or truncated snapshot)", key=self.name)
            buf += chunk
        line, _, self._pending = buf.partition(b"\n")
        header = parse_json_line(line, self.name, "header")
        if header.get("format") != FORMAT:
            raise CorruptFile(f"not a {FORMAT} file", key=self.name)
        if header.get("version") not in READS:
            raise CorruptFile(
                f"snapshot version {header.get('version')!r}; this worker reads "
                f"{', '.join(map(str, READS))}",
                key=self.name,
            )
        return header

    def blocks(self) -> Iterator[bytes]:
        pending = self._pending
        eof = False
        while not eof:
            chunk = self._read()
            eof = not chunk
            buf = pending + chunk if pending else chunk
            # Hold back the last line (complete or not): it may be the trailer.
            end = len(buf) - 1 if buf.endswith(b"\n") else len(buf)
            cut = buf.rfind(b"\n", 0, end) + 1
            pending = buf[cut:]
            if cut:
                block = buf[:cut]
                if self.verify:
                    if self.hash_lines:
                        self.lines_sha256.update(block)
                    self.count += block.count(b"\n")
                yield block
        self._finish(pending)

    def _finish(self, last: bytes) -> None:
        if not last.endswith(b"\n"):
            raise CorruptFile("truncated: the trailer line is missing", key=self.name)
        trailer = parse_json_line(last[:-1], self.name, "trailer")
        if trailer.get("end") is not True or not isinstance(trailer.get("count"), int):
            raise CorruptFile("truncated: the last line is not the trailer", key=self.name)
        self.trailer = trailer
        if self.verify:
            if trailer["count"] != self.count:
                raise CorruptFile(
                    f"trailer says {trailer['count']} sessions, file holds {self.count}",
                    key=self.name,
                )
            if self.hash_lines and trailer.get("sha256") != self.lines_sha256.hexdigest():
                raise CorruptFile("checksum of the session lines does not match", key=self.name)

    def drain(self) -> None:
        """Read to the end, checking as configured.  Without line hashing this only counts
        newlines and keeps the tail for the trailer: no per-block copies."""
        if self.hash_lines or not self.verify:
            for _ in self.blocks():
                pass
            return
        tail = self._pending
        newlines = tail.count(b"\n")
        while chunk := self._read():
            newlines += chunk.count(b"\n")
            tail = chunk[-TAIL:] if len(chunk) >= TAIL else (tail + chunk)[-TAIL:]
        end = len(tail) - 1 if tail.endswith(b"\n") else len(tail)
        cut = tail.rfind(b"\n", 0, end) + 1
        if cut == 0 and newlines > 1:
            raise CorruptFile("the trailer line is too long", key=self.name)
        # Every newline ends a session line, except the trailer's own.
        self.count = newlines - (1 if tail.endswith(b"\n") else 0)
        self._finish(tail[cut:])

    @property
    def file_sha256(self) -> str:
        return self._raw.sha256.hexdigest()

    @property
    def file_size(self) -> int:
        return self._raw.size


def v1_sessions(sessions: list[RawSession]) -> list[RawSession]:
    """Sessions of a version 1 snapshot in the server's format: ``{"id": <id>, ...state}``
    (the id put first by hand, or by a parse where the state has an ``"id"`` of its own)."""
    out = []
    for sid, state, expires in sessions:
        if b'"id"' in state:
            text = session_json(sid, {**json.loads(state), "id": sid})
        else:
            quoted = json.dumps(sid, ensure_ascii=False).encode()
            rest = state[1:].lstrip()
            text = b'{"id":' + quoted + (b"" if rest.startswith(b"}") else b",") + rest
        out.append((sid, text, expires))
    return out


def _json_line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def parse_json_line(line: bytes, name: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CorruptFile(f"the {what} line is not JSON", key=name) from None
    if not isinstance(obj, dict):
        raise CorruptFile(f"the {what} line is not a JSON object", key=name)
    return obj
