"""The Celery app made from the settings: reliability options, queues, routes, beat schedule;
``celery -A worker worker|beat`` find it; importing the package does not import Celery."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import pytest

from tests.servers.celery_worker import SyncWorld
from tests.servers.process import REPO, ServerProcess, wait_for
from tests.servers.redis_server import RedisServer
from worker.config import load_settings

_EMPTY_CONFIG = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
_EMPTY_CONFIG.write("{}")
_EMPTY_CONFIG.close()


def _config(**env: str) -> dict[str, Any]:
    from worker.queue.app import celery_config

    environ = {"SYNCHRO_CONFIG": _EMPTY_CONFIG.name,
               **{f"SYNCHRO__{k}": v for k, v in env.items()}}
    return celery_config(load_settings(config_file=None, environ=environ))


def test_reliability_options() -> None:
    from worker.queue.app import TIME_LIMITS

    conf = _config(BROKER_URL="redis://127.0.0.1:1/0")
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_enable_prefetch_count_reduction"] is False
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["task_ignore_result"] is True and conf["result_backend"] is None
    assert conf["result_expires"] > 0
    longest = max(hard for _, hard in TIME_LIMITS.values())
    assert conf["broker_transport_options"]["visibility_timeout"] > longest
    assert conf["result_backend_transport_options"]["visibility_timeout"] > longest
    # Every I/O has a timeout: broker sockets, and every task a soft and a hard limit.
    assert conf["broker_transport_options"]["socket_timeout"] > 0
    assert conf["broker_transport_options"]["socket_connect_timeout"] > 0
    assert conf["broker_connection_timeout"] > 0
    for name in ("tasks.sync_path", "tasks.full_pass", "tasks.snapshot_sessions",
                 "tasks.scheduled_full_pass"):
        limits = conf["task_annotations"][name]
        assert 0 < limits["soft_time_limit"] < limits["time_limit"]


def test_queues_routes_and_schedule_follow_the_settings() -> None:
    conf = _config(
        BROKER_URL="amqp://guest:guest@127.0.0.1:5672//", HOST_QUEUE="files.web-1",
        SYNC__fullPassInterval="120", BACKUP__interval="900",
        SESSIONSTORE_SERVICE="FileSessionStore",  # the memory store is never backed up
    )
    assert [q.name for q in conf["task_queues"]] == ["files.web-1", "sessions"]
    assert conf["task_routes"]["tasks.sync_path"] == {"queue": "files.web-1"}
    assert conf["task_routes"]["tasks.full_pass"] == {"queue": "files.web-1"}
    assert conf["task_routes"]["tasks.snapshot_sessions"] == {"queue": "sessions"}
    beat = conf["beat_schedule"]
    assert beat["full-pass"]["schedule"] == 120.0
    assert beat["full-pass"]["task"] == "tasks.scheduled_full_pass"
    assert beat["session-backup"]["schedule"] == 900.0
    assert beat["session-backup"]["kwargs"] == {"scheduled": True}
    assert "socket_timeout" not in conf["broker_transport_options"]  # Redis-only options

    assert "session-backup" not in _config(BACKUP__interval="0")["beat_schedule"]


def test_default_host_queue_is_per_host() -> None:
    import socket

    conf = _config()
    assert conf["task_routes"]["tasks.sync_path"]["queue"] == f"files.{socket.gethostname()}"


def test_importing_the_package_imports_neither_celery_nor_settings(tmp_path: Any) -> None:
    code = (
        "import sys, worker, worker.config, worker.cli, worker.live.dispatch, worker.coord.status\n"
        "assert 'celery' not in sys.modules, 'celery imported'\n"
        "assert worker._app is None\n"
    )
    # A broken config.json in the working directory proves no settings were loaded.
    (tmp_path / "config.json").write_text("{ not json")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_celery_finds_the_app_as_worker_celery(tmp_path: Any) -> None:
    code = (
        "from celery.app.utils import find_app\n"
        "app = find_app('worker')\n"
        "app.loader.import_default_modules()\n"
        "print(app.main, app.conf.task_routes['tasks.sync_path']['queue'])\n"
        "print(sorted(n for n in app.tasks if n.startswith('tasks.')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "SYNCHRO_CONFIG": _EMPTY_CONFIG.name,
           "SYNCHRO__HOST_QUEUE": "files.here"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "synchro_sync files.here"
    assert lines[1] == str(["tasks.full_pass", "tasks.scheduled_full_pass",
                            "tasks.snapshot_sessions", "tasks.sync_path"])


def test_celery_beat_command_runs_as_it_is(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    """``celery -A worker beat`` (not our wrapper) starts, takes the one-beat lock, and uses
    STATE_DIR for its schedule file."""
    from tests.servers.celery_worker import redis_db_url

    world = sync_world(redis_db_url(redis_server))
    beat = ServerProcess(
        "celery-beat", [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "INFO"],
        healthy=lambda: False, env=world.env, cwd=str(world.base), workdir=world.base / "logs",
    )
    world.ready["celery-beat"] = "beat lock taken"
    world.procs.append(beat)
    world.base.joinpath("logs").mkdir(exist_ok=True)
    world.restart(beat)
    wait_for(  # the file is opened right after the lock is taken
        lambda: any(p.name.startswith("celerybeat-schedule") for p in world.state.iterdir()),
        10, "celerybeat-schedule in STATE_DIR", details=beat.tail,
    )


def test_worker_command_passes_options_to_celery(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    """``synchro-sync worker -Q sessions`` (a host without the module files) consumes only the
    shared queue: the option reached Celery."""
    from tests.servers.celery_worker import CLI, redis_db_url

    world = sync_world(redis_db_url(redis_server))
    proc = ServerProcess(
        "sessions-worker", [*CLI, "worker", "-Q", "sessions", "-c", "1", "--without-mingle"],
        healthy=lambda: False, env=world.env, cwd=str(world.base), workdir=world.base / "logs",
    )
    world.ready[proc.name] = "ready."
    world.procs.append(proc)
    world.base.joinpath("logs").mkdir(exist_ok=True)
    world.restart(proc)
    log = proc.log_path.read_text()
    assert ".> sessions" in log and f".> {world.host_queue}" not in log
    # Not consuming the host queue, it does not ask for a start-up pass of files it lacks
    # (the request is made by a worker_ready handler, which Celery runs before "ready.").
    assert "worker started: full pass requested" not in log


def _delivered_on_a_lost_channel(redis: RedisServer) -> tuple[Any, Any]:
    """A message delivered (unacknowledged) on a channel that then lost the broker: closed,
    its connection pool dropped, as kombu leaves a consumer's channel when Redis goes away."""
    import kombu

    conn = kombu.Connection(redis.url)
    channel = conn.channel()
    queue = kombu.Queue("lost-channel", channel=channel)
    queue.declare()
    kombu.Producer(channel).publish({"path": "a.js"}, routing_key="lost-channel")
    message = queue.get(no_ack=False)
    assert message is not None
    channel.close()
    channel._disconnect_pools()
    return conn, message


