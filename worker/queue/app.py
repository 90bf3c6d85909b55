"""The Celery app, made from the settings: queues, routes, reliability options, beat schedule.

No task bodies live here (they are in ``tasks/``, thin, and call ``worker.queue.jobs``).  Choices:

* **At least once, never stale.** ``task_acks_late`` and ``task_reject_on_worker_lost``: a task is
  acknowledged after it ran, so a worker killed mid-task leaves its message to be delivered again;
  ``worker_prefetch_multiplier = 1`` so a dying worker holds at most one message per process.  A
  task syncs the path's state when it runs (never what the event said) under a host-local per-path
  lock, so duplicates and late deliveries are harmless and the last save wins.
* **Timeouts everywhere.** Every task has a soft and a hard time limit; broker sockets have
  connect and read timeouts; the Redis ``visibility_timeout`` (after which an unacknowledged
  message is delivered again) is set above the longest hard limit, so a running task is never
  handed to a second worker.  A worker also asks for a full pass of its host when it starts and
  each time its consumer reconnects (``signals.FullPassOnConnect``), so work lost with a killed
  worker, or with a broker that restarted empty, is redone at once rather than after the
  visibility timeout or the next scheduled pass.
* **Redis does not grow.** Results are ignored (no result backend); ``result_expires`` bounds them
  should someone configure a backend anyway.
* **Queues.** Work that needs the module files goes to this host's queue (``HOST_QUEUE``, default
  ``files.<hostname>``); session work and the scheduled fan-out go to the shared ``sessions`` queue
  that any worker may take.
* **One beat.** The periodic full pass (``SYNC.fullPassInterval``) and session backups
  (``BACKUP.interval``) are guarded twice: the scheduler takes a Redis lock before it opens its
  schedule file, so a second beat waits as a standby, and each scheduled run claims its tick so a
  schedule sent twice runs once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kombu
from celery import Celery
from kombu.transport import redis as kombu_redis

from worker.config import load_settings
from worker.coord.queues import SESSIONS_QUEUE
from worker.coord.redis import is_redis_url
from worker.queue import signals
from worker.stores.sessions import unreachable_reason

if TYPE_CHECKING:
    from worker.config import Settings

log = logging.getLogger("synchro_sync.app")

#: (soft, hard) time limits in seconds, per task.
TIME_LIMITS: dict[str, tuple[float, float]] = {
    "tasks.sync_path": (240.0, 300.0),
    "tasks.full_pass": (3300.0, 3600.0),
    "tasks.snapshot_sessions": (1700.0, 1800.0),
    "tasks.scheduled_full_pass": (50.0, 60.0),
}
#: Above the longest hard limit, so no running task is ever delivered a second time.
VISIBILITY_TIMEOUT = int(max(hard for _, hard in TIME_LIMITS.values()) * 2)

#: Socket timeouts towards the broker (seconds).
BROKER_CONNECT_TIMEOUT = 3.0
BROKER_SOCKET_TIMEOUT = 10.0


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for ``settings`` (pure; tested without a broker)."""
    # kombu ships no type information; its entities are used as plain callables here.
    queue: Any = kombu.Queue  # type: ignore[attr-defined]
    exchange: Any = kombu.Exchange  # type: ignore[attr-defined]
    host_queue = settings.host_queue()
    transport_options: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT}
    if is_redis_url(settings.BROKER_URL):
        transport_options.update(
            socket_timeout=BROKER_SOCKET_TIMEOUT,
            socket_connect_timeout=BROKER_CONNECT_TIMEOUT,
            retry_on_timeout=True,
            health_check_interval=25,
        )
    state_dir = Path(settings.STATE_DIR)
    schedule: dict[str, Any] = {
        "full-pass": {
            "task": "tasks.scheduled_full_pass",
            "schedule": float(settings.SYNC.fullPassInterval),
            "options": {"queue": SESSIONS_QUEUE, "expires": settings.SYNC.fullPassInterval},
        },
    }
    if settings.BACKUP.interval > 0 and not unreachable_reason(settings):
        schedule["session-backup"] = {
            "task": "tasks.snapshot_sessions",
            "schedule": float(settings.BACKUP.interval),
            "kwargs": {"scheduled": True},
            "options": {"queue": SESSIONS_QUEUE, "expires": settings.BACKUP.interval},
        }
    return {
        # With no BROKER_URL the Celery app is not used for work (``run`` queues in-process);
        # memory:// keeps `celery -A worker ...` from trying a RabbitMQ on localhost.
        "broker_url": settings.BROKER_URL or "memory://",
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": BROKER_CONNECT_TIMEOUT,
        "broker_connection_max_retries": None,
        "broker_transport_options": transport_options,
        "broker_heartbeat": 30,
        "result_backend": None,
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
        "task_ignore_result": True,
        "result_expires": 3600,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": TIME_LIMITS["tasks.sync_path"][1],
        "task_soft_time_limit": TIME_LIMITS["tasks.sync_path"][0],
        "task_annotations": {
            name: {"soft_time_limit": soft, "time_limit": hard}
            for name, (soft, hard) in TIME_LIMITS.items()
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": SESSIONS_QUEUE,
        "task_queues": [
            queue(host_queue, exchange(host_queue), routing_key=host_queue),
            queue(SESSIONS_QUEUE, exchange(SESSIONS_QUEUE), routing_key=SESSIONS_QUEUE),
        ],
        "task_routes": {
            "tasks.sync_path": {"queue": host_queue},
            "tasks.full_pass": {"queue": host_queue},
            "tasks.snapshot_sessions": {"queue": SESSIONS_QUEUE},
            "tasks.scheduled_full_pass": {"queue": SESSIONS_QUEUE},
        },
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        # Flower sees each task (its arguments: container, path; its outcome); METRICS.taskEvents
        # false turns the events off (their cost: docs/benchmarks.md).
        "worker_send_task_events": settings.METRICS.taskEvents,
        "task_send_sent_event": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # After a reconnection Celery would lower the prefetch count by the tasks still running
        # and raise it again as new messages are acknowledged; a message whose acknowledgement
        # never comes (its channel gone) leaves the worker fetching one at a time, or none.  Our
        # tasks are idempotent and short, so fetching ``concurrency`` at once again is harmless.
        "worker_enable_prefetch_count_reduction": False,
        "beat_schedule": schedule,
        "beat_schedule_filename": str(state_dir / "celerybeat-schedule"),
        "beat_scheduler": "worker.queue.signals:LockedScheduler",
        "beat_max_loop_interval": 5,
        "include": ["tasks"],
    }


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings`` (loaded from the environment and config file if None)."""
    if settings is None:
        settings = load_settings()
    _guard_redis_channel_loss()
    # Beat opens its schedule file in STATE_DIR before any signal would let us create it.
    Path(settings.STATE_DIR).mkdir(parents=True, exist_ok=True)
    app = Celery("synchro_sync", set_as_current=True)
    app.config_from_object(celery_config(settings))
    app.synchro_settings = settings  # read by the tasks: settings are loaded once per process
    signals.connect(app, settings)
    return app


def settings_of(app: Celery) -> Settings:
    """The settings an app was made from."""
    settings: Settings = app.synchro_settings
    return settings


_guarded = False


def _guard_redis_channel_loss() -> None:
    """Keep a worker alive when its Redis connection drops while it holds a message.

    kombu's Redis QoS talks to Redis through the channel that delivered the message.  After
    the broker connection was lost, that channel has no connection left (and, once closed, no
    connection pool), and kombu 5.7 then fails with an AttributeError (``'NoneType' object has
    no attribute 'client'``) that ends the worker ("Unrecoverable error"):

    - when the channel closes, putting its unacknowledged messages back;
    - when a task that was running during the outage finishes after the worker reconnected,
      acknowledging (or rejecting) its message on that old channel.

    Both were seen here with redis-server stopped for 10 s while tasks ran
    (``tests/test_worker_faults.py``).  Skipping the Redis side of each is safe: the message
    stays in Redis's unacked set and is delivered again after the visibility timeout (every
    task is idempotent), and the full pass the watcher owes after a broker outage redoes the
    work at once.
    """
    global _guarded
    if _guarded:
        return
    qos: Any = kombu_redis.QoS
    restore, ack, reject = qos.restore_unacked, qos.ack, qos.reject

    def restore_unacked(self: Any, client: Any = None) -> Any:
        if client is None and _channel_lost(self):
            log.warning(
                "broker connection lost: %d unacknowledged message(s) left for redelivery",
                len(self._delivered),
            )
            self._delivered.clear()
            return None
        return restore(self, client)

    def ack_unless_lost(self: Any, delivery_tag: Any) -> Any:
        if _channel_lost(self) and getattr(self.channel, "_pool", None) is None:
            _left(self, delivery_tag, "acknowledged")
            return None
        return ack(self, delivery_tag)

    def reject_unless_lost(self: Any, delivery_tag: Any, requeue: bool = False) -> Any:
        if _channel_lost(self) and getattr(self.channel, "_pool", None) is None:
            _left(self, delivery_tag, "rejected")
            return None
        return reject(self, delivery_tag, requeue=requeue)

    setattr(qos, "restore_unacked", restore_unacked)  # noqa: B010
    setattr(qos, "ack", ack_unless_lost)  # noqa: B010
    setattr(qos, "reject", reject_unless_lost)  # noqa: B010
    _guarded = True


def _channel_lost(qos: Any) -> bool:
    """Whether the channel of this QoS lost its broker connection: no connection, or one whose
    client is gone.  (A channel that still has its connection pool can reach Redis through it
    all the same, so an acknowledgement is only skipped when that is gone too.)"""
    return getattr(qos.channel.connection, "client", None) is None


def _left(qos: Any, delivery_tag: Any, what: str) -> None:
    log.warning(
        "broker connection lost: a finished task's message could not be %s on its old "
        "channel; Redis delivers it again after %d s (the task is idempotent)",
        what, VISIBILITY_TIMEOUT,
    )
    qos._delivered.pop(delivery_tag, None)
