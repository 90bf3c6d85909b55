"""The one rule between the worker's broker and the session store: when both are Redis,
they are not the same database (the sessions' database holds the server's sessions under their
bare ids, and nothing of the worker's may go in there)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from worker.config.settings import Settings
from worker.config.stores import RedisSessionStoreConfig
from worker.errors import ConfigError

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def redis_location(url: str, db: int = 0) -> tuple[str, str, int] | None:
    """``(host, port, db)`` of a Redis URL (``("unix", path, db)`` for a socket), loopback
    names made equal; None when it is not a Redis URL or cannot be read."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            query = parse_qs(parts.query)
            return ("unix", parts.path, int(query.get("db", [db])[0]))
        if parts.scheme not in ("redis", "rediss"):
            return None
        host = (parts.hostname or "localhost").lower()
        path = parts.path.strip("/")
        return (
            "loopback" if host in _LOOPBACK else host,
            str(parts.port or 6379),
            int(path) if path else db,
        )
    except ValueError:
        return None


def refuse_shared_redis(settings: Settings) -> None:
    """A ConfigError when BROKER_URL (where the worker keeps its locks, status, pending
    paths and queues) is the session store's Redis database: the session store holds the
    server's sessions under their bare ids, and nothing of the worker's may go in there."""
    cfg = settings.SESSIONSTORE
    if not isinstance(cfg, RedisSessionStoreConfig) or not settings.BROKER_URL:
        return
    broker = redis_location(settings.BROKER_URL)
    if cfg.url:
        sessions = redis_location(cfg.url, cfg.db)
    else:
        host = cfg.host.lower()
        sessions = ("loopback" if host in _LOOPBACK else host, str(cfg.port), cfg.db)
    if broker is None or broker != sessions:
        return
    shown = urlsplit(settings.BROKER_URL).hostname or "localhost"
    place = f"{broker[1]}" if broker[0] == "unix" else f"{shown}:{broker[1]}"
    origins = [settings.origin("SESSIONSTORE", key) for key in ("url", "host", "port", "db")]
    origin = next((o for o in origins if o != "default"), None)
    where = f"SESSIONSTORE ({origin})" if origin else (
        f"SESSIONSTORE_SERVICE RedisSessionStore ({settings.origin('SESSIONSTORE_SERVICE')}) "
        "with its default host, port and db"
    )
    raise ConfigError(
        "BROKER_URL",
        settings.origin("BROKER_URL"),
        f"is the Redis database of the session store, {where}: {place} db {broker[2]}; the "
        "worker's own keys (locks, status, pending paths, queues) must not go into the "
        "sessions' database: give one of the two another database number",
    )
