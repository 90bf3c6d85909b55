"""``/healthz``: is this process doing its job?  One line of reason when it is not.

* the watcher observes (its observer and hand-off thread alive, the root there);
* the store answered recently: not failing for ``METRICS.storeFailingAfter`` seconds;
* the broker answers (``watch``: its watcher's hand-off is not failing, no path kept for the
  broker and no full pass owed; a worker: a connection to ``BROKER_URL`` opens);
* a worker's consumer consumes: tasks that wait in its host's queue while it has a free process
  and takes none for ``METRICS.consumerStalledAfter`` seconds mean a consumer that is connected
  but no longer fetching (seen with Celery after broker reconnections, celery#10205): only a
  restart of the worker helps, which is what a failing health check gets from an orchestrator.

Reasons name what failed and its class of error, never a URL or an error's text (which may
hold a secret).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kombu

from worker import metrics
from worker.coord.queues import queue_depths
from worker.ops.report import UNHEALTHY, collect_status

if TYPE_CHECKING:
    from worker.config import Settings

#: Seconds a worker's broker check (and its queue's depth) is reused.
BROKER_CHECK_EVERY = 5.0


class _Consumer:
    """What this worker's consumer did, from Celery's signals in its main process."""

    concurrency = 0
    #: ``time.monotonic()`` of the last task received (or of the consumer being ready).
    received_at = 0.0


CONSUMER = _Consumer()


def consumer_ready(concurrency: int) -> None:
    CONSUMER.concurrency = concurrency
    CONSUMER.received_at = time.monotonic()


def task_received() -> None:
    CONSUMER.received_at = time.monotonic()


class Health:
    """The checks of one process (``role``: run, watch, worker, or worker-sessions: a worker
    of the shared queue alone, which needs no module files)."""

    def __init__(self, settings: Settings, role: str, watcher: Any = None,
                 registry: Any = None) -> None:
        self.settings = settings
        self.role = role
        self.watcher = watcher
        self.registry = registry
        self._broker: tuple[float, str | None] = (0.0, None)
        self._depth: tuple[float, int] = (0.0, 0)
        self._waiting_since: float | None = None
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        """None when healthy, else the first reason."""
        for check in (self._watching, self._store, self._broker_answers, self._consuming):
            why = check()
            if why:
                return why
        return None

    def _watching(self) -> str | None:
        root = Path(self.settings.APP_ROOT_PATH)
        if self.watcher is None:
            if self.role == "worker" and not root.is_dir():
                return f"APP_ROOT_PATH {root} is missing"
            return None
        thread = getattr(self.watcher, "_thread", None)
        if thread is not None and not thread.is_alive():
            return "not watching: the watcher's thread has ended"
        observer = getattr(self.watcher, "_observer", None)
        if observer is None:
            if not root.is_dir():
                return f"not watching: APP_ROOT_PATH {root} is missing"
            return "not watching: no observer runs"
        kind = getattr(getattr(self.watcher, "kind", None), "value", "file")
        if not self.watcher._healthy(observer):
            return f"not watching: the {kind} observer stopped"
        return None

    def _store(self) -> str | None:
        seconds, what = metrics.store_failing()
        if self.registry is not None:  # a worker: its children's figures
            since = _sample(self.registry,
                            f"{metrics.PREFIX}_store_failing_since_timestamp_seconds")
            if since:
                seconds, what = time.time() - since, "worker tasks"
        if seconds and seconds >= self.settings.METRICS.storeFailingAfter:
            took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
            return f"store failing for {took} ({what})"
        return None

    def _broker_answers(self) -> str | None:
        if self.role == "watch":
            # The hand-off is the one owner of "a full pass is owed" (worker.live.handoff).
            handoff = getattr(self.watcher, "handoff", None)
            if handoff is not None and handoff.failing:
                return "broker away: saves wait for it (a full pass is owed)"
            return None
        if not self.role.startswith("worker") or not self.settings.BROKER_URL:
            return None
        with self._lock:
            at, why = self._broker
            if time.monotonic() - at < BROKER_CHECK_EVERY:
                return why
            why = _broker_problem(self.settings.BROKER_URL)
            self._broker = (time.monotonic(), why)
            return why

    def _consuming(self) -> str | None:
        if self.role != "worker" or not self.settings.BROKER_URL or not CONSUMER.concurrency:
            return None
        from celery.worker import state

        queue = self.settings.host_queue()
        with self._lock:
            now = time.monotonic()
            at, depth = self._depth
            if now - at >= BROKER_CHECK_EVERY:
                try:
                    depth = queue_depths(str(self.settings.BROKER_URL), [queue])[queue] or 0
                except Exception:  # the broker check says why
                    return None
                self._depth = (now, depth)
            taken = len(state.active_requests) + len(state.reserved_requests)
            if depth == 0 or taken >= CONSUMER.concurrency:
                self._waiting_since = None  # nothing waits, or every process is busy
                return None
            if self._waiting_since is None:
                self._waiting_since = now
            idle = now - max(self._waiting_since, CONSUMER.received_at)
        if idle < self.settings.METRICS.consumerStalledAfter:
            return None
        return (f"consumer stalled: {depth} task(s) wait in {queue}, none taken for "
                f"{idle:.0f} s with a process free (restart the worker)")


def _broker_problem(url: str) -> str | None:
    connection: Any = kombu.Connection  # type: ignore[attr-defined]
    try:
        with connection(url, connect_timeout=2, transport_options={"socket_timeout": 2}) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return f"broker away: {exc.__class__.__name__}"
    return None


def _sample(registry: Any, name: str) -> float:
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


def check_line(settings: Settings) -> tuple[bool, str]:
    """``status --check``: (healthy, one line).  The status store and broker answer, ``run``
    runs (embedded), and the local process's ``/healthz`` says ok when ``METRICS.port`` is set."""
    report = collect_status(settings, limit=0)
    fatal = report.has(UNHEALTHY)  # the broker first: the cause to name
    if fatal:
        return False, f"unhealthy: {_first_words(fatal[0].text)}"
    port = settings.METRICS.port
    if port is None:
        return True, f"ok: {report.mode}, broker and status store answer"
    host = settings.METRICS.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
            return True, response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return False, f"unhealthy: {exc.read().decode(errors='replace').strip()}"
    except OSError as exc:
        why = getattr(exc, "reason", exc)
        return False, f"unhealthy: nothing answers on {host}:{port} ({why})"


def _first_words(problem: str) -> str:
    """A status problem without the exception's text (which may hold a URL)."""
    head, _, rest = problem.partition(": ")
    kind = rest.split(":", 1)[0] if rest else ""
    return f"{head}: {kind}" if kind and " " not in kind else head
