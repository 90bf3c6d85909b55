"""Module stores: where the mirror puts the app modules.

``open_module_store(settings)`` builds the configured :class:`ModuleStore`
(``MODULESTORE_SERVICE`` = ``FileModuleStore`` or ``PkgCloudModuleStore`` with a ``provider``).
"""

from __future__ import annotations

from typing import Any

from worker.config import FileModuleStoreConfig, Settings
from worker.stores.modules.base import ContainerNotFound, ObjectInfo, SourceChanged
from worker.stores.modules.names import STORE_FILES
from worker.stores.modules.store import ModuleStore, file_md5
from worker.stores.registry import module_backend_class

__all__ = [
    "ContainerNotFound",
    "ModuleStore",
    "ObjectInfo",
    "STORE_FILES",
    "SourceChanged",
    "file_md5",
    "open_module_store",
    "open_backend",
]


def open_backend(provider: str, config: Any) -> Any:
    """The backend for ``provider`` (``file`` or a PkgCloudModuleStore provider) from its
    validated configuration; a missing SDK is MissingDependency naming the extra."""
    return module_backend_class(provider).from_config(config)


def open_module_store(settings: Settings, **options: Any) -> ModuleStore:
    """The module store the settings describe (``options`` go to :class:`ModuleStore`)."""
    config = settings.MODULESTORE
    if isinstance(config, FileModuleStoreConfig):
        return ModuleStore(open_backend("file", config), provider="file", **options)
    return ModuleStore(
        open_backend(config.provider, config), provider=config.provider, bucket=config.bucket,
        config_root=config.configRoot, **options
    )
