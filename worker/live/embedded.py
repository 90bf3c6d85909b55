"""The embedded runtime of ``synchro-sync run``: watcher, in-process worker and scheduler in
one process, no server.

:func:`run_embedded` holds ``run``'s lock in ``STATE_DIR``, starts the watcher (its events wait
in the :class:`~worker.live.dispatch.LocalDispatcher` queue while the start-up full pass runs),
runs that pass, then releases the queue and lives until ``stop`` is set; the scheduled passes
and backups run on :class:`Timers`, and a save that failed on a transient store error is tried
again by :class:`RetryLater` under :data:`worker.retry.OUTAGE_RETRY`, the policy of the Celery
tasks.  :func:`check_module_store` is the check ``run`` makes before going live.  The CLI
(:mod:`worker.cli.run_cmd`) only parses options and calls these.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.coord.locks import host_lock
from worker.coord.status import record_embedded_queue, record_failure, record_retry
from worker.errors import SyncError, TransientStoreError
from worker.live.dispatch import LocalDispatcher
from worker.live.watcher import Watcher
from worker.mirror import pass_log
from worker.ops.web import serve
from worker.queue import jobs
from worker.retry import OUTAGE_RETRY
from worker.stores.modules import open_module_store
from worker.stores.sessions import backup_note, unreachable_reason

if TYPE_CHECKING:
    from worker.config import Settings

log = logging.getLogger("synchro_sync.run")


def run_embedded(
    settings: Settings,
    stop: threading.Event,
    ready: Callable[[], None],
    say: Callable[[str], None],
) -> None:
    """Watcher + in-process worker + timers until ``stop`` is set; ``ready`` is called once
    live (the start-up pass done), ``say`` with the one line that says what was done when
    ``stop`` ended it."""
    later = RetryLater(settings)
    done = {"paths": 0, "passes": 0, "stopped_passes": 0}

    def sync(container: str, relpath: str) -> object:
        try:
            result = jobs.sync_path(settings, container, relpath)
        except Exception as exc:
            later.failed(container, relpath, exc)
            raise
        later.succeeded(container, relpath)
        if getattr(result, "action", "") != "skipped":
            done["paths"] += 1
        return result

    def full_pass(containers: Sequence[str] | None, reason: str) -> object:
        # ``stop`` reaches the pass: Ctrl-C ends a long one at once, not after its last file.
        result = jobs.full_pass(settings, containers, reason, stop=stop)
        if result is not None:
            done["stopped_passes" if result.interrupted else "passes"] += 1
        return result

    with host_lock(settings, "run", timeout=0) as got:
        if not got:
            raise SyncError(f"another `synchro-sync run` uses STATE_DIR {settings.STATE_DIR}")
        record_embedded_queue(jobs.status_store(settings), [])
        dispatcher = LocalDispatcher(sync, full_pass, threads=2)
        later.submit = dispatcher.submit
        dispatcher.hold()  # events queue up while the start-up pass runs
        watcher = Watcher(settings, dispatcher)
        watcher.start()
        serve(settings, role="run", watcher=watcher, dispatcher=dispatcher, stop=stop)
        timers = Timers(settings, dispatcher, lambda: jobs.snapshot_sessions(settings, True))
        if note := backup_note(settings):
            log.warning("%s", note)
        try:
            if Path(settings.APP_ROOT_PATH).is_dir():
                result = full_pass(None, "start-up")
                log.warning("start-up full pass: %s", _pass_summary(result))
                if stop.is_set():  # stopped during it: not live; what queued up is said
                    return
            else:
                # An unmounted volume must not empty the store: wait for the folder; the
                # watcher asks for a full pass when it appears.
                log.warning(
                    "APP_ROOT_PATH %s does not exist; nothing is mirrored until it does "
                    "(create it with one folder per app, or set APP_ROOT_PATH to your apps' "
                    "folder)", settings.APP_ROOT_PATH,
                )
                pass_log.root_missing_said()
            dispatcher.release()
            timers.start()
            ready()
            stop.wait()
        finally:
            watcher.stop()
            timers.stop()
            dispatcher.wait_idle(5.0)
            dispatcher.close()
            left = dispatcher.pending()
            record_embedded_queue(jobs.status_store(settings), left)
            jobs.close_context()
            if stop.is_set():
                say(stopped_line(done, left))


def stopped_line(done: dict[str, int], left: list[tuple[str, str]]) -> str:
    """The one line ``run`` prints when stopped (Ctrl-C, SIGTERM)."""
    did = f"{done['paths']} save(s) mirrored and {done['passes']} full pass(es) done"
    if done.get("stopped_passes"):
        did += " (one more stopped part way: nothing deleted, the next start-up pass ends it)"
    if not left:
        return (f"synchro-sync: stopped: {did}; nothing was waiting "
                "(the next start-up pass re-checks the whole tree)")
    first = ", ".join(f"{c}/{p}" for c, p in left[:3])
    more = f" and {len(left) - 3} more" if len(left) > 3 else ""
    return (
        f"synchro-sync: stopped: {did}; {len(left)} path(s) not synced yet ({first}{more}) "
        "are left for the next start-up pass"
    )


def _pass_summary(result: Any) -> str:
    fn = getattr(result, "summary", None)
    return str(fn()) if callable(fn) else str(result)


def check_module_store(settings: Settings) -> None:
    """What ``config check`` does for the module store, before going live: a store ``run``
    cannot use stops it with one line (exit 2 for its configuration, 1 when it does not
    answer) instead of an ERROR at every save."""
    what = f"module store ({settings.MODULESTORE_SERVICE})"
    retries = logging.getLogger("synchro_sync.retry")
    quiet = retries.level
    if not logging.getLogger("synchro_sync").isEnabledFor(logging.DEBUG):
        retries.setLevel(logging.ERROR)  # the verdict is the one line, not each retry
    try:
        store = open_module_store(settings)
        try:
            store.check()
        finally:
            store.close()
    except SyncError as exc:
        err = SyncError(f"{what} cannot be used, not starting: {exc}")
        err.exit_code = exc.exit_code
        raise err from None
    except Exception as exc:  # an SDK's own error: still one line, exit 1
        raise SyncError(
            f"{what} cannot be used, not starting: {exc.__class__.__name__}: {exc}"
        ) from None
    finally:
        retries.setLevel(quiet)


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
        now = time.monotonic()
        next_pass = now + self.settings.SYNC.fullPassInterval
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
