"""How the watcher hands work off: a :class:`Dispatcher` takes paths and full-pass requests.

The watcher calls ``submit(container, relpath)`` once a path has been quiet for the debounce
period (or a folder's path, for a burst of new files in it: :mod:`worker.live.burst`), and
``request_full_pass(reason)`` after a queue overflow, an observer error or anything else that
may have lost events.  Neither call blocks for long; each returns once the work is handed over
and raises when it was not (a broker away).  Retrying, and owing a full pass when retrying does
not help, is the watcher's hand-off's job (:mod:`worker.live.handoff`), the only place that
does it: a dispatcher keeps no debt of its own.

Two implementations:

* :class:`LocalDispatcher`, the embedded default (``synchro-sync run`` without ``BROKER_URL``): an
  in-process, coalescing queue drained by worker threads.  A path waiting in the queue is there
  once however many times it is submitted, and a path being synced when it is submitted again is
  synced once more afterwards, so a burst of saves costs one or two uploads and the last save wins.
  Nothing is written to disk for the queue: after a crash the start-up full pass finds every change
  the lost queue held, which a file-backed queue could not improve on (kombu's filesystem transport
  deletes a message when it is fetched, not when it is acknowledged, so the message in flight at a
  ``kill -9`` would be lost anyway).  It never raises.
* :class:`CeleryDispatcher` (``BROKER_URL`` set): sends ``tasks.sync_path`` to this host's queue.
  With a Redis broker a hash of pending paths coalesces submissions the same way: a path whose task
  has not started yet is not sent twice (the task removes its entry before it reads the file, so a
  save that arrives after that is sent again).  The hash is also what ``status`` shows as pending.
  A folder's path (a burst) is coalesced the same way, so while its sync waits in the queue the
  burst's later hand-offs of it cost one Redis call each and no task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from worker.coord.pending import PendingPaths
from worker.coord.redis import is_redis_url
from worker.errors import SyncError

if TYPE_CHECKING:
    from celery import Celery

    from worker.config import Settings

log = logging.getLogger("synchro_sync.dispatch")

class Dispatcher(Protocol):
    """What the watcher needs: hand off a path, ask for a full pass, stop."""

    def submit(self, container: str, relpath: str) -> None:
        """Queue a sync of ``relpath`` (``/``-separated, relative to the container; a folder's
        path syncs the folder, ``""`` the whole app folder).

        Raises when the path was not handed over; never blocks for more than a few seconds.
        """
        ...

    def request_full_pass(self, reason: str) -> None:
        """Ask for a full pass of this host's containers (overflow, observer error, start-up);
        raises when the request was not handed over."""
        ...

    def close(self) -> None:
        """Stop background threads; work already handed to a broker stays there."""
        ...


# --- embedded -------------------------------------------------------------------------------

SyncFn = Callable[[str, str], object]
FullPassFn = Callable[[Sequence[str] | None, str], object]


class LocalDispatcher:
    """In-process coalescing queue with ``threads`` workers and one full-pass thread.

    ``hold()`` / ``release()`` let ``run`` queue the watcher's events while the start-up full pass
    runs, and only then sync them (the initial full pass first, then live).
    """

    def __init__(self, sync: SyncFn, full_pass: FullPassFn, threads: int = 2) -> None:
        self._sync = sync
        self._full_pass = full_pass
        self._cond = threading.Condition()
        self._pending: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._inflight: set[tuple[str, str]] = set()
        self._again: set[tuple[str, str]] = set()
        self._pass_reasons: list[str] = []
        self._pass_running = False
        self._held = False
        self._closed = False
        self.synced = 0
        self.failed = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"synchro-sync-{i}", daemon=True)
            for i in range(threads)
        ]
        self._threads.append(
            threading.Thread(target=self._passes, name="synchro-sync-pass", daemon=True)
        )
        for t in self._threads:
            t.start()

    # the Dispatcher protocol

    def submit(self, container: str, relpath: str) -> None:
        key = (container, relpath)
        with self._cond:
            if key in self._inflight:
                self._again.add(key)
            elif key not in self._pending:
                self._pending[key] = time.monotonic()
                self._cond.notify_all()

    def request_full_pass(self, reason: str) -> None:
        with self._cond:
            if reason not in self._pass_reasons:
                self._pass_reasons.append(reason)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    # what run and status need

    def hold(self) -> None:
        with self._cond:
            self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def pending(self) -> list[tuple[str, str]]:
        with self._cond:
            return list(self._pending) + sorted(self._inflight)

    def idle(self) -> bool:
        with self._cond:
            return not (
                self._pending or self._inflight or self._pass_reasons or self._pass_running
            )

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.02)
        return self.idle()

    # threads

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._held or not self._pending):
                    self._cond.wait()
                if self._closed:
                    return
                key, _ = self._pending.popitem(last=False)
                self._inflight.add(key)
            try:
                self._sync(*key)
                self.synced += 1
            except Exception as exc:  # one bad path must not stop the queue
                self.failed += 1
                if isinstance(exc, SyncError):  # ours: the message says what and why
                    log.error("container=%s path=%s sync failed: %s", key[0], key[1], exc)
                else:
                    log.exception("container=%s path=%s sync failed", key[0], key[1])
            finally:
                with self._cond:
                    self._inflight.discard(key)
                    if key in self._again:
                        self._again.discard(key)
                        self._pending[key] = time.monotonic()
                        self._cond.notify_all()

    def _passes(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._pass_reasons:
                    self._cond.wait()
                if self._closed:
                    return
                reason = "; ".join(self._pass_reasons)
                self._pass_reasons.clear()
                self._pass_running = True
            try:
                self._full_pass(None, reason)
            except Exception:
                log.exception("full pass (%s) failed", reason)
            finally:
                with self._cond:
                    self._pass_running = False


# --- distributed ----------------------------------------------------------------------------


class CeleryDispatcher:
    """Sends work to this host's Celery queue; raises when the broker does not take it."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.queue = settings.host_queue()
        url = settings.BROKER_URL
        self._pending_paths = PendingPaths(url, self.queue) if url and is_redis_url(url) else None
        self.sent = 0
        self.coalesced = 0

    def submit(self, container: str, relpath: str) -> None:
        pending = self._pending_paths
        if pending is not None and not pending.claim(container, relpath):
            self.coalesced += 1
            return
        self._send("tasks.sync_path", [container, relpath])
        self.sent += 1

    def request_full_pass(self, reason: str) -> None:
        self._send("tasks.full_pass", [None, reason])

    def close(self) -> None:
        """Nothing to stop: what was sent stays in the broker."""

    def _send(self, name: str, args: list[Any]) -> None:
        self.app.send_task(name, args=args, queue=self.queue, retry=False)
