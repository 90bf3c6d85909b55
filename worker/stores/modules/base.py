"""The module-store contract: what the mirror, `pull`, snapshots and `config check` rely on.

Two layers, as in fsspec's spec/implementations split:

* :class:`ObjectBackend` -- the primitives one provider implements (one small module each under
  ``worker/stores/modules/``): list/create/delete buckets, list objects page by page with size,
  time and checksum, streaming get, streaming put, batched delete, server-side copy.  A provider
  maps its SDK's errors to :mod:`worker.errors` in one place and never lets an SDK exception out.
* :class:`~worker.stores.modules.store.ModuleStore` -- written once above any backend: container
  naming and key rules (NFC, per-store limits), ``MODULESTORE.bucket`` prefix mode, the tenacity
  retry policy, upload verification.  Everything outside ``stores/modules`` talks to a
  ``ModuleStore``, never to a backend.

Keys are relative to a container (one app), ``/``-separated, NFC-normalised.

Checksums: :attr:`ObjectInfo.md5` is set when the store reports the content's MD5 in a listing
(plain S3 PUT ETag, GCS ``md5Hash``, the Azure ``Content-MD5`` we set on every upload, a plain
Swift object's ETag).  Where it is not (S3 multipart, Swift SLO), :attr:`ObjectInfo.etag` is the
checksum the upload left: the mirror's local index keeps it next to the file's MD5 (the
``ObjectInfo`` returned by a put always carries both), so a later listing is matched without one
request per object.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, Protocol, TypeVar

from worker.errors import IntegrityError, NotFound, TransientStoreError
from worker.stores.modules.checksum import crc_extend

#: Files above this size are uploaded in parts (multipart, blocks, resumable, SLO segments).
MULTIPART_THRESHOLD = 8 * 1024 * 1024
#: Size of one part; parts are read from disk one at a time, never the whole file.
PART_SIZE = 8 * 1024 * 1024


#: Bytes per read when hashing a file (into one reused buffer).
HASH_BLOCK = 1024 * 1024
#: How many contents' CRC :func:`crc32_of` remembers.
_CRC_MEMO = 256
_crcs: dict[str, int] = {}
_crcs_lock = threading.Lock()
#: Files hashed at once in this process: one per core.  Hashing is CPU-bound (MD5 releases the
#: GIL), so more at once finish no sooner in all; fewer at once finish the first files sooner,
#: and their uploads start while the rest are hashed instead of after every file is.
_hashing = threading.BoundedSemaphore(max(1, len(os.sched_getaffinity(0))))


def stream_md5(f: BinaryIO) -> str:
    """Hex MD5 of an open file from its start, read into one reused buffer.

    The content's CRC (:mod:`~worker.stores.modules.checksum`: CRC-32C, ~1/25 of MD5's cost)
    is computed in the same pass and remembered under that MD5 (:func:`crc32_of`): a backend
    streaming the file afterwards can check that it is still sending the content hashed here
    with a CRC instead of a second MD5.
    """
    f.seek(0)
    digest = hashlib.md5(usedforsecurity=False)
    crc = 0
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with _hashing:
        while n := f.readinto(view):  # type: ignore[attr-defined]
            block = view[:n]
            digest.update(block)
            crc = crc_extend(crc, block)
    md5 = digest.hexdigest()
    with _crcs_lock:
        _crcs.pop(md5, None)
        _crcs[md5] = crc
        while len(_crcs) > _CRC_MEMO:
            del _crcs[next(iter(_crcs))]
    return md5


def crc32_of(md5_hex: str) -> int | None:
    """The CRC of the content whose MD5 is ``md5_hex``, if :func:`stream_md5` hashed it
    recently (a function of the content, so true whichever file it came from)."""
    with _crcs_lock:
        return _crcs.get(md5_hex)


def checked_parts(body: BinaryIO, size: int, part: int, md5_hex: str) -> Iterator[bytes]:
    """``size`` bytes of ``body`` in parts of at most ``part`` bytes, for an upload in parts.
    After the last part (before the caller commits the upload): :class:`SourceChanged` unless
    every byte was there and they are the content ``md5_hex`` names, checked by CRC when
    :func:`stream_md5` hashed that content just before, else by MD5."""
    want_crc = crc32_of(md5_hex)
    whole = hashlib.md5(usedforsecurity=False) if want_crc is None else None
    crc = 0
    remaining = size
    while remaining > 0:
        chunk = body.read(min(part, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        if whole is None:
            crc = crc_extend(crc, chunk)
        else:
            whole.update(chunk)
        yield chunk
    same = crc == want_crc if whole is None else whole.hexdigest() == md5_hex
    if remaining or not same:
        raise SourceChanged("the local file changed during the upload")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a listing reports it (no request per object is ever needed)."""

    key: str
    size: int
    #: Last-modified time, epoch seconds.
    modified: float
    #: Hex MD5 of the whole content when the store tells it, else None (multipart / SLO).
    #: The info returned by a put always has it: the MD5 of what was uploaded and verified.
    md5: str | None
    #: The store's opaque version token (ETag, generation, ...) as listed; the mirror's local
    #: index remembers it next to the file's MD5 so a later listing can be matched without MD5.
    etag: str | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``token`` continues it (None: the listing is complete)."""

    items: list[ObjectInfo]
    token: str | None


class ContainerNotFound(NotFound):
    """The bucket or container itself does not exist (as opposed to one object)."""


class SourceChanged(IntegrityError):
    """The bytes read from the local file do not hash to the MD5 the upload was started with:
    the file changed underneath the upload, which was abandoned before becoming visible."""


T = TypeVar("T")


class Runner(Protocol):
    """Runs one request under the store's retry policy (uploads in parts retry each part)."""

    def __call__(self, fn: Callable[..., T], *args: Any) -> T: ...


