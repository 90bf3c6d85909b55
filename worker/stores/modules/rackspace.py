"""``rackspace``: Rackspace Cloud Files, which is Swift behind Rackspace's identity service.

Keys read: ``username``, ``apiKey``, ``region`` (default ``DFW``), ``authUrl`` (default
Rackspace's v2.0 identity).  Everything but the identity is :class:`SwiftBackend`.  Tested
against the tests' Swift behind a Rackspace-style identity endpoint written for the tests;
Rackspace's own service cannot be reached from the tests.
"""

from __future__ import annotations

from typing import Any, ClassVar

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v2

from worker.stores.modules.swift import SwiftBackend


class RackspaceApiKey(v2.Auth):
    """Rackspace identity (v2.0 with ``RAX-KSKEY:apiKeyCredentials``) as a keystoneauth1 plugin."""

    def __init__(self, auth_url: str, username: str, api_key: str) -> None:
        super().__init__(auth_url=auth_url, reauthenticate=True)
        self.username = username
        self.api_key = api_key

    def get_auth_data(self, headers: Any = None) -> dict[str, Any]:
        return {"RAX-KSKEY:apiKeyCredentials": {"username": self.username, "apiKey": self.api_key}}


class RackspaceBackend(SwiftBackend):
    """Rackspace Cloud Files: Swift behind Rackspace's identity service."""

    name: ClassVar[str] = "rackspace"

    @classmethod
    def from_config(cls, config: Any, *, timeout: float = 60.0) -> SwiftBackend:
        auth = RackspaceApiKey(config.authUrl, config.username, config.apiKey.get_secret_value())
        return cls(ks_session.Session(auth=auth, timeout=timeout), config.region, timeout)
