"""The Synchro server's own client libraries as the other side of the session stores.

Small Node scripts (tests/node/sessions_*.js) write and read sessions exactly as synchro-api's
``lib/redis-session-store.js`` (the ``redis`` 2.x client) and ``lib/file-session-store.js``
(``JSON.stringify`` / ``JSON.parse`` of the whole file) do; the worker in between runs as a
user runs it, through the ``synchro-sync`` console script, against real redis-servers.
The Node clients are installed by scripts/install-test-servers into
``.test-servers/node/node_modules`` (found relative to this repository).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.process import clean_environ
from tests.servers.redis_server import REDIS_PASSWORD, RedisServer, start_redis

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "tests" / "node"
NODE_MODULES = REPO / ".test-servers" / "node" / "node_modules"

pytestmark = pytest.mark.node


def node(script: str, *args: str, stdin: str | None = None) -> Any:
    """Run a Node script of tests/node with the server's client libraries; its JSON output."""
    exe = shutil.which("node")
    assert exe, "node is not installed (Node 20: see docs/testing.md)"
    assert (NODE_MODULES / "redis").is_dir(), (
        f"{NODE_MODULES} has no redis client: run scripts/install-test-servers"
    )
    res = subprocess.run(
        [exe, str(NODE_DIR / script), *args], input=stdin, capture_output=True, text=True,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)}, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("synchro-sync")
    return subprocess.run(
        [str(exe) if exe.exists() else "synchro-sync", *args], cwd=cwd, env=clean_environ(),
        capture_output=True, text=True, timeout=300,
    )


def url(srv: RedisServer, db: int = 0) -> str:
    return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{srv.port}/{db}"


@pytest.fixture()
def fresh_redis() -> Iterator[RedisServer]:
    """A second redis-server, empty, as a new production host would be."""
    srv = start_redis()
    yield srv
    srv.server.cleanup()


def test_redis_sessions_written_by_the_server_come_back_byte_for_byte(
    own_redis: RedisServer, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    written: dict[str, str] = node("sessions_redis.js", "write", str(own_redis.port),
                                   REDIS_PASSWORD, "300")
    assert len(written) == 300
    snap = cli("sessions", "snapshot", "--from", url(own_redis), "--dest", "snaps", cwd=tmp_path)
    assert snap.returncode == 0, snap.stderr
    assert ": 300 sessions" in snap.stdout and "skipped" not in snap.stdout
    res = cli("sessions", "restore", "latest", "--dest", "snaps", "--to", url(fresh_redis),
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "300 written" in res.stdout
    back: dict[str, str | None] = node("sessions_redis.js", "read", str(fresh_redis.port),
                                       REDIS_PASSWORD, stdin=json.dumps(list(written)))
    assert back == written  # every session, the same text the server's client wrote
    assert fresh_redis.client().dbsize() == 300  # and nothing else


def test_sessions_json_written_by_the_server_to_redis_and_back(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    made: dict[str, str] = node("sessions_file.js", "write", str(tmp_path / "sessions.json"),
                                "120")
    res = cli("sessions", "copy", "--from", "file:sessions.json", "--to", url(fresh_redis),
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("copied 120 sessions")
    in_redis = node("sessions_redis.js", "read", str(fresh_redis.port), REDIS_PASSWORD,
                    stdin=json.dumps(list(made)))
    assert in_redis == made  # what the server's Redis store would have written itself
    back = cli("sessions", "copy", "--from", url(fresh_redis), "--to", "file:back.json",
               cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert node("sessions_file.js", "read", str(tmp_path / "back.json")) == made


def test_an_empty_file_and_the_worker_s_file_read_by_the_server(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("")
    assert node("sessions_file.js", "read", str(tmp_path / "empty.json")) == {}
    imported = tmp_path / "in.jsonl"
    imported.write_text('{"id":"a","expires_at":null,"state":{"id":"a","n":"é"}}\n'
                        '{"id":"b","expires_at":"2099-01-01T00:00:00.000Z","state":{"id":"b"}}\n')
    res = cli("sessions", "import", "in.jsonl", "--store", "file:empty.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert node("sessions_file.js", "read", str(tmp_path / "empty.json")) == {
        "a": '{"id":"a","n":"é"}', "b": '{"id":"b"}'}
