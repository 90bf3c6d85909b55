"""Where session snapshots are kept: a folder, or a container of the module store.

A destination is named on the command line and in ``BACKUP.dest`` as a folder path, or as
``modulestore:CONTAINER`` (objects under ``snapshots/`` in that container of the configured
module store, written through its facade, so every provider works the same way).

A snapshot's data file is always written to a local *staging* file first; :meth:`publish`
makes it part of the destination (a rename in the same folder, or an upload whose checksum
the module store verifies).  Small files (manifests) are written whole and atomically.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from worker.config import load_settings
from worker.errors import NotFound, StoreError, UsageError
from worker.stores.modules import open_module_store

if TYPE_CHECKING:
    from worker.config import Settings

MODULESTORE_SCHEME = "modulestore:"
#: Key prefix of snapshots inside a module-store container.
KEY_PREFIX = "snapshots/"


class SnapshotDestination(Protocol):
    """The few operations snapshots need from where they are kept."""

    #: Whether :meth:`publish` wants the MD5 of the staged file (to verify an upload).
    wants_md5: bool

    def describe(self) -> str: ...

    def staging(self, name: str) -> Path:
        """A local path to write the data file ``name`` to before :meth:`publish`."""
        ...

    def publish(self, staging: Path, name: str, md5_hex: str | None) -> None:
        """Make the staged file the destination's ``name`` (all or nothing)."""
        ...

    def discard(self, staging: Path) -> None: ...

    def local_path(self, name: str) -> Path | None:
        """The file itself when the destination is a local folder, else None."""
        ...

    def open(self, name: str) -> BinaryIO: ...

    def write_small(self, name: str, data: bytes) -> None:
        """Write a small file whole and atomically (a reader never sees a part of it)."""
        ...

    def read_small(self, name: str) -> bytes: ...

    def names(self) -> Iterator[tuple[str, int]]:
        """Every (name, size) at the destination; staged files are not listed."""
        ...

    def delete(self, names: Sequence[str]) -> None:
        """Delete names; a name already gone is not an error."""
        ...

    def close(self) -> None: ...


def open_destination(spec: str, settings: Settings | None = None) -> SnapshotDestination:
    """``modulestore:CONTAINER`` (needs the settings of the module store) or a folder path."""
    if spec.startswith(MODULESTORE_SCHEME):
        container = spec[len(MODULESTORE_SCHEME) :]
        if not container:
            raise UsageError(f"destination {spec!r}: modulestore: needs a container name")
        if settings is None:
            settings = load_settings()
        return ModuleStoreDestination(open_module_store(settings), container)
    if not spec:
        raise UsageError("an empty snapshot destination; give a folder or modulestore:CONTAINER")
    return FolderDestination(spec)


class FolderDestination:
    """Snapshots as files in a local folder (created on first use)."""

    wants_md5 = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return str(self.path)

    def _ensure(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder: {exc}", store=str(self.path)) from None

    def staging(self, name: str) -> Path:
        self._ensure()
        # A hidden name that names() never lists: a crash leaves no snapshot-looking file.
        return self.path / f".{name}.partial-{secrets.token_hex(4)}"

    def publish(self, staging: Path, name: str, md5_hex: str | None) -> None:
        os.replace(staging, self.path / name)
        _fsync_dir(self.path)

    def discard(self, staging: Path) -> None:
        staging.unlink(missing_ok=True)

    def local_path(self, name: str) -> Path | None:
        return self.path / name

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self.path / name, "rb")
        except FileNotFoundError:
            raise NotFound("no such file", store=str(self.path), key=name) from None

    def write_small(self, name: str, data: bytes) -> None:
        self._ensure()
        tmp = self.path / f".{name}.tmp-{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path / name)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.path)

    def read_small(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def names(self) -> Iterator[tuple[str, int]]:
        if not self.path.is_dir():
            return
        for entry in os.scandir(self.path):
            if not entry.name.startswith(".") and entry.is_file():
                yield entry.name, entry.stat().st_size

    def delete(self, names: Sequence[str]) -> None:
        for name in names:
            (self.path / name).unlink(missing_ok=True)

    def close(self) -> None:
        pass


class ModuleStoreDestination:
    """Snapshots as objects ``snapshots/<name>`` in one container of the module store."""

    wants_md5 = True

    def __init__(self, store: Any, container: str, prefix: str = KEY_PREFIX) -> None:
        self.store = store
        self.container = container
        self.prefix = prefix
        self._ensured = False

    def describe(self) -> str:
        return f"{MODULESTORE_SCHEME}{self.container}"

    def _ensure(self) -> None:
        if not self._ensured:
            self.store.ensure_container(self.container)
            self._ensured = True

    def staging(self, name: str) -> Path:
        fd, path = tempfile.mkstemp(prefix=f"{name}.", suffix=".partial")
        os.close(fd)
        return Path(path)

    def publish(self, staging: Path, name: str, md5_hex: str | None) -> None:
        self._ensure()
        try:
            self.store.put_file(self.container, self.prefix + name, staging, md5_hex=md5_hex)
        finally:
            staging.unlink(missing_ok=True)

    def discard(self, staging: Path) -> None:
        staging.unlink(missing_ok=True)

    def local_path(self, name: str) -> Path | None:
        return None

    def open(self, name: str) -> BinaryIO:
        f: BinaryIO = self.store.open(self.container, self.prefix + name)
        return f

    def write_small(self, name: str, data: bytes) -> None:
        self._ensure()
        self.store.put_bytes(self.container, self.prefix + name, data)

    def read_small(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def names(self) -> Iterator[tuple[str, int]]:
        try:
            listing = self.store.list(self.container, prefix=self.prefix)
            for info in listing:
                yield info.key[len(self.prefix) :], info.size
        except NotFound:
            return  # no container yet: no snapshots

    def delete(self, names: Sequence[str]) -> None:
        if names:
            self.store.delete(self.container, [self.prefix + n for n in names])

    def close(self) -> None:
        self.store.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
