"""The embedded runner's helpers: its scheduler (:class:`Timers`) and its retry of failed
saves (:class:`RetryLater`), the in-process counterparts of beat and Celery's retries."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from worker.retry import OUTAGE_RETRY

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.live.dispatch import LocalDispatcher

log = logging.getLogger("synchro_sync.run")


class Timers:
    """The embedded scheduler: periodic full passes and session backups, one thread."""

    def __init__(
        self, settings: Settings, dispatcher: LocalDispatcher, backup: Callable[[], object]
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.backup = backup
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="synchro-sync-beat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # A backup in progress is finished (and pruned) rather than cut off.
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        from worker.coord.status import record_embedded_queue
        from worker.queue import jobs

        now = time.monotonic()
        next_pass = now + self.settings.SYNC.fullPassInterval
        from worker.stores.sessions import unreachable_reason

        interval = 0.0 if unreachable_reason(self.settings) else self.settings.BACKUP.interval
        next_backup = now + interval if interval > 0 else float("inf")
        last_pending: list[tuple[str, str]] | None = None
        while not self._stop.wait(0.5):
            now = time.monotonic()
            if now >= next_pass:
                next_pass = now + self.settings.SYNC.fullPassInterval
                self.dispatcher.request_full_pass("scheduled")
            if now >= next_backup:
                next_backup = now + interval
                try:
                    self.backup()
                except Exception:  # recorded as a failure; the next interval tries again
                    log.exception("scheduled session backup failed")
                    self._record_failure("snapshot_sessions")
            pending = self.dispatcher.pending()
            if pending != last_pending:
                try:
                    record_embedded_queue(jobs.status_store(self.settings), pending)
                    last_pending = pending
                except OSError as exc:
                    log.warning("status not written: %s", exc)

    def _record_failure(self, task: str) -> None:
        from worker.coord.status import record_failure
        from worker.queue import jobs

        exc = sys.exc_info()[1]
        with suppress(OSError):
            record_failure(jobs.status_store(self.settings), task, str(exc))


class RetryLater:
    """The embedded counterpart of the tasks' Celery retry, under the same policy
    (:data:`worker.retry.OUTAGE_RETRY`): a path whose sync failed with a transient store error
    is submitted again after its countdown; after the last attempt the next full pass finds it.
    Every failure goes to ``status``."""

    policy = OUTAGE_RETRY

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.submit: Callable[[str, str], object] | None = None
        self._attempts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def failed(self, container: str, relpath: str, exc: Exception) -> None:
        from worker.coord.status import record_failure, record_retry
        from worker.errors import TransientStoreError
        from worker.queue import jobs

        key = (container, relpath)
        with self._lock:
            attempt = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempt
        again = isinstance(exc, TransientStoreError) and attempt <= self.policy.attempts
        try:
            store = jobs.status_store(self.settings)
            record_failure(store, "sync_path", str(exc), container, relpath)
            if again:
                record_retry(store, "sync_path", str(exc), 1, container, relpath)
        except OSError as err:
            log.warning("status not written: %s", err)
        if again and self.submit is not None:
            delay = self.policy.delay(attempt)
            log.warning("container=%s path=%s retry %d in %.1fs", container, relpath, attempt,
                        delay)
            timer = threading.Timer(delay, self.submit, args=(container, relpath))
            timer.daemon = True
            timer.start()

    def succeeded(self, container: str, relpath: str) -> None:
        with self._lock:
            self._attempts.pop((container, relpath), None)
