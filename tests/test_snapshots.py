"""Snapshots, restore, copy, export/import between real stores (a real redis-server for Redis)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.servers.process import wait_for
from tests.servers.redis_server import REDIS_PASSWORD, RedisServer
from worker.backups.dest import FolderDestination, open_destination
from worker.backups.snapshots import (
    copy_sessions,
    export_sessions,
    import_sessions,
    list_snapshots,
    prune_snapshots,
    restore_snapshot,
    take_snapshot,
)
from worker.errors import AlreadyExists, CorruptFile, IntegrityError, NotFound, UsageError
from worker.retry import RetryPolicy
from worker.stores.sessions import OnConflict, Session, open_session_store
from worker.stores.sessions.file import FileSessionStore
from worker.stores.sessions.memory import MemorySessionStore
from worker.stores.sessions.redis import RedisSessionStore


def _redis(srv: RedisServer, **kw: Any) -> RedisSessionStore:
    return RedisSessionStore(
        "127.0.0.1", srv.port, srv.password, key_prefix=f"t{uuid.uuid4().hex[:8]}:", **kw
    )


def _fill(store: Any, n: int, ttl: float | None = 3600) -> dict[str, Session]:
    """n sessions, every third without expiry; returns them by id as the store holds them."""
    now = int(time.time() * 1000)
    ids = [uuid.uuid4().hex for _ in range(n)]
    batch = [
        (sid, json.dumps({"id": sid, "i": i, "name": f"user {i}", "tags": ["a", "é"]},
                         ensure_ascii=False).encode(),
         None if i % 3 == 0 or ttl is None else now + int(ttl * 1000) + i)
        for i, sid in enumerate(ids)
    ]
    store.write_raw([batch], OnConflict.FAIL)  # one file write, not one per session
    return {s.id: s for s in store.iter_sessions()}


def _contents(store: Any) -> dict[str, tuple[dict[str, Any], int | None]]:
    return {
        s.id: (s.state, None if s.expires_at is None else int(s.expires_at.timestamp() * 1000))
        for s in store.iter_sessions()
    }


def _same(a: dict[str, Any], b: dict[str, Any], tolerance_ms: int = 5) -> bool:
    """Same ids and states, expiry equal within the ms rounding of a PTTL read."""
    if a.keys() != b.keys():
        return False
    for sid, (state, exp) in a.items():
        state2, exp2 = b[sid]
        if state != state2 or (exp is None) != (exp2 is None):
            return False
        if exp is not None and abs(exp - exp2) > tolerance_ms:
            return False
    return True


@pytest.fixture()
def dest(tmp_path: Path) -> FolderDestination:
    return FolderDestination(tmp_path / "snaps")


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("source_kind, target_kind", [
    ("redis", "file"), ("file", "redis"), ("memory", "redis"), ("redis", "redis"),
])
def test_snapshot_restore_round_trip(
    redis_server: RedisServer, tmp_path: Path, dest: FolderDestination,
    source_kind: str, target_kind: str,
) -> None:
    def make(kind: str, name: str) -> Any:
        if kind == "redis":
            return _redis(redis_server)
        if kind == "file":
            return FileSessionStore(tmp_path / f"{name}.json")
        return MemorySessionStore()

    source, target = make(source_kind, "src"), make(target_kind, "dst")
    _fill(source, 2300)
    info = take_snapshot(source, dest)
    assert info.count == 2300
    result = restore_snapshot("latest", dest, target, OnConflict.FAIL)
    assert (result.written, result.skipped, result.expired) == (2300, 0, 0)
    assert _same(_contents(source), _contents(target))


def test_snapshot_file_format(dest: FolderDestination) -> None:
    source = MemorySessionStore()
    source.put(Session("a", {"x": 1}, datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)))
    source.put(Session("b", {"y": [1, "two"]}, None))
    info = take_snapshot(source, dest)
    compressed = (dest.path / f"{info.id}.jsonl.zst").read_bytes()
    raw = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(compressed), read_across_frames=True).read()
    lines = raw.splitlines(keepends=True)
    header, trailer = json.loads(lines[0]), json.loads(lines[-1])
    assert header["format"] == "synchro-sessions-snapshot" and header["version"] == 2
    assert header["source"] == "memory:" and header["started_at"].endswith("Z")
    sessions = [json.loads(line) for line in lines[1:-1]]
    assert sorted(sessions, key=lambda s: s["id"]) == [
        {"id": "a", "expires_at": "2030-01-02T03:04:05.678Z", "state": {"id": "a", "x": 1}},
        {"id": "b", "expires_at": None, "state": {"id": "b", "y": [1, "two"]}},
    ]
    assert trailer["count"] == 2 and trailer["ended_at"].endswith("Z")
    assert trailer["sha256"] == hashlib.sha256(b"".join(lines[1:-1])).hexdigest()
    manifest = json.loads((dest.path / f"{info.id}.manifest.json").read_text())
    assert manifest["count"] == 2 and manifest["sha256"] == trailer["sha256"]
    data = (dest.path / f"{info.id}.jsonl.zst").read_bytes()
    assert manifest["file_sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["size"] == len(data)


def test_secrets_never_in_snapshot_or_manifest(redis_server: RedisServer, dest: Any) -> None:
    store = open_session_store(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}/0"
                               f"?keyPrefix=sec{uuid.uuid4().hex[:6]}:")
    store.create({"a": 1})
    info = take_snapshot(store, dest)
    assert REDIS_PASSWORD not in info.source and "****" in info.source
    for path in dest.path.iterdir():
        blob = path.read_bytes()
        if path.suffix == ".zst":
            blob = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
        assert REDIS_PASSWORD.encode() not in blob


# --- expiry --------------------------------------------------------------------------------


def test_restore_keeps_absolute_expiry_and_drops_expired(
    redis_server: RedisServer, dest: FolderDestination
) -> None:
    source = _redis(redis_server)
    keep = datetime.now(UTC) + timedelta(hours=2)
    source.put(Session("keeps", {"k": 1}, keep))
    source.put(Session("forever", {"f": 1}, None))
    source.put(Session("short", {"s": 1}, datetime.now(UTC) + timedelta(seconds=1)))
    assert take_snapshot(source, dest).count == 3  # "short" is in the snapshot...
    # ... and expires before the restore.  Time has to pass: neither redis-server nor
    # restore_snapshot takes a clock, so wait until the source itself says it has expired.
    wait_for(lambda: source.get("short") is None, 10, '"short" expired in redis-server')
    target = _redis(redis_server)
    result = restore_snapshot("latest", dest, target, OnConflict.FAIL)
    assert (result.written, result.expired) == (2, 1)
    got = target.get("keeps")
    assert got is not None and abs((got.expires_at - keep).total_seconds()) < 0.01
    assert target.get("forever").expires_at is None
    assert target.get("short") is None


def test_export_never_shows_expired_and_import_drops_them(tmp_path: Path) -> None:
    store = MemorySessionStore()
    store.put(Session("live", {"a": 1}, datetime.now(UTC) + timedelta(hours=1)))
    store.put(Session("dead", {"a": 2}, datetime.now(UTC) + timedelta(milliseconds=100)))
    # MemorySessionStore takes no clock: wait until "dead" has expired by the real one.
    wait_for(lambda: store.get("dead") is None, 5, '"dead" expired in the memory store')
    buf = io.BytesIO()
    assert export_sessions(store, buf) == 1
    assert b"dead" not in buf.getvalue()
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": "old", "state": {}, "expires_at": "2001-01-01T00:00:00Z"}\n'
        '{"expires_at": null, "id": "new", "state": {"z": [1]}}\n\n'
        '{"id": "tz", "state": {}, "expires_at": "2099-01-01T01:00:00+01:00"}\n'
    )
    target = MemorySessionStore()
    result = import_sessions(target, path)
    assert (result.written, result.expired) == (2, 1)
    assert target.get("new").state == {"id": "new", "z": [1]}
    assert target.get("tz").expires_at == datetime(2099, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("bad", [
    "not json", '["list"]', '{"state": {}}', '{"id": "x", "state": [1]}',
    '{"id": "x", "state": {}, "expires_at": "tomorrow"}', '{"id": "", "state": {}}',
    '{"id": "x", "state": {"id": "y"}}', '{"id": "x", "text": "{not json"}',
    '{"id": "x", "state": {"n": NaN}}',
    '{"id": "x", "text": "{\\"id\\":\\"x\\",\\"n\\":Infinity}"}',
])
def test_import_bad_line_writes_nothing(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "in.jsonl"
    good = "".join(f'{{"id": "g{i}", "state": {{}}, "expires_at": null}}\n' for i in range(1500))
    path.write_text(good + bad + "\n")
    target = MemorySessionStore()
    with pytest.raises(CorruptFile) as err:
        import_sessions(target, path)
    assert f"{path}:1501" in str(err.value)
    assert target.count() == 0


def test_import_accepts_a_snapshot_file(dest: FolderDestination) -> None:
    source = MemorySessionStore()
    _fill(source, 50)
    info = take_snapshot(source, dest)
    target = MemorySessionStore()
    assert import_sessions(target, dest.path / info.data_name).written == 50
    assert _same(_contents(source), _contents(target))


# --- conflicts -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_on_conflict_modes(redis_server: RedisServer, dest: FolderDestination, kind: str) -> None:
    source = MemorySessionStore()
    for i in range(1200):
        source.put(Session(f"s{i}", {"id": f"s{i}", "v": "snap"}))
    take_snapshot(source, dest)
    target = _redis(redis_server) if kind == "redis" else MemorySessionStore()
    target.put(Session("s1100", {"id": "s1100", "v": "live"}))

    with pytest.raises(AlreadyExists, match="nothing was written"):
        restore_snapshot("latest", dest, target, OnConflict.FAIL)
    assert target.count() == 1  # fail = checked first, nothing written

    skipped = restore_snapshot("latest", dest, target, OnConflict.SKIP)
    assert (skipped.written, skipped.skipped) == (1199, 1)
    assert target.get("s1100").state == {"id": "s1100", "v": "live"}

    over = restore_snapshot("latest", dest, target, OnConflict.OVERWRITE)
    assert (over.written, over.skipped) == (1200, 0)
    assert target.get("s1100").state == {"id": "s1100", "v": "snap"}


def test_fail_into_an_empty_redis_asks_about_no_id_and_still_checks_first(
    own_redis: RedisServer, dest: FolderDestination
) -> None:
    """Into a server that holds no key (DBSIZE 0: a new server, the usual restore) no id can
    conflict, so `fail` sends no EXISTS; every checksum is still checked before any write,
    and into a server holding one of the ids, nothing is written."""
    source = MemorySessionStore()
    _fill(source, 2500)
    info = take_snapshot(source, dest)
    raw = own_redis.client()
    target = RedisSessionStore("127.0.0.1", own_redis.port, own_redis.password)
    raw.config_resetstat()
    assert restore_snapshot("latest", dest, target, OnConflict.FAIL).written == 2500
    stats = raw.info("commandstats")
    assert "cmdstat_exists" not in stats and stats["cmdstat_set"]["calls"] == 2500
    assert _same(_contents(source), _contents(target))

    raw.flushdb()
    data = dest.path / info.data_name
    whole = data.read_bytes()
    data.write_bytes(whole[:-100] + bytes(100))  # damaged at the end: found before a write
    with pytest.raises(CorruptFile):
        restore_snapshot("latest", dest, target, OnConflict.FAIL)
    assert raw.dbsize() == 0

    data.write_bytes(whole)
    some = next(iter(_contents(source)))
    raw.set(some, b'{"id":"%s","v":"live"}' % some.encode())
    raw.config_resetstat()
    with pytest.raises(AlreadyExists, match="nothing was written"):
        restore_snapshot("latest", dest, target, OnConflict.FAIL)
    assert raw.dbsize() == 1 and "cmdstat_set" not in raw.info("commandstats")
    target.close()


# --- listing, ids, prune, failures ---------------------------------------------------------


def test_ids_sort_by_time_latest_and_unknown(dest: FolderDestination) -> None:
    source = MemorySessionStore()
    now = [1_800_000_000.2505]  # the test's clock: 2027-01-15T08:00:00.250Z, then +1 ms
    ids = []
    for i in range(3):
        source.create({"round": i})
        info = take_snapshot(source, dest, clock=lambda: now[0])
        assert info.id[:-5] == f"20270115T080000.{250 + i:03d}Z"  # the clock's millisecond
        assert info.started_at == info.ended_at == f"2027-01-15T08:00:00.{250 + i:03d}Z"
        ids.append(info.id)
        now[0] += 0.001
    assert [i.id for i in list_snapshots(dest)] == ids == sorted(ids)
    target = MemorySessionStore()
    assert restore_snapshot("latest", dest, target).snapshot == ids[-1]
    assert target.count() == 3
    assert restore_snapshot(ids[0], dest, MemorySessionStore()).written == 1
    with pytest.raises(NotFound, match="no snapshot 'nope'"):
        restore_snapshot("nope", dest, MemorySessionStore())
    with pytest.raises(NotFound, match="no snapshots"):
        restore_snapshot("latest", FolderDestination(dest.path / "empty"), MemorySessionStore())


def test_prune_keeps_the_newest(dest: FolderDestination) -> None:
    source = MemorySessionStore()
    source.create({})
    ids = [take_snapshot(source, dest).id for _ in range(5)]
    orphan = dest.path / f"{ids[0][:-5]}-dead.jsonl.zst"  # a data file with no manifest
    orphan.write_bytes(b"x")
    assert prune_snapshots(dest, 2) == ids[:3]
    assert [i.id for i in list_snapshots(dest)] == ids[3:]
    assert not orphan.exists()
    assert sorted(p.name for p in dest.path.iterdir()) == sorted(
        [f"{i}.jsonl.zst" for i in ids[3:]] + [f"{i}.manifest.json" for i in ids[3:]]
    )
    with pytest.raises(UsageError):
        prune_snapshots(dest, 0)


class _FailingStore(MemorySessionStore):
    """Fails after streaming some batches (a source that dies mid-snapshot)."""

    armed = False

    def iter_raw(self, batch_size: int = 1000) -> Iterator[list[Any]]:
        for n, batch in enumerate(super().iter_raw(batch_size)):
            if n == 2 and self.armed:
                raise IntegrityError("source died")
            yield batch


def test_failed_snapshot_is_never_listed_and_leaves_nothing(dest: FolderDestination) -> None:
    source = _FailingStore()
    _fill(source, 3500)
    source.armed = True
    with pytest.raises(IntegrityError, match="source died"):
        take_snapshot(source, dest)
    assert list_snapshots(dest) == []
    assert list(dest.path.iterdir()) == []


def test_unverifiable_snapshot_is_not_listed(
    dest: FolderDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.backups.snapshots as snapshots

    source = MemorySessionStore()
    _fill(source, 10)
    real_publish = dest.publish

    def corrupting_publish(staging: Path, name: str, md5_hex: str | None) -> None:
        data = bytearray(staging.read_bytes())
        data[len(data) // 2] ^= 0xFF  # the destination damages the file
        staging.write_bytes(bytes(data))
        real_publish(staging, name, md5_hex)

    monkeypatch.setattr(dest, "publish", corrupting_publish)
    with pytest.raises((IntegrityError, CorruptFile)):
        snapshots.take_snapshot(source, dest)
    assert list_snapshots(dest) == []
    assert [p for p in dest.path.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize("frame_bytes", [1 << 16, 1 << 30])
def test_multi_frame_snapshots_verify_in_parallel_and_catch_damage(
    dest: FolderDestination, monkeypatch: pytest.MonkeyPatch, frame_bytes: int
) -> None:
    import worker.backups.format as fmt
    from worker.backups.snapshots import SnapshotInfo, verify_snapshot

    monkeypatch.setattr(fmt, "FRAME_BYTES", frame_bytes)
    source = MemorySessionStore()
    _fill(source, 4000)
    info = take_snapshot(source, dest)
    assert info.frames is not None and (len(info.frames) > 3) == (frame_bytes < 1 << 20)
    assert info.frames[-1] == info.size
    target = MemorySessionStore()
    assert restore_snapshot("latest", dest, target).written == 4000
    assert _same(_contents(source), _contents(target))
    verify_snapshot(dest, SnapshotInfo(**{**info.__dict__, "frames": None}))  # old manifests

    class Trickle(io.RawIOBase):
        """A network-like stream: short reads."""

        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            n = 777 if n < 0 else min(n, 777)
            chunk = self.data[self.pos : self.pos + n]
            self.pos += len(chunk)
            return chunk

    real_open = dest.open
    monkeypatch.setattr(dest, "open", lambda name: Trickle((dest.path / name).read_bytes()))
    verify_snapshot(dest, info)
    monkeypatch.setattr(dest, "open", real_open)
    path = dest.path / info.data_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises((IntegrityError, CorruptFile)):
        verify_snapshot(dest, info)
    path.write_bytes(bytes(data[: len(data) - 100]))
    with pytest.raises((IntegrityError, CorruptFile)):
        verify_snapshot(dest, info)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_snapshot_restores_nothing(dest: FolderDestination, damage: str) -> None:
    source = MemorySessionStore()
    _fill(source, 3000)
    info = take_snapshot(source, dest)
    path = dest.path / info.data_name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) * 2 // 3:]
    path.write_bytes(bytes(data))
    target = MemorySessionStore()
    with pytest.raises(CorruptFile, match="nothing was restored"):
        restore_snapshot("latest", dest, target, OnConflict.OVERWRITE)
    assert target.count() == 0


# --- copy ----------------------------------------------------------------------------------


def test_copy_between_stores(redis_server: RedisServer, tmp_path: Path) -> None:
    file_store = FileSessionStore(tmp_path / "s.json")
    _fill(file_store, 1700)
    redis_store = _redis(redis_server)
    result = copy_sessions(file_store, redis_store)
    assert result.written == 1700
    assert _same(_contents(file_store), _contents(redis_store))
    with pytest.raises(AlreadyExists):
        copy_sessions(file_store, redis_store)
    with pytest.raises(UsageError, match="same store"):
        copy_sessions(file_store, FileSessionStore(tmp_path / "s.json"))


# --- module-store destination --------------------------------------------------------------


def test_modulestore_destination(tmp_path: Path) -> None:
    from worker.config import load_settings

    settings = load_settings(None, environ={
        "SYNCHRO__MODULESTORE__directory": str(tmp_path / "mirror"),
        "SYNCHRO__APP_ROOT_PATH": str(tmp_path / "apps"),
    })
    dest = open_destination("modulestore:backups", settings)
    source = MemorySessionStore()
    _fill(source, 1500)
    info = take_snapshot(source, dest)
    assert [i.id for i in list_snapshots(dest)] == [info.id]
    stored = sorted(p.name for p in (tmp_path / "mirror" / "backups" / "snapshots").iterdir())
    assert stored == [f"{info.id}.jsonl.zst", f"{info.id}.manifest.json"]
    target = MemorySessionStore()
    assert restore_snapshot("latest", dest, target).written == 1500
    assert _same(_contents(source), _contents(target))
    take_snapshot(source, dest)
    assert prune_snapshots(dest, 1) == [info.id]
    dest.close()
    empty = open_destination("modulestore:none-yet", settings)
    assert list_snapshots(empty) == []


# --- memory stays flat ----------------------------------------------------------------------


def test_snapshot_and_restore_memory_is_flat(redis_server: RedisServer, tmp_path: Path) -> None:
    """Peak Python allocations do not grow with the number of sessions (streaming).  The
    1,000,000-session figure is in docs/benchmarks.md (bench/bench_sessions.py memory)."""
    import tracemalloc

    peaks = {}
    raw = redis_server.client()
    for n in (12_000, 36_000):
        store = _redis(redis_server)
        pipe = raw.pipeline(transaction=False)
        for i in range(n):
            value = json.dumps({"id": f"s{i}", "pad": "x" * 900}).encode()
            pipe.set(f"{store.prefix}s{i}", value, px=3_600_000)
        pipe.execute()
        dest = FolderDestination(tmp_path / f"d{n}")
        tracemalloc.start()
        info = take_snapshot(store, dest)
        snap_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        target = _redis(redis_server)
        tracemalloc.start()
        restore_snapshot(info.id, dest, target)
        rest_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert target.count() == n
        peaks[n] = (snap_peak, rest_peak)
    print("peak traced bytes (snapshot, restore):", peaks)
    # 3x the sessions (~24 MB more data) may not cost more than a few MB more at the peak.
    assert peaks[36_000][0] < peaks[12_000][0] + 6e6, peaks
    assert peaks[36_000][1] < peaks[12_000][1] + 6e6, peaks
    assert max(peaks[36_000]) < 40e6, peaks



# --- Redis going away in the middle ---------------------------------------------------------

#: Patient enough to ride out a restart in the tests, bounded in attempts and time.
RIDE_OUT = RetryPolicy(attempts=40, max_seconds=30.0, initial=0.05, max_wait=0.5)
#: Gives up quickly: the outage lasts longer than this bound.
GIVE_UP = RetryPolicy(attempts=3, max_seconds=1.0, initial=0.05, max_wait=0.2)


def _load_raw(srv: RedisServer, prefix: str, n: int) -> None:
    raw = srv.client()
    pipe = raw.pipeline(transaction=False)
    for i in range(n):
        value = json.dumps({"id": f"s{i}", "i": i, "pad": "p" * 400}).encode()
        if i % 4:
            pipe.set(f"{prefix}s{i}", value, px=3_600_000 + i)
        else:
            pipe.set(f"{prefix}s{i}", value)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


class _Outage:
    """A progress callback that takes the server down once ``at`` sessions went by, and
    brings it back ``down_for`` seconds later (or never)."""

    def __init__(self, srv: RedisServer, at: int, down_for: float | None, save: bool) -> None:
        self.srv, self.at, self.down_for, self.save = srv, at, down_for, save
        self.seen = 0
        self.fired = False
        self.thread: threading.Thread | None = None

    def __call__(self, n: int) -> None:
        self.seen += n
        if self.fired or self.seen < self.at:
            return
        self.fired = True
        if self.save:
            self.srv.client().save()  # the data survives the restart, as with persistence
        self.srv.stop()  # SIGKILL
        if self.down_for is not None:
            self.thread = threading.Thread(target=self._back, daemon=True)
            self.thread.start()

    def _back(self) -> None:
        time.sleep(self.down_for or 0)  # the outage itself: the server stays down this long
        self.srv.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(30)


def test_snapshot_rides_out_a_redis_restart(
    own_redis: RedisServer, redis_server: RedisServer, dest: FolderDestination
) -> None:
    n = 12_000
    _load_raw(own_redis, "o:", n)
    source = RedisSessionStore("127.0.0.1", own_redis.port, own_redis.password,
                               key_prefix="o:", retry=RIDE_OUT)
    outage = _Outage(own_redis, at=4000, down_for=0.7, save=True)
    info = take_snapshot(source, dest, progress=outage)
    outage.join()
    assert outage.fired
    assert info.count == n
    assert [i.id for i in list_snapshots(dest)] == [info.id]
    target = _redis(redis_server)
    restore_snapshot(info.id, dest, target)
    assert _same(_contents(source), _contents(target))


def test_restore_rides_out_a_redis_restart_that_lost_its_data(
    own_redis: RedisServer, redis_server: RedisServer, dest: FolderDestination
) -> None:
    n = 12_000
    source = _redis(redis_server)
    _load_raw(redis_server, source.prefix, n)
    take_snapshot(source, dest)
    target = RedisSessionStore("127.0.0.1", own_redis.port, own_redis.password,
                               key_prefix="r:", retry=RIDE_OUT)
    outage = _Outage(own_redis, at=4000, down_for=0.7, save=False)
    result = restore_snapshot("latest", dest, target, OnConflict.FAIL, progress=outage)
    outage.join()
    assert outage.fired
    assert result.written == n
    assert _same(_contents(source), _contents(target))


def test_outage_longer_than_the_bound_fails_clearly_and_lists_nothing(
    own_redis: RedisServer, dest: FolderDestination
) -> None:
    from worker.errors import TransientStoreError

    _load_raw(own_redis, "f:", 6000)
    source = RedisSessionStore("127.0.0.1", own_redis.port, own_redis.password,
                               key_prefix="f:", retry=GIVE_UP)
    started = time.monotonic()
    with pytest.raises(TransientStoreError) as err:
        take_snapshot(source, dest, progress=_Outage(own_redis, 2000, None, save=False))
    assert time.monotonic() - started < 10  # bounded
    assert f"127.0.0.1:{own_redis.port}" in str(err.value)
    assert list_snapshots(dest) == []
    assert list(dest.path.iterdir()) == []

    own_redis.start()
    mem = MemorySessionStore()
    _fill(mem, 3000)
    take_snapshot(mem, dest)
    target = RedisSessionStore("127.0.0.1", own_redis.port, own_redis.password,
                               key_prefix="g:", retry=GIVE_UP)
    with pytest.raises(TransientStoreError):
        restore_snapshot("latest", dest, target, progress=_Outage(own_redis, 1000, None, False))


# --- the line format ------------------------------------------------------------------------


def test_lines_round_trip_with_awkward_ids_and_times() -> None:
    import random

    from worker.stores.sessions.base import ms_to_iso
    from worker.stores.sessions.lines import decode_block, decode_ids, decode_line, encode_batch

    rng = random.Random(7)
    ids = ["plain", 'q"uote', "back\\slash", "ünï€ode", "sp ace", "tab\there", "a/b=c+d"]

    def value(sid: str, i: int) -> bytes:
        quoted = json.dumps(sid, ensure_ascii=False).encode()
        if i % 5 == 0:
            return b'{"id":' + quoted + b',"n":{"id":"x","expires_at":null,"state":{}},"s":"}\\n{"}'
        if i % 7 == 0:  # pretty-printed, as another writer may leave it: bytes kept too
            return b'{\n  "id": ' + quoted + b',\r\n  "i": %d\n}' % i
        if i % 11 == 0:
            return b' {"id":' + quoted + b'} '
        return b'{"id":' + quoted + b',"i":%d}' % i

    batch = [
        (ids[i % len(ids)] + str(i), value(ids[i % len(ids)] + str(i), i),
         None if i % 4 == 0 else rng.randrange(0, 4_102_444_800_000))
        for i in range(3000)
    ]
    batch.append(("leap", b'{"id":"leap"}', 951_782_400_123))  # 2000-02-29T00:00:00.123Z
    block = encode_batch(batch)
    assert decode_block(block) == batch
    assert [r[0] for r in decode_ids(block)] == [r[0] for r in batch]
    for line, raw in zip(block.splitlines(), batch, strict=True):
        obj = json.loads(line)  # every line is plain JSON a person or jq can read
        assert obj["id"] == raw[0]
        if "text" in obj:  # a session not written as compact JSON keeps its bytes as text
            assert obj["text"].encode() == raw[1]
        else:
            assert obj["state"] == json.loads(raw[1])
        assert obj["expires_at"] == (None if raw[2] is None else ms_to_iso(raw[2]))
        assert decode_line(line) == raw  # the same bytes, parsed the slow way too
    assert b'"expires_at":"2000-02-29T00:00:00.123Z"' in block


# --- the server's bytes ---------------------------------------------------------------------

SERVER_VALUES = {
    # As JSON.stringify writes them, and as other writers might: every byte must come back.
    "u-1": '{"id":"u-1","name":"Zoë ✓ 😀 \\u2028","esc":"\\"q\\" \\\\ \\n"}',
    "u-2": '{"id":"u-2","big":123456789012345678901234567890,"f":1.0,"e":1e-7,"neg":-0}',
    "u-3": '{"z":1,"id":"u-3","a":{"y":[3,2,1],"b":null}}',  # key order as written
    "u-4": '{\n  "id": "u-4",\n  "pretty": true\n}',  # newlines: cannot sit on one line
    "u-5": ' {"id":"u-5"} ',  # blanks around it
    "ünï": '{"id":"ünï","v":"é"}',  # a non-ASCII id
}


def _server_redis(srv: RedisServer) -> RedisSessionStore:
    return RedisSessionStore("127.0.0.1", srv.port, srv.password)


@pytest.mark.parametrize("via", ["snapshot", "copy", "file"])
def test_restore_and_copy_write_back_the_servers_bytes(
    own_redis: RedisServer, dest: FolderDestination, tmp_path: Path, via: str
) -> None:
    """GET <id> after a restore (a copy, a detour through a file store) equals GET <id>
    before, for every session; expiry kept."""
    raw = own_redis.client(0)
    for sid, text in SERVER_VALUES.items():
        raw.set(sid.encode(), text.encode())
    raw.pexpire("u-1", 3_600_000)
    before = {sid: raw.get(sid.encode()) for sid in SERVER_VALUES}
    source = _server_redis(own_redis)
    target = RedisSessionStore("127.0.0.1", own_redis.port, own_redis.password, db=1)
    if via == "snapshot":
        info = take_snapshot(source, dest)
        assert info.count == len(SERVER_VALUES) and not info.skipped
        restore_snapshot(info.id, dest, target)
    elif via == "copy":
        copy_sessions(source, target)
    else:
        middle = FileSessionStore(tmp_path / "sessions.json")
        copy_sessions(source, middle)
        doc = json.loads((tmp_path / "sessions.json").read_text())
        assert {sid: doc[sid] for sid in SERVER_VALUES} == {
            sid: json.loads(text) for sid, text in SERVER_VALUES.items()}
        copy_sessions(FileSessionStore(tmp_path / "sessions.json"), target)
    after = {sid: own_redis.client(1).get(sid.encode()) for sid in SERVER_VALUES}
    if via == "file":  # a JSON file holds a member's value, not the blanks around it
        before["u-5"] = before["u-5"].strip()  # type: ignore[union-attr]
    assert after == before
    assert 3_500_000 < own_redis.client(1).pttl("u-1") <= 3_600_000
    assert own_redis.client(1).pttl("u-2") == -1


def test_copy_from_redis_with_invalid_json_never_breaks_a_file_store(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    raw = own_redis.client()
    raw.set("good", b'{"id":"good"}')
    raw.set("x", b"{not json")
    for i in range(5):
        raw.set(f"n{i}", f"{i}".encode())  # JSON, but not objects
    source = _server_redis(own_redis)
    target = FileSessionStore(tmp_path / "sessions.json")
    assert copy_sessions(source, target).written == 1
    assert source.skipped == {"not JSON": 1, "not an object": 5}
    again = FileSessionStore(tmp_path / "sessions.json")  # the file it wrote is one it reads
    assert [s.id for s in again.iter_sessions()] == ["good"]
    assert json.loads((tmp_path / "sessions.json").read_text()) == {"good": {"id": "good"}}


def test_a_ten_megabyte_session(own_redis: RedisServer, dest: FolderDestination) -> None:
    big = b'{"id":"big","blob":"' + b"x\\u00e9" * 1_800_000 + b'"}'
    assert len(big) > 10_000_000
    own_redis.client().set("big", big)
    info = take_snapshot(_server_redis(own_redis), dest)
    target = RedisSessionStore("127.0.0.1", own_redis.port, own_redis.password, db=3)
    assert restore_snapshot(info.id, dest, target).written == 1
    assert own_redis.client(3).get("big") == big


# --- tampered snapshots: every checksum before any write ------------------------------------


def _tamper(dest: FolderDestination, info: Any, how: str, other: Any) -> None:
    """Change a snapshot the way an attacker (or a careless hand) would."""
    data_path = dest.path / info.data_name
    man_path = dest.path / f"{info.id}.manifest.json"
    manifest = json.loads(man_path.read_text())
    text = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(data_path.read_bytes()), read_across_frames=True).read()
    lines = text.split(b"\n")
    header, body, trailer = lines[0], lines[1:-2], lines[-2]

    def rewrite(new_text: bytes, sessions_sha: bool = False) -> None:
        blob = zstandard.ZstdCompressor(write_checksum=True).compress(new_text)
        data_path.write_bytes(blob)
        manifest.update(file_sha256=hashlib.sha256(blob).hexdigest(), size=len(blob),
                        frames=[len(blob)])
        if sessions_sha:
            manifest["sha256"] = json.loads(new_text.split(b"\n")[-2])["sha256"]

    if how == "zero-sha":
        manifest["sha256"] = "0" * 64
    elif how == "edited-session":  # file checksum, size and frames updated; trailer not
        body[5] = body[5].replace(b'"i":', b'"i":9999')
        rewrite(b"\n".join([header, *body, trailer]) + b"\n")
    elif how == "edited-session-and-trailer":  # the manifest's session checksum not
        body[5] = body[5].replace(b'"i":', b'"i":9999')
        t = json.loads(trailer)
        t["sha256"] = hashlib.sha256(b"".join(line + b"\n" for line in body)).hexdigest()
        rewrite(b"\n".join([header, *body, json.dumps(t).encode()]) + b"\n")
    elif how == "other-header":
        h = json.loads(header)
        h["id"] = other.id
        rewrite(b"\n".join([json.dumps(h).encode(), *body, trailer]) + b"\n")
    elif how == "replaced-manifest":  # another snapshot's manifest under this name
        manifest = {**json.loads((dest.path / f"{other.id}.manifest.json").read_text()),
                    "id": info.id}
    elif how == "count":
        manifest["count"] = info.count + 1
    elif how == "flip":
        blob = bytearray(data_path.read_bytes())
        blob[len(blob) // 3] ^= 0x40
        data_path.write_bytes(bytes(blob))
    elif how == "truncate":
        data_path.write_bytes(data_path.read_bytes()[:-40])
    man_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("how", [
    "zero-sha", "edited-session", "edited-session-and-trailer", "other-header",
    "replaced-manifest", "count", "flip", "truncate",
])
@pytest.mark.parametrize("target_kind", ["redis", "file"])
def test_tampered_snapshot_is_refused_and_nothing_written(
    own_redis: RedisServer, dest: FolderDestination, tmp_path: Path, how: str, target_kind: str
) -> None:
    source = MemorySessionStore()
    _fill(source, 1500)
    other = take_snapshot(source, dest)
    source.put(Session("one-more", {"id": "one-more"}))
    info = take_snapshot(source, dest)
    _tamper(dest, info, how, other)
    if target_kind == "redis":
        target: Any = _server_redis(own_redis)
    else:
        target = FileSessionStore(tmp_path / "restored.json")
    for mode in (OnConflict.OVERWRITE, OnConflict.FAIL):
        with pytest.raises(CorruptFile, match="nothing was restored"):
            restore_snapshot(info.id, dest, target, mode)
    if target_kind == "redis":
        assert own_redis.client().dbsize() == 0
    else:
        assert not (tmp_path / "restored.json").exists()
    # The untouched snapshot beside it still restores.
    assert restore_snapshot(other.id, dest, target).written == 1500


def test_a_version_1_snapshot_restores_in_the_servers_format(
    own_redis: RedisServer, dest: FolderDestination
) -> None:
    """Snapshots taken before the worker spoke the server's format hold states without the
    id; restored now, every session is the server's {"id": ...} under its bare id."""
    from dataclasses import asdict

    from worker.backups.format import SnapshotWriter
    from worker.backups.snapshots import SnapshotInfo
    from worker.stores.sessions.lines import encode_batch

    sessions = [("old-1", b'{"user":"ana"}', None), ("old-2", b"{}", None),
                ("old-3", b'{"id":"stale","n":1}', int(time.time() * 1000) + 3_600_000)]
    snap_id = "20250101T000000.000Z-0001"
    dest.path.mkdir(parents=True)
    with open(dest.path / f"{snap_id}.jsonl.zst", "wb") as out:
        writer = SnapshotWriter(out, {"format": "synchro-sessions-snapshot", "version": 1,
                                      "id": snap_id, "source": "redis://old", "started_at": "x"})
        writer.write_block(encode_batch(sessions), len(sessions))
        lines_sha, file_sha, _, size = writer.finish({"end": True, "ended_at": "y"})
    info = SnapshotInfo(id=snap_id, count=3, size=size, sha256=lines_sha, file_sha256=file_sha,
                        started_at="2025-01-01T00:00:00.000Z", ended_at="2025-01-01T00:00:01.000Z",
                        source="redis://old", version=1, frames=writer.frames)
    (dest.path / f"{snap_id}.manifest.json").write_text(json.dumps(asdict(info)))
    target = _server_redis(own_redis)
    assert restore_snapshot(snap_id, dest, target).written == 3
    raw = own_redis.client()
    assert raw.get("old-1") == b'{"id":"old-1","user":"ana"}'
    assert raw.get("old-2") == b'{"id":"old-2"}'
    assert json.loads(raw.get("old-3")) == {"id": "old-3", "n": 1}
    assert raw.pttl("old-3") > 3_500_000
    assert sorted(s.id for s in target.iter_sessions()) == ["old-1", "old-2", "old-3"]
