"""Session stores: ``MemorySessionStore``, ``FileSessionStore``, ``RedisSessionStore``.

:func:`open_session_store` opens one from the settings or from a command-line spec:
``memory:``, ``file:PATH``, ``redis://[:password@]host:port[/db]`` or ``rediss://...``
(``?keyPrefix=...`` sets the key prefix of a Redis store).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from worker.config import FileSessionStoreConfig, RedisSessionStoreConfig, Settings, mask_url
from worker.config.shared_redis import redis_location, refuse_shared_redis
from worker.errors import UsageError
from worker.stores.registry import session_store_class
from worker.stores.sessions.base import (
    BATCH_SIZE,
    OnConflict,
    RawSession,
    Session,
    SessionStore,
    WriteResult,
)

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
    if isinstance(source, str):
        service, args = parse_store_spec(source)
        return session_store_class(service)(**args, **kwargs)
    cfg = source.SESSIONSTORE
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


def _masked(spec: str) -> str:
    try:
        return mask_url(spec) if "://" in spec else spec
    except ValueError:
        return "<unparsable URL>"
