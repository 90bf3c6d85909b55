"""The effective configuration: the worker's own settings and the server's it shares.

Field names are the Synchro server's where the two share one (``APP_ROOT_PATH``,
``SESSIONSTORE_SERVICE``, ...).  The server's other settings (``PORT``, ``APPS``, ...) are kept,
untouched, in :attr:`Settings.server`: the same ``config.json`` serves both.
"""

from __future__ import annotations

import socket
from pathlib import PurePath
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.config.fields import (
    Int,
    NonEmptyStr,
    PathStr,
    Port,
    PositiveSeconds,
    Seconds,
    Share,
    Strict,
    check_url,
    masked_repr_args,
)
from worker.config.server import STORE_PACKAGE
from worker.config.stores import (
    FileModuleStoreConfig,
    MemorySessionStoreConfig,
    ModuleStoreConfig,
    SessionStoreConfig,
)

Path_ = tuple[str, ...]

BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel", "amqp", "amqps", "pyamqp")


class SyncSettings(Strict):
    """How module files are mirrored (``SYNC`` in config.json)."""

    #: Quiet period after the last event on a path before it is synced, in seconds.
    debounce: Seconds = 0.1
    #: A path that keeps changing is synced at least this often, in seconds.
    maxDelay: PositiveSeconds = 1.0
    #: Seconds between scheduled full passes (the watcher is a hint; the pass is the truth).
    fullPassInterval: PositiveSeconds = 600.0
    #: Extra ignore patterns, gitignore syntax, on top of the defaults and ``.syncignore``.
    ignore: list[str] = []
    #: A pass that would delete more than this share of a container needs ``--force``.
    maxDeleteShare: Share = 0.5
    #: Live deletes are held to ``maxDeleteShare`` of a container over this many seconds.
    deleteWindow: PositiveSeconds = 600.0
    #: Mirror only folders a Synchro server serves (``package.json`` with engines.synchro);
    #: a folder joins the moment its package.json says so.
    appsOnly: bool = False
    #: Use watchdog's polling observer (bind mounts, network filesystems).
    polling: bool = False
    #: Parallel transfers in a full pass.
    transfers: Annotated[Int, Field(ge=1, le=256)] = 16

    @field_validator("ignore")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        if not patterns:
            return patterns
        import pathspec  # 40 ms: only where there are patterns to check

        for n, pattern in enumerate(patterns, 1):
            try:
                pathspec.GitIgnoreSpec.from_lines([pattern])
            except ValueError:
                raise ValueError(f"pattern {n} ({pattern!r}) is not valid gitignore syntax"
                                 ) from None
        return patterns


class BackupSettings(Strict):
    """Scheduled session snapshots (``BACKUP`` in config.json)."""

    #: A folder, or ``modulestore:CONTAINER``.
    dest: PathStr = "synchro-snapshots"
    #: Seconds between scheduled snapshots; 0 turns scheduled backups off.
    interval: Seconds = 3600.0
    #: How many verified snapshots to keep.
    keep: Annotated[Int, Field(ge=1)] = 24


class MetricsSettings(Strict):
    """Metrics, health and the status page (``METRICS`` in config.json); see ops/metrics.py."""

    #: Port of ``/metrics``, ``/healthz`` and ``/`` served by ``run`` and ``watch``; unset: off.
    port: Port | None = None
    #: Address to listen on (loopback unless set).
    host: NonEmptyStr = "127.0.0.1"
    #: Workers send Celery task events (for Flower); false turns them off.
    taskEvents: bool = True
    #: ``/healthz`` fails once the module store has failed for this many seconds.
    storeFailingAfter: PositiveSeconds = 300.0
    #: A worker's ``/healthz`` fails once tasks have waited this many seconds in its host's
    #: queue while it had a free process and took none (a consumer connected but not consuming).
    consumerStalledAfter: PositiveSeconds = 120.0


