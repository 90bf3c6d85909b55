"""`pull` from a bucket where a key is both a file and a folder (`x` and `x/y`): said as what it
is, the folder's files come, the file is held (never deleted by the next `sync`)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable

from tests.servers.celery_worker import CLI, SyncWorld
from tests.servers.s3_server import S3Server


def test_pull_names_a_key_that_is_both_a_file_and_a_folder(
    sync_world: Callable[..., SyncWorld], s3_server: S3Server,
) -> None:
    app = f"clash-{uuid.uuid4().hex[:8]}"
    s3 = s3_server.client()
    s3.create_bucket(Bucket=app)
    for key, body in (("x", b"file x"), ("x/y", b"under x"), ("ok.js", b"ok")):
        s3.put_object(Bucket=app, Key=key, Body=body)
    world = sync_world(None, store_settings=s3_server.settings())
    world.containers = {app}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env=world.env, cwd=world.base, capture_output=True,
                              text=True, timeout=120)

    for _ in range(3):  # whichever of the two comes first, the same words
        out = cli("pull", app)
        assert "appeared locally meanwhile" not in out.stderr, out.stderr
        assert f"{app}/x: the store holds both a file 'x' and files under 'x/'" in out.stderr
        assert "Traceback" not in out.stderr
        assert (world.root / app / "x" / "y").read_bytes() == b"under x"
        assert (world.root / app / "ok.js").read_bytes() == b"ok"
    again = cli("sync", app, "--force")
    assert again.returncode == 0, again.stderr
    kept = {o["Key"] for o in s3.list_objects_v2(Bucket=app).get("Contents", [])}
    assert kept == {"x", "x/y", "ok.js"}