@pytest.mark.parametrize("settle", ["ack", "reject", "requeue"])
def test_a_task_finishing_after_the_broker_was_lost_does_not_end_the_worker(
    own_redis: RedisServer, settle: str, caplog: pytest.LogCaptureFixture
) -> None:
    """kombu 5.7 raises AttributeError ('NoneType' object has no attribute 'client') when a
    message is acknowledged on a channel that lost its broker connection, and Celery ends the
    worker on it ("Unrecoverable error"): seen when a task outlived a 10 s Redis outage
    (tests/test_worker_faults.py).  With the app's guard the message is left for redelivery
    and the worker goes on."""
    from worker.queue.app import VISIBILITY_TIMEOUT, create_app

    create_app(load_settings(config_file=None, environ={
        "SYNCHRO_CONFIG": _EMPTY_CONFIG.name, "SYNCHRO__BROKER_URL": own_redis.url,
    }))
    conn, message = _delivered_on_a_lost_channel(own_redis)
    try:
        with caplog.at_level("WARNING", logger="synchro_sync.app"):
            if settle == "ack":
                message.ack()
            else:
                message.reject(requeue=settle == "requeue")
        assert f"Redis delivers it again after {VISIBILITY_TIMEOUT} s" in caplog.text
        assert message.delivery_tag not in message.channel.qos._delivered
    finally:
        conn.release()
