"""Verifying a snapshot: its frames decompressed and counted while it is written, in a thread
of their own (:class:`FrameChecker`), then the stored bytes re-read and hashed
(:func:`stored_digest`); or a stored snapshot re-read whole, frame by frame, hashed in order,
decompressed and counted on two threads (:func:`check_frames`)."""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from worker.backups.format import READ_SIZE, TAIL, parse_json_line
from worker.errors import CorruptFile


@dataclass
class FrameCheck:
    """What :func:`check_frames` read back."""

    count: int
    header: dict[str, Any]
    trailer: dict[str, Any]
    file_sha256: str
    size: int


def check_frames(source: BinaryIO, frames: list[int], name: str) -> FrameCheck:
    """Re-read a snapshot frame by frame (``frames``: compressed end offsets, as written):
    hash the stored bytes in order, and decompress and count frames on two threads (zstd
    releases the GIL), two frames in flight.  Every frame must decompress completely (zstd
    checks its content checksum); the first starts with the header, the last ends with the
    trailer.  Memory: two frames at a time."""
    digest = hashlib.sha256()
    newlines = 0
    head = tail = b""
    size = 0

    with ThreadPoolExecutor(2, thread_name_prefix="snapshot-verify") as pool:
        pending: deque[Future[tuple[int, bytes, bytes]]] = deque()

        def collect() -> None:
            nonlocal newlines, head, tail
            n, first_line, end = pending.popleft().result()
            newlines += n
            head = head or first_line
            tail = end or tail

        for i, end_offset in enumerate(frames):
            data = read_exactly(source, end_offset - size)
            if len(data) != end_offset - size:
                raise CorruptFile("truncated: shorter than its manifest says", key=name)
            digest.update(data)
            size = end_offset
            pending.append(pool.submit(_inflate, data, i == 0, i == len(frames) - 1, name))
            if len(pending) >= 2:
                collect()
        while pending:
            collect()
    if source.read(1):
        raise CorruptFile("longer than its manifest says", key=name)
    return _checked(head, tail, newlines, digest.hexdigest(), size, name)


def _inflate(data: bytes, first: bool, last: bool, name: str) -> tuple[int, bytes, bytes]:
    """One whole zstd frame: (newlines, its first line if ``first``, its end if ``last``)."""
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = dobj.decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptFile(f"not a readable zstd stream: {exc}", key=name) from None
    if not dobj.eof or dobj.unused_data:
        raise CorruptFile("a zstd frame is truncated or out of place", key=name)
    return (out.count(b"\n"), out[: out.find(b"\n") + 1] if first else b"",
            out[-TAIL:] if last else b"")


def _checked(head: bytes, tail: bytes, newlines: int, sha: str, size: int, name: str) -> FrameCheck:
    if not head.endswith(b"\n") or not tail.endswith(b"\n"):
        raise CorruptFile("no header or no trailer line", key=name)
    header = parse_json_line(head[:-1], name, "header")
    trailer = parse_json_line(tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 : -1], name, "trailer")
    if trailer.get("end") is not True or not isinstance(trailer.get("count"), int):
        raise CorruptFile("truncated: the last line is not the trailer", key=name)
    return FrameCheck(newlines - 2, header, trailer, sha, size)


class FrameChecker:
    """Check a snapshot's frames as the writer completes them, in a thread of its own (zstd
    releases the GIL), overlapped with the fetch of the next sessions: each frame, exactly the
    bytes written to the file, must decompress whole (zstd checks its content checksum); the
    lines are counted, the header kept from the first and the trailer from the last.  With
    ``fd`` (the file being written), each checked frame is also synced to disk, so the final
    fsync has little left to do.  At most ``depth`` frames wait."""

    def __init__(self, name: str, fd: int | None = None, depth: int = 2) -> None:
        self.name = name
        self._fd = fd
        self._depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="snapshot-verify")
        self._pending: deque[Future[tuple[int, bytes, bytes]]] = deque()
        self._frames = 0
        self._newlines = 0
        self._head = self._tail = b""

    def _check(self, data: bytes, first: bool, last: bool) -> tuple[int, bytes, bytes]:
        out = _inflate(data, first, last, self.name)
        if self._fd is not None:
            os.fdatasync(self._fd)
        return out

    def add(self, frame: bytes, last: bool = False) -> None:
        """A frame as written (the writer has handed its bytes to the file)."""
        self._pending.append(self._pool.submit(self._check, frame, self._frames == 0, last))
        self._frames += 1
        while len(self._pending) > self._depth:
            self._collect()

    def _collect(self) -> None:
        n, first_line, end = self._pending.popleft().result()
        self._newlines += n
        self._head = self._head or first_line
        self._tail = end or self._tail

    def result(self, file_sha256: str, size: int) -> FrameCheck:
        """What the frames held (after the last one was added), with the writer's file sums."""
        try:
            while self._pending:
                self._collect()
        finally:
            self.close()
        return _checked(self._head, self._tail, self._newlines, file_sha256, size, self.name)

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


def stored_digest(source: BinaryIO) -> tuple[str, int]:
    """(sha256, size) of a stored file, re-read to its end."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(READ_SIZE):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def read_exactly(source: BinaryIO, n: int) -> bytes:
    """``n`` bytes, or fewer only at the end: a network stream may return less per read."""
    parts = []
    while n > 0:
        chunk = source.read(min(n, READ_SIZE))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)
