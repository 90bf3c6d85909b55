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


#: Where a document is named: the README, the docs, the tests, the code, scripts and CI.
def _naming_sources() -> list[Path]:
    return [REPO / "README.md", REPO / "pyproject.toml", REPO / ".ci" / "run",
            *REPO.glob("scripts/*"), *REPO.glob("docs/*.md"), *REPO.glob("tests/**/*.py"),
            *REPO.glob("tests/node/*.js"), *REPO.glob("worker/**/*.py"),
            *REPO.glob("tasks/**/*.py"), *REPO.glob("bench/**/*.py")]


def test_every_named_markdown_file_exists() -> None:
    """Any ``NAME.md`` a file mentions (``docs/testing.md``, ``stores.md`` inside docs/, a
    bare ``TESTING.md``) is a file, from the repository, the naming file's folder or docs/."""
    missing = set()
    for path in _naming_sources():
        if not path.is_file() or path == Path(__file__).resolve():  # this file's examples
            continue
        text = path.read_text(errors="replace")
        for ref in re.findall(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.md)\b", text):
            if not any((base / ref).is_file() for base in (REPO, path.parent, REPO / "docs")):
                missing.add(f"{path.relative_to(REPO)} -> {ref}")
    assert not missing, sorted(missing)


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings: lower case, punctuation dropped, spaces
    to dashes."""
    out = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_markdown_link_resolves() -> None:
    """Each relative link of the README and docs/ names a file, and its ``#anchor`` one of
    that file's headings."""
    broken = []
    for doc in [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))]:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # code is not links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            name, _, anchor = target.partition("#")
            file = (doc.parent / name).resolve() if name else doc
            where = f"{doc.relative_to(REPO)} -> {target}"
            if not file.is_file():
                broken.append(f"{where}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
                broken.append(f"{where}: no such heading")
    assert not broken, broken
    assert "[docs/testing.md](docs/testing.md)" in (REPO / "README.md").read_text()


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


def test_testing_md_names_every_marker_and_each_marking_fixture_exists() -> None:
    import tomllib

    from tests.conftest import SERVER_FIXTURES

    text = (REPO / "docs" / "testing.md").read_text()
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    names = [m.split(":", 1)[0] for m in ini["markers"]]
    assert {"unit", "servers", "subprocess", "redis", "s3", "gcs", "azure", "swift", "worker",
            "node"} <= set(names)
    assert "--strict-markers" in ini["addopts"]
    for name in names:
        if name != "slow":
            assert f"`{name}`" in text, name
    # A fixture named in conftest's table but defined nowhere would mark nothing.
    defined = set()
    for path in REPO.glob("tests/**/*.py"):
        defined.update(re.findall(r"^def (\w+)\(", path.read_text(), re.M))
    assert set(SERVER_FIXTURES) <= defined, sorted(set(SERVER_FIXTURES) - defined)
