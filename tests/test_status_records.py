"""The records ``synchro-sync status`` reads, with many containers: a pass writes all its
rows at once (one rewrite of ``STATE_DIR/status.json``, one Redis round trip), however many
containers the tree holds."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.servers.redis_server import RedisServer
from worker.coord.status import FileStatusStore, RedisStatusStore, record_full_passes


class CountingFileStatusStore(FileStatusStore):
    """The real file store, counting its locked rewrites of ``status.json``."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.writes = 0

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with super()._locked() as data:
            yield data
        self.writes += 1


def _rows(n: int, start: int = 0) -> dict[str, dict[str, Any]]:
    return {f"app{i:04d}": {"uploaded": i, "reason": "test"} for i in range(start, start + n)}


def test_a_pass_of_a_thousand_containers_rewrites_the_status_file_once(tmp_path: Path) -> None:
    store = CountingFileStatusStore(tmp_path)
    record_full_passes(store, _rows(1000), whole=True)
    assert store.writes == 1
    records = json.loads((tmp_path / "status.json").read_text())["records"]
    assert len(records) == 1000
    assert records["full_pass:app0999"]["uploaded"] == 999

    # A pass of the whole tree that no longer has the first 400: their rows go, in the same write.
    record_full_passes(store, _rows(600, start=400), whole=True)
    assert store.writes == 2
    names = store.names()
    assert len(names) == 600 and "full_pass:app0399" not in names and "full_pass:app0400" in names

    # A pass of part of the tree (one container) keeps the others' rows.
    record_full_passes(store, {"app0000": {"uploaded": 1}}, whole=False)
    assert store.writes == 3 and len(store.names()) == 601


def test_a_pass_of_a_thousand_containers_is_one_redis_round_trip(
    redis_server: RedisServer,
) -> None:
    raw = redis_server.client(db=5)
    raw.flushdb()
    store = RedisStatusStore(redis_server.url.removesuffix("/0") + "/5")
    record_full_passes(store, _rows(1000), whole=True)
    raw.config_resetstat()
    record_full_passes(store, _rows(600, start=400), whole=True)
    stats = raw.info("commandstats")
    assert stats["cmdstat_hset"]["calls"] == 1
    assert stats["cmdstat_hdel"]["calls"] == 1
    assert stats["cmdstat_hkeys"]["calls"] == 1
    records = store.read()["records"]
    assert len(records) == 600 and "full_pass:app0399" not in records
    assert records["full_pass:app0999"]["uploaded"] == 999
    raw.flushdb()


def test_sync_of_a_thousand_app_folders_records_every_row(tmp_path: Path) -> None:
    """As a user runs it: ``sync`` of 1,000 app folders, then ``status --json`` shows 1,000
    rows; with 400 folders gone, the next ``sync`` leaves 600.  (Each row was a rewrite of the
    whole file before: about 20 s of JSON for this tree.)"""
    for i in range(1000):
        app = tmp_path / "apps" / f"app{i:04d}"
        app.mkdir(parents=True)
        (app / "package.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCHRO")}
    env.update({
        "SYNCHRO__APP_ROOT_PATH": str(tmp_path / "apps"),
        "SYNCHRO__STATE_DIR": str(tmp_path / "state"),
        "SYNCHRO__MODULESTORE__directory": str(tmp_path / "mirror"),
    })

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["synchro-sync", *args], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode in (0, 1), out.stderr  # status exits 1: run is not running
        return out

    assert cli("sync").stdout.startswith("uploaded 1000,")
    rows = json.loads(cli("status", "--json").stdout)["full_passes"]
    rows.pop("/")  # the store's own files (apps.json) have their row too
    assert len(rows) == 1000 and rows["app0123"]["uploaded"] == 1
    for i in range(400):
        (tmp_path / "apps" / f"app{i:04d}" / "package.json").unlink()
        (tmp_path / "apps" / f"app{i:04d}").rmdir()
    cli("sync", "--force")
    rows = json.loads(cli("status", "--json").stdout)["full_passes"]
    rows.pop("/")
    assert len(rows) == 600 and "app0399" not in rows and "app0400" in rows


def test_a_pass_of_many_containers_logs_those_that_did_something_and_one_line(
    tmp_path: Path, caplog: Any,
) -> None:
    """Past ``EACH_UP_TO`` containers the log has a line for each container that did
    something and one for the pass (a scheduled pass of 1,000 unchanged apps was 1,000 lines);
    up to it, a line for each, as before.  ``status`` keeps every row either way."""
    import logging

    from worker.mirror import pass_log
    from worker.mirror.results import Counts, PassResult

    def result(n: int, busy: dict[int, Counts]) -> PassResult:
        r = PassResult(containers=[f"app{i:03d}" for i in range(n)])
        for i in range(n):
            r.per[f"app{i:03d}"] = busy.get(i, Counts(unchanged=3))
        return r

    caplog.set_level(logging.INFO, logger="synchro_sync.jobs")
    store = FileStatusStore(tmp_path)
    many = result(300, {7: Counts(uploaded=2, bytes=2_000_000), 250: Counts(deleted=1)})
    pass_log.record_pass(store, many, "scheduled", 1.5, whole=True)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "container=app007 full pass (scheduled) done in 1.50s: uploaded 2, copied 0, "
        "deleted 0, unchanged 0, 2.0 MB",
        "container=app250 full pass (scheduled) done in 1.50s: uploaded 0, copied 0, "
        "deleted 1, unchanged 0, 0.0 MB",
        "full pass (scheduled) done in 1.50s: 300 containers, 2 with something done: "
        "uploaded 2, copied 0, deleted 1, unchanged 894, 2.0 MB",
    ]
    assert len(store.names()) == 300

    caplog.clear()
    few = result(pass_log.EACH_UP_TO, {})
    pass_log.record_pass(store, few, "scheduled", 0.2, whole=True)
    assert len(caplog.records) == pass_log.EACH_UP_TO
    assert caplog.records[0].getMessage().startswith("container=app000 full pass (scheduled)")
