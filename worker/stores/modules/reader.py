"""Readers: streaming reads that survive a broken transfer (reopened where they stopped, same
version), an SDK's streaming reader or an iterator of chunks read as a file with the
provider's errors mapped."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from worker.errors import TransientStoreError

#: ``open_read(offset, version)``: the backend's reader of one object from ``offset``.
OpenRead = Callable[[int, "str | None"], BinaryIO]
#: ``retried(fn)``: ``fn()`` under the store's retry policy, its errors naming the object.
Retried = Callable[[Callable[[], Any]], Any]

#: What a provider's ``_errors(bucket, key)`` gives: its exceptions mapped to worker.errors.
Errors = Callable[[], contextlib.AbstractContextManager[None]]


class FileLike:
    """What every reader here shares with a binary file opened for reading."""

    def close(self) -> None:
        pass

    def readable(self) -> bool:
        return True

    def __enter__(self) -> FileLike:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResumingReader(FileLike):
    """A backend reader that, on a transient error, reopens at the current offset (same
    version) under the store's retry policy."""

    def __init__(self, open_read: OpenRead, retried: Retried) -> None:
        self._open_read = open_read
        self._retried = retried
        self._reader: BinaryIO | None = None
        self._version: str | None = None
        self._size: int | None = None
        self._pos = 0

    def reopen(self) -> None:
        """(Re)open at the current offset, under the retry policy."""
        def open_at() -> BinaryIO:
            return self._open_read(self._pos, self._version)

        reader: BinaryIO = self._retried(open_at)
        if self._version is None:
            self._version = getattr(reader, "version", None)
            self._size = getattr(reader, "size", None)
        self._reader = reader

    def read(self, n: int = -1) -> bytes:
        def attempt() -> bytes:
            if self._reader is None:
                if self._size is not None and self._pos >= self._size:
                    return b""
                self._reader = self._open_read(self._pos, self._version)
            try:
                return self._reader.read(n)
            except TransientStoreError:
                self._drop()
                raise

        data: bytes = self._retried(attempt)
        self._pos += len(data)
        return data

    def _drop(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = None

    def close(self) -> None:
        self._drop()


class MappedReader(FileLike):
    """An SDK's streaming reader (anything with ``read(n)``) read as a file, its exceptions
    (a reset mid-body, say) mapped by ``errors()``; ``close`` closes it if it can be."""

    version: str | None = None
    size: int = 0

    def __init__(self, source: Any, errors: Errors) -> None:
        self._source = source
        self._errors = errors

    def read(self, n: int | None = -1) -> bytes:
        with self._errors():
            return bytes(self._source.read(n if n is not None and n >= 0 else -1))

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


class ChunkReader(FileLike):
    """An iterator of byte chunks read as a file; ``errors()`` maps the SDK's exceptions
    raised while it is consumed (a reset mid-body becomes a transient error)."""

    version: str | None = None
    size: int = 0

    def __init__(
        self,
        chunks: Iterable[bytes],
        errors: Errors,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        self._source = chunks
        self._chunks = iter(chunks)
        self._buffer = b""
        self._errors = errors
        self._on_close = on_close

    def read(self, n: int = -1) -> bytes:
        with self._errors():
            while n < 0 or len(self._buffer) < n:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buffer += chunk
        if n < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def close(self) -> None:
        close = self._on_close or getattr(self._source, "close", None)
        if close is not None:
            close()
