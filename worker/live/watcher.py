"""The watcher: watchdog events -> filtered, debounced paths -> the dispatcher.

It watches ``APP_ROOT_PATH`` recursively (one sub-folder per app container; files at the top
level are the server's store files, ``apps.json``, handed on as paths of the pseudo-container
``STORE_FILES``), drops what the ignore rules leave out, and hands
each path to the dispatcher once it has been quiet for ``SYNC.debounce`` seconds (at least every
``SYNC.maxDelay`` seconds while it keeps changing).  It hands off the path's *identity* only: the
work syncs the path's state as it is when it runs, so a move is two paths (source and
destination), a delete is the path, and a folder that is removed or moved away is the folder path.
A burst of new paths in one app folder (an unpacked release) is handed off as the folder that
holds them, synced as a whole (:mod:`worker.live.burst`).

The watcher is a fast hint; the full pass is the truth.  Whenever events may have been lost (an
inotify queue overflow, an observer that stopped, the module folder vanishing and coming back, a
dispatcher that keeps failing) it asks the dispatcher for a full pass instead of losing work.

On Linux it uses inotify after checking the tree fits in the kernel's limits (see
:mod:`~worker.live.inotify`), and falls back to polling (:mod:`~worker.live.poller`), with a
message saying which sysctl to raise, when it does not; ``SYNC.polling`` (or ``polling=True``)
asks for polling from the start (bind mounts, network filesystems, where inotify sees nothing).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from watchdog.events import (
    DirDeletedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileSystemEvent,
    FileSystemMovedEvent,
)

from worker import metrics
from worker.live import inotify, observers
from worker.live.burst import Key
from worker.live.debounce import Change, Debouncer
from worker.live.handoff import HandOff, PathDispatcher, WatcherStats
from worker.live.observers import EVENT_FILTER, AnyObserver, EventHandler, ObserverKind
from worker.mirror.ignore import SYNCIGNORE, IgnoreRules
from worker.stores.modules.names import STORE_FILES

if TYPE_CHECKING:
    from worker.config import Settings

log = logging.getLogger("synchro_sync.watcher")

#: Ignore decisions remembered (about 200 bytes each).
IGNORE_CACHE_SIZE = 20_000


class Watcher:
    """Watch ``settings.APP_ROOT_PATH`` and hand debounced paths to ``dispatcher``.

    :meth:`start` returns once watching; :meth:`stop` stops watching and hands off what is still
    pending; :meth:`run_until_signal` does both around a wait for SIGINT or SIGTERM.
    """

    #: Seconds between checks that the observer is alive (and the root is there).
    health_interval = 1.0

    def __init__(
        self,
        settings: Settings,
        dispatcher: PathDispatcher,
        *,
        polling: bool | None = None,
        poll_interval: float = 1.0,
        ignore: IgnoreRules | None = None,
        proc_inotify: Path = inotify.PROC_INOTIFY,
    ) -> None:
        self.root = Path(settings.APP_ROOT_PATH).absolute()
        self.dispatcher = dispatcher
        self.polling = settings.SYNC.polling if polling is None else polling
        self.poll_interval = poll_interval
        self.ignore = ignore or IgnoreRules(self.root, settings.SYNC.ignore)
        self.proc_inotify = proc_inotify
        self.stats = WatcherStats()
        self.kind: ObserverKind | None = None
        self._watched = os.fspath(self.root)
        self._prefix = self._watched + os.sep
        self._debounce: Debouncer[Key] = Debouncer(settings.SYNC.debounce, settings.SYNC.maxDelay)
        self._cond = threading.Condition()
        self._observer: AnyObserver | None = None
        self._handler = EventHandler(self._on_event, self._owe)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.handoff = HandOff(dispatcher, self.stats, self._wake)
        self._next_health = 0.0
        self._watch_limit_hit = False
        self._ignore_cache: dict[tuple[str, str, bool], bool] = {}
        self._tree = inotify.TreeSize()
        self._root_id: tuple[int, int] | None = None

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching (or waiting for the root to appear) and the hand-off thread."""
        # watchdog warns when `mkdir -p` races its own recursive watch-adding; the watch is
        # simply reused, so the warning is noise for our users.
        warnings.filterwarnings(
            "ignore", message="Callback with id", category=RuntimeWarning, module="watchdog"
        )
        if self.root.is_dir():
            self._start_observer()
        else:
            self._message(f"{self.root} does not exist (yet); watching starts when it appears")
        self._thread = threading.Thread(target=self._loop, name="synchro-sync-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching, then hand off every pending path (an orderly stop loses nothing)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._stop_observer()
        with self._cond:
            flushes = self._debounce.drain()
        self.handoff.hand_off(flushes)
        self.handoff.finish()

    def run_until_signal(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Start, block until one of ``signals`` arrives, stop.  Call from the main thread."""
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
        try:
            self.start()
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is pending, waiting for a retry or owed (for tests and ``run``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                idle = not len(self._debounce) and self.handoff.idle()
            if idle or time.monotonic() >= deadline:
                return idle
            time.sleep(0.01)

    def pending(self) -> list[Key]:
        """Paths in a debounce window or waiting for a retry."""
        with self._cond:
            keys = list(self._debounce)
        return keys + self.handoff.kept()

    # --- the observer -----------------------------------------------------------------------

    def _start_observer(self, kind: ObserverKind | None = None) -> None:
        self._watch_limit_hit = False
        # inotify watches a symlink itself, not where it leads: watch the real folder (again at
        # each start, as a deploy may point the link elsewhere) and map events back from it.
        self._watched = os.path.realpath(self.root)
        self._prefix = self._watched + os.sep
        kind = kind or self._choose_kind()
        try:
            self._observer = self._make_observer(kind)
        except OSError as exc:
            if kind is not ObserverKind.INOTIFY or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            self._message(
                f"inotify: {exc.strerror or exc}; raise fs.inotify.max_user_watches / "
                "max_user_instances with sysctl, or set SYNC.polling=true; "
                "polling is used meanwhile"
            )
            kind = ObserverKind.POLLING
            self._observer = self._make_observer(kind)
        self.kind = kind
        self._root_id = _identity(self.root)
        log.info("watching %s with the %s observer", self.root, kind.value)

    def _choose_kind(self) -> ObserverKind:
        kind, self._tree = observers.choose_kind(
            self.root, self.polling, self.proc_inotify, self._message
        )
        return kind

    def _make_observer(self, kind: ObserverKind) -> AnyObserver:
        return observers.make_observer(
            kind, self._watched, self._handler, folders=self._tree.folders,
            poll_interval=self.poll_interval, note=self._note, pruned=self._pruned,
            on_overflow=self._overflowed, on_watch_limit=self._out_of_watches,
        )

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(5)

    def _healthy(self, observer: AnyObserver) -> bool:
        return observers.healthy(observer)

    def _check_observer(self) -> None:
        if self._stopping:
            return
        observer = self._observer
        if observer is None:
            if self.root.is_dir():
                self._start_observer()
                self.handoff.owe(f"{self.root} appeared")
            return
        if self._watch_limit_hit and self.kind is ObserverKind.INOTIFY:
            self._message(
                "inotify: no watch left for a new folder (fs.inotify.max_user_watches); raise "
                "it with sysctl, or set SYNC.polling=true; polling is used meanwhile"
            )
            self._stop_observer()
            self._start_observer(ObserverKind.POLLING)
            self.handoff.owe("inotify ran out of watches")
            return
        alive = self._healthy(observer)
        # inotify follows the folder, not the name: a root moved away (or replaced) is watched
        # no more, even though the observer looks healthy.
        same_root = _identity(self.root) == self._root_id
        if alive and same_root:
            return
        self.stats.restarts += 1
        self._stop_observer()
        if not self.root.is_dir():
            self._message(f"{self.root} is gone; watching resumes when it is back")
        elif not same_root:
            self._start_observer()
            self.handoff.owe(f"{self.root} was replaced")
        else:
            log.error("the %s observer stopped; restarting it", self.kind and self.kind.value)
            self._start_observer()
            self.handoff.owe("the observer stopped and was restarted")

    def _owe(self, reason: str) -> None:
        self.handoff.owe(reason)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _ignored(self, container: str, rel: str, is_dir: bool) -> bool:
        # A storm hits the same few paths thousands of times: remember the answers (until the
        # rules change) instead of matching every pattern against every event.
        key = (container, rel, is_dir)
        hit = self._ignore_cache.get(key)
        if hit is None:
            if len(self._ignore_cache) >= IGNORE_CACHE_SIZE:
                self._ignore_cache.clear()
            hit = self._ignore_cache[key] = self.ignore.ignored_path(container, rel, is_dir=is_dir)
        return hit

    def _pruned(self, path: str) -> bool:
        """Whether the poller may skip a folder: the ignore rules leave it out."""
        key = self._split(path)
        if key is None or not key[1]:
            return False
        return self.ignore.ignored_path(key[0], key[1], is_dir=True)

    def _out_of_watches(self) -> None:
        # On an observer thread: the switch to polling happens on the hand-off thread.
        self._watch_limit_hit = True
        self._wake()

    def _overflowed(self) -> None:
        # Runs on the inotify reader thread, which must get back to reading at once.
        metrics.overflowed()
        self.handoff.owe("inotify queue overflow: events were lost")

    # --- events -----------------------------------------------------------------------------

    def _on_event(self, event: FileSystemEvent) -> None:
        self.stats.events += 1
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileSystemMovedEvent):
            self._note(src, Change.GONE, event.is_directory)
            dest = os.fsdecode(event.dest_path)
            # A moved folder's files arrive as moves of their own.
            if dest and not event.is_directory:
                self._note(dest, Change.CHANGED, False)
        elif isinstance(event, (FileDeletedEvent, DirDeletedEvent)):
            self._note(src, Change.GONE, event.is_directory)
        elif isinstance(event, FileCreatedEvent):
            self._note(src, Change.CREATED, False)
        elif not event.is_directory:
            self._note(src, Change.CHANGED, False)

    def _split(self, path: str) -> Key | None:
        if not path.startswith(self._prefix):
            return None
        container, _, rest = path[len(self._prefix) :].partition(os.sep)
        return container, rest.replace(os.sep, "/")

    def _note(self, path: str, change: Change, is_dir: bool) -> None:
        key = self._split(path)
        if key is None:
            return
        container, rel = key
        if os.path.basename(path) == SYNCIGNORE:
            self.ignore.reload()
            self._ignore_cache.clear()
            self.handoff.owe("ignore rules changed")
            return
        if not rel:
            if is_dir and change is Change.GONE:
                # A whole app folder went away: the full pass and its delete guards decide.
                self.handoff.owe(f"app folder {container!r} removed or moved away")
                return
            if is_dir or container.startswith("."):
                return
            # A file at the root is one of the server's store files (apps.json).
            key = container, rel = STORE_FILES, container
        if self._ignored(container, rel, is_dir):
            return
        with self._cond:
            opened = key not in self._debounce
            self._debounce.record(key, change)
            if opened:
                self._cond.notify()
            else:
                metrics.coalesced()

    # --- hand-off ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._cond.wait(self._wait_time())
                if self._stopping:
                    return
                flushes = self._debounce.due()
            try:
                self.handoff.hand_off(flushes)
                now = time.monotonic()
                self.handoff.tick(now)
                if now >= self._next_health:
                    self._next_health = now + self.health_interval
                    self._check_observer()
            except Exception:  # the hand-off thread must survive anything
                log.exception("watcher hand-off failed; a full pass will follow")
                self.handoff.owe("the watcher's hand-off failed")

    def _wait_time(self) -> float:
        times = [self._next_health]
        for t in (self._debounce.next_deadline(), self.handoff.next_time()):
            if t is not None:
                times.append(t)
        return max(0.0, min(times) - time.monotonic())

    def _message(self, text: str) -> None:
        self.stats.messages.append(text)
        log.warning("%s", text)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


__all__ = ["EVENT_FILTER", "Key", "ObserverKind", "PathDispatcher", "Watcher", "WatcherStats"]
