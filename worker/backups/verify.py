"""Verifying a snapshot as stored: re-read frame by frame, hashed in order, decompressed and
counted on two threads (:func:`check_frames`)."""

from __future__ import annotations

import hashlib
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

    def inflate(data: bytes, first: bool, last: bool) -> tuple[int, bytes, bytes]:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        try:
            out = dobj.decompress(data)
        except zstandard.ZstdError as exc:
            raise CorruptFile(f"not a readable zstd stream: {exc}", key=name) from None
        if not dobj.eof or dobj.unused_data:
            raise CorruptFile("a zstd frame is truncated or out of place", key=name)
        return (out.count(b"\n"), out[: out.find(b"\n") + 1] if first else b"",
                out[-TAIL:] if last else b"")

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
            pending.append(pool.submit(inflate, data, i == 0, i == len(frames) - 1))
            if len(pending) >= 2:
                collect()
        while pending:
            collect()
    if source.read(1):
        raise CorruptFile("longer than its manifest says", key=name)
    if not head.endswith(b"\n") or not tail.endswith(b"\n"):
        raise CorruptFile("no header or no trailer line", key=name)
    header = parse_json_line(head[:-1], name, "header")
    trailer = parse_json_line(tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 : -1], name, "trailer")
    if trailer.get("end") is not True or not isinstance(trailer.get("count"), int):
        raise CorruptFile("truncated: the last line is not the trailer", key=name)
    return FrameCheck(newlines - 2, header, trailer, digest.hexdigest(), size)


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
