"""`synchro-sync sync` and `pull` as a user calls them: summary line, dry run, progress bar on
a terminal, exit codes 0 / 1 / 2."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.servers.process import unavailable
from worker.cli import main

SUMMARY = re.compile(
    r"^uploaded (\d+), (?:copied \d+, )?deleted (\d+), unchanged (\d+), [\d.]+ MB, [\d.]+ s"
)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCHRO")}
    env.update({
        "SYNCHRO__APP_ROOT_PATH": str(tmp / "apps"),
        "SYNCHRO__STATE_DIR": str(tmp / "state"),
        "SYNCHRO__MODULESTORE__directory": str(tmp / "mirror"),
    })
    env.update(extra)
    return env


def _tree(tmp: Path, n: int = 5) -> None:
    for i in range(n):
        p = tmp / "apps" / "app1" / "lib" / f"m{i}.js"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"module {i}\n")
    (tmp / "apps" / "app2").mkdir(parents=True, exist_ok=True)
    (tmp / "apps" / "app2" / "main.js").write_text("main\n")


def _run(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["synchro-sync", *args],
        env=_env(tmp, **env), cwd=tmp, capture_output=True, text=True, timeout=120,
    )


def test_sync_prints_one_summary_line_and_exits_0(tmp_path: Path) -> None:
    _tree(tmp_path)
    first = _run(tmp_path, "sync")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 1
    m = SUMMARY.match(lines[0])
    assert m and m.groups() == ("6", "0", "0")
    assert "\x1b" not in first.stdout + first.stderr  # no bar when not on a terminal
    assert (tmp_path / "mirror" / "app1" / "lib" / "m3.js").read_text() == "module 3\n"
    again = _run(tmp_path, "sync", "app1")
    m = SUMMARY.match(again.stdout.strip())
    assert again.returncode == 0 and m and m.groups() == ("0", "0", "5")


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    _tree(tmp_path)
    out = _run(tmp_path, "sync", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "upload  app1/lib/m0.js" in out.stdout and "nothing was changed" in out.stdout
    assert not (tmp_path / "mirror").exists() or not any((tmp_path / "mirror").rglob("*.js"))
    assert _run(tmp_path, "sync").returncode == 0
    (tmp_path / "apps" / "app1" / "lib" / "m0.js").unlink()
    out = _run(tmp_path, "sync", "--dry-run")
    assert "delete  app1/lib/m0.js" in out.stdout
    assert (tmp_path / "mirror" / "app1" / "lib" / "m0.js").exists()


def test_exit_2_for_bad_usage_and_configuration(tmp_path: Path) -> None:
    _tree(tmp_path)
    unknown = _run(tmp_path, "sync", "no-such-app")
    assert unknown.returncode == 2 and "no such app folder" in unknown.stderr
    bad = _run(tmp_path, "sync", SYNCHRO__SYNC__transfers="0")
    assert bad.returncode == 2 and "SYNC.transfers" in bad.stderr
    assert "Traceback" not in bad.stderr
    same = _run(tmp_path, "sync", SYNCHRO__MODULESTORE__directory=str(tmp_path / "apps"))
    assert same.returncode == 2 and "MODULESTORE.directory" in same.stderr


def test_exit_1_when_deletes_need_force_or_work_fails(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert _run(tmp_path, "sync").returncode == 0
    for i in range(4):
        (tmp_path / "apps" / "app1" / "lib" / f"m{i}.js").unlink()
    held = _run(tmp_path, "sync")
    assert held.returncode == 1 and "--force" in held.stderr
    assert SUMMARY.match(held.stdout.strip())  # the summary is printed all the same
    assert (tmp_path / "mirror" / "app1" / "lib" / "m0.js").exists()
    forced = _run(tmp_path, "sync", "--force")
    assert forced.returncode == 0 and not (tmp_path / "mirror" / "app1" / "lib" / "m0.js").exists()
    # A store that cannot be written: the failure says what and why, exit 1.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    failed = _run(tmp_path, "sync", SYNCHRO__MODULESTORE__directory=str(blocker),
                  SYNCHRO__STATE_DIR=str(tmp_path / "state2"))
    assert failed.returncode == 1 and "app1" in failed.stderr and "Traceback" not in failed.stderr


def test_pull_fills_a_new_folder_then_sync_uploads_nothing(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert _run(tmp_path, "sync").returncode == 0
    new = {"SYNCHRO__APP_ROOT_PATH": str(tmp_path / "new"),
           "SYNCHRO__STATE_DIR": str(tmp_path / "state-new")}
    pulled = _run(tmp_path, "pull", **new)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.startswith("downloaded 6,")
    assert (tmp_path / "new" / "app2" / "main.js").read_text() == "main\n"
    after = _run(tmp_path, "sync", **new)
    m = SUMMARY.match(after.stdout.strip())
    assert m and m.groups() == ("0", "0", "6")


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    _tree(tmp_path, 300)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        ["synchro-sync", "sync"], env={**_env(tmp_path), "COLUMNS": "120", "TERM": "xterm"},
        cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(60) == 0
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert "files" in screen and "━" in screen  # the bar: files done and a bar
    assert re.search(r"uploaded 301, deleted 0, unchanged 0", screen)


def test_cli_runner_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    for k, v in _env(tmp_path).items():
        if k.startswith("SYNCHRO"):
            monkeypatch.setenv(k, v)
    result = CliRunner().invoke(main, ["sync", "--transfers", "2"])
    assert result.exit_code == 0, result.output
    assert SUMMARY.match(result.output.strip().splitlines()[-1])


def test_peak_memory_of_a_pass_with_large_files_stays_under_100_mb(tmp_path: Path) -> None:
    # 20 files of 7 MiB (each read whole for a single-request upload, 16 transfers at once):
    # without the byte budget the pass would hold ~140 MiB of file content.
    block = os.urandom(1024 * 1024)
    for i in range(20):
        p = tmp_path / "apps" / "big" / f"f{i:02d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(block * 7 + bytes([i]))
    # GNU time forks the command from its own small process: the peak RSS it reports is the
    # pass's alone (a child forked from pytest would inherit pytest's high-water mark).
    gnu_time = shutil.which("time") or "/usr/bin/time"
    if not os.path.exists(gnu_time):
        unavailable("GNU time (Debian package 'time') is not installed")
    run = subprocess.run([gnu_time, "-f", "peak-kb %M", "synchro-sync", "sync"],
                         env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("uploaded 20,")
    peak_mb = int(run.stderr.strip().splitlines()[-1].split()[-1]) / 1024
    assert peak_mb <= 100, f"peak RSS {peak_mb:.0f} MB"


def test_large_files_to_s3_stream_with_flat_memory(
    tmp_path: Path, amazon_store_server: Any
) -> None:
    """8 files of 40 MiB (320 MiB) to S3 in one pass: each goes up as one streamed PUT (its ETag
    is the file's MD5: no multipart), all of them at once within the byte budget, and the pass
    peaks under 100 MB (8 x 64 MiB peaked at 117-126 MB when files went as 8 MiB parts)."""
    import hashlib
    import json
    import uuid

    gnu_time = shutil.which("time") or "/usr/bin/time"
    if not os.path.exists(gnu_time):
        unavailable("GNU time (Debian package 'time') is not installed")
    block = os.urandom(1024 * 1024)
    digests = {}
    for i in range(8):
        p = tmp_path / "apps" / "big" / f"f{i}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        data = block * 40 + bytes([i])
        p.write_bytes(data)
        digests[f"big/f{i}.bin"] = hashlib.md5(data).hexdigest()
    bucket = f"stream-{uuid.uuid4().hex[:8]}"
    client = amazon_store_server.client()
    client.create_bucket(Bucket=bucket)
    env = _env(tmp_path, SYNCHRO__MODULESTORE_SERVICE="PkgCloudModuleStore",
               SYNCHRO__MODULESTORE=json.dumps(amazon_store_server.settings(bucket=bucket)),
               SYNCHRO__SYNC__transfers="16")
    env.pop("SYNCHRO__MODULESTORE__directory")
    run = subprocess.run([gnu_time, "-f", "peak-kb %M", "synchro-sync", "sync"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("uploaded 8,")
    listed = {o["Key"]: o["ETag"].strip('"')
              for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert listed == digests
    peak_mb = int(run.stderr.strip().splitlines()[-1].split()[-1]) / 1024
    assert peak_mb <= 100, f"peak RSS {peak_mb:.0f} MB"


def test_a_missing_single_bucket_is_one_line(tmp_path: Path, amazon_store_server: Any) -> None:
    """With MODULESTORE.bucket naming a bucket that does not exist, a pass of 900 files says so
    once (it was one NoSuchBucket line per file)."""
    import json

    for app in ("a", "b", "c"):
        for n in range(300):
            p = tmp_path / "apps" / app / f"f{n}.js"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(str(n))
    store = amazon_store_server.settings(bucket="no-such-bucket")
    env = _env(tmp_path, SYNCHRO__MODULESTORE_SERVICE="PkgCloudModuleStore",
               SYNCHRO__MODULESTORE=json.dumps(store))
    env.pop("SYNCHRO__MODULESTORE__directory")
    done = subprocess.run(["synchro-sync", "sync"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    failed = [x for x in done.stderr.splitlines() if "failed" in x]
    assert len(failed) == 1 and "MODULESTORE.bucket 'no-such-bucket' does not exist" in failed[0]
    assert "1 failed" in done.stdout


def _interrupted(tmp: Path, command: str, started: Callable[[], bool]) -> tuple[str, str]:
    """Run ``command``, send it SIGINT once ``started()`` (files are moving), and check that
    it ends within 10 s with exit 130; its stdout and stderr."""
    import signal
    import time

    proc = subprocess.Popen(["synchro-sync", command], env=_env(tmp), cwd=tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    sent_at = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent_at < 10
    return out, err


def test_ctrl_c_stops_a_pass_at_once_and_the_next_one_does_the_rest(tmp_path: Path) -> None:
    """SIGINT during a pass of 4,000 files: the command ends within seconds (it used to run the
    whole pass first), with the summary marked interrupted and exit 130; what was in flight is
    whole, nothing was deleted, and the index remembers what was sent, so the next pass sends
    only the rest and hashes nothing it already sent."""
    import sqlite3

    app = tmp_path / "apps" / "app1"
    app.mkdir(parents=True)
    for n in range(4000):
        (app / f"f{n:04d}.js").write_text(f"file {n}\n" * 20)
    stale = tmp_path / "mirror" / "app1" / "stale.js"
    stale.parent.mkdir(parents=True)
    stale.write_text("a full pass deletes this")
    out, err = _interrupted(tmp_path, "sync", lambda: len(list(stale.parent.iterdir())) >= 10)
    m = SUMMARY.match(out.strip())
    assert m and "interrupted (nothing deleted; the next run does the rest)" in out, out
    first = int(m.group(1))
    assert 0 < first < 4000 and m.group(2) == "0"
    assert stale.exists() and "Traceback" not in err and "Aborted" not in err
    stored = {p.name for p in stale.parent.iterdir()} - {"stale.js"}
    for name in stored:  # each upload in flight finished whole
        assert (stale.parent / name).read_text() == (app / name).read_text()
    with sqlite3.connect(tmp_path / "state" / "index.sqlite") as db:
        rows = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    assert rows >= first
    again = _run(tmp_path, "sync")
    m = SUMMARY.match(again.stdout.strip())
    assert again.returncode == 0 and m, again.stdout + again.stderr
    assert int(m.group(1)) == 4000 - len(stored) and m.group(2) == "1"
    assert int(m.group(3)) == len(stored)
    assert {p.name for p in stale.parent.iterdir()} == {p.name for p in app.iterdir()}


def test_ctrl_c_stops_a_pull_and_the_next_pull_brings_the_rest(tmp_path: Path) -> None:
    """The same for `pull` of 4,000 objects: it ends within seconds with exit 130, every file
    it wrote is whole, and the next pull brings exactly the rest."""

    store = tmp_path / "mirror" / "app1"
    store.mkdir(parents=True)
    for n in range(4000):
        (store / f"f{n:04d}.js").write_text(f"object {n}\n" * 20)
    new = tmp_path / "apps" / "app1"
    out, _ = _interrupted(tmp_path, "pull",
                          lambda: new.is_dir() and len(list(new.glob("*.js"))) >= 10)
    assert out.startswith("downloaded ") and "interrupted" in out, out
    arrived = sorted(p.name for p in new.glob("*.js"))
    assert 0 < len(arrived) < 4000
    for name in arrived:
        assert (new / name).read_text() == (store / name).read_text()
    again = _run(tmp_path, "pull")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"downloaded {4000 - len(arrived)},"), again.stdout
    assert sorted(p.name for p in new.iterdir()) == sorted(p.name for p in store.iterdir())
