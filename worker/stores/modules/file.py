"""``FileModuleStore``: a local folder (or a mounted share), one sub-folder per container.

Keys read: ``directory`` (default ``synchro-apps``; the worker's default mirror is
``synchro-mirror``).  Writes go to a temporary file in the target folder, then ``os.replace``,
so a reader sees the old or the new content, never a mix.  The content's MD5 is kept in a user
extended attribute together with the file's mtime, so a listing reports it without reading the
file; where the filesystem has no user xattrs, the listing's ``etag`` (mtime and size) is what
the mirror's index matches.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from worker.errors import AccessDenied, AlreadyExists, IntegrityError, NotFound, StoreError
from worker.stores.modules import names
from worker.stores.modules.base import (
    ContainerNotFound,
    ObjectInfo,
    Page,
    Runner,
    SourceChanged,
    given_md5,
)

_XATTR = "user.synchro.md5"
_TMP = names.TEMP_PREFIX
_CHUNK = 1024 * 1024
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_SEQUENCE = itertools.count()


class FileBackend:
    """Buckets are sub-folders of ``root``; keys are relative paths inside them."""

    name: ClassVar[str] = "file"
    supports_bucket_creation: ClassVar[bool] = True
    supports_server_side_copy: ClassVar[bool] = True
    #: A put is a write to this machine's filesystem (``ModuleStore.writes_locally``).
    writes_locally: ClassVar[bool] = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._root = str(self.root)
        #: Keys per listing page (each page resumes the walk after the last key of the one
        #: before).
        self.listing_page = 1000

    @classmethod
    def from_config(cls, config: Any) -> FileBackend:
        return cls(config.directory)

    # --- names -----------------------------------------------------------------------------

    def bucket_name_problem(self, bucket: str) -> str | None:
        return names.folder_problem(bucket)

    def key_problem(self, key: str) -> str | None:
        return names.file_key_problem(key)

    def _bucket(self, bucket: str) -> Path:
        return self.root / bucket

    def _path(self, bucket: str, key: str) -> Path:
        return Path(self._file(bucket, key))

    def _file(self, bucket: str, key: str) -> str:
        """The path of ``key`` in ``bucket``, as a string (what each upload needs, without
        pathlib's parsing)."""
        base = os.path.join(self._root, bucket) if bucket else self._root
        path = os.path.join(base, key)
        # Names were validated above us; this is the belt to those braces.
        if not os.path.normpath(path).startswith(base + os.sep):
            raise StoreError(
                "key escapes its container", store=self.name, container=bucket, key=key
            )
        return path

    def _error(self, exc: OSError, bucket: str, key: str | None = None) -> StoreError:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return AccessDenied(str(exc.strerror), store=self.name, container=bucket, key=key)
        if exc.errno == errno.ENOENT:
            if not self._bucket(bucket).is_dir():
                return ContainerNotFound(
                    "no such container", store=self.name, container=bucket, key=key
                )
            return NotFound("no such object", store=self.name, container=bucket, key=key)
        return StoreError(str(exc), store=self.name, container=bucket, key=key)

    # --- buckets ---------------------------------------------------------------------------

    def list_buckets(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._error(exc, "") from exc
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))

    def create_bucket(self, bucket: str) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._bucket(bucket).mkdir()
        except FileExistsError:
            raise AlreadyExists("container exists", store=self.name, container=bucket) from None
        except OSError as exc:
            raise self._error(exc, bucket) from exc

    def delete_bucket(self, bucket: str) -> None:
        path = self._bucket(bucket)
        try:
            # Only empty sub-folders (left by deleted keys) and our temporary files may remain.
            for dirpath, dirnames, filenames in os.walk(path, topdown=False):
                for name in filenames:
                    if not name.startswith(_TMP):
                        raise StoreError(
                            "container is not empty", store=self.name, container=bucket
                        )
                    os.unlink(os.path.join(dirpath, name))
                for name in dirnames:
                    os.rmdir(os.path.join(dirpath, name))
            path.rmdir()
        except FileNotFoundError:
            raise ContainerNotFound(
                "no such container", store=self.name, container=bucket
            ) from None
        except OSError as exc:
            raise self._error(exc, bucket) from exc

    # --- listing ---------------------------------------------------------------------------

    def list_page(self, bucket: str, prefix: str, token: str | None) -> Page:
        base = self._bucket(bucket)
        if not base.is_dir():
            raise ContainerNotFound("no such container", store=self.name, container=bucket)
        if not bucket:  # the root: the server's store files, beside the app folders
            return Page(sorted(self._root_files(prefix), key=lambda i: i.key), None)
        # Walk only the folder the prefix names, not the whole container.
        folder, _, _ = prefix.rpartition("/")
        start = str(base / folder) if folder else str(base)
        items: list[ObjectInfo] = []
        for info in self._walk(start, folder + "/" if folder else "", prefix, token or ""):
            items.append(info)
            if len(items) >= self.listing_page:
                return Page(items, info.key)
        return Page(items, None)

    def _walk(self, path: str, key_prefix: str, prefix: str, after: str) -> Iterator[ObjectInfo]:
        """The objects under the folder ``path`` (whose keys start with ``key_prefix``) that
        start with ``prefix`` and sort after ``after``, in key order (bytewise UTF-8 of the
        whole key: a folder ``a`` sorts as ``a/``).  Folders wholly before ``after`` are not
        read, so a page resumes at the cost of one folder per level."""
        entries: list[tuple[str, str, bool]] = []
        try:
            with os.scandir(path) as it:
                for e in it:
                    if e.name.startswith(_TMP):
                        continue
                    try:
                        is_dir = e.is_dir()
                        if is_dir and e.is_symlink():
                            continue  # a link to a folder: not followed (as os.walk)
                    except OSError:
                        continue
                    key = key_prefix + e.name + ("/" if is_dir else "")
                    entries.append((key, e.path, is_dir))
        except OSError:
            return  # vanished or unreadable: nothing listed under it (as os.walk)
        entries.sort()
        for key, full, is_dir in entries:
            if is_dir:
                if after > key and not after.startswith(key):
                    continue  # every key under it sorts before ``after``
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                yield from self._walk(full, key, prefix, after)
                continue
            if key <= after or not key.startswith(prefix):
                continue
            try:
                st = os.stat(full)
            except FileNotFoundError:
                continue  # deleted while we walked
            yield self._info(key, full, st)

    @staticmethod
    def _info(key: str, full: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            modified=st.st_mtime,
            md5=_read_md5(full, st.st_mtime_ns),
            etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
        )

    def _root_files(self, prefix: str) -> Iterator[ObjectInfo]:
        with os.scandir(self.root) as it:
            for e in it:
                if e.name.startswith(".") or not e.name.startswith(prefix):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield self._info(e.name, e.path, st)

    def list_prefixes(self, bucket: str, prefix: str) -> list[str]:
        path = self._bucket(bucket) / prefix if prefix else self._bucket(bucket)
        try:
            return sorted(
                prefix + e.name + "/"
                for e in os.scandir(path)
                if e.is_dir() and not e.name.startswith(".")
            )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._error(exc, bucket) from exc

    # --- objects ---------------------------------------------------------------------------

    def open_read(
        self, bucket: str, key: str, offset: int = 0, version: str | None = None
    ) -> BinaryIO:
        path = self._path(bucket, key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - the caller closes the reader
        except IsADirectoryError:
            raise NotFound("no such object", store=self.name, container=bucket, key=key) from None
        except OSError as exc:
            raise self._error(exc, bucket, key) from exc
        st = os.fstat(f.fileno())
        current = f"{st.st_mtime_ns:x}-{st.st_size:x}"
        if version is not None and version != current:
            f.close()
            raise IntegrityError(
                "the object changed while it was read", store=self.name, container=bucket,
                key=key,
            )
        f.seek(offset)
        f.version, f.size = current, st.st_size  # type: ignore[attr-defined]
        return f

    def hashes_while_sending(self, size: int) -> bool:
        return False

    def put(
        self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str | None,
        run: Runner,
    ) -> ObjectInfo:
        md5_hex = given_md5(md5_hex, self.name)
        path = self._file(bucket, key)

        def write(fd: int, tmp: str) -> None:
            digest = hashlib.md5(usedforsecurity=False)
            remaining = size
            while remaining > 0:
                chunk = body.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                digest.update(chunk)
                _write_all(fd, chunk)
                remaining -= len(chunk)
            if remaining or digest.hexdigest() != md5_hex:
                raise SourceChanged(
                    "content changed while it was written", store=self.name, container=bucket,
                    key=key,
                )

        st = self._replace(path, write, md5_hex, bucket, key)
        return ObjectInfo(key, size, st.st_mtime, md5_hex, f"{st.st_mtime_ns:x}-{size:x}")

    def _replace(
        self, path: str, write: Callable[[int, str], None], md5_hex: str | None, bucket: str,
        key: str,
    ) -> os.stat_result:
        """Write ``path`` anew: ``write(fd, name)`` fills a temporary file beside it, which
        gets mode 0644 and the MD5 xattr (through ``fd``, no path looked up again), then
        replaces ``path``.  A failure leaves ``path`` as it was and no temporary file; OSError
        becomes StoreError; a missing container is :class:`ContainerNotFound` (its sub-folders
        are made as needed, never the container itself)."""
        folder = os.path.dirname(path)
        try:
            try:
                fd, tmp = _create_temp(folder)
            except FileNotFoundError:  # a new sub-folder, or no container
                if not self._bucket(bucket).is_dir():
                    raise ContainerNotFound(
                        "no such container", store=self.name, container=bucket, key=key
                    ) from None
                os.makedirs(folder, exist_ok=True)
                fd, tmp = _create_temp(folder)
        except OSError as exc:
            raise self._error(exc, bucket, key) from exc
        try:
            try:
                write(fd, tmp)
                os.fchmod(fd, 0o644)  # whatever the umask: the server reads what we write
                st = os.fstat(fd)
                if md5_hex is not None:
                    _write_md5(fd, md5_hex, st.st_mtime_ns)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise self._error(exc, bucket, key) from exc
            raise
        return st

    def delete_many(self, bucket: str, keys: Iterable[str]) -> None:
        base = self._bucket(bucket)
        for key in keys:
            path = self._path(bucket, key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                continue
            except OSError as exc:
                raise self._error(exc, bucket, key) from exc
            # Drop folders the delete left empty, up to the container itself.
            parent = path.parent
            while parent != base:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def copy(self, bucket: str, src_key: str, dst_key: str) -> ObjectInfo:
        src = self._file(bucket, src_key)
        dst = self._file(bucket, dst_key)
        try:
            md5 = _read_md5(src, os.stat(src).st_mtime_ns)
        except OSError as exc:
            raise self._error(exc, bucket, src_key) from exc

        def write(fd: int, tmp: str) -> None:
            shutil.copyfile(src, tmp)  # the kernel's copy, into the file ``fd`` holds open

        st = self._replace(dst, write, md5, bucket, src_key)
        etag = f"{st.st_mtime_ns:x}-{st.st_size:x}"
        return ObjectInfo(dst_key, st.st_size, st.st_mtime, md5, etag)

    def close(self) -> None:
        pass


def _create_temp(folder: str) -> tuple[int, str]:
    """A new temporary file in ``folder``, opened for writing: ``(fd, path)``.  Named by this
    process's id and a counter and created exclusively, so no other writer's file is ever
    taken (one a crashed process left is passed over; listings leave such files out by their
    ``_TMP`` prefix)."""
    while True:
        tmp = f"{folder}/{_TMP}{os.getpid():x}-{next(_SEQUENCE):x}"
        with contextlib.suppress(FileExistsError):
            return os.open(tmp, _CREATE, 0o600), tmp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_md5(fd: int, md5_hex: str, mtime_ns: int) -> None:
    # The mtime ties the checksum to this content: a later edit in place invalidates it.
    # Without user xattrs, the listing's etag (mtime, size) is what the index matches.
    with contextlib.suppress(OSError, AttributeError):
        os.setxattr(fd, _XATTR, f"{md5_hex}:{mtime_ns:x}".encode())


def _read_md5(path: str, mtime_ns: int) -> str | None:
    try:
        raw = os.getxattr(path, _XATTR).decode()
    except (OSError, AttributeError, UnicodeDecodeError):
        return None
    md5, _, stamp = raw.partition(":")
    return md5 if stamp == f"{mtime_ns:x}" and len(md5) == 32 else None
