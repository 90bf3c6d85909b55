"""Celery signal handlers: a full pass on start and on reconnection, one beat at a time, failures
into ``status``.

Connected by :func:`~worker.queue.app.create_app` for that app only (``sender`` checks), so tests
that make several apps in one process do not cross wires.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import redis
from celery import bootsteps, signals
from celery.beat import PersistentScheduler

from worker.coord import redis as shared
from worker.coord.status import record_failure, record_retry
from worker.ops import exporter, health
from worker.queue import jobs

if TYPE_CHECKING:
    from celery import Celery

    from worker.config import Settings

log = logging.getLogger("synchro_sync.worker")

BEAT_LOCK = shared.key("lock", "beat")
#: The beat lock lives this long unless renewed (every third of it) by its holder.
BEAT_LOCK_TTL = 30.0


def connect(app: Celery, settings: Settings) -> None:
    """Connect this app's handlers (each checks that the signal is about this app)."""

    def on_task_failure(
        sender: Any = None, exception: BaseException | None = None, args: Any = None, **_: Any
    ) -> None:
        if getattr(sender, "app", None) is not app:
            return
        _record(settings, "failures", sender.name, exception, args)

    def on_task_retry(
        sender: Any = None, request: Any = None, reason: Any = None, **_: Any
    ) -> None:
        if getattr(sender, "app", None) is not app:
            return
        _record(settings, "retries", sender.name, reason, getattr(request, "args", None))

    def on_process_shutdown(**_: Any) -> None:
        jobs.close_context()

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        # METRICS.port on a worker: its children's counters, served by the main process.
        mine: Any = getattr(sender, "app", None)
        if mine is not app:
            return
        try:
            files = settings.host_queue() in mine.amqp.queues.consume_from
        except Exception:  # the queues Celery keeps are its own business: assume the files
            files = True
        exporter.worker_init(settings, files)

    def on_worker_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            controller = getattr(sender, "controller", None)
            health.consumer_ready(int(getattr(controller, "concurrency", 0) or 0))

    def on_task_received(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            health.task_received()

    def on_child_exit(pid: int | None = None, **_: Any) -> None:
        if pid is not None:
            exporter.worker_process_exit(pid)

    app.steps["consumer"].add(FullPassOnConnect)
    signals.task_failure.connect(on_task_failure, weak=False)
    signals.task_retry.connect(on_task_retry, weak=False)
    signals.worker_process_shutdown.connect(on_process_shutdown, weak=False)
    signals.worker_init.connect(on_worker_init, weak=False)
    signals.worker_ready.connect(on_worker_ready, weak=False)
    signals.task_received.connect(on_task_received, weak=False)
    signals.worker_process_shutdown.connect(on_child_exit, weak=False)
    signals.worker_shutdown.connect(lambda **_: exporter.worker_shutdown(), weak=False)


class FullPassOnConnect(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
    """A consumer step: each time the worker's consumer (re)connects to the broker, it asks for a
    full pass of its host.

    On the first connection this redoes the work a killed worker held, now rather than after
    the broker's visibility timeout.  On a reconnection it redoes what the broker may have lost
    while it was away: a Redis restarted without persistence comes back with empty queues, so
    paths handed off before the outage and never run would otherwise wait for the next
    scheduled pass.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        app = parent.app
        settings = getattr(app, "synchro_settings", None)
        if settings is None:  # a Celery app not made by create_app
            return
        reason = "worker started" if parent.restart_count <= 0 else "broker connection restored"
        try:
            _connect_full_pass(app, settings, reason)
        except Exception as exc:  # the broker went away again: the next connection asks
            log.warning("full pass not requested (%s): %s", reason, exc)


def _connect_full_pass(app: Celery, settings: Settings, reason: str) -> None:
    """Ask for a full pass of this host, once for several workers connecting together."""
    queue = settings.host_queue()
    if not settings.BROKER_URL:
        return
    consumed = set(getattr(app.amqp.queues, "consume_from", None) or app.amqp.queues)
    if queue not in consumed:
        return
    if shared.is_redis_url(settings.BROKER_URL):
        client = shared.client(str(settings.BROKER_URL))
        # Several workers (re)connecting together ask once.
        if not client.set(shared.key("startpass", queue), "1", nx=True, px=1500):
            return
    app.send_task("tasks.full_pass", args=[None, reason], queue=queue)
    log.info("queue=%s %s: full pass requested", queue, reason)


def _record(settings: Settings, kind: str, task: str, error: Any, args: Any) -> None:
    container = path = None
    if isinstance(args, list | tuple) and task == "tasks.sync_path" and len(args) >= 2:
        container, path = str(args[0]), str(args[1])
    if kind == "failures":
        log.error("container=%s path=%s %s failed: %s", container, path, task, error)
    try:
        store = jobs.status_store(settings)
        if kind == "failures":
            record_failure(store, task, f"{error!s}", container, path)
        else:
            record_retry(store, task, f"{error!s}", 1, container, path)
    except Exception as exc:  # status is best effort
        log.warning("could not record %s: %s", kind, exc)


def hold_beat_lock(settings: Settings) -> None:
    """Block until this beat holds the cluster's beat lock, then keep renewing it.

    A second beat started by mistake waits here as a standby and takes over if the first one
    dies (its lock expires after :data:`BEAT_LOCK_TTL`).  Without a Redis broker the embedded
    runner is the only scheduler and nothing is needed.
    """
    if not shared.is_redis_url(settings.BROKER_URL):
        return
    client = shared.client(str(settings.BROKER_URL))
    lock = client.lock(BEAT_LOCK, timeout=BEAT_LOCK_TTL, thread_local=False)
    if not lock.acquire(blocking=False):
        log.warning("another beat holds %s; waiting as a standby", BEAT_LOCK)
        while not lock.acquire(blocking=True, blocking_timeout=BEAT_LOCK_TTL / 3):
            pass
    log.info("beat lock taken")

    def release() -> None:
        # An orderly stop hands over at once; a killed beat's lock expires after the TTL.
        with contextlib.suppress(redis.exceptions.RedisError):
            lock.release()

    atexit.register(release)

    def renew() -> None:
        while True:
            threading.Event().wait(BEAT_LOCK_TTL / 3)
            try:
                try:
                    lock.reacquire()
                except redis.exceptions.LockError:
                    # Gone: a Redis restarted without its data, or away longer than the TTL.
                    # Free, it is taken again; held by another beat, this one stops (never two).
                    if not lock.acquire(blocking=False):
                        log.error("beat lock %s taken by another beat; stopping this beat",
                                  BEAT_LOCK)
                        os.kill(os.getpid(), signal.SIGTERM)
                        return
                    log.warning("beat lock %s had expired in Redis and no other beat held it; "
                                "taken again", BEAT_LOCK)
            except redis.exceptions.RedisError as exc:  # broker away: keep trying
                log.warning("beat lock not renewed: %s", exc)

    threading.Thread(target=renew, name="synchro-sync-beat-lock", daemon=True).start()


class LockedScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler, opened only once this beat holds the beat lock.

    Taking the lock before the schedule file is opened matters: a standby beat on the same
    ``STATE_DIR`` must not read the file while the active one writes it.
    """

    def setup_schedule(self) -> None:
        hold_beat_lock(self.app.synchro_settings)
        super().setup_schedule()
