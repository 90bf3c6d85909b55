"""The one place that makes Redis clients and names Redis keys.

Everything synchro-sync keeps in Redis (besides the broker's own keys) is under
:data:`REDIS_PREFIX`.  Clients are made by :func:`client`, one per URL and process, with the same
timeouts everywhere: a broker that does not answer is noticed within seconds, never waited on.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

#: Key prefix of everything synchro-sync keeps in Redis besides the broker's own keys.
REDIS_PREFIX = "synchro-sync:"
CONNECT_TIMEOUT = 3.0
SOCKET_TIMEOUT = 5.0

_lock = threading.Lock()
_clients: dict[tuple[int, str], redis.Redis[bytes]] = {}


def is_redis_url(url: str | None) -> bool:
    """True for a Redis broker URL (``redis://``, ``rediss://``, ``unix://``)."""
    return bool(url) and str(url).startswith(("redis://", "rediss://", "unix://"))


def key(*parts: str) -> str:
    """``synchro-sync:<part>:<part>...``"""
    return REDIS_PREFIX + ":".join(parts)


def client(url: str) -> redis.Redis[bytes]:
    """This process's client for ``url`` (made on first use; a forked child makes its own)."""
    import redis  # here: a plain ``sync`` with no Redis broker never loads redis-py (~60 ms)

    ident = (os.getpid(), url)
    with _lock:
        made = _clients.get(ident)
        if made is None:
            made = redis.Redis.from_url(
                url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
            )
            _clients[ident] = made
        return made


def close_all() -> None:
    """Close this process's clients (worker shutdown, tests)."""
    with _lock:
        mine = [k for k in _clients if k[0] == os.getpid()]
        for k in mine:
            _clients.pop(k).close()
