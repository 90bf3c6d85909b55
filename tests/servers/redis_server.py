"""A private redis-server per test session (with a password), restartable for outage tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from tests.servers.process import ServerProcess, free_port

REDIS_PASSWORD = "s3cret-test-pass"


@dataclass
class RedisServer:
    port: int
    password: str | None
    server: ServerProcess

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, db=db)

    def stop(self) -> None:
        self.server.kill()

    def start(self) -> None:
        self.server.start()


def start_redis(password: str | None = REDIS_PASSWORD, port: int | None = None) -> RedisServer:
    port = port or free_port()
    argv = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--daemonize", "no",
    ]
    proc = ServerProcess(f"redis-{port}", argv, healthy=lambda: False)
    argv += ["--dir", str(proc.workdir)]
    if password:
        argv += ["--requirepass", password]
    proc.argv = argv

    def healthy() -> bool:
        return bool(redis.Redis(port=port, password=password, socket_timeout=0.5).ping())

    proc.healthy = healthy
    proc.start()
    return RedisServer(port, password, proc)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A shared password-protected redis-server; tests flush what they use."""
    srv = start_redis()
    yield srv
    srv.server.cleanup()


@pytest.fixture()
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for one test alone, which the test may stop and start again."""
    srv = start_redis()
    yield srv
    srv.server.cleanup()
