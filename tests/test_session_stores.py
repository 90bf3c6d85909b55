"""One conformance suite for every session store, run against Memory, File and Redis (a real
password-protected redis-server started by the tests), then what is particular to each."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import FakeClock
from tests.servers.process import ServerProcess, clean_environ, free_port, unavailable, wait_for
from tests.servers.redis_server import REDIS_PASSWORD, RedisServer
from worker.config import load_settings
from worker.errors import (
    AccessDenied,
    AlreadyExists,
    ConfigError,
    CorruptFile,
    StoreError,
    TransientStoreError,
    UsageError,
)
from worker.retry import RetryPolicy
from worker.stores.sessions import OnConflict, Session, open_session_store, parse_store_spec
from worker.stores.sessions.base import parse_session_text, session_reason
from worker.stores.sessions.file import FileSessionStore
from worker.stores.sessions.memory import MemorySessionStore
from worker.stores.sessions.redis import RedisSessionStore

#: "redis-pipelined" is the Redis store on its fallback path for servers that refuse Lua.
STORES = ["memory", "file", "redis", "redis-pipelined"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=STORES)
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Callable[[], Any]]:
    """A factory: each call opens the *same* store again (a restart, for persistent ones).
    The memory and file stores read ``clock``; Redis expires keys by its own clock."""
    kind = request.param
    opened: list[Any] = []
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    memory = MemorySessionStore(clock)

    def make() -> Any:
        if kind == "memory":
            store: Any = memory
        elif kind == "file":
            store = FileSessionStore(tmp_path / "sessions.json", clock)
        else:
            srv: RedisServer = request.getfixturevalue("redis_server")
            store = RedisSessionStore(
                "127.0.0.1", srv.port, REDIS_PASSWORD, key_prefix=prefix
            )
            store._scripts = kind == "redis"
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture()
def store(make_store: Callable[[], Any]) -> Any:
    return make_store()


def _ms(dt: datetime | None) -> int | None:
    return None if dt is None else int(dt.timestamp() * 1000)


# --- the conformance suite ---------------------------------------------------------------


def test_create_get_roundtrip(store: Any) -> None:
    state = {"user": "ana", "n": 3, "ok": True, "none": None, "nested": {"l": [1, 2.5, "é✓"]}}
    before = datetime.now(UTC)
    s = store.create(state, ttl=120)
    assert s.id and isinstance(s.id, str)
    got = store.get(s.id)
    assert got is not None
    assert got.state == {"id": s.id, **state}  # the server's session object: id first
    assert list(got.state)[0] == "id"
    assert got.expires_at is not None and got.expires_at.tzinfo is not None
    delta = (got.expires_at - before).total_seconds()
    assert 119 <= delta <= 122, delta


def test_create_without_ttl_never_expires(store: Any) -> None:
    s = store.create({"a": 1})
    assert s.expires_at is None
    got = store.get(s.id)
    assert got is not None and got.expires_at is None


def test_ids_are_unique(store: Any) -> None:
    ids = {store.create({"i": i}).id for i in range(200)}
    assert len(ids) == 200


def test_get_missing_is_none(store: Any) -> None:
    assert store.get("no-such-session") is None


def test_put_replaces_state_and_expiry(store: Any) -> None:
    s = store.create({"v": 1}, ttl=60)
    later = datetime.now(UTC) + timedelta(hours=5)
    store.put(Session(s.id, {"v": 2}, later))
    got = store.get(s.id)
    assert got is not None and got.state == {"id": s.id, "v": 2}
    assert abs(_ms(got.expires_at) - _ms(later)) <= 5  # type: ignore[operator]
    store.put(Session(s.id, {"v": 3}, None))
    got = store.get(s.id)
    assert got is not None and got.state == {"id": s.id, "v": 3} and got.expires_at is None


def test_put_creates_with_given_id(store: Any) -> None:
    store.put(Session("chosen-id", {"x": "y"}))
    got = store.get("chosen-id")
    assert got is not None and got.state == {"id": "chosen-id", "x": "y"}


def test_delete(store: Any) -> None:
    s = store.create({"a": 1})
    assert store.delete(s.id) is True
    assert store.get(s.id) is None
    assert store.delete(s.id) is False


def test_state_must_be_an_object(store: Any) -> None:
    with pytest.raises(TypeError):
        store.create([1, 2, 3])


def test_expired_sessions_disappear(store: Any, clock: FakeClock) -> None:
    if isinstance(store, RedisSessionStore):
        # Redis expires the key itself (PX), by its own clock: a short ttl, really waited for.
        short = store.create({"short": True}, ttl=1.0)
        keep = store.create({"keep": True}, ttl=60)
        assert store.get(short.id) is not None
        wait_for(lambda: store.get(short.id) is None, 10, "redis-server expires the session")
    else:
        short = store.create({"short": True}, ttl=30)
        keep = store.create({"keep": True}, ttl=60)
        clock.advance(29)
        assert store.get(short.id) is not None
        clock.advance(2)  # past the first one's expiry, not the second's
        assert store.get(short.id) is None
    assert store.count() == 1
    assert [s.id for s in store.iter_sessions()] == [keep.id]


def test_put_with_past_expiry_is_gone(store: Any) -> None:
    store.put(Session("past", {"a": 1}, datetime.now(UTC) - timedelta(seconds=5)))
    assert store.get("past") is None
    assert store.count() == 0


def test_iterate_and_count_stream_in_batches(store: Any) -> None:
    batch = [
        (f"id-{i:05d}", json.dumps({"id": f"id-{i:05d}", "i": i}).encode(), None)
        for i in range(2500)
    ]
    result = store.write_raw([batch], OnConflict.FAIL)
    assert result.written == 2500
    created = {sid for sid, _, _ in batch}
    batches = list(store.iter_raw(1000))
    assert len(batches) >= 3
    assert all(len(b) <= 1000 for b in batches)  # batched, never everything at once
    seen = [raw[0] for b in batches for raw in b]
    assert len(seen) == len(set(seen)) == 2500
    assert set(seen) == created
    assert store.count() == 2500
    states = {s.id: s.state for s in store.iter_sessions()}
    assert states["id-01234"] == {"id": "id-01234", "i": 1234}


def test_write_raw_conflicts_and_expired(store: Any) -> None:
    now = int(time.time() * 1000)
    store.put(Session("a", {"v": "old"}))
    batch = [
        ("a", b'{"id":"a","v":"new"}', now + 60_000),
        ("b", b'{"id":"b","v":"b"}', now + 60_000),
        ("gone", b'{"id":"gone","v":"x"}', now - 1000),
    ]
    skip = store.write_raw([batch], OnConflict.SKIP)
    assert (skip.written, skip.skipped, skip.expired) == (1, 1, 1)
    assert store.get("a").state == {"id": "a", "v": "old"}
    assert store.get("gone") is None
    over = store.write_raw([batch], OnConflict.OVERWRITE)
    assert (over.written, over.skipped, over.expired) == (2, 0, 1)
    got = store.get("a")
    assert got.state == {"id": "a", "v": "new"} and abs(_ms(got.expires_at) - (now + 60_000)) <= 5
    with pytest.raises(AlreadyExists):
        store.write_raw(
            [[("c", b'{"id":"c"}', None), ("a", b'{"id":"a"}', None)]], OnConflict.FAIL
        )


def test_existing(store: Any) -> None:
    store.put(Session("x1", {}))
    store.put(Session("x3", {}))
    assert sorted(store.existing(["x1", "x2", "x3"])) == ["x1", "x3"]


def test_empty_only_when_the_store_holds_nothing(tmp_path: Path, own_redis: RedisServer) -> None:
    raw = own_redis.client()
    for store in (MemorySessionStore(), FileSessionStore(tmp_path / "s.json"),
                  RedisSessionStore("127.0.0.1", own_redis.port, REDIS_PASSWORD)):
        assert store.empty()
        store.put(Session("x1", {}))
        assert not store.empty()
        store.delete("x1")
        assert store.empty()
    raw.set("not-a-session", b"1")  # any key at all: a Redis store is then not surely empty
    assert not store.empty()
    store.close()


def test_check_describes_a_working_store(store: Any) -> None:
    store.create({"a": 1})
    text = store.check()
    assert "1 sessions" in text


def test_sessions_are_back_after_a_restart(make_store: Callable[[], Any]) -> None:
    first = make_store()
    if not first.persistent:
        pytest.skip(f"{first.service} is not persistent by design")
    s = first.create({"cart": [1, 2]}, ttl=3600)
    first.put(Session("fixed", {"z": 1}))
    first.close()
    again = make_store()
    got = again.get(s.id)
    assert got is not None and got.state == {"id": s.id, "cart": [1, 2]}
    assert _ms(got.expires_at) == pytest.approx(_ms(s.expires_at), abs=5)
    assert again.count() == 2


# --- memory ------------------------------------------------------------------------------


def test_memory_store_is_per_instance() -> None:
    a, b = MemorySessionStore(), MemorySessionStore()
    s = a.create({"x": 1})
    assert b.get(s.id) is None


# --- file --------------------------------------------------------------------------------


def test_file_is_the_servers_format_readable_while_running(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    store = FileSessionStore(path)
    s = store.create({"user": "ana"}, ttl=60)
    doc = json.loads(path.read_text())  # the server's JSON.parse(file)[id], or a person's jq
    assert doc == {s.id: {"id": s.id, "user": "ana"}}
    lines = path.read_text().splitlines()
    assert any(line.startswith(f'"{s.id}": ') for line in lines)  # one session a line
    # The worker's expiry is beside the file, where the server never sees it.
    side = json.loads((tmp_path / "sessions.json.expiry.json").read_text())
    assert side[s.id].endswith("Z")
    store.put(Session(s.id, {"id": s.id, "user": "ana"}))  # no expiry any more
    assert not (tmp_path / "sessions.json.expiry.json").exists()
    assert FileSessionStore(path).get(s.id).expires_at is None  # type: ignore[union-attr]


@pytest.mark.parametrize("content", [b"", b"{}", b"  {}\n", b"\n"])
def test_file_empty_or_empty_object_holds_no_sessions(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "sessions.json"
    path.write_bytes(content)
    store = FileSessionStore(path)
    assert store.count() == 0 and list(store.iter_raw()) == []
    assert store.check().endswith("0 sessions")


def test_file_written_by_the_server_is_read_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    a = '{"id":"a","name":"Zoë ✓","big":12345678901234567890,"f":1.0,"z":1,"b":{"y":2,"x":1}}'
    path.write_text('{"a":' + a + ',"b":{"id":"b"}}', encoding="utf-8")
    store = FileSessionStore(path)
    texts = {raw[0]: raw[1] for batch in store.iter_raw() for raw in batch}
    assert texts == {"a": a.encode(), "b": b'{"id":"b"}'}
    store.put(Session("c", {"n": 1}))  # a write keeps the others' bytes
    again = {raw[0]: raw[1] for batch in FileSessionStore(path).iter_raw() for raw in batch}
    assert again["a"] == a.encode() and again["c"] == b'{"id":"c","n":1}'


def test_file_members_that_are_not_sessions_are_counted_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.write_text('{"a": {"id": "a"}, "n": 5, "m": {"id": "other"}, "l": [1]}')
    store = FileSessionStore(path)
    assert [s.id for s in store.iter_sessions()] == ["a"]
    assert store.skipped == {"not an object": 2, "id differs from the key": 1}
    assert store.check().endswith(
        "1 sessions (entries that are not sessions, kept as they are: 3 (2 not an object, "
        "1 id differs from the key))"
    )
    store.create({"x": 1})
    doc = json.loads(path.read_text())
    assert doc["n"] == 5 and doc["m"] == {"id": "other"} and doc["l"] == [1]


def test_file_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    store = FileSessionStore(path)
    store.create({"a": 1})
    inode = path.stat().st_ino
    store.create({"b": 2})
    assert path.stat().st_ino != inode  # a new file renamed over the old, never rewritten
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("sessions.json",
                                                                       "sessions.json.lock")]
    assert leftovers == []


@pytest.mark.parametrize(
    "content, expect",
    [
        (b'{\n"a": {"id":"a"},\n"b": {"id": nu', "not valid JSON"),
        (b"\x00\xff\xfe garbage", "not"),
        (b'["a list"]', "one JSON object"),
        (b'{"a": {"id": "a"}} extra', "extra data"),
        (b'{"a": {"id": "a", "n": NaN}}', "not valid JSON"),
        (b'{"a": {"id": "a"},}', "not valid JSON"),
    ],
)
def test_corrupt_file_is_refused_and_left_as_it_was(
    tmp_path: Path, content: bytes, expect: str
) -> None:
    path = tmp_path / "sessions.json"
    path.write_bytes(content)
    before = path.stat()
    with pytest.raises(CorruptFile) as err:
        FileSessionStore(path)
    assert str(path) in str(err.value) and expect in str(err.value)
    assert "left as it was" in str(err.value)
    assert path.read_bytes() == content
    assert path.stat().st_mtime_ns == before.st_mtime_ns


def test_truncated_file_written_by_the_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    store = FileSessionStore(path)
    for i in range(50):
        store.create({"i": i})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFile, match="truncated or corrupt"):
        FileSessionStore(path)
    assert path.read_bytes() == data[: len(data) // 2]


_WRITER = textwrap.dedent(
    """
    import sys
    from worker.stores.sessions.file import FileSessionStore
    from worker.stores.sessions import Session
    store = FileSessionStore(sys.argv[1])
    tag = sys.argv[2]
    for i in range(int(sys.argv[3])):
        store.put(Session(f"{tag}-{i}", {"by": tag, "i": i}))
        if i % 10 == 0:
            store.delete(f"{tag}-{i}")
    """
)


def test_two_processes_writing_the_same_file_lose_no_session(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    n = 150
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, str(n)], cwd=REPO)
        for tag in ("p1", "p2")
    ]
    assert [p.wait(120) for p in procs] == [0, 0]
    final = FileSessionStore(path)
    expected = {f"{tag}-{i}" for tag in ("p1", "p2") for i in range(n) if i % 10}
    assert {s.id for s in final.iter_sessions()} == expected
    assert final.get("p2-7").state == {"id": "p2-7", "by": "p2", "i": 7}


def test_two_store_objects_in_one_process_see_each_other(tmp_path: Path) -> None:
    a = FileSessionStore(tmp_path / "s.json")
    b = FileSessionStore(tmp_path / "s.json")
    sa = a.create({"from": "a"})
    sb = b.create({"from": "b"})
    assert a.get(sb.id) is not None and b.get(sa.id) is not None
    assert a.count() == b.count() == 2


# --- redis -------------------------------------------------------------------------------


def test_redis_one_key_per_session_with_its_expiry(redis_server: RedisServer) -> None:
    store = RedisSessionStore("127.0.0.1", redis_server.port, REDIS_PASSWORD, key_prefix="k1:")
    s = store.create({"a": 1}, ttl=100)
    raw = redis_server.client()
    assert json.loads(raw.get(f"k1:{s.id}")) == {"id": s.id, "a": 1}
    assert 98_000 < raw.pttl(f"k1:{s.id}") <= 100_000
    forever = store.create({"b": 2})
    assert raw.pttl(f"k1:{forever.id}") == -1
    store.close()


def test_redis_scans_and_never_uses_keys(redis_server: RedisServer) -> None:
    raw = redis_server.client()
    store = RedisSessionStore("127.0.0.1", redis_server.port, REDIS_PASSWORD, key_prefix="k2:")
    for i in range(1500):
        store.put(Session(f"s{i}", {"i": i}))
    raw.set("other:thing", "not a session")  # other prefixes are not ours
    raw.set("k2:garbage", "not json")  # under our prefix but not a session object
    raw.config_resetstat()
    assert store.count() == 1500  # only sessions are counted
    assert store.skipped == {"not JSON": 1}
    assert sum(len(b) for b in store.iter_raw()) == 1500
    stats = raw.info("commandstats")
    assert "cmdstat_scan" in stats and "cmdstat_keys" not in stats
    store.close()


def test_redis_prefix_with_glob_characters(redis_server: RedisServer) -> None:
    raw = redis_server.client()
    raw.set("k3x:s", "{}")
    store = RedisSessionStore("127.0.0.1", redis_server.port, REDIS_PASSWORD, key_prefix="k3*:")
    store.put(Session("mine", {}))
    assert [s.id for s in store.iter_sessions()] == ["mine"]
    store.close()


def test_redis_wrong_or_missing_password_is_access_denied(redis_server: RedisServer) -> None:
    for password in ("wrong", None):
        store = RedisSessionStore("127.0.0.1", redis_server.port, password)
        with pytest.raises(AccessDenied):
            store.check()
        store.close()


def test_redis_check_names_version_and_place(redis_server: RedisServer) -> None:
    store = open_session_store(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}/2")
    text = store.check()
    assert text.startswith("redis 7") and f"127.0.0.1:{redis_server.port}/2" in text
    assert REDIS_PASSWORD not in text and REDIS_PASSWORD not in store.describe()
    store.close()


def test_redis_url_selects_db_and_prefix(redis_server: RedisServer) -> None:
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}/5?keyPrefix=app5:"
    store = open_session_store(url)
    store.put(Session("u1", {"db": 5}))
    assert redis_server.client(5).get("app5:u1") == b'{"id":"u1","db":5}'
    assert redis_server.client(0).get("app5:u1") is None
    store.close()


def test_redis_from_settings_with_password_from_environment(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SESSIONSTORE": {"host": "127.0.0.1", "db": 1, "keyPrefix": "cfg:"},
    }))
    env = {"SYNCHRO__SESSIONSTORE__password": REDIS_PASSWORD,
           "SYNCHRO__SESSIONSTORE__port": str(redis_server.port)}
    settings = load_settings(config, environ=env)
    store = open_session_store(settings)
    assert isinstance(store, RedisSessionStore)
    store.put(Session("from-settings", {"ok": True}))
    assert redis_server.client(1).get("cfg:from-settings") == b'{"id":"from-settings","ok":true}'
    store.close()


def test_file_and_memory_from_settings(tmp_path: Path) -> None:
    settings = load_settings(None, environ={
        "SYNCHRO__SESSIONSTORE_SERVICE": "FileSessionStore",
        "SYNCHRO__SESSIONSTORE__sessionStateFile": str(tmp_path / "x.json"),
    })
    store = open_session_store(settings)
    assert isinstance(store, FileSessionStore) and store.path == tmp_path / "x.json"
    assert isinstance(open_session_store(load_settings(None, environ={})), MemorySessionStore)


@pytest.mark.parametrize(
    "spec",
    ["", "mem:", "file:", "redis://", "redis://:pw@host:notaport", "redis://h:1/db", "s3://x"],
)
def test_bad_store_specs(spec: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_store_spec(spec)
    assert "pw" not in str(err.value)


def test_good_store_specs() -> None:
    assert parse_store_spec("memory:") == ("MemorySessionStore", {})
    assert parse_store_spec("file:a/b.json") == ("FileSessionStore", {"path": "a/b.json"})
    assert parse_store_spec("rediss://:p@h:6380/1")[0] == "RedisSessionStore"


def test_redis_unreachable_is_a_clear_transient_failure() -> None:

    store = RedisSessionStore("127.0.0.1", free_port(), retry=RetryPolicy(attempts=2, initial=0.01))
    with pytest.raises(TransientStoreError) as err:
        store.check()
    assert "127.0.0.1" in str(err.value)
    store.close()



# --- redis over TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A redis-server that speaks only TLS, with a self-signed certificate for 127.0.0.1."""



    if shutil.which("openssl") is None:
        unavailable("openssl is needed to make a test certificate")
    tmp = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem"),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    port = free_port()
    argv = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(tmp / "cert.pem"), "--tls-key-file", str(tmp / "key.pem"),
            "--tls-ca-cert-file", str(tmp / "cert.pem"), "--tls-auth-clients", "no",
            "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no",
            "--dir", str(tmp)]

    def healthy() -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, password=REDIS_PASSWORD, ssl=True,
                             ssl_ca_certs=str(tmp / "cert.pem"), socket_timeout=0.5)
        return bool(client.ping())

    server = ServerProcess(f"redis-tls-{port}", argv, healthy).start()
    yield port, tmp / "cert.pem"
    server.cleanup()


