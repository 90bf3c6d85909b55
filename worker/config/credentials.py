"""Credentials the configuration does not give: does the provider's SDK find any of its own?

:func:`missing_credentials` asks a provider module (by name: the only place its SDK is imported,
and only when the configuration gives no keys) whether the SDK's credential chain has anything
to offer, before any request to the store, so that a store without credentials is one line at
start-up rather than an error at the first save.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


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
