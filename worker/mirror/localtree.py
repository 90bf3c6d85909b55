"""Scanning ``APP_ROOT_PATH`` safely.

* One sub-folder per container (app); files at the top level belong to no app.
* Keys are ``/``-separated, relative to the container, NFC-normalised (macOS and some editors
  write NFD names; the store must see one spelling).
* Symlinks are never followed out of the root: a link to a file inside the root is mirrored
  with the target's content, a link that leads outside, dangles or points at a folder is
  skipped and reported.  ``..`` never escapes: :func:`resolve_key` refuses such paths.
* A name that is not valid UTF-8, or two names that are the same after NFC, are reported as
  problems, never mangled.

Only ``lstat`` data is read here (one ``scandir`` per folder); file contents are read by the
pass, and only for files the index cannot vouch for.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from worker.errors import UnsafePath
from worker.mirror.ignore import IgnoreRules
from worker.stores.modules.names import STORE_FILES

__all__ = [
    "STORE_FILES", "LocalFile", "ScanResult", "folder_of", "scan", "store_file_names", "walk",
]


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A regular file as ``lstat`` (or ``stat`` of an in-root symlink target) saw it."""

    key: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    #: The path on disk relative to the container, when it differs from the NFC key.
    disk: str = ""

    @classmethod
    def from_stat(cls, key: str, st: os.stat_result, disk: str = "") -> LocalFile:
        return cls(key, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                   disk if disk != key else "")

    @property
    def relpath(self) -> str:
        """Where the file is, relative to its container folder."""
        return self.disk or self.key

    def same_stat(self, other: LocalFile) -> bool:
        return (
            self.size == other.size
            and self.mtime_ns == other.mtime_ns
            and self.ctime_ns == other.ctime_ns
            and self.inode == other.inode
        )


#: Problems kept by name per scan; past this they are counted (a tree of a million bad names
#: must not become a million lines).
MAX_PROBLEMS = 200


