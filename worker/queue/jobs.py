"""The work behind each task, as plain functions of (settings, plain arguments).

The Celery tasks in ``tasks/`` and the embedded runner (``synchro-sync run``) both call these, so
the logic is the same in both modes and is tested without Celery.  Each function records what
it did for ``synchro-sync status`` and logs with the container and path it concerns.

Guards against double runs:

* a full pass holds a host-local lock (``STATE_DIR/locks/full-pass.lock``): two passes of one
  host's files never run at once, the second waits and then re-checks;
* a snapshot holds a cluster-wide lock (Redis when the broker is Redis, else the host-local
  lock): a second snapshot started meanwhile is skipped;
* a scheduled run first claims its tick (:func:`worker.coord.ticks.claim_tick`), so that a
  schedule sent twice (two beats, a restarted beat) runs once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker import metrics
from worker.backups.dest import open_destination
from worker.backups.snapshots import EmptySource, prune_snapshots, take_snapshot
from worker.coord.locks import cluster_lock, host_lock
from worker.coord.status import record_failure, record_retry, record_snapshot
from worker.errors import StillChanging
from worker.mirror import pass_log, passes, pathsync
from worker.mirror.context import MirrorContext
from worker.mirror.results import PathResult

# The process's status store and a pass's record live below, for `synchro-sync sync` too;
# status_store is named here for the embedded runtime and the Celery signals.
from worker.mirror.runs import forget_status_store, record_pass
from worker.mirror.runs import status_store as status_store
from worker.retry import RETRY_COUNTER, Where
from worker.stores.sessions import open_session_store, unreachable_reason
from worker.stores.sessions.base import skipped_summary

if TYPE_CHECKING:
    from worker.config import Settings

log = logging.getLogger("synchro_sync.jobs")

_ctx_lock = threading.Lock()
_ctx: MirrorContext | None = None


def mirror_context(settings: Settings) -> MirrorContext:
    """The process's MirrorContext, built on first use (once per worker process)."""
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            _ctx = MirrorContext.from_settings(settings)
        return _ctx


def close_context() -> None:
    """Release the process's store connections (worker shutdown)."""
    global _ctx
    with _ctx_lock:
        if _ctx is not None:
            _ctx.close()
        _ctx = None
        forget_status_store()


@contextmanager
def _counting_retries(
    settings: Settings, what: str, container: str | None = None, path: str | None = None
) -> Iterator[None]:
    """Record the retries made meanwhile for ``status``, each under the container and path
    it concerned (a retry names them itself: another thread's retries keep their own path)."""
    try:
        yield
    except Exception as exc:
        metrics.store_answered(what, exc)
        raise
    else:
        metrics.store_answered(what, None)
    finally:
        groups: dict[tuple[str | None, str | None], list[str]] = {}
        for where, message in RETRY_COUNTER.drain():
            groups.setdefault(_retried(where, container, path), []).append(message)
        for (c, p), messages in groups.items():
            try:
                record_retry(status_store(settings), what, messages[-1], len(messages), c, p)
            except Exception as exc:  # status is best effort; the sync itself succeeded
                log.warning("could not record retries: %s", exc)


def _retried(
    where: Where | None, container: str | None, path: str | None
) -> tuple[str | None, str | None]:
    """(container, key) a retry concerned, as the store named them; the task's own otherwise."""
    if where is None or where.container is None:
        return container, path
    return where.container, where.key


