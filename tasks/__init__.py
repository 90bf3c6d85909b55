"""The Celery tasks: thin, plain arguments, the work is in :mod:`worker.queue.jobs`.

Every task is idempotent: it syncs the state it finds when it runs, so running it twice, late or
on two workers changes nothing (the last save wins, see :mod:`worker.queue.app`).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import shared_task

from worker.coord.pending import PendingPaths
from worker.coord.queues import SESSIONS_QUEUE
from worker.coord.redis import is_redis_url
from worker.coord.ticks import claim_tick
from worker.queue import jobs
from worker.queue.app import settings_of
from worker.retry import OUTAGE_RETRY

log = logging.getLogger("synchro_sync.tasks")

# Celery-level retry is for outages longer than the store retry policy rides out (one policy
# for both, worker.retry); countdowns stay well below the broker's visibility timeout.
_OUTAGE_RETRY = OUTAGE_RETRY.celery_options()


@shared_task(name="tasks.sync_path", bind=True, **_OUTAGE_RETRY)  # type: ignore[untyped-decorator]
def sync_path(self: Any, container: str, relpath: str) -> None:
    """Mirror the current state of ``relpath`` in ``container`` (upload or delete)."""
    settings = settings_of(self.app)
    _clear_pending(settings, container, relpath)
    jobs.sync_path(settings, container, relpath)


@shared_task(name="tasks.full_pass", bind=True, **_OUTAGE_RETRY)  # type: ignore[untyped-decorator]
def full_pass(self: Any, containers: list[str] | None = None, reason: str = "requested") -> None:
    """A full mirror pass of this host's containers (all of them when ``containers`` is None)."""
    jobs.full_pass(settings_of(self.app), containers, reason)


@shared_task(name="tasks.snapshot_sessions", bind=True, **_OUTAGE_RETRY)  # type: ignore[untyped-decorator]
def snapshot_sessions(self: Any, scheduled: bool = False) -> None:
    """A verified session snapshot to BACKUP.dest, then prune to BACKUP.keep."""
    settings = settings_of(self.app)
    if scheduled and not claim_tick(settings, "snapshot", settings.BACKUP.interval):
        log.info("scheduled snapshot already ran in this interval; skipped")
        return
    jobs.snapshot_sessions(settings, scheduled=scheduled)


@shared_task(name="tasks.scheduled_full_pass", bind=True)  # type: ignore[untyped-decorator]
def scheduled_full_pass(self: Any) -> None:
    """Beat's periodic pass: one ``tasks.full_pass`` to the queue of every host with files.

    The host queues are those the live workers consume (asked with a broadcast), and this
    worker's own host queue if it consumes it.
    """
    settings = settings_of(self.app)
    if not claim_tick(settings, "full_pass", settings.SYNC.fullPassInterval):
        log.info("scheduled full pass already sent in this interval; skipped")
        return
    queues: set[str] = set()
    own = settings.host_queue()
    consumed = getattr(self.app.amqp.queues, "consume_from", None) or self.app.amqp.queues
    if own in consumed:  # a sessions-only worker has no files of its own to pass over
        queues.add(own)
    try:
        replies = self.app.control.inspect(timeout=2.0).active_queues() or {}
    except Exception as exc:  # transports without broadcast (or nobody answering)
        log.info("could not ask workers for their queues: %s", exc)
        replies = {}
    for worker_queues in replies.values():
        for q in worker_queues or []:
            name = q.get("name")
            if name and name not in (SESSIONS_QUEUE, "celery") and not name.endswith("pidbox"):
                queues.add(name)
    for queue in sorted(queues):
        # Expires with the interval: a host queue nobody consumes any more does not pile up.
        self.app.send_task("tasks.full_pass", args=[None, "scheduled"], queue=queue,
                           expires=settings.SYNC.fullPassInterval)
        log.info("queue=%s scheduled full pass sent", queue)


def _clear_pending(settings: Any, container: str, relpath: str) -> None:
    """Remove the path from the pending hash before reading the file (see worker.coord.pending)."""
    if not is_redis_url(settings.BROKER_URL):
        return
    try:
        PendingPaths(settings.BROKER_URL, settings.host_queue()).clear(container, relpath)
    except redis.RedisError as exc:  # the broker just delivered this task; a blip is harmless
        log.warning("container=%s path=%s pending entry not cleared: %s", container, relpath, exc)
