"""Service and provider names from the configuration -> implementing classes, imported lazily.

An unknown name lists the valid ones with the closest match; a missing optional SDK names the
extra to install (``pip install 'synchro-sync[azure]'``, or ``pip install -e '.[azure]'`` from a
checkout).
"""

from __future__ import annotations

import importlib
from typing import Any

from worker.errors import MissingDependency

SESSION_STORES: dict[str, str] = {
    "MemorySessionStore": "worker.stores.sessions.memory:MemorySessionStore",
    "FileSessionStore": "worker.stores.sessions.file:FileSessionStore",
    "RedisSessionStore": "worker.stores.sessions.redis:RedisSessionStore",
}

#: provider -> ("module:Class", extra that installs its SDK)
MODULE_BACKENDS: dict[str, tuple[str, str | None]] = {
    "file": ("worker.stores.modules.file:FileBackend", None),
    "amazon": ("worker.stores.modules.s3:S3Backend", "amazon"),
    "google": ("worker.stores.modules.gcs:GCSBackend", "google"),
    "azure": ("worker.stores.modules.azure:AzureBackend", "azure"),
    "openstack": ("worker.stores.modules.swift:SwiftBackend", "openstack"),
    "rackspace": ("worker.stores.modules.rackspace:RackspaceBackend", "rackspace"),
}

#: top-level SDK module per extra, to tell a missing SDK from a bug inside our own module
_SDK_MODULES = {
    "amazon": ("boto3", "botocore"),
    "google": ("google",),
    "azure": ("azure",),
    "openstack": ("swiftclient", "keystoneauth1"),
    "rackspace": ("swiftclient", "keystoneauth1"),
}


def load(target: str, extra: str | None = None) -> Any:
    """Import ``module:attr``; a missing SDK becomes :class:`MissingDependency` naming the extra."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if extra and root in _SDK_MODULES.get(extra, ()):
            raise MissingDependency(
                f"the {extra} provider needs {exc.name}: pip install 'synchro-sync[{extra}]' "
                f"(from a checkout: pip install -e '.[{extra}]')"
            ) from exc
        raise
    return getattr(module, attr)


def session_store_class(service: str) -> Any:
    return load(SESSION_STORES[service])


def module_backend_class(provider: str) -> Any:
    target, extra = MODULE_BACKENDS[provider]
    return load(target, extra)
