"""A fault-injecting HTTP reverse proxy (aiohttp) to sit between a cloud SDK and its emulator.

Each test tells the proxy which requests to break and how (:class:`Fault`): answer an HTTP
status (500, 503, throttling) instead of forwarding; reset the connection before the request
body is read, or after it was read but before it is forwarded; forward it (so the write lands)
and then drop the response; answer only half of the response body; or wait before forwarding.
Every request is logged, so a test can count the attempts the store made.

The proxy runs its own event loop in a thread; it is a real server on a loopback port.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.servers.process import free_port

_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "content-length",
}


@dataclass
class Fault:
    """Break the next ``times`` requests that match ``method`` and the ``path`` regex."""

    #: status | reset_before_body | reset_after_body | drop_response | truncate | delay |
    #: corrupt (flip one byte of the request body on its way to the server)
    kind: str
    method: str | None = None
    path: str = ""
    times: int = 1
    status: int = 503
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: seconds, for ``delay``
    seconds: float = 0.0
    #: let this many matching requests through first (break the third chunk, say)
    after: int = 0
    hits: int = 0
    seen: int = 0

    def matches(self, method: str, path_qs: str) -> bool:
        if self.hits >= self.times:
            return False
        if (self.method is not None and self.method != method) or not re.search(
            self.path, path_qs
        ):
            return False
        self.seen += 1
        return self.seen > self.after


class FaultProxy:
    """Forwards everything to ``upstream`` except what the faults say."""

    def __init__(self, upstream: str | None = None) -> None:
        self.port = free_port()
        self.upstream = upstream
        self.faults: list[Fault] = []
        #: (method, path with query) of every request received, in order
        self.requests: list[tuple[str, str]] = []
        #: the Range header of each of those requests (None: none)
        self.ranges: list[str | None] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- control ---------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()
            self.ranges.clear()

    def count(self, method: str | None = None, path: str = "") -> int:
        with self._lock:
            return sum(
                1 for m, p in self.requests
                if (method is None or m == method) and re.search(path, p)
            )

    def _take(self, method: str, path_qs: str, range_: str | None = None) -> Fault | None:
        with self._lock:
            self.requests.append((method, path_qs))
            self.ranges.append(range_)
            for fault in self.faults:
                if fault.matches(method, path_qs):
                    fault.hits += 1
                    return fault
        return None

    # --- server ----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120)
        )

    def stop(self) -> None:
        async def _stop() -> None:
            if self._session is not None:
                await self._session.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @staticmethod
    def _reset(request: web.Request) -> web.StreamResponse:
        """Close with a TCP RST (SO_LINGER 0): the client sees 'connection reset'."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=500)  # never reaches the client

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._take(request.method, request.path_qs, request.headers.get("Range"))
        kind = fault.kind if fault else ""
        if kind == "reset_before_body":
            return self._reset(request)
        body = await request.read()
        if fault is not None and kind == "status":
            return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
        if kind == "reset_after_body":
            return self._reset(request)
        if fault is not None and kind == "delay":
            await asyncio.sleep(fault.seconds)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the client gave up: do not forward
        if kind == "corrupt" and body:
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        assert self._session is not None and self.upstream is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method,
            self.upstream.rstrip("/") + request.path_qs,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
            skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
        ) as upstream:
            payload = await upstream.read()
            out_headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP]
            status = upstream.status
            length = upstream.headers.get("Content-Length")
        if kind == "drop_response":
            return self._reset(request)  # the write landed; the client never hears of it
        response = web.StreamResponse(status=status)
        for k, v in out_headers:
            response.headers.add(k, v)
        if request.method == "HEAD":
            if length is not None:
                response.headers["Content-Length"] = length
            await response.prepare(request)
            return response
        response.content_length = len(payload)
        await response.prepare(request)
        if kind == "truncate":
            # Half the body, then a clean close (FIN, not RST, so the client really gets the
            # half before it notices the body ended short).
            await response.write(payload[: len(payload) // 2])
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write(payload)
        await response.write_eof()
        return response


@pytest.fixture()
def fault_proxy() -> Iterator[FaultProxy]:
    """A proxy with no upstream yet: the test points it at its server."""
    proxy = FaultProxy().start()
    yield proxy
    proxy.stop()
