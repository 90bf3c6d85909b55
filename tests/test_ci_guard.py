"""A test whose tool or server is missing skips on a developer's machine and fails under CI
(``tests.servers.process.unavailable``): a broken install must not pass as skipped tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.process import REPO, clean_environ

NEEDS_MISSING_TOOL = """
from tests.servers.process import unavailable

def test_needs_a_tool():
    unavailable("frobnicate is not installed")
"""

MODULE_NEEDS_MISSING_TOOL = """
from tests.servers.process import unavailable

unavailable("node and its pkgcloud are missing")

def test_never_collected():
    raise AssertionError("collected")
"""


def _pytest(tmp_path: Path, source: str, ci: bool) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_guarded.py"
    test.write_text(source)
    env = clean_environ(PYTHONPATH=str(REPO))
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(test)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("source", "reason"),
    [(NEEDS_MISSING_TOOL, "frobnicate is not installed"),
     (MODULE_NEEDS_MISSING_TOOL, "node and its pkgcloud are missing")],
    ids=["in-a-test", "at-module-level"],
)
def test_missing_tool_skips_locally_and_fails_under_ci(
    tmp_path: Path, source: str, reason: str
) -> None:
    local = _pytest(tmp_path, source, ci=False)
    # 5: pytest's "no tests ran" when the only module is skipped whole.
    assert local.returncode in (0, 5), local.stdout + local.stderr
    assert "1 skipped" in local.stdout and reason in local.stdout

    ci = _pytest(tmp_path, source, ci=True)
    assert ci.returncode != 0, ci.stdout
    assert f"{reason} (CI installs it" in ci.stdout
    assert "skipped" not in ci.stdout.splitlines()[-1]
