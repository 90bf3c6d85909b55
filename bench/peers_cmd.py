"""Command lines of every tool the mirror benchmark runs, with their endpoint settings.

Each entry: (phase, src, bucket, endpoint, state dir) -> argv.  Endpoint and credentials go
through the environment (:func:`peer_env`): rclone's ``RCLONE_CONFIG_MOTO_*`` remote, the
``AWS_*`` variables for aws and boto3, ``SYNCHRO__*`` for ours.
"""

from __future__ import annotations

import compileall
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

Argv = Callable[[str, Path, str, str, Path], list[str]]


def ours_exe() -> str:
    """The ``synchro-sync`` console script pip installed beside this interpreter; a version
    manager's shim found first on PATH (pyenv's is a shell script that runs ``pyenv exec``,
    about 0.3 s here) would be charged to us and is not part of the program.  Our modules'
    bytecode is written first (:func:`_bytecode`)."""
    _bytecode()
    beside = Path(sys.executable).parent / "synchro-sync"
    return str(beside) if beside.is_file() else shutil.which("synchro-sync") or "synchro-sync"


@functools.cache
def _bytecode() -> None:
    """Write the bytecode of the installed ``worker`` package, as pip does when it installs a
    package.  An editable install (``pip install -e .``) writes it on the first run, unless
    ``PYTHONDONTWRITEBYTECODE`` is set, as on the machines of these benchmarks: every run would
    then compile every module of ours again (70-80 ms of CPU), which no installed copy pays."""
    import worker

    compileall.compile_dir(Path(worker.__file__).parent, quiet=1)


def _ours(phase: str, src: Path, bucket: str, url: str, state: Path) -> list[str]:
    exe = ours_exe()
    return [
        "env",
        f"SYNCHRO__APP_ROOT_PATH={src}",
        f"SYNCHRO__STATE_DIR={state}",
        "SYNCHRO__MODULESTORE_SERVICE=PkgCloudModuleStore",
        f'SYNCHRO__MODULESTORE={{"provider": "amazon", "endpoint": "{url}", '
        f'"keyId": "{os.environ.get("AWS_ACCESS_KEY_ID", "bench-key")}", '
        f'"key": "{os.environ.get("AWS_SECRET_ACCESS_KEY", "bench-secret")}", '
        f'"bucket": "{bucket}"}}',
        "SYNCHRO__SYNC__transfers=16",
        exe, "sync",
    ]


def _rclone(*flags: str) -> Argv:
    def argv(phase: str, src: Path, bucket: str, url: str, state: Path) -> list[str]:
        return ["rclone", "sync", str(src), f"moto:{bucket}", *flags]

    return argv


def _aws(phase: str, src: Path, bucket: str, url: str, state: Path) -> list[str]:
    return ["aws", "--endpoint-url", url, "s3", "sync", str(src), f"s3://{bucket}/", "--delete",
            "--only-show-errors"]


def _boto3(phase: str, src: Path, bucket: str, url: str, state: Path) -> list[str]:
    mode = "put" if phase == "initial" else "sync"
    return [sys.executable, str(HERE / "peer_boto3.py"), mode, str(src), bucket]


PEERS: dict[str, Argv] = {
    "ours": _ours,
    "rclone-tuned": _rclone("--transfers", "16", "--checkers", "16", "--checksum",
                            "--fast-list", "--s3-no-head", "--s3-no-check-bucket"),
    "rclone-t16": _rclone("--transfers", "16", "--checkers", "16"),
    "aws": _aws,
    "boto3": _boto3,
}


#: GNU time, which reports its child's own peak RSS (``%M``).
GNU_TIME = "/usr/bin/time"


@contextmanager
def own_peak_rss(argv: list[str]) -> Iterator[tuple[list[str], Callable[[int], float]]]:
    """``argv`` wrapped so that the command's own peak RSS can be read after it exits:
    yields (the argv to run, a function of the ``ru_maxrss`` in KiB that ``wait4`` gave, which
    returns the peak in MB).

    ``ru_maxrss`` of a child is not its own peak on Linux: the high-water mark of the memory
    it had before ``exec`` (the forked parent's, a benchmark holding a 100,000-file tree and
    listings) is kept through the ``exec``.  Through GNU time (a small process), ``%M`` is the
    command's own; without GNU time ``ru_maxrss`` is returned (an upper bound)."""
    if not os.access(GNU_TIME, os.X_OK):
        yield argv, lambda maxrss_kb: round(maxrss_kb / 1024, 1)
        return
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:

        def peak(maxrss_kb: int) -> float:
            text = Path(out.name).read_text().strip().splitlines()
            return round(int(text[-1]) / 1024, 1) if text else round(maxrss_kb / 1024, 1)

        yield [GNU_TIME, "-f", "%M", "-o", out.name, *argv], peak


@dataclass(frozen=True)
class Measured:
    """One command run to its end: its output (stdout and stderr), exit code, wall seconds,
    client CPU seconds (``wait4``) and own peak RSS in MB (:func:`own_peak_rss`)."""

    out: str
    exit: int
    wall: float
    cpu: float
    rss_mb: float
    rss_mb_wait4: float


def run_measured(argv: list[str], env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> Measured:
    """Run ``argv`` and measure it (the one way every benchmark runs a command)."""
    with own_peak_rss(argv) as (wrapped, peak):
        t0 = time.monotonic()
        proc = subprocess.Popen(wrapped, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        return Measured(out, os.waitstatus_to_exitcode(status), wall,
                        usage.ru_utime + usage.ru_stime, peak(usage.ru_maxrss),
                        round(usage.ru_maxrss / 1024, 1))


def peer_env(key: str, secret: str, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # plain http here
    env.update({
        "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url,
        "RCLONE_CONFIG_MOTO_TYPE": "s3", "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
        "RCLONE_CONFIG_MOTO_ENV_AUTH": "false", "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": key,
        "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": secret, "RCLONE_CONFIG_MOTO_ENDPOINT": url,
        "RCLONE_CONFIG_MOTO_REGION": "us-east-1", "RCLONE_CONFIG": "/dev/null",
    })
    return env
