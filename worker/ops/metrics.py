"""Prometheus metrics: definitions, and the small calls the work makes to count itself.

Off unless ``METRICS.port`` is set: until :func:`enable` runs every hook below returns at once,
so a process without metrics pays one global lookup per hook and never imports
``prometheus_client``.  ``run`` and ``watch`` serve these (and their live figures: watcher
events, pending paths) on ``METRICS.port`` (:mod:`worker.ops.web`).

Celery workers use prometheus-client's multiprocess mode: the worker's main process points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder in ``STATE_DIR`` before its pool forks, each
child writes its counters there (memory-mapped files, no locks between processes), and the main
process serves their sum on ``METRICS.port``.  This fits prefork best: a child may be replaced
at any time, and a push gateway or a per-child port would lose or scatter its counts.

Labels are container names and fixed kinds only: no path, URL, or error text (which may hold a
secret) is ever a label.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from worker.mirror.localtree import STORE_FILES

    root = Path(settings.APP_ROOT_PATH)
    path = root / key if container == STORE_FILES else root / container / key
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except OSError:  # changed again or gone since: the next sync measures it
        return 0.0


def pass_done(result: Any, took: float) -> None:
    """A full pass's :class:`~worker.mirror.results.PassResult`, counted per container."""
    m = _M
    if m is None or result is None:
        return
    from worker.mirror.pass_log import per_container

    now = time.time()
    for container, info in per_container(result).items():
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


def coalesced() -> None:
    """A watcher event merged into a path already waiting (its debounce window)."""
    if (m := _M) is not None:
        m.coalesced += 1


def overflowed() -> None:
    """The kernel's event queue overflowed: events were lost (a full pass follows)."""
    if (m := _M) is not None:
        m.overflows += 1


class LiveCollector:
    """What a watching process knows at scrape time: events seen, coalesced (in the debounce
    window, or by the broker's pending-path hash), dropped, and the paths waiting."""

    def __init__(self, settings: Settings, watcher: Any, dispatcher: Any) -> None:
        self.settings = settings
        self.watcher = watcher
        self.dispatcher = dispatcher

    def pending(self) -> int:
        count = len(self.watcher.pending()) if self.watcher is not None else 0
        local = getattr(self.dispatcher, "pending", None)
        if callable(local):
            return count + len(local())
        if self.settings.BROKER_URL and self.settings.BROKER_URL.startswith(("redis", "unix")):
            from worker.coord.status import _redis_pending

            # Broker away: /healthz says so; the gauge shows what is known.
            with contextlib.suppress(Exception):
                count += _redis_pending(self.settings.BROKER_URL, 0)[1]
        return count

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = _M
        stats = getattr(self.watcher, "stats", None)
        events = int(getattr(stats, "events", 0))
        merged = (m.coalesced if m else 0) + int(getattr(self.dispatcher, "coalesced", 0))
        yield CounterMetricFamily(f"{PREFIX}_watcher_events", "Watcher events seen",
                                  value=events)
        yield CounterMetricFamily(f"{PREFIX}_watcher_events_coalesced",
                                  "Watcher events merged into a path already waiting",
                                  value=merged)
        yield CounterMetricFamily(f"{PREFIX}_watcher_events_dropped",
                                  "Watcher event queue overflows (events lost; a full pass "
                                  "follows)", value=m.overflows if m else 0)
        yield GaugeMetricFamily(f"{PREFIX}_pending_paths",
                                "Paths waiting to be synced (debounce window, queue)",
                                value=self.pending())


# --- Celery workers: multiprocess mode ------------------------------------------------------

_mp_dir: str | None = None


def worker_init(settings: Settings, files: bool = True) -> None:
    """In a worker's main process, before the pool forks: counters of every child go to one
    folder, served from here."""
    global _mp_dir
    if settings.METRICS.port is None or _M is not None:
        return
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        state = Path(settings.STATE_DIR)
        state.mkdir(parents=True, exist_ok=True)
        _forget_dead_workers(state)
        _mp_dir = tempfile.mkdtemp(prefix=f"metrics-{os.getpid()}-", dir=state)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _mp_dir
    # prometheus-client picks its value class when first imported, which a Celery command
    # plugin (Flower's) may have done already: pick again, before our first metric is made.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    enable()
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    from worker.ops.web import serve

    # A worker of the shared queue alone (-Q sessions) needs no module files.
    serve(settings, registry=registry, role="worker" if files else "worker-sessions")


def _forget_dead_workers(state: Path) -> None:
    """Remove the folders of workers that ended without cleaning up (``kill -9``)."""
    for folder in state.glob("metrics-*-*"):
        pid = folder.name.split("-")[1]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid exists (it may be another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_process_exit(pid: int) -> None:
    if _mp_dir is not None or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def worker_shutdown() -> None:
    if _mp_dir is not None:
        shutil.rmtree(_mp_dir, ignore_errors=True)


def connect_worker_signals() -> None:
    """Hook the multiprocess setup into Celery's worker signals (called by create_app)."""
    from celery import signals

    def on_init(sender: Any = None, **_: Any) -> None:
        from worker.queue.app import settings_of

        app = getattr(sender, "app", None)
        if app is not None:
            settings = settings_of(app)
            try:
                files = settings.host_queue() in app.amqp.queues.consume_from
            except Exception:  # the queues Celery keeps are its own business: assume the files
                files = True
            worker_init(settings, files)

    def on_child_exit(pid: int | None = None, **_: Any) -> None:
        if pid is not None:
            worker_process_exit(pid)

    signals.worker_init.connect(on_init, weak=False, dispatch_uid="synchro-metrics-init")
    signals.worker_process_shutdown.connect(on_child_exit, weak=False,
                                            dispatch_uid="synchro-metrics-child")
    signals.worker_shutdown.connect(lambda **_: worker_shutdown(), weak=False,
                                    dispatch_uid="synchro-metrics-shutdown")