def sync_path(settings: Settings, container: str, relpath: str) -> Any:
    """Mirror one path's current state (upload, or delete if it is gone).

    A path this host cannot read (a name that is not UTF-8, no permission, a symlink loop) is
    logged once by name and skipped; the next full pass reports it among its warnings."""
    started = time.monotonic()
    try:
        with _counting_retries(settings, "sync_path", container, relpath):
            result = pathsync.sync_path(mirror_context(settings), container, relpath)
    except (OSError, UnicodeError) as exc:
        why = pass_log.local_problem(exc)
        pass_log.once(logging.WARNING, container, relpath, why)
        return PathResult(container, relpath, "skipped", reason=why)
    except StillChanging as exc:
        # Being written (a late or duplicate delivery caught it mid-save): its next write's
        # event brings it here again once it is still.
        log.info("container=%s path=%s still being written, left to its next save: %s",
                 container, relpath, exc)
        return PathResult(container, relpath, "skipped", reason="still being written")
    log.info(
        "container=%s path=%s synced in %.3fs: %s",
        container, relpath, time.monotonic() - started, pass_log.path_human(result),
    )
    metrics.path_synced(settings, result)
    if getattr(result, "action", "") == "withheld":
        log.warning("container=%s path=%s delete withheld: %s", container, relpath,
                    result.reason)
        record_failure(status_store(settings), "sync_path", result.reason, container, relpath)
    return result


def full_pass(
    settings: Settings, containers: Sequence[str] | None = None, reason: str = "",
    stop: threading.Event | None = None,
) -> Any:
    """One full mirror pass of this host's containers under the host-local pass lock; ``stop``
    set ends it early (``interrupted``, not recorded as a pass)."""
    root = Path(settings.APP_ROOT_PATH)
    if not root.is_dir():  # unmounted, renamed away: said once, then wait for it
        if not pass_log.root_gone.is_set():
            pass_log.root_gone.set()
            log.warning("APP_ROOT_PATH %s is missing; no full pass (nothing deleted) until it "
                        "is back", root)
        return None
    if pass_log.root_gone.is_set():
        pass_log.root_gone.clear()
        log.warning("APP_ROOT_PATH %s is back; full passes resume", root)
    started = time.monotonic()
    with host_lock(settings, "full-pass", timeout=3600.0), _counting_retries(settings, "full_pass"):
        result = passes.full_pass(
            mirror_context(settings),
            containers=list(containers) if containers else None, stop=stop,
        )
    if result.interrupted:
        log.warning("full pass (%s) stopped early: uploaded %d; nothing deleted, the next "
                    "pass does the rest", reason, result.uploaded)
        return result
    record_pass(settings, result, reason, time.monotonic() - started, whole=not containers)
    return result


def snapshot_sessions(settings: Settings, scheduled: bool = False) -> dict[str, Any] | None:
    """Take a verified snapshot to ``BACKUP.dest``, then prune to ``BACKUP.keep``.

    Returns what was done, or None when another snapshot holds the lock.  Pruning runs only
    after the new snapshot was written and verified (``take_snapshot`` raises otherwise).
    """
    if why := unreachable_reason(settings):
        log.warning("snapshot not taken: %s", why)
        return None
    spec = settings.BACKUP.dest
    with cluster_lock(settings, "snapshot", ttl=1800) as got:
        if not got:
            log.info("snapshot skipped: another snapshot is running")
            return None
        with _counting_retries(settings, "snapshot"):
            source = open_session_store(settings)
            dest = open_destination(spec, settings)
            try:
                # take_snapshot re-reads and verifies before it writes the manifest, and
                # raises otherwise: pruning is reached only with a verified new snapshot.
                try:
                    snap = take_snapshot(source, dest)
                except EmptySource as exc:
                    # Never an empty backup that prunes the good ones: warn, keep them.
                    log.warning("snapshot not taken: %s; older snapshots kept", exc)
                    return None
                pruned = prune_snapshots(dest, settings.BACKUP.keep)
            finally:
                for thing in (source, dest):
                    close = getattr(thing, "close", None)
                    if callable(close):
                        close()
    out = {
        "id": snap.id,
        "sessions": snap.count,
        "bytes": snap.size,
        "dest": spec,
        "pruned": len(pruned),
        "kept": settings.BACKUP.keep,
        "scheduled": scheduled,
        "skipped": snap.skipped or {},
    }
    record_snapshot(status_store(settings), out)
    skipped = f"; keys skipped: {skipped_summary(snap.skipped)}" if snap.skipped else ""
    log.info("snapshot %s of %s sessions -> %s (pruned %s%s)", snap.id, snap.count, spec,
             len(pruned), skipped)
    return out
