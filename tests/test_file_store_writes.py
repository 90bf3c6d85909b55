"""How the FileModuleStore writes a file: a temporary file of its own beside the target, mode
0644 whatever the umask, the MD5 xattr set through its descriptor, then one rename; a write
that fails leaves the target as it was and no temporary file behind."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import stat
from pathlib import Path

import pytest

from worker.stores.modules import file as file_store
from worker.stores.modules.base import SourceChanged, run_once
from worker.stores.modules.file import FileBackend


def _put(backend: FileBackend, key: str, data: bytes, md5: str | None = None) -> None:
    md5 = md5 or hashlib.md5(data).hexdigest()
    backend.put("c", key, io.BytesIO(data), len(data), md5, run_once)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".synchro-tmp-*"))


@pytest.fixture
def backend(tmp_path: Path) -> FileBackend:
    (tmp_path / "c").mkdir()
    return FileBackend(tmp_path)


def test_a_written_file_is_0644_under_a_strict_umask(backend: FileBackend, tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        _put(backend, "deep/a.js", b"a")
    finally:
        os.umask(old)
    path = tmp_path / "c" / "deep" / "a.js"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == b"a"
    assert _leftovers(tmp_path) == []


def test_the_md5_is_listed_without_reading_the_file(backend: FileBackend) -> None:
    _put(backend, "a.js", b"hello")
    (item,) = backend.list_page("c", "", None).items
    assert item.md5 == hashlib.md5(b"hello").hexdigest()


def test_a_write_whose_content_is_not_the_md5_changes_nothing(
    backend: FileBackend, tmp_path: Path,
) -> None:
    _put(backend, "a.js", b"old")
    with pytest.raises(SourceChanged):
        _put(backend, "a.js", b"new", md5=hashlib.md5(b"other").hexdigest())
    assert (tmp_path / "c" / "a.js").read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_temporary_file_left_by_a_crash_is_never_taken_over(
    backend: FileBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a crashed writer of the same process id left, under the next name this one draws.
    monkeypatch.setattr(file_store, "_SEQUENCE", itertools.count())
    stale = tmp_path / "c" / f".synchro-tmp-{os.getpid():x}-0"
    stale.write_bytes(b"a crashed writer's half")
    _put(backend, "a.js", b"new")
    assert stale.read_bytes() == b"a crashed writer's half"
    assert (tmp_path / "c" / "a.js").read_bytes() == b"new"
    assert _leftovers(tmp_path) == [stale.name]


def test_a_copy_is_written_the_same_way(backend: FileBackend, tmp_path: Path) -> None:
    _put(backend, "a.js", b"content")
    old = os.umask(0o077)
    try:
        info = backend.copy("c", "a.js", "b/a.js")
    finally:
        os.umask(old)
    path = tmp_path / "c" / "b" / "a.js"
    assert path.read_bytes() == b"content"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert info.md5 == hashlib.md5(b"content").hexdigest()
    assert _leftovers(tmp_path) == []
