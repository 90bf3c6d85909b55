"""``ModuleStore``: the one contract over every backend, written once.

Container and key names are normalised to NFC and checked against the backend's rules (a name
the store cannot hold is :class:`~worker.errors.InvalidName`, never changed); with
``MODULESTORE.bucket`` set, containers are key prefixes ``<container>/`` inside that bucket.
Every backend call runs under the one tenacity policy (:data:`worker.retry.STORE_RETRY`), logged
with store, container and key.  Uploads are verified against the local content's MD5 and redone
when the source file changed underneath them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

import worker.stores.modules.names as names
from worker.errors import (
    AlreadyExists,
    IntegrityError,
    StillChanging,
    StoreError,
)
from worker.retry import STORE_RETRY, RetryPolicy, Where
from worker.stores.modules.base import (
    MULTIPART_THRESHOLD,
    ContainerNotFound,
    ObjectBackend,
    ObjectInfo,
    Page,
    SourceChanged,
    run_once,
    stream_md5,
)
from worker.stores.modules.layout import Layout
from worker.stores.modules.reader import ResumingReader

T = TypeVar("T")

#: How often an upload is redone because its source kept changing, before giving up.
SOURCE_ATTEMPTS = 4
#: Keys per delete batch handed to the backend (S3's DeleteObjects limit).
DELETE_BATCH = 1000


class ModuleStore(Layout):
    """Containers (apps) of objects in one configured store."""

    def __init__(
        self,
        backend: ObjectBackend,
        *,
        provider: str | None = None,
        bucket: str | None = None,
        retry: RetryPolicy = STORE_RETRY,
        auto_create: bool = True,
        config_root: str | None = None,
    ) -> None:
        self.backend = backend
        self.provider: str = provider or backend.name
        self.bucket = bucket
        #: ``MODULESTORE.configRoot``: the container of the server's store files (cloud).
        self.config_root = config_root
        self.retry = retry
        #: Create a missing container when an upload finds it missing (where the store can).
        self.auto_create = auto_create
        if bucket is not None:
            self._check_bucket(bucket)

    @property
    def supports_server_side_copy(self) -> bool:
        return self.backend.supports_server_side_copy

    @property
    def writes_locally(self) -> bool:
        """Whether a put is a write to a local folder (a few system calls, nothing to wait
        on), not a request to a server: the mirror then sends small files without a pool."""
        return bool(getattr(self.backend, "writes_locally", False))

    def __repr__(self) -> str:
        mode = f" bucket={self.bucket!r}" if self.bucket else ""
        return f"<ModuleStore {self.provider}{mode}>"

    # --- the retry boundary ----------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: object, container: str, key: str = "") -> T:
        what = Where(self.provider, container or None, key or None)
        try:
            return self.retry.call(fn, *args, what=what)
        except StoreError as exc:
            # Name what the user knows (the app container and its key), not the bucket layout.
            exc.store = self.provider
            exc.container = container
            exc.key = key or None
            raise

    # --- containers ------------------------------------------------------------------------

    def containers(self) -> list[str]:
        """App container names, sorted (the ``configRoot`` container is not an app's)."""
        if self.bucket is None:
            found = self._call(self.backend.list_buckets, container="")
        else:
            prefixes = self._call(
                self.backend.list_prefixes, self.bucket, "", container=self.bucket
            )
            found = [p.rstrip("/") for p in prefixes]
        return sorted(c for c in found if c != self.config_root)

    def ensure_container(self, container: str) -> None:
        """Create the container if it is missing (where the store allows); exists is fine."""
        bucket, prefix = self._locate(container)
        if prefix and self.bucket is not None:
            return  # a prefix needs nothing; the bucket itself is the user's
        if not self.backend.supports_bucket_creation:
            return
        with contextlib.suppress(AlreadyExists):
            self._call(self.backend.create_bucket, bucket, container=container)

    def delete_container(self, container: str) -> None:
        """Delete every object of the container, then the container itself."""
        bucket, prefix = self._locate(container)
        try:
            keys = [info.key for info in self._list_full(bucket, prefix, container)]
        except ContainerNotFound:
            return
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            self._call(self.backend.delete_many, bucket, batch, container=container)
        if not prefix:
            with contextlib.suppress(ContainerNotFound):
                self._call(self.backend.delete_bucket, bucket, container=container)

    # --- listing ---------------------------------------------------------------------------

    def list(self, container: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` with size, time and checksum; keys relative to the container.

        A missing container raises :class:`ContainerNotFound`.
        """
        bucket, base = self._locate(container)
        full_prefix = base + names.nfc(prefix)
        cut = len(base)
        for info in self._list_full(bucket, full_prefix, container):
            yield dataclasses.replace(info, key=info.key[cut:]) if cut else info

    def bucket_page(self, token: str | None) -> Page:
        """One page of the listing of the whole ``MODULESTORE.bucket`` (keys as stored)."""
        assert self.bucket is not None
        return self._call(self.backend.list_page, self.bucket, "", token, container=self.bucket)

    def prefix_of(self, container: str) -> str:
        """The key prefix of ``container`` in its bucket ("" with a bucket per container)."""
        return self._locate(container)[1]

    def _list_full(self, bucket: str, prefix: str, container: str) -> Iterator[ObjectInfo]:
        token: str | None = None
        while True:
            page = self._call(self.backend.list_page, bucket, prefix, token, container=container)
            yield from page.items
            if page.token is None:
                return
            token = page.token

    # --- objects ---------------------------------------------------------------------------

    def open(self, container: str, key: str) -> BinaryIO:
        """A streaming reader of the object; close it when done.  A transfer broken midway
        (reset, timeout) is resumed from where it stopped, pinned to the version first read,
        under the retry policy; if the object was replaced meanwhile, IntegrityError."""
        bucket, base = self._locate(container)
        full = self._key(container, base, key)
        reader = ResumingReader(
            lambda offset, version: self.backend.open_read(bucket, full, offset, version),
            lambda fn: self._call(fn, container=container, key=key),
        )
        reader.reopen()
        return cast(BinaryIO, reader)

    def read_bytes(self, container: str, key: str) -> bytes:
        """The whole object in memory (read as :meth:`open` does)."""
        with self.open(container, key) as f:
            return f.read()

    def put_bytes(self, container: str, key: str, data: bytes) -> ObjectInfo:
        """Upload ``data`` (verified by MD5)."""
        bucket, base = self._locate(container)
        full = self._key(container, base, key)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return self._put(bucket, full, container, key, _bytes_body(data), len(data), md5)

    def put_file(
        self, container: str, key: str, source: Path | BinaryIO, md5_hex: str | None = None
    ) -> ObjectInfo:
        """Upload a local file, streaming, verified against its MD5, never visible half-written.

        ``source`` is a path, or a file already opened (the mirror opens module files itself,
        safely: :mod:`worker.mirror.safeopen`); an open file is read from its start and left open.
        ``md5_hex`` (the caller's hash of the file, if it has one) saves a read of large files;
        the bytes actually sent are hashed either way.  If the file changes during the upload
        (``fstat`` before and after, or a hash mismatch) the upload is redone.  The returned
        info's ``md5`` is that of the content uploaded.
        """
        if isinstance(source, Path):
            with open(source, "rb") as opened:
                return self.put_file(container, key, opened, md5_hex)
        bucket, base = self._locate(container)
        full = self._key(container, base, key)
        f = source
        for _ in range(SOURCE_ATTEMPTS):
            before = os.fstat(f.fileno())
            try:
                f.seek(0)
                if before.st_size <= MULTIPART_THRESHOLD:
                    data = f.read()
                    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
                    info = self._put(
                        bucket, full, container, key, _bytes_body(data), len(data), md5
                    )
                else:
                    # Hashed first (MD5 and CRC in one read), unless the backend MD5s what it
                    # sends (one read: GCS) and the store reports the MD5 of what it holds.
                    known = md5_hex or (
                        None if self.backend.hashes_while_sending(before.st_size)
                        else _stream_md5(f)
                    )
                    md5_hex = None  # on a redo, hash again

                    def rewind(f: BinaryIO = f) -> BinaryIO:
                        f.seek(0)
                        return f

                    info = self._put(bucket, full, container, key, rewind, before.st_size, known)
            except SourceChanged:
                continue
            if _same(before, os.fstat(f.fileno())):
                return info
        name = getattr(f, "name", None)  # a path, or the descriptor's number
        raise StillChanging(
            f"{name if isinstance(name, str) else key} kept changing during "
            f"{SOURCE_ATTEMPTS} uploads",
            store=self.provider,
            container=container,
            key=key,
        )

    def _put(
        self,
        bucket: str,
        full: str,
        container: str,
        key: str,
        body: Callable[[], BinaryIO],
        size: int,
        md5: str | None,
    ) -> ObjectInfo:
        def run(fn: Callable[..., T], *args: object) -> T:
            return self._call(fn, *args, container=container, key=key)

        def attempt() -> ObjectInfo:
            if size <= MULTIPART_THRESHOLD:
                # One request: retried whole, each attempt from byte 0 of a fresh body.
                return run(lambda: self.backend.put(bucket, full, body(), size, md5, run_once))
            # In parts: the backend retries each request through ``run``.
            return self.backend.put(bucket, full, body(), size, md5, run)

        try:
            info = attempt()
        except ContainerNotFound:
            if not (self.auto_create and self.backend.supports_bucket_creation and not self.bucket):
                raise
            self.ensure_container(container)
            info = attempt()
        if md5 is None:  # hashed while sent: the backend's info carries the MD5 it checked
            md5 = info.md5
        if md5 is None or (info.md5 is not None and info.md5 != md5):
            raise IntegrityError(
                f"the store reports MD5 {info.md5}, the content has {md5}",
                store=self.provider,
                container=container,
                key=key,
            )
        return dataclasses.replace(info, key=key, md5=md5)

    def delete(self, container: str, keys: Iterable[str]) -> None:
        """Delete keys in batches; keys already gone are fine."""
        bucket, base = self._locate(container)
        batch: list[str] = []
        for key in keys:
            batch.append(self._key(container, base, key))
            if len(batch) == DELETE_BATCH:
                self._call(self.backend.delete_many, bucket, batch, container=container)
                batch = []
        if batch:
            self._call(self.backend.delete_many, bucket, batch, container=container)

    def copy(self, container: str, src_key: str, dst_key: str) -> ObjectInfo:
        """Copy an object inside a container: server-side where the store can, else through
        a temporary file."""
        bucket, base = self._locate(container)
        src = self._key(container, base, src_key)
        dst = self._key(container, base, dst_key)
        if self.backend.supports_server_side_copy:
            info = self._call(self.backend.copy, bucket, src, dst, container=container, key=src_key)
            return dataclasses.replace(info, key=dst_key)
        with tempfile.TemporaryDirectory(prefix="synchro-copy-") as tmp:
            local = Path(tmp) / "object"
            with self.open(container, src_key) as reader, open(local, "wb") as out:
                shutil.copyfileobj(reader, out, 1024 * 1024)
            return self.put_file(container, dst_key, local)

    # --- health ----------------------------------------------------------------------------

    def check(self) -> str:
        """Does the store answer and accept a write?  Writes, reads back and deletes a probe
        object (in a probe container that is removed again, or under a probe prefix of the
        configured bucket).  Returns a short description; raises worker.errors on failure."""
        count = len(self.containers())
        probe_container = f"synchro-sync-check-{uuid.uuid4().hex[:12]}"
        created = False
        if self.bucket is None:
            self.ensure_container(probe_container)
            created = True
        try:
            payload = f"synchro-sync check {uuid.uuid4()}".encode()
            self.put_bytes(probe_container, "probe.txt", payload)
            if self.read_bytes(probe_container, "probe.txt") != payload:
                raise IntegrityError(
                    "probe object read back differently", store=self.provider,
                    container=probe_container, key="probe.txt",
                )
        finally:
            if created:
                self.delete_container(probe_container)
            else:
                self.delete(probe_container, ["probe.txt"])
        where = f"bucket {self.bucket}, " if self.bucket else ""
        return f"{self.provider}: {where}{count} container(s); write, read and delete ok"

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> ModuleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return _stream_md5(f)


def _stream_md5(f: BinaryIO) -> str:
    """Hex MD5 of an open file from its start (also remembers its CRC: base.stream_md5)."""
    return stream_md5(f)


def _bytes_body(data: bytes) -> Callable[[], BinaryIO]:
    """A fresh reader of ``data`` per attempt (a retried request starts from byte 0)."""
    return lambda: io.BytesIO(data)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
        b.st_ino,
    )
