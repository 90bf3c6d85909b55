"""Service and provider names from the configuration -> implementing classes, imported lazily.

An unknown name lists the valid ones with the closest match; a missing optional SDK names the
extra to install (``pip install 'synchro-sync[azure]'``, or ``pip install -e '.[azure]'`` from a
checkout).  :func:`missing_credentials` asks a provider's SDK, before any request to the store,
whether its credential chain has anything to offer when the configuration gives no keys.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Chain:
    """A provider whose SDK has a credential chain of its own: used when none of ``given``
    is set; ``setting`` is the one to name when the chain finds nothing either."""

    given: tuple[str, ...]
    module: str
    setting: str
    nothing: str


_CHAINS = {
    "amazon": _Chain(
        ("keyId", "key"), "worker.stores.modules.s3", "keyId",
        "no credentials: set MODULESTORE.keyId and MODULESTORE.key (the key best in "
        "SYNCHRO__MODULESTORE__key), or give them to the AWS credential chain "
        "(tried: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials and "
        "~/.aws/config, container and instance roles); none found",
    ),
    "google": _Chain(
        ("keyFilename", "endpoint"), "worker.stores.modules.gcs", "keyFilename",
        "no credentials: set MODULESTORE.keyFilename (a service-account key file), or "
        "application default credentials (tried: GOOGLE_APPLICATION_CREDENTIALS, gcloud's "
        "application default credentials, the metadata server); none found",
    ),
}


def missing_credentials(provider: str, config: Any) -> tuple[str, str] | None:
    """``(setting, problem)`` when ``provider`` has no credentials at all: none in ``config``
    and none in the SDK's own chain; None when there are some (or the SDK is not installed:
    opening the backend then names the extra).  Pairs and required keys are the config
    model's business; this covers what only the SDK knows."""
    chain = _CHAINS.get(provider)
    if chain is None or any(getattr(config, name) for name in chain.given):
        return None
    problem = _chain_problem(chain.module)
    if problem is None:
        return None
    return chain.setting, problem or chain.nothing


def _chain_problem(module_name: str) -> str | None:
    """Ask a provider module (the only place its SDK is imported) whether its SDK's own
    credential chain finds anything: None if it does (or the SDK is missing: opening the
    backend names the extra), "" if it finds nothing, else what broke."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    problem: str | None = module.credential_chain_problem()
    return problem
