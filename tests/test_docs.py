"""The documents the code and the README point to exist, and docs/testing.md covers every
server fixture and every Node client there is."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_referenced_document_exists() -> None:
    sources = [REPO / "README.md", REPO / "scripts" / "install-test-servers",
               *REPO.glob("docs/*.md"), *REPO.glob("tests/**/*.py"), *REPO.glob("worker/**/*.py")]
    missing = set()
    for path in sources:
        for ref in re.findall(r"\bdocs/[\w-]+\.md\b", path.read_text(errors="replace")):
            if not (REPO / ref).is_file():
                missing.add(f"{path.relative_to(REPO)} -> {ref}")
    assert not missing, sorted(missing)


def test_testing_md_names_every_server_and_node_client() -> None:
    text = (REPO / "docs" / "testing.md").read_text()
    for module in sorted((REPO / "tests" / "servers").glob("*.py")):
        if module.name != "__init__.py" and module.name != "process.py":
            assert f"`{module.name}`" in text, module.name
    for script in sorted((REPO / "tests" / "node").glob("*.js")):
        assert f"`{script.name}`" in text, script.name
    install = (REPO / "scripts" / "install-test-servers").read_text()
    for what in re.findall(r"need_apt\+=\((\S+)\)", install):
        assert f"`{what}`" in text or what == "time", what
    assert "`.test-servers/node`" in text and "NODE_PATH" in text
