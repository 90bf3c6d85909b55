"""inotify on Linux: does the tree fit in the kernel's limits; an observer that reports overflow.

inotify needs one *watch* per watched folder (``fs.inotify.max_user_watches``, shared by every
process of the user), one *instance* per observer (``fs.inotify.max_user_instances``) and keeps
at most ``fs.inotify.max_queued_events`` unread events before it drops them and reports an
overflow.  :func:`check_limits` compares those with the tree before watching starts and says
what to do when it will not fit: the sysctl to raise, or ``SYNC.polling``.

watchdog (7.1+) rebuilds its watches after an overflow but tells no event handler that events
were lost, and skips a new sub-folder it has no watch left for without a word;
:class:`OverflowReportingObserver` is watchdog's inotify observer with a hook for each of those
moments, so the watcher can ask for a full pass, or switch to polling.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

PROC_INOTIFY = Path("/proc/sys/fs/inotify")

#: Watches we leave for folders created after start-up and for the user's other programs.
HEADROOM = 1024


@dataclass(frozen=True)
class InotifyLimits:
    """The three inotify sysctls, and how many watches and instances the user already holds."""

    max_user_watches: int
    max_user_instances: int
    max_queued_events: int
    watches_in_use: int = 0
    instances_in_use: int = 0

    @classmethod
    def read(cls, proc_inotify: Path = PROC_INOTIFY, count_usage: bool = True) -> InotifyLimits:
        """Read the limits (``FileNotFoundError`` where there is no inotify) and current usage."""

        def value(name: str) -> int:
            return int((proc_inotify / name).read_text().strip())

        watches, instances = _usage() if count_usage else (0, 0)
        return cls(
            value("max_user_watches"),
            value("max_user_instances"),
            value("max_queued_events"),
            watches,
            instances,
        )


@dataclass
class TreeSize:
    """Folders and files under the root (folders are what inotify watches)."""

    folders: int = 0
    files: int = 0


def measure_tree(root: Path) -> TreeSize:
    """Count folders (the root included) and files, without following symlinks."""
    size = TreeSize()
    stack = [os.fspath(root)]
    while stack:
        path = stack.pop()
        size.folders += 1
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            size.files += 1
                    except OSError:
                        continue
        except OSError:
            continue
    return size


@dataclass
class LimitCheck:
    """The verdict: ``fits`` or not, and the lines to show the user."""

    fits: bool
    problems: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def message(self) -> str:
        return " ".join(self.problems + self.advice)


def check_limits(limits: InotifyLimits, tree: TreeSize, root: Path) -> LimitCheck:
    """Will watching ``root`` (of ``tree``'s size) fit?  Overflow risk is advice, not a failure."""
    check = LimitCheck(fits=True)
    free = limits.max_user_watches - limits.watches_in_use
    need = tree.folders + HEADROOM
    if need > free:
        check.fits = False
        suggested = _round_up(limits.watches_in_use + need * 2)
        check.problems.append(
            f"inotify: {root} holds {tree.folders:,} folders but only {max(free, 0):,} watches "
            f"are free (fs.inotify.max_user_watches={limits.max_user_watches:,}, "
            f"{limits.watches_in_use:,} in use)."
        )
        check.advice.append(
            f"Raise it with `sysctl -w fs.inotify.max_user_watches={suggested}` (and a line in "
            "/etc/sysctl.d/ to keep it), or set SYNC.polling=true; polling is used meanwhile."
        )
    if limits.instances_in_use >= limits.max_user_instances:
        check.fits = False
        check.problems.append(
            f"inotify: all {limits.max_user_instances} instances are in use "
            "(fs.inotify.max_user_instances)."
        )
        check.advice.append(
            f"Raise it with `sysctl -w fs.inotify.max_user_instances="
            f"{_round_up(limits.max_user_instances * 2)}`, or set SYNC.polling=true; "
            "polling is used meanwhile."
        )
    if check.fits and tree.files > limits.max_queued_events:
        check.advice.append(
            f"inotify: {tree.files:,} files but fs.inotify.max_queued_events="
            f"{limits.max_queued_events:,}; a checkout touching most files may overflow the "
            "queue (a full pass then repairs it). To avoid that: `sysctl -w "
            f"fs.inotify.max_queued_events={_round_up(tree.files * 2)}`."
        )
    return check


def _round_up(n: int) -> int:
    """A round figure at least ``n`` (a power of two, as sysctl advice usually is)."""
    p = 1
    while p < n:
        p *= 2
    return p


def _usage() -> tuple[int, int]:
    """Watches and instances held by this user's processes (those /proc lets us read)."""
    uid = os.getuid()
    watches = instances = 0
    proc = Path("/proc")
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return 0, 0
    for pid in pids:
        fd_dir = proc / pid / "fd"
        try:
            if os.stat(proc / pid).st_uid != uid:
                continue
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) != "anon_inode:inotify":
                    continue
                text = (proc / pid / "fdinfo" / fd).read_text()
            except OSError:
                continue
            instances += 1
            watches += text.count("inotify wd:")
    return watches, instances