def _store_package(v: str) -> str:
    if v != STORE_PACKAGE and PurePath(v.rstrip("/\\")).name != STORE_PACKAGE:
        raise ValueError(
            f"the worker cannot load a third-party store package ({v!r}); it implements "
            f"{STORE_PACKAGE}'s stores only (unset it, or set {STORE_PACKAGE!r})"
        )
    return v


class Settings(BaseSettings):
    """The effective configuration.  Field names are the original server's."""

    model_config = SettingsConfigDict(extra="forbid", populate_by_name=True)

    SESSIONSTORE_PACKAGE: str = STORE_PACKAGE
    SESSIONSTORE_SERVICE: str = "MemorySessionStore"
    #: The session store's configuration, the model of ``SESSIONSTORE_SERVICE`` (validated by
    #: load_settings, which passes the keys the worker does not use through).
    SESSIONSTORE: SessionStoreConfig = Field(default_factory=MemorySessionStoreConfig)
    MODULESTORE_PACKAGE: str = STORE_PACKAGE
    MODULESTORE_SERVICE: str = "FileModuleStore"
    #: The module store's configuration: ``FileModuleStore``'s, or a cloud provider's.
    MODULESTORE: ModuleStoreConfig = Field(default_factory=FileModuleStoreConfig)
    #: The local module directory the worker mirrors (one sub-folder per app container).
    APP_ROOT_PATH: PathStr = "synchro-apps"
    #: A Redis or RabbitMQ URL; unset means the embedded, in-process default.
    BROKER_URL: str | None = None
    #: Where the worker keeps its index, embedded queue and status.
    STATE_DIR: PathStr = ".synchro-sync"
    #: Queue for work that needs this host's files; default ``files.<hostname>``.
    HOST_QUEUE: NonEmptyStr | None = None
    LOG_LEVEL: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"],
                         BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)] = "INFO"
    #: ``text`` (for people) or ``json`` (one object a line, container and path as fields).
    LOG_FORMAT: Annotated[Literal["text", "json"],
                          BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
                          ] = "text"
    SYNC: SyncSettings = SyncSettings()
    BACKUP: BackupSettings = BackupSettings()
    METRICS: MetricsSettings = MetricsSettings()

    @field_validator("SESSIONSTORE_PACKAGE", "MODULESTORE_PACKAGE")
    @classmethod
    def _package(cls, v: str) -> str:
        return _store_package(v)

    @field_validator("BROKER_URL")
    @classmethod
    def _broker(cls, v: str | None) -> str | None:
        if v is not None:
            check_url(v, BROKER_SCHEMES, need_host=False, what="broker URL")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Layering (with provenance) is done by load_settings(); the model only validates.
        return (init_settings,)

    # Filled by load_settings(): the store sections as given, and what came from where.
    _raw_stores: dict[str, dict[str, Any]] = {}
    _origins: dict[Path_, str] = {}
    _server: dict[str, Any] = {}
    _passed_through: dict[Path_, str] = {}
    _notes: dict[Path_, str] = {}

    def raw_store_value(self, section: str, key: str) -> Any:
        """A key of ``SESSIONSTORE`` or ``MODULESTORE`` as given (one passed through, say)."""
        return self._raw_stores[section][key]

    @property
    def server(self) -> dict[str, Any]:
        """The Synchro server's settings the worker does not use (``PORT``, ``APPS``, ...), as
        given."""
        return self._server

    def origin(self, *path: str) -> str:
        """Where the value at ``path`` came from: its own source or that of the object that
        holds it; ``default`` for a built-in default."""
        for n in range(len(path), 0, -1):
            if path[:n] in self._origins:
                return self._origins[path[:n]]
        return "default"

    def host_queue(self) -> str:
        return self.HOST_QUEUE or f"files.{socket.gethostname()}"

    def __repr_args__(self) -> Any:
        return masked_repr_args(super().__repr_args__())
