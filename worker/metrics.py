"""Prometheus metrics: definitions, and the small calls the work makes to count itself.

Off unless ``METRICS.port`` is set: until :func:`enable` runs every hook below returns at once,
so a process without metrics pays one global lookup per hook and never imports
``prometheus_client`` (a tenth of a second of start-up saved for every CLI command).  ``run``
and ``watch`` serve these, with their live figures, on ``METRICS.port``; Celery workers serve
the sum of their children's (:mod:`worker.ops.exporter`, :mod:`worker.ops.web`).

Labels are container names and fixed kinds only: no path, URL, or error text (which may hold a
secret) is ever a label.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.stores.modules.names import STORE_FILES

if TYPE_CHECKING:
    from worker.config import Settings

#: Every metric's name starts with this.
PREFIX = "synchro_sync"
#: Buckets of save-to-visible seconds: the promise is about a second.
VISIBLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 120.0)
PASS_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class _Metrics:
    """The metric objects, made once by :func:`enable`."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        c = "container"
        self.uploads = Counter(f"{PREFIX}_uploads_total", "Files uploaded to the module store",
                               [c])
        self.deletes = Counter(f"{PREFIX}_deletes_total", "Objects deleted from the module store",
                               [c])
        self.copies = Counter(f"{PREFIX}_copies_total",
                              "Objects copied inside the module store (renames)", [c])
        self.bytes = Counter(f"{PREFIX}_uploaded_bytes_total", "Bytes uploaded", [c])
        self.visible = Histogram(
            f"{PREFIX}_save_to_visible_seconds",
            "Seconds from a file's save (its mtime) to its new content in the store",
            buckets=VISIBLE_BUCKETS,
        )
        self.passes = Counter(f"{PREFIX}_full_passes_total", "Full passes done", [c])
        self.pass_seconds = Histogram(f"{PREFIX}_full_pass_duration_seconds",
                                      "Duration of full passes", [c], buckets=PASS_BUCKETS)
        self.pass_last = Gauge(f"{PREFIX}_full_pass_last_timestamp_seconds",
                               "When the last full pass ended (Unix time)", [c],
                               multiprocess_mode="max")
        self.retries = Counter(f"{PREFIX}_retries_total", "Retries, by kind of work", ["kind"])
        self.failures = Counter(f"{PREFIX}_failures_total", "Failures, by kind of work", ["kind"])
        self.snap_at = Gauge(f"{PREFIX}_snapshot_last_verified_timestamp_seconds",
                             "When the last verified session snapshot was taken (Unix time)",
                             multiprocess_mode="max")
        self.snap_sessions = Gauge(f"{PREFIX}_snapshot_sessions",
                                   "Sessions in the last verified snapshot",
                                   multiprocess_mode="mostrecent")
        self.snap_bytes = Gauge(f"{PREFIX}_snapshot_bytes", "Size of the last verified snapshot",
                                multiprocess_mode="mostrecent")
        self.store_ok = Gauge(f"{PREFIX}_store_last_success_timestamp_seconds",
                              "When a store last answered a sync, pass or snapshot (Unix time)",
                              multiprocess_mode="max")
        self.store_failing = Gauge(
            f"{PREFIX}_store_failing_since_timestamp_seconds",
            "Since when the store fails (Unix time); 0 while it answers",
            multiprocess_mode="mostrecent",
        )
        #: The watcher's own figures, served by :class:`LiveCollector` with its event count.
        self.coalesced = 0
        self.overflows = 0
        self.failing_since = 0.0
        self.failing_what = ""


_M: _Metrics | None = None
_lock = threading.Lock()


def enable() -> bool:
    """Make the metrics (once); False when prometheus-client is missing."""
    global _M
    with _lock:
        if _M is None:
            try:
                import prometheus_client

                prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
                _M = _Metrics()
            except ImportError:  # pragma: no cover - a dependency, installed with the package
                return False
        return True