# --- the observer ---------------------------------------------------------------------------

OverflowHook = Callable[[], None]

if sys.platform.startswith("linux"):
    from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver
    from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
    from watchdog.observers.inotify_c import InotifyFD

    class _ReportingWatchGroup(InotifyWatchGroup):
        """A watch group that calls ``hook`` after watchdog has recovered from an overflow."""

        hook: OverflowHook | None = None

        def on_queue_overflow(self) -> None:
            try:
                super().on_queue_overflow()
            finally:  # events were lost whether or not watchdog's recovery worked
                if self.hook is not None:
                    self.hook()

        def watch_count(self) -> int:
            return len(self._active_callbacks_by_watch)

    class _LimitReportingFD:
        """The inotify descriptor as a watch group sees it, reporting ENOSPC when a watch is
        added (watchdog skips a sub-folder it cannot watch without a word), and refusing a
        watch outside the root: a folder swapped for a symlink to ``/etc`` between its
        creation and watchdog's walk of it would otherwise be walked and watched, and writes
        there reported as paths inside the root."""

        def __init__(self, fd: InotifyFD, on_limit: OverflowHook | None, root: bytes) -> None:
            self._fd = fd
            self._on_limit = on_limit
            self._root = os.path.realpath(root)

        def add_callback(self, path: bytes, mask: Any, callback: Any, id_: Any) -> Any:
            real = os.path.realpath(path)
            if real != self._root and not real.startswith(self._root.rstrip(b"/") + b"/"):
                raise OSError(errno.ELOOP, "leads outside the module directory; not watched",
                              os.fsdecode(path))
            try:
                return self._fd.add_callback(path, mask, callback, id_)
            except OSError as exc:
                if exc.errno == errno.ENOSPC and self._on_limit is not None:
                    self._on_limit()
                raise

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fd, name)

    class _ReportingEmitter(InotifyEmitter):
        """watchdog's emitter, building a :class:`_ReportingWatchGroup` as its watch group."""

        def __init__(
            self,
            *args: Any,
            hook: OverflowHook,
            on_watch_limit: OverflowHook | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self._hook = hook
            self._on_watch_limit = on_watch_limit

        def on_thread_start(self) -> None:
            group = _ReportingWatchGroup(
                cast(InotifyFD, _LimitReportingFD(self._inotify_fd, self._on_watch_limit,
                                                  os.fsencode(self.watch.path))),
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )
            group.hook = self._hook
            self._inotify = group

        def watch_count(self) -> int:
            group = self._inotify
            return group.watch_count() if isinstance(group, _ReportingWatchGroup) else 0

    class OverflowReportingObserver(BaseObserver):
        """watchdog's inotify observer, built the way ``InotifyObserver`` is, whose
        ``on_overflow`` runs (on the inotify reader thread) after a kernel queue overflow, and
        ``on_watch_limit`` when a new folder could not be watched (ENOSPC).  Keep the hooks
        short: set a flag."""

        def __init__(
            self,
            on_overflow: OverflowHook,
            on_watch_limit: OverflowHook | None = None,
            *,
            timeout: float = DEFAULT_OBSERVER_TIMEOUT,
        ) -> None:
            self._inotify_fd = InotifyFD()  # EMFILE here when no instance is left
            self._inotify_fd.start()
            super().__init__(
                _ReportingEmitter,
                timeout=timeout,
                inotify_fd=self._inotify_fd,
                hook=on_overflow,
                on_watch_limit=on_watch_limit,
            )

        def on_thread_stop(self) -> None:
            super().on_thread_stop()
            self._inotify_fd.stop()
            self._inotify_fd.join()

        def reader_alive(self) -> bool:
            """Whether the thread reading the inotify descriptor still runs."""
            return self._inotify_fd.is_alive()

        def watch_count(self) -> int:
            """inotify watches the observer holds (fewer than folders: the limit was hit)."""
            return sum(e.watch_count() for e in self.emitters if isinstance(e, _ReportingEmitter))

else:  # pragma: no cover - other platforms use watchdog's default observer
    OverflowReportingObserver = None  # type: ignore[assignment,misc]
