"""The architecture, as docs/architecture.md draws it, checked: the parts import downward only,
no import cycle inside a package, no import of our own modules hidden in a function body, and no
module grown past what one reader takes in."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("worker/**/*.py"), *ROOT.glob("tasks/**/*.py")])
MAX_LINES = 400

#: Imports of our own modules that stay inside a function, each for a reason.
LAZY_ON_PURPOSE = {
    # `celery -A worker` reaches the app through the package's __getattr__; importing the app at
    # the top would load Celery for every command.
    ("worker/__init__.py", "worker.queue.app"),
    # Only watch, worker and beat load Celery; run, status, sync and the rest start without it.
    ("worker/cli/run_cmd.py", "worker.queue.app"),
}


def _own_imports_in_functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names
                             if a.name.split(".")[0] in ("worker", "tasks"))
            elif in_function and isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level or module.split(".")[0] in ("worker", "tasks"):
                    found.append((child.lineno, module))
            visit(child, inside)

    visit(tree, False)
    return found


def test_the_layers_and_the_packages_have_no_upward_import_and_no_cycle() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout, done.stdout[-2000:]


def test_no_module_of_ours_is_imported_inside_a_function() -> None:
    hidden = []
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        for line, module in _own_imports_in_functions(path):
            if (rel, module) not in LAZY_ON_PURPOSE:
                hidden.append(f"{rel}:{line}: {module}")
    assert not hidden, "imports hidden in functions (move them to the top):\n" + "\n".join(hidden)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_is_longer_than_one_reader_takes_in(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_LINES})"


def test_the_checker_finds_a_hidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from worker.mirror import plan\n"
                      "    import json\n    return plan, json\n")
    assert _own_imports_in_functions(sample) == [(4, "worker.mirror")]