def test_redis_over_tls(tls_redis: tuple[int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    port, cert = tls_redis
    url = f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    store = open_session_store(url)
    s = store.create({"secure": True}, ttl=60)
    assert store.get(s.id).state == {"id": s.id, "secure": True}
    assert "rediss://" in store.check()
    store.close()
    # tls: true in the configuration, trusting the certificate the usual OpenSSL way.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    settings = load_settings(None, environ={
        "SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SYNCHRO__SESSIONSTORE__host": "127.0.0.1",
        "SYNCHRO__SESSIONSTORE__port": str(port),
        "SYNCHRO__SESSIONSTORE__tls": "true",
        "SYNCHRO__SESSIONSTORE__password": REDIS_PASSWORD,
    })
    configured = open_session_store(settings)
    assert configured.get(s.id).state == {"id": s.id, "secure": True}
    configured.close()


def test_redis_tls_untrusted_certificate_fails_at_once(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    store = open_session_store(f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{port}/0")
    started = time.monotonic()
    with pytest.raises(AccessDenied, match="CERTIFICATE_VERIFY_FAILED"):
        store.check()
    assert time.monotonic() - started < 2  # not retried: waiting does not fix trust
    store.close()


# --- redis in the Synchro server's format --------------------------------------------------


def test_redis_default_is_the_servers_format(own_redis: RedisServer) -> None:
    """No prefix by default: the key is the bare id and the value the server's JSON text,
    which comes back byte for byte (unicode, big numbers, key order)."""
    store = RedisSessionStore("127.0.0.1", own_redis.port, REDIS_PASSWORD)
    raw = own_redis.client()
    s = store.create({"user": "ana"})
    assert raw.get(s.id) == f'{{"id":"{s.id}","user":"ana"}}'.encode()
    assert uuid.UUID(s.id).version == 4  # ids look like the server's uuid.v4()
    text = '{"id":"srv-1","name":"Zoë ✓ 😀","big":123456789012345678901234567890,"z":0,"a":1.50}'
    raw.set("srv-1", text.encode())
    got = {sid: value for batch in store.iter_raw() for sid, value, _ in batch}
    assert got == {s.id: raw.get(s.id), "srv-1": text.encode()}
    assert store.get("srv-1").state["big"] == 123456789012345678901234567890  # type: ignore[union-attr]
    assert store.describe() == f"redis://127.0.0.1:{own_redis.port}/0"
    store.close()


def test_redis_error_reply_in_a_batch_fails_clearly_and_the_store_stays_in_step(
    own_redis: RedisServer,
) -> None:
    """A batch is 1,000 SETs sent together.  When the server refuses some (out of memory
    here), the write fails with the server's reason, and what is asked next gets its own
    answers, not the unread replies of that batch."""
    raw = own_redis.client()
    store = RedisSessionStore("127.0.0.1", own_redis.port, REDIS_PASSWORD)
    store.put(Session("keep", {"v": 1}))
    used = int(raw.info("memory")["used_memory"])
    raw.config_set("maxmemory", used + 300_000)  # room for ~200 of the 1,000 below
    raw.config_set("maxmemory-policy", "noeviction")
    state = "x" * 1000
    batch = [
        (f"s{i:04d}", f'{{"id":"s{i:04d}","p":"{state}"}}'.encode(), None) for i in range(1000)
    ]
    with pytest.raises(StoreError) as err:
        store.write_raw([batch], OnConflict.OVERWRITE)
    assert "maxmemory" in str(err.value) and "write batch of 1000" in str(err.value)
    assert 0 < raw.dbsize() - 1 < 1000  # some were written before the server said no
    raw.config_set("maxmemory", 0)
    for _ in range(3):  # both connections of the pool, and again
        assert store.get("keep").state == {"id": "keep", "v": 1}  # type: ignore[union-attr]
        assert store.existing(["keep", "nope"]) == ["keep"]
    assert store.write_raw([batch], OnConflict.OVERWRITE).written == 1000
    assert raw.dbsize() == 1001
    store.close()


def test_redis_scripts_the_server_forgot_are_loaded_again(own_redis: RedisServer) -> None:
    """A server that lost our scripts (restarted, SCRIPT FLUSH) answers NOSCRIPT in the middle
    of a pipelined round trip: the script is loaded again and the walk and the get go on."""
    raw = own_redis.client()
    store = RedisSessionStore("127.0.0.1", own_redis.port, REDIS_PASSWORD)
    now = int(time.time() * 1000)
    batch = [(f"k{i:04d}", f'{{"id":"k{i:04d}"}}'.encode(), now + 60_000 + i) for i in range(1500)]
    assert store.write_raw([batch], OnConflict.FAIL).written == 1500
    for _ in range(2):
        raw.script_flush()
        walked = sorted(raw_ for b in store.iter_raw() for raw_ in b)
        assert walked == batch
        raw.script_flush()
        got = store.get("k0007")
        assert got is not None and _ms(got.expires_at) == now + 60_007
    store.close()


def test_redis_prefix_from_settings_defaults_to_none_and_url_may_set_it_empty(
    own_redis: RedisServer,
) -> None:
    settings = load_settings(None, environ={
        "SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SYNCHRO__SESSIONSTORE__port": str(own_redis.port),
        "SYNCHRO__SESSIONSTORE__password": REDIS_PASSWORD,
    })
    configured = open_session_store(settings)
    assert configured.prefix == ""
    configured.put(Session("s1", {}))
    assert own_redis.client().get("s1") == b'{"id":"s1"}'
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{own_redis.port}/0?keyPrefix="
    explicit = open_session_store(url)
    assert explicit.prefix == ""  # an explicit empty prefix is kept, not dropped
    assert [s.id for s in explicit.iter_sessions()] == ["s1"]
    configured.close()
    explicit.close()


def test_redis_keys_that_are_not_sessions_are_counted_by_reason(own_redis: RedisServer) -> None:
    raw = own_redis.client()
    raw.set("good", b'{"id":"good"}')
    raw.set("bad-json", b"{not json")
    raw.set("plain", b"hello")
    raw.set("latin1", b'{"id":"latin1","n":"\xe9"}')  # not UTF-8: not JSON for the server
    raw.set("nan", b'{"id":"nan","x":NaN}')
    raw.set("list-json", b"[1,2]")
    raw.set("str-json", b'"text"')
    raw.set("other-id", b'{"id":"someone-else"}')
    raw.set("no-id", b'{"a":1}')
    raw.set(b"\xff\xfekey", b'{"id":"x"}')
    raw.rpush("a-list", "x")
    raw.hset("a-hash", "f", "v")
    store = RedisSessionStore("127.0.0.1", own_redis.port, REDIS_PASSWORD)
    assert [s.id for s in store.iter_sessions()] == ["good"]
    assert store.skipped == {
        "not JSON": 4, "not an object": 2, "id differs from the key": 2, "key not UTF-8": 1,
        "not a string value": 2,
    }
    assert store.count() == 1
    assert store.check().endswith(
        "1 sessions (other keys skipped: 11 (4 not JSON, 2 id differs from the key, "
        "2 not a string value, 2 not an object, 1 key not UTF-8))"
    )
    store.close()


# --- the worker's keys never share the sessions' database ----------------------------------


@pytest.mark.parametrize("broker, sessions", [
    ("redis://:pw@localhost:6379/0", {"host": "127.0.0.1"}),
    ("redis://:pw@localhost:6379", {}),
    ("redis://redis.internal:6380/3", {"host": "redis.internal", "port": "6380", "db": "3"}),
    ("redis://redis.internal:6380/3", {"url": "redis://:pw@redis.internal:6380/3"}),
    ("rediss://h:7000/2", {"url": "rediss://h:7000", "db": "2"}),
])
def test_broker_in_the_session_store_database_is_refused(
    broker: str, sessions: dict[str, str]
) -> None:
    env = {"SYNCHRO__BROKER_URL": broker, "SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
           **{f"SYNCHRO__SESSIONSTORE__{k}": v for k, v in sessions.items()}}
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ=env)
    text = str(err.value)
    assert err.value.exit_code == 2 and "\n" not in text
    assert text.startswith("BROKER_URL (environment variable SYNCHRO__BROKER_URL)")
    assert "SESSIONSTORE" in text and "pw" not in text


@pytest.mark.parametrize("broker, sessions", [
    ("redis://localhost:6379/1", {}),
    ("redis://other:6379/0", {"host": "127.0.0.1"}),
    ("redis://localhost:6380/0", {}),
    ("amqp://guest:guest@localhost:5672//", {}),
])
def test_broker_elsewhere_is_fine(broker: str, sessions: dict[str, str]) -> None:
    env = {"SYNCHRO__BROKER_URL": broker, "SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
           **{f"SYNCHRO__SESSIONSTORE__{k}": v for k, v in sessions.items()}}
    settings = load_settings(None, environ=env)
    assert broker == settings.BROKER_URL


def test_shared_database_is_one_line_exit_2_from_the_cli(tmp_path: Path) -> None:
    env = clean_environ(SYNCHRO__BROKER_URL="redis://127.0.0.1:6379/4",
                        SYNCHRO__SESSIONSTORE_SERVICE="RedisSessionStore",
                        SYNCHRO__SESSIONSTORE__db="4")
    exe = Path(sys.executable).with_name("synchro-sync")
    argv = [str(exe) if exe.exists() else "synchro-sync", "sessions", "list"]
    res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "BROKER_URL" in res.stderr and "SESSIONSTORE" in res.stderr


def test_redis_ping_interval_checks_an_idle_connection(own_redis: RedisServer) -> None:
    settings = load_settings(None, environ={
        "SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SYNCHRO__SESSIONSTORE__port": str(own_redis.port),
        "SYNCHRO__SESSIONSTORE__password": REDIS_PASSWORD,
        "SYNCHRO__SESSIONSTORE__pingInterval": "0.2",
    })
    store = open_session_store(settings)
    store.put(Session("a", {}))
    raw = own_redis.client()

    def pings() -> int:
        return int(raw.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))

    before = pings()
    time.sleep(0.4)  # the time under test: the connection idle for longer than pingInterval
    assert store.get("a") is not None
    assert pings() > before  # the idle connection was checked first
    store.close()


