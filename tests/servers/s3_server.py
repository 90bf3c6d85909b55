"""moto in server mode, the S3 the ``amazon`` module store is tested against."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from tests.servers.cloud import CloudStoreServer
from tests.servers.process import ServerProcess, free_port

ACCESS_KEY = "synchro-test-key"
SECRET_KEY = "synchro-test-secret"


@dataclass
class S3Server(CloudStoreServer):
    port: int
    server: ServerProcess
    provider: ClassVar[str] = "amazon"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def store_keys(self, endpoint: str | None) -> dict[str, Any]:
        return {
            "keyId": ACCESS_KEY,
            "key": SECRET_KEY,
            "region": "us-east-1",
            "endpoint": endpoint or self.endpoint,
        }

    def client(self, endpoint: str | None = None) -> Any:
        """A raw boto3 client, for checks behind the store's back and the benchmark."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
        )

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()


def start_s3() -> S3Server:
    port = free_port()

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1) as r:
            return bool(r.status == 200)

    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = ServerProcess(f"moto-{port}", argv, healthy=healthy)
    proc.start()
    return S3Server(port, proc)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    srv = start_s3()
    yield srv
    srv.server.cleanup()


@pytest.fixture(scope="session")
def amazon_store_server(s3_server: S3Server) -> S3Server:
    """The server the conformance suite uses for the ``amazon`` provider."""
    return s3_server
