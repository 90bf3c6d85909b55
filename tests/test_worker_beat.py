"""Beat (one scheduler only): scheduled session backups on a Redis broker with real worker and
beat processes; prune to BACKUP.keep; a restore gives back the sessions; a second beat waits."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.servers.celery_worker import SyncWorld
from tests.servers.process import wait_for
from tests.servers.redis_server import RedisServer

#: What beat logs for each backup it sends, and the worker for each it has finished.
SENT = "Sending due task session-backup (tasks.snapshot_sessions)"
DONE = re.compile(r"Task tasks\.snapshot_sessions\[[-0-9a-f]+\] succeeded in ")


def _done(path: Path) -> int:
    return len(DONE.findall(path.read_text(errors="replace")))


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
    # "snapshot <id> of N sessions", ids are dates
    wait_for(lambda: _count(worker.log_path, "snapshot 2") >= 5, 30, "5 scheduled snapshots",
             details=world.logs)
    # One scheduler: the standby has sent nothing while the other sent those five.
    assert "beat lock taken" not in standby.tail(200)
    assert "Sending due task" not in standby.tail(200)
    beat.stop()  # an orderly stop hands the lock over at once
    wait_for(lambda: "beat lock taken" in standby.tail(200), 5, "the standby takes the lock",
             details=standby.tail)
    standby.stop()
    # Every backup either beat sent has finished (and pruned) before the folder is read.
    sent = _count(beat.log_path, SENT) + _count(standby.log_path, SENT)
    wait_for(lambda: _done(worker.log_path) >= sent, 30,
             f"the worker finishes the {sent} backups sent", details=world.logs)
    assert _done(worker.log_path) == sent, worker.tail()  # none failed, none twice
    taken = _count(worker.log_path, "snapshot 2")
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
    wait_for(lambda: "full pass (scheduled) done" in worker.log_path.read_text(), 10,
             "the scheduled pass's summary", details=worker.tail)
    log = worker.log_path.read_text()
    assert f"queue={world.host_queue} scheduled full pass sent" in log


def test_beat_takes_its_lock_again_after_redis_restarts_without_it(
    sync_world: Callable[..., SyncWorld], own_redis: RedisServer
) -> None:
    """A Redis restarted without its data (no persistence, or a failover to an empty replica)
    has lost the beat lock.  The beat finds it gone at its next renewal; no other beat holds it,
    so it takes it again and goes on scheduling instead of stopping with no scheduler left.
    A second beat waiting meanwhile stays the standby."""
    from worker.queue.signals import BEAT_LOCK, BEAT_LOCK_TTL

    world = sync_world(own_redis.url, **{"BACKUP__interval": "0"})
    (world.root / "app1").mkdir()
    beat = world.start_beat("beat1")
    own_redis.stop()
    own_redis.start()
    assert not own_redis.client().exists(BEAT_LOCK)  # the restart lost it
    wait_for(lambda: "taken again" in beat.tail(200), BEAT_LOCK_TTL / 3 + 15,
             "the beat takes its lock again", details=world.logs)
    assert beat.proc is not None and beat.proc.poll() is None, beat.tail()
    assert own_redis.client().exists(BEAT_LOCK)
    assert "stopping this beat" not in beat.tail(200)
    standby = world.start_beat("beat2", ready="waiting as a standby")
    assert "beat lock taken" not in standby.tail(200)