def run_once(fn: Callable[..., T], *args: Any) -> T:
    """The runner for a put that is retried as a whole by the caller."""
    return fn(*args)


class VerifyingReader:
    """Wraps the upload body: hashes the bytes as the SDK reads them and, when the last byte
    is read, raises :class:`SourceChanged` unless they hash to the expected MD5 (or if the
    file ends early).  The SDK sees the error before it commits the object, so a file edited
    during an upload in parts never becomes visible half old, half new.  ``seek(0)`` (an SDK
    retry) starts the hash again.  ``by_crc``: the bytes get the CRC instead of the MD5 (by
    default when :func:`stream_md5` hashed this content just before and knows its CRC)."""

    def __init__(
        self, body: BinaryIO, size: int, md5_hex: str, *, by_crc: bool | None = None
    ) -> None:
        self._body = body
        self._size = size
        self._md5 = md5_hex
        self._want_crc = crc32_of(md5_hex)
        self._by_crc = self._want_crc is not None if by_crc is None else by_crc
        self._hash = hashlib.md5(usedforsecurity=False)
        self._crc = 0
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        want = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        data = self._body.read(want) if want > 0 else b""
        if not self._by_crc:
            self._hash.update(data)
        else:
            self._crc = crc_extend(self._crc, data)
        self._pos += len(data)
        if (want > 0 and not data) or (self._pos == self._size and want > 0):
            self._verify()
        return data

    def _verify(self) -> None:
        same = (
            self._crc == self._want_crc if self._by_crc
            else self._hash.hexdigest() == self._md5
        )
        if self._pos != self._size or not same:
            raise SourceChanged("the local file changed during the upload")

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) not in ((0, 0), (0, 1), (0, 2)):
            raise OSError("only rewinding is supported")
        if whence == 0:
            self._body.seek(0)
            self._hash = hashlib.md5(usedforsecurity=False)
            self._crc = 0
            self._pos = 0
        elif whence == 2:
            return self._size
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._size


def given_md5(md5_hex: str | None, store: str) -> str:
    """The MD5 a backend that does not hash while sending was given (it always is one)."""
    if md5_hex is None:
        raise TypeError(f"a put into the {store} store needs the content's MD5 first")
    return md5_hex


