"""Opening a file under the module directory without ever leaving it.

The scan (:mod:`~worker.mirror.localtree`) decides what to mirror from ``lstat`` data; the file is
read later, and in between any folder on the way may have been swapped for a symlink to ``/etc``.
So a file is never opened by its path string alone.  Where Linux has ``openat2`` (5.6 and
later) it is opened in one call from a descriptor of the root with ``RESOLVE_BENEATH`` and
``RESOLVE_NO_SYMLINKS``: the kernel itself refuses any symlink on the way and any way out of
the root.  Elsewhere, and whenever that call finds a symlink, :func:`open_fd` walks from the
root one component at a time with ``O_NOFOLLOW`` on each.  Either way what was opened must be a
regular file.  A symlink on the way is refused (:class:`~worker.errors.UnsafePath`); a symlink
as the last component is followed only when its target, resolved, is inside the root, and that
target is then opened the same careful way (a link swapped meanwhile is refused).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from worker.errors import UnsafePath

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Non-blocking so that a FIFO put where a file was does not hang the upload thread.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_LINKS = (errno.ELOOP, errno.EMLINK)
#: ``openat2`` errors that mean the call itself is unusable here (an old kernel, a seccomp
#: filter, unknown flags): the walk is used from then on.
_NO_OPENAT2 = (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG)
#: Errors after which the walk decides (a symlink somewhere, a way out, a race on the way).
_ASK_THE_WALK = (*_LINKS, errno.EXDEV, errno.EAGAIN)
#: Machines where ``openat2`` is system call 437 (the number every architecture shares since
#: Linux 5.1, but for alpha, ia64 and mips).
_SYS_OPENAT2 = 437
_MACHINES = ("x86_64", "i686", "i386", "aarch64", "arm64", "armv7l", "armv8l", "riscv64",
             "ppc64le", "ppc64", "s390x", "loongarch64")
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def _openat2() -> Callable[[int, bytes], int] | None:
    """``openat2(dir_fd, path)`` with :data:`_FILE`, beneath ``dir_fd`` and through no
    symlink: a descriptor, or minus the errno; None where Linux cannot be asked."""
    if sys.platform != "linux" or os.uname().machine not in _MACHINES:
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    call.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                     ctypes.c_size_t]
    how = _OpenHow(_FILE, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)  # read only: shared
    where, size = ctypes.addressof(how), ctypes.sizeof(how)

    def open_beneath(dir_fd: int, path: bytes, _how: _OpenHow = how) -> int:
        # ``_how`` keeps the structure alive for as long as its address is passed
        if b"\0" in path:  # C would end the path there: refuse it as os.open does
            raise ValueError("embedded null byte")
        fd = call(_SYS_OPENAT2, dir_fd, path, where, size)
        return fd if fd >= 0 else -ctypes.get_errno()

    return open_beneath


#: None once ``openat2`` turned out unusable (or before Linux 5.6, or not on Linux).
_BENEATH = _openat2()


def _walk(root: Path, parts: list[str], where: str) -> int:
    """A descriptor of the folder ``root/parts...``, no symlink followed on the way."""
    fd = os.open(root, _DIR & ~os.O_NOFOLLOW)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _LINKS or exc.errno == errno.ENOTDIR and _is_link(fd, part):
                    raise UnsafePath(
                        f"{where}: the folder {part!r} on the way is a symlink; not followed"
                    ) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _split(relpath: str) -> list[str]:
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafePath(f"{relpath!r} is not a path inside the module directory")
    return parts


def open_fd(root: Path, relpath: str, *, follow_in_root: bool = True) -> int:
    """A read-only descriptor of the regular file ``root/relpath`` (``root`` resolved).

    Raises :class:`UnsafePath` for a symlink on the way or one that leads out of the root,
    or for something that is not a regular file (a FIFO, a socket, a folder);
    ``FileNotFoundError`` (or ``NotADirectoryError``) when it is gone.
    """
    parts = _split(relpath)
    beneath = _BENEATH
    if beneath is not None:
        root_fd = os.open(root, _DIR & ~os.O_NOFOLLOW)
        try:
            fd = beneath(root_fd, os.fsencode("/".join(parts)))
        finally:
            os.close(root_fd)
        if fd >= 0:
            return _regular(fd, relpath)
        if -fd in _NO_OPENAT2:
            _stop_openat2()
        elif -fd not in _ASK_THE_WALK:
            raise OSError(-fd, os.strerror(-fd), relpath)
    dir_fd = _walk(root, parts[:-1], relpath)
    try:
        try:
            fd = os.open(parts[-1], _FILE, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in _LINKS:
                raise
            if not follow_in_root:
                raise UnsafePath(f"{relpath}: a symlink again after resolving; not followed")\
                    from None
            return _open_link(root, relpath, dir_fd, parts[-1])
    finally:
        os.close(dir_fd)
    return _regular(fd, relpath)


def _regular(fd: int, relpath: str) -> int:
    """``fd``, made blocking, if it is a regular file; else closed and refused."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{relpath}: not a regular file, not read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _stop_openat2() -> None:
    global _BENEATH
    _BENEATH = None


def _open_link(root: Path, relpath: str, dir_fd: int, name: str) -> int:
    """Follow a final symlink only to a regular file inside ``root``."""
    target = os.readlink(name, dir_fd=dir_fd)
    here = root.joinpath(*_split(relpath)[:-1])
    real = os.path.realpath(here / target)
    base = str(root)
    if not real.startswith(base.rstrip(os.sep) + os.sep):
        raise UnsafePath(f"{relpath}: symlink leads outside the module directory; not followed")
    return open_fd(root, os.path.relpath(real, base), follow_in_root=False)


@contextlib.contextmanager
def open_file(root: Path, relpath: str) -> Iterator[BinaryIO]:
    """:func:`open_fd` as a buffered binary file, closed on exit."""
    f = os.fdopen(open_fd(root, relpath), "rb")
    try:
        yield f
    finally:
        f.close()


def stat_file(root: Path, relpath: str) -> os.stat_result:
    """``fstat`` of the file :func:`open_fd` would open (the same checks)."""
    fd = open_fd(root, relpath)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def stat_again(root: Path, relpath: str) -> os.stat_result:
    """``stat`` of ``root/relpath`` by its path, following symlinks: for telling whether the
    path still names a file opened before by :func:`open_fd` (same inode, size, mtime and
    ctime), and for nothing else -- it reads nothing and vouches for no path, so it needs none
    of :func:`stat_file`'s walk (8 system calls fewer per uploaded file).  A folder swapped
    for a link meanwhile gives another file's ``stat``, so the caller redoes its work, which
    :func:`open_fd` then refuses."""
    return os.stat(os.path.join(root, *_split(relpath)))


#: Each thread's read buffer for :func:`md5`: a new 1 MiB ``bytes`` per read costs an ``mmap``,
#: an ``mremap`` and a ``munmap`` per file, more than reading a small file does.
_BUFFERS = threading.local()
_BUFFER = 1024 * 1024


def md5(root: Path, relpath: str) -> str:
    """Hex MD5 of ``root/relpath``, read through :func:`open_fd`."""
    buf: bytearray | None = getattr(_BUFFERS, "buf", None)
    if buf is None:
        buf = _BUFFERS.buf = bytearray(_BUFFER)
    view = memoryview(buf)
    digest = hashlib.md5(usedforsecurity=False)
    fd = open_fd(root, relpath)
    try:
        while n := os.readv(fd, [buf]):
            digest.update(view[:n])
    finally:
        os.close(fd)
    return digest.hexdigest()
