"""Settings: the original Synchro server's names, layered file < environment < command line.

Each setting is taken from the first of: command-line options; ``SYNCHRO__`` environment
variables (``__`` between nested names, e.g. ``SYNCHRO__SESSIONSTORE__password``); the
configuration file (``-c/--config``, else ``$SYNCHRO_CONFIG``, else ``./config.json``); the
built-in defaults.  Keys are matched case-insensitively and stored under their canonical
spelling, so ``SYNCHRO__MODULESTORE__STORAGEACCOUNT`` and ``storageAccount`` are the same key.

The file is the Synchro server's own ``config.json``: its settings the worker does not use
(``PORT``, ``APPS``, ...) load and are kept untouched, and keys inside ``SESSIONSTORE`` /
``MODULESTORE`` meant for the Redis client or pkgcloud are passed through.

Every value remembers where it came from, so that a bad one is reported as one line naming the
setting, its source and what is allowed (:class:`~worker.errors.ConfigError`), and
``config show`` prints the origin of every effective value.  Settings are loaded by the CLI or
once per worker process, never at import time.

The package: :mod:`.fields` (value types), :mod:`.stores` (one model per store),
:mod:`.settings` (the worker's own settings), :mod:`.sources` (file, environment, command
line), :mod:`.loader` (layering and errors), :mod:`.show` (masking, ``config show``).
"""

from __future__ import annotations

from worker.config.listing import effective_items
from worker.config.loader import MIRROR_FALLBACK, load_settings
from worker.config.server import SERVER_SETTINGS
from worker.config.settings import BackupSettings, Settings, SyncSettings
from worker.config.show import Row, mask_url, masked
from worker.config.sources import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    MAX_FILE_BYTES,
    find_config_file,
)
from worker.config.stores import (
    MODULE_STORE_SERVICES,
    PROVIDER_CONFIGS,
    SESSION_STORE_CONFIGS,
    AmazonConfig,
    AzureConfig,
    CloudConfig,
    FileModuleStoreConfig,
    FileSessionStoreConfig,
    GoogleConfig,
    MemorySessionStoreConfig,
    ModuleStoreConfig,
    OpenStackConfig,
    RackspaceConfig,
    RedisSessionStoreConfig,
    SessionStoreConfig,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "MAX_FILE_BYTES",
    "MIRROR_FALLBACK",
    "MODULE_STORE_SERVICES",
    "PROVIDER_CONFIGS",
    "SERVER_SETTINGS",
    "SESSION_STORE_CONFIGS",
    "AmazonConfig",
    "AzureConfig",
    "BackupSettings",
    "CloudConfig",
    "FileModuleStoreConfig",
    "FileSessionStoreConfig",
    "GoogleConfig",
    "MemorySessionStoreConfig",
    "ModuleStoreConfig",
    "OpenStackConfig",
    "RackspaceConfig",
    "RedisSessionStoreConfig",
    "Row",
    "SessionStoreConfig",
    "Settings",
    "SyncSettings",
    "effective_items",
    "find_config_file",
    "load_settings",
    "mask_url",
    "masked",
]
