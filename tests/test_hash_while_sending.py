"""A large file put into a store that MD5s what it sends (GCS's one-request upload): the file
is read once, not hashed first and read again, and an edit during the upload still stores
nothing half old, half new (against fake-gcs-server)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google_crc32c
import pytest

from worker.errors import TransientStoreError
from worker.stores.modules import checksum
from worker.stores.modules.base import HashingReader, SourceChanged, run_once
from worker.stores.modules.store import ModuleStore

MIB = 1024 * 1024


class _Watched(io.FileIO):
    """A module file that counts the bytes read from it and, once ``edit_after`` reads have
    been made, is edited by "another program" (rewritten in place, or cut short)."""

    def __init__(self, path: Path, edit_after: int = 0, truncate: bool = False) -> None:
        super().__init__(path, "rb")
        self.path, self.edit_after, self.truncate = path, edit_after, truncate
        self.reads = self.bytes_read = 0
        self.edited = False

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.edit_after and self.reads == self.edit_after and not self.edited:
            self.edited = True
            with open(self.path, "r+b") as other:
                if self.truncate:
                    other.truncate(5 * MIB)
                else:
                    other.seek(3 * MIB)
                    other.write(os.urandom(4096))
        data = super().read(size)
        self.bytes_read += len(data or b"")
        return data  # type: ignore[return-value]

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer) or 0
        self.bytes_read += n
        return n


@pytest.fixture()
def store(google_store_server: Any) -> Iterator[ModuleStore]:
    made: ModuleStore = google_store_server.module_store()
    yield made
    made.close()


def _old_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    os.utime(path, (1_600_000_000, 1_600_000_000))  # saved long ago: an edit changes mtime
    return data


def test_a_large_file_is_read_once_and_its_md5_is_what_gcs_stored(
    store: ModuleStore, container: str, tmp_path: Path
) -> None:
    src = tmp_path / "big.bin"
    data = _old_file(src, 20 * MIB + 5)
    assert store.backend.hashes_while_sending(len(data))
    with _Watched(src) as f:
        info = store.put_file(container, "assets/big.bin", f)
        assert f.bytes_read == len(data)  # sent as read: no hashing pass before
    assert info.md5 == hashlib.md5(data).hexdigest()
    (listed,) = list(store.list(container, "assets/"))
    assert listed.md5 == info.md5 and listed.size == len(data)
    assert store.read_bytes(container, "assets/big.bin") == data


@pytest.mark.parametrize("truncate", [False, True], ids=["rewritten", "cut-short"])
def test_a_file_edited_while_it_is_hashed_and_sent_stores_nothing(
    store: ModuleStore, container: str, tmp_path: Path, truncate: bool
) -> None:
    src = tmp_path / "edited.bin"
    size = len(_old_file(src, 12 * MIB))
    with _Watched(src, edit_after=10, truncate=truncate) as f, pytest.raises(SourceChanged):
        store.backend.put(container, "edited.bin", f, size, None, run_once)
    assert f.edited
    assert [i.key for i in store.list(container)] == []


def test_an_upload_cut_short_by_an_edit_is_redone_from_the_file_as_it_is_now(
    store: ModuleStore, container: str, tmp_path: Path
) -> None:
    src = tmp_path / "live.bin"
    _old_file(src, 12 * MIB)
    with _Watched(src, edit_after=10) as f:
        info = store.put_file(container, "live.bin", f)
        assert f.edited
    final = src.read_bytes()
    assert info.md5 == hashlib.md5(final).hexdigest()
    assert store.read_bytes(container, "live.bin") == final


def test_the_bytes_sent_are_only_crc32c_checked_and_gcs_md5_is_taken(
    store: ModuleStore, container: str, tmp_path: Path
) -> None:
    """With CRC-32C's C build (google-crc32c, as installed with google-cloud-storage) the file
    is not MD5ed by us at all: the reader computes the CRC-32C of what it sends, and GCS's
    ``crc32c`` of what it stored must equal it; a different one is refused (the upload is
    redone), so the MD5 GCS reports is that of the bytes sent."""
    assert checksum.IS_CRC32C, "google-crc32c's C build is what the GCS path is measured with"
    src = tmp_path / "crc.bin"
    data = _old_file(src, 9 * MIB + 3)
    with open(src, "rb") as f:
        reader = HashingReader(f, len(data), crc_only=True)
        while reader.read(256 * 1024):
            pass
    assert reader.md5 is None and reader.crc == int(google_crc32c.value(data))

    with _Watched(src) as f:
        info = store.put_file(container, "crc.bin", f)
        assert f.bytes_read == len(data)
    assert info.md5 == hashlib.md5(data).hexdigest()
    backend: Any = store.backend
    blob = backend.client.bucket(container).get_blob("crc.bin")
    reader.check_crc32c(blob.crc32c, "google", container, "crc.bin")  # the same bytes: accepted
    reader._crc ^= 1  # as if another byte had been sent
    with pytest.raises(TransientStoreError, match="CRC-32C"):
        reader.check_crc32c(blob.crc32c, "google", container, "crc.bin")
