"""The watcher's observers: which one watches the tree, making it, and whether it still runs.

On Linux the tree is watched with inotify after checking it fits in the kernel's limits (see
:mod:`worker.live.inotify`); when it does not, or when ``SYNC.polling`` asks for it (bind
mounts, network filesystems, where inotify sees nothing), the project's own poller
(:mod:`worker.live.poller`) lists it instead.  Elsewhere watchdog's native observer is used.
The events an observer delivers go to :class:`EventHandler`, which hands each to the watcher.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from worker.live import inotify
from worker.live.debounce import Change
from worker.live.poller import TreePoller

log = logging.getLogger("synchro_sync.watcher")

# Events worth a look.  Opens and read-only closes are left out on purpose: the worker reads
# the files it uploads, and those reads must not come back as changes.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]

AnyObserver = BaseObserver | TreePoller


class ObserverKind(Enum):
    """How the tree is watched."""

    INOTIFY = "inotify"
    POLLING = "polling"
    NATIVE = "native"  # watchdog's default observer on other platforms


class EventHandler(FileSystemEventHandler):
    """Hands every event to ``on_event``; one it cannot place costs a full pass (``owe``)."""

    def __init__(self, on_event: Callable[[FileSystemEvent], None],
                 owe: Callable[[str], None]) -> None:
        self.on_event = on_event
        self.owe = owe

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self.on_event(event)
        except Exception:  # an event we cannot place must not stop the observer thread
            log.exception("event %r not handled; a full pass will cover it", event)
            self.owe("an event could not be handled")


def choose_kind(
    root: Path, polling: bool, proc_inotify: Path, say: Callable[[str], None]
) -> tuple[ObserverKind, inotify.TreeSize]:
    """The kind to watch ``root`` with, and the tree's size when it was measured for inotify
    (its limits' check is said with ``say`` when it has something to say)."""
    tree = inotify.TreeSize()
    if polling:
        return ObserverKind.POLLING, tree
    if inotify.OverflowReportingObserver is None:
        return ObserverKind.NATIVE, tree
    try:
        limits = inotify.InotifyLimits.read(proc_inotify)
    except (OSError, ValueError):
        return ObserverKind.INOTIFY, tree  # no /proc: let inotify itself say
    tree = inotify.measure_tree(root)
    check = inotify.check_limits(limits, tree, root)
    if check.problems or check.advice:
        say(check.message())
    return (ObserverKind.INOTIFY if check.fits else ObserverKind.POLLING), tree


def make_observer(
    kind: ObserverKind,
    watched: str,
    handler: EventHandler,
    *,
    folders: int,
    poll_interval: float,
    note: Callable[[str, Change, bool], None],
    pruned: Callable[[str], bool],
    on_overflow: inotify.OverflowHook,
    on_watch_limit: inotify.OverflowHook,
) -> AnyObserver:
    """A started observer of ``kind`` on ``watched``; OSError(ENOSPC) when inotify could not
    watch (nearly) all of the ``folders`` it was measured to hold."""
    if kind is ObserverKind.POLLING:
        poller = TreePoller(watched, poll_interval, note, pruned)
        poller.start()
        return poller
    observer = new_observer(kind, on_overflow, on_watch_limit)
    try:
        observer.schedule(handler, watched, recursive=True, event_filter=EVENT_FILTER)
        observer.start()
    except BaseException:
        observer.stop()
        raise
    if kind is ObserverKind.INOTIFY:
        watches = getattr(observer, "watch_count", lambda: -1)()
        # Folders may come and go between the count and the watches; a real shortfall means
        # watchdog hit the limit and skipped sub-folders silently.
        if 0 <= watches < folders - max(10, folders // 100):
            observer.stop()
            observer.join(5)
            raise OSError(errno.ENOSPC, f"only {watches} of {folders} folders got a watch")
    return observer


def healthy(observer: AnyObserver) -> bool:
    """The observer and its threads still run."""
    if isinstance(observer, TreePoller):
        return observer.healthy()
    emitters = list(observer.emitters)
    return (
        observer.is_alive()
        and bool(emitters)
        and all(e.is_alive() for e in emitters)
        and getattr(observer, "reader_alive", lambda: True)()
    )


def new_observer(
    kind: ObserverKind,
    on_overflow: inotify.OverflowHook,
    on_watch_limit: inotify.OverflowHook | None = None,
) -> BaseObserver:
    """The watchdog observer of ``kind`` (a function, so a test can make inotify fail)."""
    if kind is ObserverKind.INOTIFY and inotify.OverflowReportingObserver is not None:
        return inotify.OverflowReportingObserver(on_overflow, on_watch_limit)
    observer: BaseObserver = Observer()
    return observer
