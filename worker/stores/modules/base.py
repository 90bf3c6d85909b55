"""The module-store contract: what the mirror, `pull`, snapshots and `config check` rely on.

Two layers, as in fsspec's spec/implementations split:

* :class:`ObjectBackend` -- the primitives one provider implements (one small module each under
  ``worker/stores/modules/``): list/create/delete buckets, list objects with size, time and
  checksum, streaming get, streaming put, batched delete, server-side copy.  A provider maps its
  SDK's errors to :mod:`worker.errors` in one place and never lets an SDK exception out.
* :class:`ModuleStore` (``worker/stores/modules/store.py``) -- written once above any backend:
  container naming and key rules (NFC, per-store limits), ``MODULESTORE.bucket`` prefix mode,
  the tenacity retry policy, upload verification.  Everything outside ``stores/modules`` talks
  to a ``ModuleStore``, never to a backend.

Keys are relative to a container (one app), ``/``-separated, NFC-normalised.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, ClassVar, Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a listing reports it (no request per object is ever needed)."""

    key: str
    size: int
    #: Last-modified time, epoch seconds.
    modified: float
    #: Hex MD5 of the whole content when the listing tells it (a plain upload's ETag, GCS
    #: md5Hash, Azure Content-MD5 that we set), else None (multipart / SLO / composite).
    md5: str | None
    #: The store's opaque version token (ETag, generation, ...) as listed; the mirror's local
    #: index remembers it next to the file's MD5 so a later listing can be matched without MD5.
    etag: str | None


class ObjectBackend(Protocol):
    """Primitives of one provider.  ``bucket`` is a bucket (S3, GCS) or container (Azure, Swift)."""

    #: Provider name as in the configuration (``amazon``, ``google``, ... or ``file``).
    name: ClassVar[str]
    supports_bucket_creation: ClassVar[bool]
    supports_server_side_copy: ClassVar[bool]
    #: Longest key in bytes (UTF-8) the store accepts.
    max_key_bytes: ClassVar[int]

    def list_buckets(self) -> list[str]: ...
    def bucket_exists(self, bucket: str) -> bool: ...
    def create_bucket(self, bucket: str) -> None: ...
    def delete_bucket(self, bucket: str) -> None: ...
    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def open_read(self, bucket: str, key: str) -> BinaryIO: ...
    def put(self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str) -> ObjectInfo:
        """Upload ``size`` bytes from ``body`` (seekable), never visible half-written; the
        returned info carries the ETag the store gave.  The store checks ``md5_hex`` where it can."""
        ...

    def delete_many(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete keys, batched where the store allows; a key already gone is not an error."""
        ...

    def copy(self, bucket: str, src_key: str, dst_key: str) -> ObjectInfo: ...
    def close(self) -> None: ...