@dataclass
class ScanResult:
    """What a walk of one container (or one folder of it) skipped and why (the files themselves
    are yielded by :func:`walk`, never held)."""

    problems: list[str] = field(default_factory=list)
    #: Problems past :data:`MAX_PROBLEMS`, counted only.
    more_problems: int = 0
    ignored: int = 0
    #: Keys, and folder prefixes ending in '/', that vanished or could not be read during the
    #: scan: what the store holds under them is not known to be gone, so it is never deleted.
    unsure: set[str] = field(default_factory=set)

    def problem(self, line: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(line)
        else:
            self.more_problems += 1

    def warnings(self) -> list[str]:
        more = [f"and {self.more_problems} more such problems"] if self.more_problems else []
        return [*self.problems, *more]

    def is_unsure(self, key: str) -> bool:
        """Whether ``key`` is, or lies under, something the scan could not see."""
        if not self.unsure:
            return False
        if key in self.unsure or "" in self.unsure:
            return True
        cut = key.find("/")
        while cut >= 0:
            if key[: cut + 1] in self.unsure:
                return True
            cut = key.find("/", cut + 1)
        return False


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def containers(root: Path, rules: IgnoreRules) -> list[str]:
    """The app folders under ``root`` (sorted; hidden and ignored folders left out)."""
    found = []
    with os.scandir(root) as it:
        for entry in it:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            name = nfc(entry.name)
            if not rules.container_ignored(name):
                found.append(name)
    return sorted(found)


def folder_of(root: Path, container: str) -> Path:
    """The local folder of a container: ``root/container``, or ``root`` for the store files."""
    return root if container == STORE_FILES else root / container


def store_file_names(root: Path) -> list[str]:
    """Names of the server's store files: regular files at the top of ``root`` (not hidden)."""
    try:
        with os.scandir(root) as it:
            return sorted(
                nfc(e.name) for e in it
                if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
            )
    except OSError:
        return []


def within(root: Path, path: str | os.PathLike[str]) -> bool:
    """Whether the real path of ``path`` is ``root`` or below it (``root`` already resolved)."""
    real = os.path.realpath(path)
    base = str(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def tidy(relpath: str) -> str:
    """``relpath`` with ``a//b``, ``./a`` and a trailing ``/`` tidied, as spelled on disk;
    :class:`UnsafePath` for an absolute path, ``..``, a NUL or a backslash."""
    if "\x00" in relpath or "\\" in relpath:
        raise UnsafePath(f"path {relpath!r} has a NUL or backslash")
    if relpath.startswith("/"):
        raise UnsafePath(f"path {relpath!r} is absolute; expected a path inside the app")
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePath(f"path {relpath!r} escapes the module directory (..)")
    return "/".join(parts)


def resolve_key(relpath: str) -> str:
    """The NFC key of a path relative to a container (see :func:`tidy`)."""
    return nfc(tidy(relpath))


def scan(
    root: Path,
    container: str,
    rules: IgnoreRules,
    prefix: str = "",
    disk_prefix: str | None = None,
) -> tuple[list[LocalFile], ScanResult]:
    """Every file of :func:`walk` in a list, with what was skipped (for small folders)."""
    result = ScanResult()
    return list(walk(root, container, rules, result, prefix, disk_prefix)), result


def walk(
    root: Path,
    container: str,
    rules: IgnoreRules,
    result: ScanResult,
    prefix: str = "",
    disk_prefix: str | None = None,
) -> Iterator[LocalFile]:
    """The mirrored files of ``root/container[/prefix]`` (``root`` resolved), in key order.

    Key order is the store's: the bytewise UTF-8 order of the whole key (Python's order of the
    NFC strings), so a folder ``a`` sorts as ``a/`` (after a file ``a-b``, before ``a0``).  One
    folder's entries are held at a time per level, never the tree.  What is skipped goes to
    ``result``.  ``prefix`` is a folder's key ending in '/'; ``disk_prefix`` its spelling on
    disk if other.
    """
    disk = prefix if disk_prefix is None else disk_prefix
    base = folder_of(root, container)
    start = base / disk if disk else base
    stack = [iter(_folder(root, container, rules, str(start), prefix, disk, result))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, LocalFile):
            yield item
        else:
            stack.append(iter(_folder(root, container, rules, *item, result)))


#: A sub-folder to walk: (path, key prefix, disk prefix).
_Sub = tuple[str, str, str]


def _folder(
    root: Path, container: str, rules: IgnoreRules, folder: str, key_prefix: str,
    disk_prefix: str, result: ScanResult,
) -> list[LocalFile | _Sub]:
    """One folder's files and sub-folders, sorted as their keys sort."""
    found: list[tuple[str, str, LocalFile | _Sub]] = []
    try:
        it = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        result.unsure.add(key_prefix)  # vanished while we looked: not known to be empty
        return []
    except OSError as exc:
        result.problem(f"{container}/{key_prefix}: cannot list folder: {exc.strerror or exc}")
        result.unsure.add(key_prefix)
        return []
    try:
        with it:
            for entry in it:
                _visit(root, container, rules, entry, key_prefix, disk_prefix, found, result)
    except OSError as exc:  # the listing broke off midway
        result.problem(f"{container}/{key_prefix}: cannot list folder: {exc.strerror or exc}")
        result.unsure.add(key_prefix)
    found.sort(key=lambda entry: (entry[0], entry[1]))
    out: list[LocalFile | _Sub] = []
    last = None
    for name, _disk, item in found:
        if name == last:  # two names the same after NFC: the first (by disk name) is kept
            key = key_prefix + name.rstrip("/")
            result.problem(
                f"{container}/{key}: two local names are the same after Unicode normalisation; "
                "only one is mirrored"
            )
            continue
        last = name
        out.append(item)
    return out


def folder_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, not following a symlink; None if it is not one."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _visit(
    root: Path,
    container: str,
    rules: IgnoreRules,
    entry: os.DirEntry[str],
    key_prefix: str,
    disk_prefix: str,
    found: list[tuple[str, str, LocalFile | _Sub]],
    result: ScanResult,
) -> None:
    """One folder entry: a file to mirror or a folder to walk goes to ``found`` with the name
    it sorts by (a folder's with a trailing '/'), anything else to ``result``."""
    name = entry.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        result.problem(
            f"{container}/{key_prefix}{name.encode('utf-8', 'surrogateescape')!r}: "
            "name is not valid UTF-8; a store cannot hold it, skipped"
        )
        return
    clean = nfc(name)
    key = key_prefix + clean
    try:
        st = entry.stat(follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        result.unsure.add(key)  # deleted while we looked (or its folder moved): next pass
        result.unsure.add(key + "/")
        return
    except OSError as exc:
        result.problem(f"{container}/{key}: cannot stat: {exc.strerror or exc}")
        result.unsure.update((key, key + "/"))
        return
    mode = st.st_mode
    if container == STORE_FILES and (stat.S_ISDIR(mode) or name.startswith(".")):
        return  # app folders are containers of their own; hidden files are not the server's
    if stat.S_ISDIR(mode):
        if rules.ignored(container, key, is_dir=True):
            result.ignored += 1
        else:
            found.append((clean + "/", name, (entry.path, key + "/", disk_prefix + name + "/")))
        return
    if rules.ignored(container, key):
        result.ignored += 1
        return
    if stat.S_ISLNK(mode):
        resolved = _symlink_target(root, entry.path)
        if resolved is None:
            result.problem(
                f"{container}/{key}: symlink leads outside the module directory, to a folder, "
                "or nowhere; not followed"
            )
            return
        st = resolved
    elif not stat.S_ISREG(mode):
        result.problem(f"{container}/{key}: not a regular file, skipped")
        return
    found.append((clean, name, LocalFile.from_stat(key, st, disk_prefix + name)))


def _symlink_target(root: Path, path: str) -> os.stat_result | None:
    """``stat`` of a symlink's target if it is a regular file inside ``root``, else None."""
    if not within(root, path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def stat_path(root: Path, container: str, key: str) -> os.stat_result | None:
    """``lstat`` of one path for the live sync; a symlink is resolved only inside the root.

    Returns None when the path does not exist.  Raises :class:`UnsafePath` when the path, or a
    folder on the way to it, is a symlink that leads outside the root.
    """
    path = folder_of(root, container) / key if key else folder_of(root, container)
    if not within(root, path.parent):
        raise UnsafePath(f"{container}/{key}: a folder on the way is a symlink out of the root")
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(st.st_mode):
        if not within(root, path):
            raise UnsafePath(f"{container}/{key}: symlink leads outside the module directory")
        try:
            return os.stat(path)
        except FileNotFoundError:
            return None
    return st

