"""Beat (one scheduler only): scheduled session backups on a Redis broker with real worker and
beat processes; prune to BACKUP.keep; a restore gives back the sessions; a second beat waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.servers.celery_worker import SyncWorld
from tests.servers.redis_server import RedisServer


def _count(path: Path, needle: str) -> int:
    try:
        return path.read_text(errors="replace").count(needle)
    except OSError:
        return 0


def test_scheduled_backup_runs_prunes_and_restores(
    sync_world: Callable[..., SyncWorld], own_redis: RedisServer
) -> None:
    from worker.backups.dest import open_destination
    from worker.backups.snapshots import list_snapshots, restore_snapshot
    from worker.stores.sessions import open_session_store
    from worker.stores.sessions.base import OnConflict

    base_url = own_redis.url.rsplit("/", 1)[0]
    dest = Path("snapshots")  # relative to the processes' working directory
    world = sync_world(
        own_redis.url,
        **{
            "SESSIONSTORE_SERVICE": "RedisSessionStore",
            "SESSIONSTORE__url": f"{base_url}/1",
            "BACKUP__interval": "1",
            "BACKUP__keep": "3",
            "BACKUP__dest": str(dest),
        },
    )
    source = open_session_store(f"{base_url}/1")
    made = {source.create({"user": n, "cart": [n, n + 1]}, ttl=3600).id: n for n in range(40)}
    source.close()

    (world.root / "app1").mkdir()
    worker = world.start_worker("w1", concurrency=1)
    beat = world.start_beat("beat1")
    standby = world.start_beat("beat2", ready="waiting as a standby")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _count(worker.log_path, "snapshot 2") < 5:
        time.sleep(0.2)
    # One scheduler: the standby has sent nothing so far.
    assert "beat lock taken" not in standby.tail(200)
    assert "Sending due task" not in standby.tail(200)
    beat.stop()  # an orderly stop hands the lock over at once
    deadline = time.monotonic() + 5
    while "beat lock taken" not in standby.tail(200):
        assert time.monotonic() < deadline, standby.tail()
        time.sleep(0.1)
    standby.stop()
    time.sleep(1.5)  # the last one sent finishes
    taken = _count(worker.log_path, "snapshot 2")  # "snapshot <id> of N sessions", ids are dates
    assert taken >= 5, worker.tail()

    snaps = list_snapshots(open_destination(str(world.base / dest)))
    assert len(snaps) == 3, [s.id for s in snaps]
    assert all(s.count == 40 for s in snaps)

    target = open_session_store(f"{base_url}/2")
    result = restore_snapshot("latest", open_destination(str(world.base / dest)), target,
                              OnConflict.FAIL)
    assert result.written == 40
    restored = {s.id: s for s in target.iter_sessions()}
    assert {i: s.state["user"] for i, s in restored.items()} == made
    assert all(s.expires_at is not None for s in restored.values())  # the TTL came back
    target.close()


def test_scheduled_full_pass_reaches_the_host_queue(
    sync_world: Callable[..., SyncWorld], own_redis: RedisServer
) -> None:
    """Beat sends the periodic pass to the shared queue; it fans out to every live worker's
    host queue, and the pass repairs a store changed behind the watcher's back."""
    world = sync_world(own_redis.url, **{"SYNC__fullPassInterval": "1", "BACKUP__interval": "0"})
    (world.root / "app1").mkdir()
    (world.root / "app1" / "a.txt").write_text("a")
    worker = world.start_worker("w1", concurrency=1)
    world.start_beat()
    world.wait_equal(10)
    (world.mirror / "app1" / "a.txt").write_text("tampered")
    world.wait_equal(20)  # interval 1 s + the fan-out's 2 s broadcast + the pass, under load
    # The pass logs its summary after its last write: the store can be equal a moment earlier.
    deadline = time.monotonic() + 10
    log = worker.log_path.read_text()
    while "full pass (scheduled) done" not in log and time.monotonic() < deadline:
        time.sleep(0.05)
        log = worker.log_path.read_text()
    assert f"queue={world.host_queue} scheduled full pass sent" in log
    assert "full pass (scheduled) done" in log