def file_status(f: BinaryIO) -> tuple[int, int, int, int]:
    """What says a file changed: size, mtime and ctime (ns) and inode of an open file."""
    st = os.fstat(f.fileno())
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class HashingReader(VerifyingReader):
    """The upload body of a file not hashed before (:meth:`ObjectBackend.hashes_while_sending`):
    it checksums the bytes as they are sent and, when the last byte is read (before it leaves),
    raises :class:`SourceChanged` if the file ended early or its status (:func:`file_status`)
    is not the one it had when the read began.  One read of the file then does for both.

    ``crc_only``: the bytes get only the CRC (:attr:`crc`, CRC-32C when
    :data:`~worker.stores.modules.checksum.IS_CRC32C`), for a store that reports the CRC-32C and
    the MD5 of what it stored: the CRC proves the store holds these bytes, so its MD5 is theirs
    (the MD5, 1.7 ms per MB, is then computed once, by the store).  Otherwise they are MD5ed
    (:attr:`md5`) and the store's MD5 must equal it."""

    def __init__(self, body: BinaryIO, size: int, crc_only: bool = False) -> None:
        super().__init__(body, size, "", by_crc=crc_only)
        self._status = file_status(body)

    @property
    def crc_only(self) -> bool:
        return self._by_crc

    @property
    def md5(self) -> str | None:
        return None if self.crc_only else self._hash.hexdigest()

    @property
    def crc(self) -> int:
        return self._crc

    def check_crc32c(self, reported: str | None, store: str, container: str, key: str) -> None:
        """The store's CRC-32C of what it holds (base64, big-endian, as GCS reports it) must be
        the one of the bytes sent; else :class:`TransientStoreError` (the upload is redone)."""
        stored = int.from_bytes(base64.b64decode(reported), "big") if reported else None
        if stored != self._crc:
            raise TransientStoreError(
                f"stored CRC-32C {stored} differs from the one of the bytes sent, {self._crc}",
                store=store, container=container, key=key,
            )

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) == (0, 0):
            self._status = file_status(self._body)
        return super().seek(offset, whence)

    def _verify(self) -> None:
        if self._pos != self._size or file_status(self._body) != self._status:
            raise SourceChanged("the local file changed during the upload")


class ObjectBackend(Protocol):
    """Primitives of one provider.  ``bucket`` is a bucket (S3, GCS) or container (Azure, Swift).

    Errors are :mod:`worker.errors` types only (a missing bucket is :class:`ContainerNotFound`,
    a missing object :class:`~worker.errors.NotFound`, throttling/5xx/timeouts/resets
    :class:`~worker.errors.TransientStoreError`).  Backends do not retry beyond what their SDK
    must do to stay consistent: the store above applies the one retry policy.
    """

    #: Provider name as in the configuration (``amazon``, ``google``, ... or ``file``).
    name: ClassVar[str]
    supports_bucket_creation: ClassVar[bool]
    supports_server_side_copy: ClassVar[bool]

    def bucket_name_problem(self, bucket: str) -> str | None:
        """Why this store cannot hold a bucket/container of that name, or None if it can."""
        ...

    def key_problem(self, key: str) -> str | None:
        """Why this store cannot hold an object of that (full) key, or None if it can."""
        ...

    def list_buckets(self) -> list[str]: ...
    def create_bucket(self, bucket: str) -> None:
        """Create it; :class:`~worker.errors.AlreadyExists` if it exists."""
        ...

    def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket."""
        ...

    def list_page(self, bucket: str, prefix: str, token: str | None) -> Page: ...
    def list_prefixes(self, bucket: str, prefix: str) -> list[str]:
        """Common prefixes (ending in ``/``) one level below ``prefix``."""
        ...

    def open_read(
        self, bucket: str, key: str, offset: int = 0, version: str | None = None
    ) -> BinaryIO:
        """A streaming reader from byte ``offset``.  The reader has ``version`` (the object's
        ETag or generation) and ``size`` (the whole object's) attributes; given ``version``,
        a different version of the object is :class:`~worker.errors.IntegrityError`, so a
        read resumed after a broken transfer never mixes two versions."""
        ...
    def hashes_while_sending(self, size: int) -> bool:
        """Whether a put of ``size`` bytes may be given no MD5 (``md5_hex=None``): the backend
        then hashes the bytes as it sends them (:class:`HashingReader`), the store checks the
        result, and the returned info's ``md5`` is that of what was sent and stored."""
        ...

    def put(
        self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str | None,
        run: Runner,
    ) -> ObjectInfo:
        """Upload ``size`` bytes read sequentially from ``body``, never visible half-written.

        ``md5_hex`` is the MD5 the bytes must have: sent for the store to check where it can,
        and for uploads in parts checked against a running hash before the object is committed
        (:class:`SourceChanged` when they differ).  It is None only where
        :meth:`hashes_while_sending` said so.  Each request goes through ``run`` (which
        retries it for uploads in parts; a small put is retried whole by the caller and gets
        :func:`run_once`).  Returns the info with the store's ETag.
        """
        ...

    def delete_many(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete keys, batched where the store allows; a key already gone is not an error."""
        ...

    def copy(self, bucket: str, src_key: str, dst_key: str) -> ObjectInfo: ...
    def close(self) -> None: ...
