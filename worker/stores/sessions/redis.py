"""``RedisSessionStore``: the production store, one Redis key per session.

Configuration: ``host``, ``port`` (6379), ``password``; also ``url`` (``redis://``,
``rediss://`` for TLS, ``unix://``), ``db``, ``tls``, ``keyPrefix`` (none by default, as the
Synchro server; ``?keyPrefix=`` in a URL, empty allowed).  Tested against a password-protected
redis-server the tests start (tests/servers/redis_server.py) and read back by the server's own
Node ``redis`` client (tests/node/).

The server's format: each session is the key ``keyPrefix + id`` holding the server's JSON text
of the session, ``{"id": "<id>", ...}``, written and read back byte for byte.  The worker's
expiry is Redis's own (``SET ... PXAT``), so Redis expires the key and ``PEXPIRETIME`` (Redis 7;
``TIME`` + ``PTTL`` before) tells it exactly.  A walk of the store takes only keys whose value
is a JSON object with the key's id; every other key is counted in :attr:`skipped` by reason
(another application's keys in the same database, a value that is not JSON...).

Whole-store walks use ``SCAN`` (never ``KEYS``).  One round trip per 1000 keys carries a
native ``MGET``, a Lua script returning the keys' expiries, and the next ``SCAN`` page; the
round trips run two batches ahead, in a thread, of the check of what they read.  Writes are
1000 ``SET ... PXAT`` (``NX`` unless overwriting) a batch, packed by hiredis's C packer and
pipelined, two batches in flight (:mod:`~worker.stores.sessions.redis_writes`); a conflict
check is one ``EXISTS`` a batch.  A server that refuses scripting gets pipelined ``PTTL``s
for the expiry script's work (see docs/benchmarks.md).

Every call goes through the tenacity policy of :mod:`worker.retry` (``retry=`` sets another
bound); redis-py's own retries are off so the layers do not multiply.  A stream that sees the
server come back as a new process (``run_id``) raises :class:`StreamRestarted`, because a
SCAN cursor means nothing to the new process and an unpersisted server lost what was written;
the callers start such a stream again.  Redis exceptions are mapped to :mod:`worker.errors`
by :func:`~worker.stores.sessions.redis_support.mapped_errors` and seen nowhere else.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.config import RedisSessionStoreConfig, mask_url
from worker.errors import StoreError, TransientStoreError
from worker.retry import STORE_RETRY, RetryPolicy
from worker.stores.sessions.ahead import prefetch
from worker.stores.sessions.base import (
    BATCH_SIZE,
    NOT_UTF8_KEY,
    WRONG_TYPE,
    RawSession,
    Session,
    StreamRestarted,
    ms_to_datetime,
    new_session_id,
    now_epoch_ms,
    session_json,
    session_reason,
    skipped_summary,
    ttl_to_expires_ms,
    with_id,
)
from worker.stores.sessions.redis_support import (
    EXPIRY_LUA,
    GET_LUA,
    glob_escape,
    mapped_errors,
    pack,
)
from worker.stores.sessions.redis_writes import RedisWrites

T = TypeVar("T")

#: Seconds to wait for a connection and for any reply (a stalled server is a transient error).
SOCKET_TIMEOUT = 10.0


class RedisSessionStore(RedisWrites):
    """Sessions in Redis, one key each, expiry kept by Redis."""

    service: ClassVar[str] = "RedisSessionStore"
    persistent: ClassVar[bool] = True

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        password: str | None = None,
        *,
        url: str | None = None,
        db: int = 0,
        tls: bool = False,
        key_prefix: str = "",
        retry: RetryPolicy = STORE_RETRY,
        socket_timeout: float = SOCKET_TIMEOUT,
        ping_interval: float | None = None,
    ) -> None:
        common: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "retry": Retry(NoBackoff(), 0),
            # ``pingInterval``, as the server's heartbeat: a connection idle that long is
            # checked with a PING before it is used again (a dead one is replaced).
            "health_check_interval": ping_interval or 0,
        }
        if url:
            parts = urlsplit(url)
            # keep_blank_values: an explicit empty ``?keyPrefix=`` means no prefix.
            query = parse_qs(parts.query, keep_blank_values=True)
            key_prefix = query.pop("keyPrefix", [key_prefix])[0]
            kwargs: dict[str, Any] = {**common}
            if password and not parts.password:
                kwargs["password"] = password
            # Other query parameters are redis-py's (ssl_ca_certs=..., ssl_cert_reqs=...).
            clean = parts._replace(query=urlencode({k: v[-1] for k, v in query.items()})).geturl()
            if not parts.path.strip("/") and db:
                kwargs["db"] = db
            self.client: redis.Redis[bytes] = redis.Redis.from_url(clean, **kwargs)
            self._where = mask_url(clean)
        else:
            self.client = redis.Redis(
                host=host, port=port, password=password, db=db, ssl=tls, **common
            )
            self._where = f"{'rediss' if tls else 'redis'}://{host}:{port}/{db}"
        self.prefix = key_prefix
        self.skipped: Counter[str] = Counter()
        self._bprefix = key_prefix.encode()
        self._match = glob_escape(self._bprefix) + b"*"
        self.retry = retry
        self._transient_errors = 0
        #: Set once a stream was restarted: refused NX writes are compared with our values.
        self._after_restart = False
        # Reads go through small Lua scripts (expiries, a get with its expiry): one command
        # per 1000 keys instead of 1000 pipelined ones through redis-py, which is most of the
        # client-side cost in Python.  Servers that refuse scripting get the commands.
        self._scripts = True
        self._expiry_sha = hashlib.sha1(EXPIRY_LUA.encode(), usedforsecurity=False).hexdigest()
        self._get_sha = hashlib.sha1(GET_LUA.encode(), usedforsecurity=False).hexdigest()

    @classmethod
    def from_config(cls, cfg: RedisSessionStoreConfig, **kwargs: Any) -> RedisSessionStore:
        password = cfg.password.get_secret_value() if cfg.password else None
        return cls(
            cfg.host, cfg.port, password, url=cfg.url, db=cfg.db, tls=cfg.tls,
            key_prefix=cfg.keyPrefix, ping_interval=cfg.pingInterval, **kwargs,
        )

    def describe(self) -> str:
        return f"{self._where} prefix {self.prefix}" if self.prefix else self._where

    # --- plumbing ------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T], what: str) -> T:
        def once() -> T:
            try:
                with mapped_errors(self.describe(), what):
                    return fn()
            except TransientStoreError:
                self._transient_errors += 1
                raise

        # The policy's first attempt is a plain call (tenacity is set up only after a
        # transient error): a Retrying costs ~30-60 us, a third of a loopback GET.
        return self.retry.call(once, what=f"{self.describe()} {what}")

    def _server_id(self) -> str:
        info = self._call(lambda: self.client.info("server"), "info")
        return str(info.get("run_id", ""))

    def _same_server(self, start: tuple[str, int]) -> tuple[str, int]:
        """After a transient error in a stream, make sure the server is the one the stream
        started on; a restarted server (new run_id) invalidates cursors and maybe writes."""
        run_id, seen = start
        if self._transient_errors == seen:
            return start
        now_id = self._server_id()
        if now_id != run_id:
            raise StreamRestarted(
                "the server restarted during the stream; it must start again",
                store=self.describe(),
            )
        return run_id, self._transient_errors

    def _key(self, session_id: str) -> bytes:
        return self._bprefix + session_id.encode()

    def _pipelined(self, commands: list[bytes]) -> list[Any]:
        """Send ``commands`` (each packed by ``redis_support.pack``) on one connection of
        the pool and read a reply each.  A reply that is an error raises it (mapped by the
        caller's :meth:`_call`); the connection is then dropped, as the replies after it
        are still unread."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(commands)])
            read = conn.read_response
            return [read() for _ in commands]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    # --- per session ---------------------------------------------------------------------

    def create(self, state: dict[str, Any], ttl: float | timedelta | None = None) -> Session:
        expires_ms = ttl_to_expires_ms(ttl)
        for _ in range(5):
            sid = new_session_id()
            state = with_id(sid, state)
            text = session_json(sid, state)
            key = self._key(sid)

            setnx = partial(self.client.set, key, text, nx=True, pxat=expires_ms)
            if self._call(setnx, "create"):
                return Session(sid, state, ms_to_datetime(expires_ms))
        raise StoreError("could not find a free session id", store=self.describe())

    def get(self, session_id: str) -> Session | None:
        value, at = self._call(partial(self._get_one, self._key(session_id)), f"get {session_id}")
        if value is None or at == -2:
            return None
        return Session.from_raw((session_id, value, at if at >= 0 else None))

    def put(self, session: Session) -> None:
        sid, text, expires_ms = session.to_raw()
        key = self._key(sid)
        if expires_ms is not None and expires_ms <= now_epoch_ms():
            self._call(lambda: self.client.delete(key), f"put {sid}")
            return
        self._call(partial(self.client.set, key, text, pxat=expires_ms), f"put {sid}")

    def delete(self, session_id: str) -> bool:
        key = self._key(session_id)
        return bool(self._call(lambda: self.client.delete(key), f"delete {session_id}"))

    # --- streams -------------------------------------------------------------------------

    def iter_raw(self, batch_size: int = BATCH_SIZE) -> Iterator[list[RawSession]]:
        """Every key under the prefix whose value is the server's JSON of the session named
        by the key; the other keys are counted in :attr:`skipped` by reason.  The round trips
        run in a thread of their own, two batches ahead (:meth:`_pages`), so the server's work
        and the wait for it overlap the checking of the batch already read."""
        self.skipped = Counter()
        cut = len(self._bprefix)
        pages = prefetch(self._pages(batch_size), depth=2)
        try:
            for keys, values, expiries in pages:
                batch: list[RawSession] = []
                append = batch.append
                skipped = self.skipped
                for key, value, at in zip(keys, values, expiries, strict=True):
                    if at == -2:  # gone between SCAN and the read (expired, deleted)
                        continue
                    if value is None:
                        skipped[WRONG_TYPE] += 1
                        continue
                    try:
                        sid = key[cut:].decode()
                    except UnicodeDecodeError:
                        skipped[NOT_UTF8_KEY] += 1
                        continue
                    why = session_reason(sid, value)
                    if why is not None:
                        skipped[why] += 1
                        continue
                    append((sid, value, at if at >= 0 else None))
                if batch:
                    yield batch
        finally:
            pages.close()

    def _pages(self, batch_size: int) -> Iterator[tuple[list[bytes], list[Any], list[int]]]:
        """(keys, values, expiries) of every batch of keys under the prefix, in SCAN order:
        one round trip each, which also carries the next SCAN page."""
        server = (self._server_id(), self._transient_errors)
        cursor, done = 0, False
        pending: list[bytes] = []
        while True:
            keys = pending[:batch_size]
            del pending[:batch_size]
            # The next SCAN page travels in the same round trip as this batch's read.
            scan = None if done or len(pending) >= batch_size else cursor
            if not keys and scan is None:
                return
            values, expiries, page = self._call(
                partial(self._fetch_lists, keys, scan, batch_size), f"read {len(keys)}"
            )
            server = self._same_server(server)
            if page is not None:
                cursor, found = page
                done = cursor == 0
                pending.extend(found)
            if keys:
                yield keys, values, expiries

    def _get_one(self, key: bytes) -> list[Any]:
        """[value, expiry] of one key: one EVALSHA (a pipeline costs ~40 us more here)."""
        def script() -> list[Any]:
            return list(self.client.evalsha(self._get_sha, 1, key))  # type: ignore[no-untyped-call]

        return self._scripted(script, lambda: self._fetch([key]), load=GET_LUA)

    def _fetch(self, keys: list[bytes]) -> list[Any]:
        """[value1, expiry1, value2, expiry2, ...] for ``keys`` (expiry in epoch ms, -1 none,
        -2 missing key): one round trip."""
        values, expiries, _ = self._fetch_lists(keys)
        return [x for pair in zip(values, expiries, strict=True) for x in pair]

    def _fetch_lists(
        self, keys: list[bytes], scan: int | None = None, count: int = BATCH_SIZE
    ) -> tuple[list[Any], list[int], tuple[int, list[bytes]] | None]:
        """One round trip: the values and expiries of ``keys`` (see :meth:`_fetch`), and the
        SCAN page at cursor ``scan`` if given."""
        return self._scripted(
            partial(self._fetch_once, keys, scan, count, True),
            partial(self._fetch_once, keys, scan, count, False),
            load=EXPIRY_LUA,
        )

    def _fetch_once(
        self, keys: list[bytes], scan: int | None, count: int, scripted: bool
    ) -> tuple[list[Any], list[int], tuple[int, list[bytes]] | None]:
        # Packed by hiredis: redis-py's pipeline encodes each of the 2,000 keys in Python.
        commands = []
        if keys:
            commands.append(pack((b"MGET", *keys)))
            if scripted:
                sha = self._expiry_sha.encode()
                commands.append(pack((b"EVALSHA", sha, b"%d" % len(keys), *keys)))
            else:
                commands += [pack((b"PTTL", key)) for key in keys]
        if scan is not None:
            commands.append(pack((b"SCAN", b"%d" % scan, b"MATCH", self._match,
                                  b"COUNT", b"%d" % count)))
        replies = self._pipelined(commands)
        page = None
        if scan is not None:
            cursor, found = replies.pop()
            page = int(cursor), found
        if not keys:
            return [], [], page
        if scripted:
            values, expiries = replies
        else:
            values, ttls = replies[0], replies[1:]
            now = now_epoch_ms()
            expiries = [now + ttl if ttl >= 0 else ttl for ttl in ttls]
        return values, expiries, page

    def iter_sessions(self) -> Iterator[Session]:
        for batch in self.iter_raw():
            for raw in batch:
                yield Session.from_raw(raw)

    def count(self) -> int:
        """Sessions (keys that are not sessions are not counted, see :attr:`skipped`)."""
        return sum(len(batch) for batch in self.iter_raw())

    # --- health --------------------------------------------------------------------------

    def check(self) -> str:
        info = self._call(lambda: self.client.info("server"), "info")
        version = info.get("redis_version", "?")
        count = self.count()
        other = f" (other keys skipped: {skipped_summary(self.skipped)})" if self.skipped else ""
        return f"redis {version} at {self.describe()}, {count} sessions{other}"

    def close(self) -> None:
        self.client.close()
