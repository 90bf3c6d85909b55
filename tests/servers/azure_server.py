"""Azurite (Azure Blob emulator, npm azurite@3.35.0 in .test-servers/azurite), the Azure the
``azure`` module store is tested against."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from tests.servers.cloud import CloudStoreServer, pooled_session
from tests.servers.process import TEST_SERVERS, ServerProcess, free_port

ACCOUNT = "devstoreaccount1"
#: Azurite's published well-known development key (not a secret).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass
class AzureServer(CloudStoreServer):
    port: int
    server: ServerProcess
    provider: ClassVar[str] = "azure"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def store_keys(self, endpoint: str | None) -> dict[str, Any]:
        return {
            "storageAccount": ACCOUNT,
            "storageAccessKey": ACCOUNT_KEY,
            "endpoint": endpoint or self.endpoint,
        }

    def client(self, endpoint: str | None = None) -> Any:
        """A raw BlobServiceClient (SDK defaults, with a pool for 32 threads)."""
        from azure.core.pipeline.transport import RequestsTransport
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            endpoint or self.endpoint,
            credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
            transport=RequestsTransport(session=pooled_session(32), session_owner=False),
        )


def azurite_command() -> list[str]:
    local = TEST_SERVERS / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return [str(local)]
    found = shutil.which("azurite-blob")
    if found:
        return [found]
    raise RuntimeError("Azurite is missing: run scripts/install-test-servers")


def start_azurite() -> AzureServer:
    port = free_port()

    def healthy() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/{ACCOUNT}?comp=list", timeout=1)
        except urllib.error.HTTPError:
            return True  # any HTTP answer means it is up
        return True

    argv = azurite_command() + [
        "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
        "--skipApiVersionCheck", "--disableTelemetry", "--silent",
    ]
    proc = ServerProcess(f"azurite-{port}", argv, healthy=healthy)
    proc.start()
    return AzureServer(port, proc)


@pytest.fixture(scope="session")
def azure_server() -> Iterator[AzureServer]:
    srv = start_azurite()
    yield srv
    srv.server.cleanup()


@pytest.fixture(scope="session")
def azure_store_server(azure_server: AzureServer) -> AzureServer:
    """The server the conformance suite uses for the ``azure`` provider."""
    return azure_server
