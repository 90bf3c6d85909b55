"""The streaming writes of :class:`~worker.stores.sessions.redis.RedisSessionStore` (restore,
copy, import) and its conflict check: one Lua script per batch of 1,000 sessions (``SET NX``
or plain ``SET``, each with its ``PXAT``), two batches in flight on two connections; pipelined
commands for a server that refuses scripting.  A mixin, so that the store's module stays
readable; everything it uses is the store's own (declared below for the type checker).
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
from worker.stores.sessions.redis_support import scripting_refused

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
    _write_script: Any
    _exists_script: Any

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

        def pipelined() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            return pipe.execute()

        def probe() -> list[Any]:
            return self._scripted(lambda: list(self._exists_script(keys=keys)), pipelined)

        found = self._call(probe, f"check {len(keys)} ids")
        return [sid for sid, hit in zip(ids, found, strict=True) if hit]

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
        """SET each session (NX unless overwriting) with its PXAT; one truthy reply each."""
        prefix = self._bprefix

        def script() -> list[Any]:
            keys = [prefix + sid.encode() for sid, _, _ in live]
            args: list[Any] = [b"1" if nx else b"0"]
            for _, text, expires_ms in live:
                args.append(text)
                args.append(b"" if expires_ms is None else expires_ms)
            return list(self._write_script(keys=keys, args=args))

        def pipelined() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            command = pipe.execute_command
            for sid, text, expires_ms in live:
                cmd: list[Any] = ["SET", prefix + sid.encode(), text]
                if expires_ms is not None:
                    cmd += ["PXAT", expires_ms]
                if nx:
                    cmd.append("NX")
                command(*cmd)  # type: ignore[no-untyped-call]
            return pipe.execute()

        return self._scripted(script, pipelined)
