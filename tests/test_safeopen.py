"""``safeopen.open_fd`` the two ways it can open a file: in one ``openat2`` call (Linux 5.6 and
later) and by walking the path one folder at a time (elsewhere, and whenever ``openat2`` finds
a symlink).  Both must refuse the same things with the same errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.errors import UnsafePath
from worker.mirror import safeopen

pytestmark = pytest.mark.unit


@pytest.fixture(params=["openat2", "walk"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "walk":
        monkeypatch.setattr(safeopen, "_BENEATH", None)
    elif safeopen._BENEATH is None:
        pytest.skip("this kernel has no openat2")
    yield request.param


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "apps"
    (root / "app" / "lib").mkdir(parents=True)
    (root / "app" / "lib" / "a.js").write_bytes(b"inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.js").write_bytes(b"secret")
    return root.resolve()


def _read(root: Path, relpath: str) -> bytes:
    fd = safeopen.open_fd(root, relpath)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_a_file_inside_is_read(way: str, root: Path) -> None:
    assert _read(root, "app/lib/a.js") == b"inside"


def test_a_folder_on_the_way_that_is_a_symlink_out_is_refused(way: str, root: Path) -> None:
    os.symlink(root.parent / "outside", root / "app" / "out")
    with pytest.raises(UnsafePath, match="the folder 'out' on the way is a symlink"):
        _read(root, "app/out/a.js")


def test_a_folder_on_the_way_that_is_a_symlink_inside_is_refused_too(
    way: str, root: Path
) -> None:
    os.symlink("lib", root / "app" / "lib2")
    with pytest.raises(UnsafePath, match="on the way is a symlink"):
        _read(root, "app/lib2/a.js")


def test_a_last_symlink_out_of_the_root_is_refused(way: str, root: Path) -> None:
    os.symlink(root.parent / "outside" / "a.js", root / "app" / "b.js")
    with pytest.raises(UnsafePath, match="leads outside the module directory"):
        _read(root, "app/b.js")


def test_a_last_symlink_inside_the_root_is_followed(way: str, root: Path) -> None:
    os.symlink("lib/a.js", root / "app" / "b.js")
    assert _read(root, "app/b.js") == b"inside"


def test_a_fifo_is_refused_without_blocking(way: str, root: Path) -> None:
    os.mkfifo(root / "app" / "f.js")
    with pytest.raises(UnsafePath, match="not a regular file"):
        _read(root, "app/f.js")


def test_a_folder_is_refused(way: str, root: Path) -> None:
    with pytest.raises(UnsafePath, match="not a regular file"):
        _read(root, "app/lib")


def test_missing_and_not_a_folder(way: str, root: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _read(root, "app/lib/gone.js")
    with pytest.raises(FileNotFoundError):
        _read(root, "app/nolib/a.js")
    with pytest.raises(NotADirectoryError):
        _read(root, "app/lib/a.js/x.js")


def test_a_way_up_is_refused_before_anything_is_opened(way: str, root: Path) -> None:
    with pytest.raises(UnsafePath, match="not a path inside"):
        _read(root, "app/../../outside/a.js")


def test_a_name_that_is_not_utf8_is_opened(way: str, root: Path) -> None:
    name = os.fsdecode(b"caf\xe9.js")  # Latin-1 on disk: a surrogate escape in Python
    (root / "app" / name).write_bytes(b"latin")
    assert _read(root, f"app/{name}") == b"latin"


def test_openat2_is_one_call_where_the_kernel_has_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ``openat2`` works the folders on the way are not opened one by one (what makes it
    cheaper: 3 system calls for any depth instead of 2 per folder)."""
    if safeopen._BENEATH is None:
        pytest.skip("this kernel has no openat2")
    opened: list[object] = []
    real = os.open

    def counting(path: object, *args: object, **kwargs: object) -> int:
        opened.append(path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting)
    assert _read(root, "app/lib/a.js") == b"inside"
    assert opened == [root]
    opened.clear()
    monkeypatch.setattr(safeopen, "_BENEATH", None)
    assert _read(root, "app/lib/a.js") == b"inside"
    assert opened == [root, "app", "lib", "a.js"]


def test_an_unusable_openat2_falls_back_to_the_walk_for_good(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seccomp filter that refuses the call (EPERM) or an old kernel (ENOSYS): the file is
    still opened, by the walk, and the call is not tried again."""
    import errno

    calls: list[bytes] = []

    def refused(dir_fd: int, path: bytes) -> int:
        calls.append(path)
        return -errno.ENOSYS

    monkeypatch.setattr(safeopen, "_BENEATH", refused)
    assert _read(root, "app/lib/a.js") == b"inside"
    assert _read(root, "app/lib/a.js") == b"inside"
    assert calls == [b"app/lib/a.js"]
    assert safeopen._BENEATH is None


def test_a_null_byte_is_refused_as_os_open_refuses_it(way: str, root: Path) -> None:
    """C strings end at a null byte: passed on, ``app/lib/a.js\\0x`` would open ``a.js``."""
    with pytest.raises(ValueError, match="null byte"):
        _read(root, "app/lib/a.js\0x")
