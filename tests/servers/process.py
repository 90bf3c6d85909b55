"""Start a real server on a free loopback port, wait until it answers, stop it afterwards.

The pattern every server fixture follows (see docs/testing.md): pick a free port, check nothing
listens there, ``Popen`` in a new session with output to a log file, poll a health check every
50 ms for at most 30 s (failing with the log's tail if the process dies), and on teardown
terminate, wait, kill.  Never kill by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[2]
TEST_SERVERS = REPO / ".test-servers"

#: The node id of the ``unit`` test running now (set by tests/conftest.py), else None: a
#: unit test starts no server, so :meth:`ServerProcess.start` refuses to.
UNIT_TEST: str | None = None


def unavailable(reason: str) -> NoReturn:
    """What a test needs (a tool, a package, a server the machine provides) is missing: a skip
    on a developer's machine, a failure under CI (``CI=true``), where ``.ci/run`` installs
    everything, so that a broken install can never pass as a few skipped tests."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs it: .ci/run, scripts/install-test-servers)",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.02, details: Callable[[], str] | None = None) -> float:
    """Poll ``predicate`` until it returns something true; the seconds that took.  Fails the
    test after ``timeout`` seconds with ``what`` (what was awaited) and ``details()`` (a log's
    tail, the last state seen)."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"not within {timeout}s: {what}{extra}")
        time.sleep(interval)  # poll interval


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any ``SYNCHRO*`` variable (the caller's settings,
    ``SYNCHRO_CONFIG`` included), plus ``extra``: for a subprocess that must see only the
    settings its test gives it (the ``clean_env`` fixture does the same in-process)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SYNCHRO")}
    env.update(extra)
    return env


def free_port() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not port_open(port):
            return port
    raise RuntimeError("no free loopback port")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class ServerProcess:
    """One server process; ``start()`` blocks until ``healthy()`` is true."""

    name: str
    argv: Sequence[str]
    healthy: Callable[[], bool]
    env: dict[str, str] | None = None
    cwd: str | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="synchro-srv-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        if UNIT_TEST is not None:
            raise RuntimeError(
                f"{UNIT_TEST} is marked unit but starts {self.name}: name the fixture or "
                "parameter that starts it in tests/conftest.py (SERVER_FIXTURES, SERVER_PARAMS)"
            )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")
            try:
                if self.healthy():
                    return self
            except Exception:
                pass
            time.sleep(0.05)  # poll interval
        self.stop()
        raise RuntimeError(f"{self.name} not healthy after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def kill(self) -> None:
        """SIGKILL now (outage tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
