"""Session stores: ``MemorySessionStore``, ``FileSessionStore``, ``RedisSessionStore``.

:func:`open_session_store` opens one from the settings or from a command-line spec:
``memory:``, ``file:PATH``, ``redis://[:password@]host:port[/db]`` or ``rediss://...``
(``?keyPrefix=...`` sets the key prefix of a Redis store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.errors import UsageError
from worker.stores.sessions.base import (
    BATCH_SIZE,
    OnConflict,
    RawSession,
    Session,
    SessionStore,
    WriteResult,
)

if TYPE_CHECKING:
    from worker.config import Settings

__all__ = [
    "BATCH_SIZE",
    "OnConflict",
    "RawSession",
    "Session",
    "SessionStore",
    "WriteResult",
    "backup_note",
    "open_session_store",
    "parse_store_spec",
    "redis_location",
    "refuse_shared_redis",
    "unreachable_reason",
]

SPEC_HELP = "memory:, file:PATH, redis://[:password@]host:port[/db] or rediss://..."


def parse_store_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """A command-line store spec -> (service name, constructor arguments); UsageError if bad."""
    from urllib.parse import urlsplit

    text = spec.strip()
    if text == "memory:":
        return "MemorySessionStore", {}
    if text.startswith("file:"):
        path = text[len("file:") :]
        if not path:
            raise UsageError(f"store {spec!r}: file: needs a path (file:sessions.json)")
        return "FileSessionStore", {"path": path}
    if text.startswith(("redis://", "rediss://")):
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"store {_masked(spec)!r}: {exc}") from None
        if not parts.hostname:
            raise UsageError(f"store {_masked(spec)!r}: no host in the Redis URL")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise UsageError(f"store {_masked(spec)!r}: the database must be a number, not {db!r}")
        del port
        return "RedisSessionStore", {"url": text}
    raise UsageError(f"store {_masked(spec)!r} is not one of: {SPEC_HELP}")


def open_session_store(source: str | Settings, **kwargs: Any) -> Any:
    """Open a session store from the settings or a spec string (see :func:`parse_store_spec`).

    Extra keyword arguments go to the store's constructor (e.g. ``retry=`` for Redis).
    Returns an object implementing :class:`SessionStore`.
    """
    from worker.registry import session_store_class

    if isinstance(source, str):
        service, args = parse_store_spec(source)
        return session_store_class(service)(**args, **kwargs)
    from worker.config import FileSessionStoreConfig, RedisSessionStoreConfig

    cfg = source.session_store
    cls = session_store_class(source.SESSIONSTORE_SERVICE)
    if isinstance(cfg, RedisSessionStoreConfig):
        return cls.from_config(cfg, **kwargs)
    if isinstance(cfg, FileSessionStoreConfig):
        return cls(cfg.sessionStateFile, **kwargs)
    return cls(**kwargs)


def unreachable_reason(settings: Settings | None) -> str | None:
    """Why the live session store cannot be snapshotted by a worker (None: it can).
    ``settings`` None means a ``memory:`` spec given on the command line."""
    if settings is None or settings.SESSIONSTORE_SERVICE == "MemorySessionStore":
        where = "memory:" if settings is None else "SESSIONSTORE_SERVICE MemorySessionStore"
        return (
            f"{where} lives inside the Synchro server's process, which a worker cannot reach"
        )
    return None


def backup_note(settings: Settings) -> str | None:
    """The start-up line of ``run``/``beat`` when scheduled session backups are off."""
    why = unreachable_reason(settings)
    if why and settings.BACKUP.interval > 0:
        return f"no scheduled session backups: {why}"
    return None


_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def redis_location(url: str, db: int = 0) -> tuple[str, str, int] | None:
    """``(host, port, db)`` of a Redis URL (``("unix", path, db)`` for a socket), loopback
    names made equal; None when it is not a Redis URL or cannot be read."""
    from urllib.parse import parse_qs, urlsplit

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
    from worker.config import RedisSessionStoreConfig
    from worker.errors import ConfigError

    cfg = settings.session_store
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
    from urllib.parse import urlsplit

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


def _masked(spec: str) -> str:
    from worker.config import mask_url

    try:
        return mask_url(spec) if "://" in spec else spec
    except ValueError:
        return "<unparsable URL>"
