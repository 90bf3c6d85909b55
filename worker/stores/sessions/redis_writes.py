"""The streaming writes of :class:`~worker.stores.sessions.redis.RedisSessionStore` (restore,
copy, import) and its conflict check.  A batch of 1,000 sessions is 1,000 ``SET`` commands
(``NX`` unless overwriting, each with its ``PXAT``) packed by hiredis's C packer and pipelined
on one connection, two batches in flight on two connections; a conflict check is one
``EXISTS`` of the whole batch, and only a batch that finds some asks which.  A mixin, so that
the store's module stays readable; everything it uses is the store's own (declared below for
the type checker).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import redis
import redis.exceptions as rexc

from worker.errors import AlreadyExists
from worker.stores.sessions.base import (
    OnConflict,
    RawSession,
    StreamRestarted,
    WriteResult,
    now_epoch_ms,
)
from worker.stores.sessions.redis_support import pack, scripting_refused

T = TypeVar("T")

#: Batches written concurrently by a streaming write (each on its own connection).
WRITERS = 2


class RedisWrites:
    """``existing`` and ``write_raw`` of the Redis store."""

    client: redis.Redis[bytes]
    _bprefix: bytes
    _scripts: bool
    _after_restart: bool
    _transient_errors: int

    def describe(self) -> str:
        raise NotImplementedError

    def _call(self, fn: Callable[[], T], what: str) -> T:
        raise NotImplementedError

    def _server_id(self) -> str:
        raise NotImplementedError

    def _same_server(self, start: tuple[str, int]) -> tuple[str, int]:
        raise NotImplementedError

    def _key(self, session_id: str) -> bytes:
        raise NotImplementedError

    def _pipelined(self, commands: list[bytes]) -> list[Any]:
        raise NotImplementedError

    def _scripted(
        self, script: Callable[[], T], commands: Callable[[], T], load: str | None = None
    ) -> T:
        """``script()`` while the server runs our scripts, else ``commands()`` (the same
        work as plain commands).  A server that refuses scripting is remembered; one that
        does not know the script (new, restarted) gets ``load`` loaded and is asked again."""
        if self._scripts:
            try:
                return script()
            except rexc.NoScriptError:
                if load is None:
                    raise
                self.client.script_load(load)  # type: ignore[no-untyped-call]
                return self._scripted(script, commands)
            except rexc.ResponseError as exc:
                if not scripting_refused(exc):
                    raise
                self._scripts = False
        return commands()

    def existing(self, ids: Sequence[str]) -> list[str]:
        keys = [self._key(sid) for sid in ids]
        if not keys:
            return []
        # One EXISTS of the whole batch counts them: a store holding none of them (the usual
        # case) costs the server one lookup per key and no per-key reply.  Only a batch with
        # some asks which, one EXISTS a key.
        some = self._call(lambda: self._pipelined([pack((b"EXISTS", *keys))])[0],
                          f"count {len(keys)} ids")
        if not some:
            return []
        found = self._call(lambda: self._pipelined([pack((b"EXISTS", key)) for key in keys]),
                           f"check {len(keys)} ids")
        return [sid for sid, hit in zip(ids, found, strict=True) if hit]

    def empty(self) -> bool:
        return self._call(lambda: self.client.dbsize(), "count keys") == 0

    def write_raw(
        self, batches: Iterable[Sequence[RawSession]], on_conflict: OnConflict
    ) -> WriteResult:
        result = WriteResult()
        server = (self._server_id(), self._transient_errors)
        # Two batches in flight on two connections: while the server runs one, the client
        # prepares and sends the next (the script of one batch blocks its connection ~5 ms).
        in_flight: deque[Future[WriteResult]] = deque()
        with ThreadPoolExecutor(WRITERS, thread_name_prefix="redis-write") as pool:
            try:
                for batch in batches:
                    in_flight.append(pool.submit(self._write_batch, batch, on_conflict))
                    if len(in_flight) >= WRITERS:
                        result.add(in_flight.popleft().result())
                        server = self._same_server(server)
                while in_flight:
                    result.add(in_flight.popleft().result())
                    server = self._same_server(server)
            except StreamRestarted:
                self._after_restart = True
                raise
            finally:
                for future in in_flight:
                    future.cancel()
        return result

    def _write_batch(self, batch: Sequence[RawSession], on_conflict: OnConflict) -> WriteResult:
        result = WriteResult()
        now = now_epoch_ms()
        live = []
        for raw in batch:
            if raw[2] is not None and raw[2] <= now:
                result.expired += 1
            else:
                live.append(raw)
        if not live:
            return result
        nx = on_conflict is not OnConflict.OVERWRITE
        attempts = 0

        def send() -> list[Any]:
            nonlocal attempts
            attempts += 1
            return self._send(live, nx)

        replies = self._call(send, f"write batch of {len(live)}")
        refused = [raw for raw, ok in zip(live, replies, strict=True) if not ok]
        if refused and (attempts > 1 or self._after_restart):
            # An attempt cut short by an outage may have written some of these already:
            # a key now holding exactly our value is ours, not a conflict.
            keys = [self._key(raw[0]) for raw in refused]
            current = self._call(lambda: self.client.mget(keys), "re-check batch")
            refused = [raw for raw, val in zip(refused, current, strict=True) if val != raw[1]]
        if refused and on_conflict is OnConflict.FAIL:
            raise AlreadyExists(
                f"{len(refused)} session(s) exist already, e.g. {refused[0][0]!r} "
                "(--on-conflict fail)",
                store=self.describe(),
            )
        result.skipped += len(refused)
        result.written += len(live) - len(refused)
        return result

    def _send(self, live: Sequence[RawSession], nx: bool) -> list[Any]:
        """SET each session (NX unless overwriting) with its PXAT; one reply each: OK, or
        nothing for a key that NX found taken.  The commands are packed by hiredis (C) and
        sent together: redis-py's pipeline spends ~15 us of Python per command, the packer
        ~1.4, and the server runs plain commands at half the CPU of one Lua script
        calling them."""
        prefix = self._bprefix
        flag = (b"NX",) if nx else ()
        return self._pipelined([
            pack((b"SET", prefix + sid.encode(), text, *flag)) if at is None
            else pack((b"SET", prefix + sid.encode(), text, b"PXAT", b"%d" % at, *flag))
            for sid, text, at in live
        ])
