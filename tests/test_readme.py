"""The README's promises: its first command works in an empty folder; CI runs its test command."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.servers.process import clean_environ, wait_for

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_opens_with_install_and_run_then_test_command() -> None:
    install_run, test = readme_commands()[:2]
    assert install_run == "pip install -e . && synchro-sync run"
    assert "pytest" in test
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci, "CI must run the README's test command word for word"


def test_run_on_the_embedded_default_in_an_empty_folder(tmp_path: Path) -> None:
    """`synchro-sync run` with no settings at all: makes ./synchro-apps, mirrors a save into
    ./synchro-mirror, and stops cleanly on SIGTERM."""
    env = clean_environ()
    exe = Path(sys.executable).with_name("synchro-sync")
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(exe), "run"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=out,
            text=True,
        )
    try:
        wait_for((tmp_path / "synchro-apps").is_dir, 30, "run makes ./synchro-apps")
        # Live first: a save made before would be mirrored by the start-up pass, and the stop
        # could then come before run said it was live.
        wait_for(lambda: "live: synchro-apps -> synchro-mirror" in log.read_text(), 30,
                 "run goes live", details=log.read_text)
        app = tmp_path / "synchro-apps" / "hello"
        app.mkdir(parents=True)
        target = tmp_path / "synchro-mirror" / "hello" / "index.js"
        deadline = time.monotonic() + 30
        content = ""
        while time.monotonic() < deadline:
            (app / "index.js").write_text(f"exports.v = {time.monotonic()}\n")
            expected = (app / "index.js").read_text()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:
                content = target.read_text() if target.exists() else ""
                if content == expected:
                    break
                time.sleep(0.02)  # poll interval
            if content == expected:
                break
        assert content == expected, "a save was not mirrored"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    err = log.read_text()
    assert proc.returncode == 0, err
    assert re.search(r"stopped: [1-9]\d* save\(s\) mirrored", err), err  # by the live path
    assert "Traceback" not in err