@pytest.mark.parametrize("text, why", [
    (b'{"id":"x","s":"\\ud800"}', None),  # an escaped lone surrogate: JSON.parse reads it
    (b'{"id":"x","big":100000000000000000000000}', None),
    (b'{"id":"x","n":NaN}', "not JSON"),
    (b'{"id":"x","n":Infinity}', "not JSON"),
    (b'{"id":"x","s":"\xe9"}', "not JSON"),  # not UTF-8, in a value no check builds
    ('{"id":"x","name":"Zoë ✓"}'.encode(), None),
    (b'{"s":{"id":"x"}}', "id differs from the key"),
    (b'{"id":"x"} trailing', "not JSON"),
    (b'{"id":"x","id":"y"}', "id differs from the key"),  # the last one wins, as in JS
    (b'{"id":1}', "id differs from the key"),
    (b"null", "not an object"),
])
def test_what_counts_as_the_servers_session(text: bytes, why: str | None) -> None:

    assert session_reason("x", text) == why
    assert parse_session_text("x", text)[1] == why


@pytest.mark.parametrize("sidecar", [b"{not json", b'["x"]', b'{"a": "soon"}'])
def test_file_corrupt_expiry_file_is_refused_and_left(tmp_path: Path, sidecar: bytes) -> None:
    path = tmp_path / "sessions.json"
    path.write_text('{"a": {"id": "a"}}')
    side = tmp_path / "sessions.json.expiry.json"
    side.write_bytes(sidecar)
    with pytest.raises(CorruptFile) as err:
        FileSessionStore(path)
    assert str(side) in str(err.value) and "left as it was" in str(err.value)
    assert side.read_bytes() == sidecar and path.read_text() == '{"a": {"id": "a"}}'


def test_file_expired_sessions_are_not_listed_but_the_server_s_file_is_whole(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "sessions.json"
    store = FileSessionStore(path, clock)
    store.put(Session("short", {}, datetime.now(UTC) + timedelta(minutes=1)))
    store.put(Session("long", {}, datetime.now(UTC) + timedelta(hours=1)))
    clock.advance(120)
    again = FileSessionStore(path, clock)
    assert [s.id for s in again.iter_sessions()] == ["long"]
    again.put(Session("new", {}))  # the next write drops it from the file and the sidecar
    assert set(json.loads(path.read_text())) == {"long", "new"}
    assert set(json.loads((tmp_path / "sessions.json.expiry.json").read_text())) == {"long"}