def enabled() -> bool:
    return _M is not None


# --- the hooks (each a no-op while metrics are off) -----------------------------------------


def path_synced(settings: Settings, result: Any) -> None:
    """One ``sync_path`` result (a :class:`~worker.mirror.results.PathResult`)."""
    m = _M
    if m is None or result is None:
        return
    container = str(getattr(result, "container", "") or "")
    action = getattr(result, "action", "")
    if action == "uploaded":
        m.uploads.labels(container).inc()
        m.visible.observe(_since_saved(settings, container, str(result.key)))
    elif action == "deleted":
        m.deletes.labels(container).inc()
    elif action == "folder":
        m.uploads.labels(container).inc(int(result.uploaded))
        m.deletes.labels(container).inc(int(result.deleted))
    nbytes = int(getattr(result, "bytes", 0) or 0)
    if nbytes:
        m.bytes.labels(container).inc(nbytes)


def _since_saved(settings: Settings, container: str, key: str) -> float:
    root = Path(settings.APP_ROOT_PATH)
    path = root / key if container == STORE_FILES else root / container / key
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except OSError:  # changed again or gone since: the next sync measures it
        return 0.0


def pass_done(per_container: dict[str, dict[str, Any]], took: float) -> None:
    """A full pass's figures, per container (:func:`worker.mirror.pass_log.per_container`)."""
    m = _M
    if m is None:
        return
    now = time.time()
    for container, info in per_container.items():
        m.passes.labels(container).inc()
        m.pass_seconds.labels(container).observe(took)
        m.pass_last.labels(container).set(now)
        m.uploads.labels(container).inc(int(info.get("uploaded", 0)))
        m.deletes.labels(container).inc(int(info.get("deleted", 0)))
        m.copies.labels(container).inc(int(info.get("copied", 0)))
        m.bytes.labels(container).inc(int(info.get("bytes", 0)))


def _kind(task: str) -> str:
    return task.removeprefix("tasks.").split(":", 1)[0] or "other"


def failed(task: str) -> None:
    if (m := _M) is not None:
        m.failures.labels(_kind(task)).inc()


def retried(what: str, count: int = 1) -> None:
    if (m := _M) is not None:
        m.retries.labels(_kind(what)).inc(count)


def snapshot_taken(info: dict[str, Any]) -> None:
    if (m := _M) is not None:
        m.snap_at.set(time.time())
        m.snap_sessions.set(int(info.get("sessions", 0)))
        m.snap_bytes.set(int(info.get("bytes", 0)))


def store_answered(what: str, exc: BaseException | None) -> None:
    """A store call of ``what`` (sync_path, full_pass, snapshot) ended: ``exc`` None when it
    answered.  A local problem (a file that cannot be read) says nothing about the store."""
    m = _M
    if m is None or isinstance(exc, OSError | UnicodeError):
        return
    now = time.time()
    if exc is None:
        m.store_ok.set(now)
        m.store_failing.set(0)
        m.failing_since = 0.0
    elif not m.failing_since:
        m.failing_since = now
        m.failing_what = f"{what}: {exc.__class__.__name__}"
        m.store_failing.set(now)


def store_failing() -> tuple[float, str]:
    """(seconds the store has been failing, what failed); (0, "") while it answers."""
    m = _M
    if m is None or not m.failing_since:
        return 0.0, ""
    return time.time() - m.failing_since, m.failing_what


def live_counts() -> tuple[int, int]:
    """(events coalesced, event-queue overflows) counted in this process so far."""
    m = _M
    return (m.coalesced, m.overflows) if m is not None else (0, 0)


def coalesced() -> None:
    """A watcher event merged into a path already waiting (its debounce window)."""
    if (m := _M) is not None:
        m.coalesced += 1


def overflowed() -> None:
    """The kernel's event queue overflowed: events were lost (a full pass follows)."""
    if (m := _M) is not None:
        m.overflows += 1


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid exists (it may be another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
