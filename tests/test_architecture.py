"""The architecture, as docs/architecture.md draws it, checked: the parts import downward only,
no import cycle inside a package, no import of our own modules hidden in a function body, every
import at the top of its module, modules imported by name only where named here, and no module
grown past what one reader takes in.  And what that layout is for: a command loads only what it
uses (``sync`` neither Celery nor the watcher)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.process import clean_environ

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("worker/**/*.py"), *ROOT.glob("tasks/**/*.py")])
MAX_LINES = 400

#: Imports of our own modules that stay inside a function, each for a reason.
LAZY_ON_PURPOSE = {
    # `celery -A worker` reaches the app through the package's __getattr__; importing the app at
    # the top would load Celery for every command.
    ("worker/__init__.py", "worker.queue.app"),
    # The CLI's state loads the settings (pydantic, the store models): `--help` and
    # `--version` need neither and answer in 0.1 s instead of 0.5 s.
    ("worker/cli/__init__.py", "worker.cli.state"),
}

#: Top-level imports below the module's first def or class, each for a reason (any other is an
#: import moved down to break a cycle: the layout's to fix, not the import's).
BELOW_ON_PURPOSE = {
    # The inotify observer's watchdog classes exist on Linux only: imported under a platform test.
    ("worker/live/inotify.py", "watchdog.observers.api"),
    ("worker/live/inotify.py", "watchdog.observers.inotify"),
    ("worker/live/inotify.py", "watchdog.observers.inotify_c"),
}

#: The modules that import modules by name (importlib), each for a reason.
BY_NAME_ON_PURPOSE = {
    # A provider's module, and so its optional SDK, only when its store is opened.
    "worker/stores/registry.py",
    "worker/config/credentials.py",
    # A command's module only when the command runs: `sync` never loads the watcher or Celery.
    "worker/cli/__init__.py",
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


def _imports_below_the_first_definition(path: Path) -> list[tuple[int, str]]:
    """Top-level imports (at module level, or under a module-level if/try) after the first
    def or class."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    defined = False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined = True
            continue
        if not defined:
            continue
        for each in ast.walk(node):
            if isinstance(each, ast.Import):
                found.extend((each.lineno, a.name) for a in each.names)
            elif isinstance(each, ast.ImportFrom):
                found.append((each.lineno, "." * each.level + (each.module or "")))
    return found


def _imports_by_name(path: Path) -> list[int]:
    """Lines that call importlib.import_module or __import__."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno for node in ast.walk(tree)
        if isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))
        )
    ]


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


def test_every_import_is_at_the_top_of_its_module() -> None:
    below = []
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        for line, module in _imports_below_the_first_definition(path):
            if (rel, module) not in BELOW_ON_PURPOSE:
                below.append(f"{rel}:{line}: {module}")
    assert not below, "imports below a def or class (move them to the top):\n" + "\n".join(below)


def test_modules_are_imported_by_name_only_where_named() -> None:
    by_name = [
        f"{path.relative_to(ROOT).as_posix()}:{line}"
        for path in SOURCES
        for line in _imports_by_name(path)
        if path.relative_to(ROOT).as_posix() not in BY_NAME_ON_PURPOSE
    ]
    assert not by_name, "imports by name (import them at the top):\n" + "\n".join(by_name)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_is_longer_than_one_reader_takes_in(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_LINES})"


def test_the_checker_finds_a_hidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from worker.mirror import plan\n"
                      "    import json\n    return plan, json\n")
    assert _own_imports_in_functions(sample) == [(4, "worker.mirror")]


def test_the_checkers_find_an_import_below_and_one_by_name(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\nclass A:\n    pass\n\nfrom worker.cli import state\n"
                      "if os.name:\n    import json\n\ndef f():\n"
                      "    return __import__('json'), importlib.import_module('x')\n")
    assert _imports_below_the_first_definition(sample) == [(6, "worker.cli"), (8, "json")]
    assert _imports_by_name(sample) == [11, 11]


#: What a command may not load: the task layer's Celery and the watcher's watchdog.
HEAVY = ("celery", "kombu", "watchdog", "billiard")

_PRINT_HEAVY = (
    f"print('heavy:', *sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
)
_LOADED = (
    "import sys\n"
    "from worker.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
) + _PRINT_HEAVY


def _heavy_loaded(tmp_path: Path, *args: str, **env: str) -> set[str]:
    """The modules of HEAVY that `synchro-sync ARGS` has loaded by the time it exits."""
    done = subprocess.run([sys.executable, "-c", _LOADED, *args], cwd=tmp_path,
                          env=clean_environ(PYTHONPATH=str(ROOT), **env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return _heavy(done.stdout)


def _heavy(stdout: str) -> set[str]:
    last = stdout.splitlines()[-1].split()
    assert last[0] == "heavy:", stdout
    return set(last[1:])


@pytest.mark.parametrize("command", ["sync", "pull", "config", "sessions", "status"])
def test_a_command_that_runs_no_live_sync_loads_neither_celery_nor_the_watcher(
    tmp_path: Path, command: str
) -> None:
    loaded = _heavy_loaded(tmp_path, command, "--help")
    if command == "status":
        # The queue depths' module imports kombu's package, a lazy facade (one module, nothing
        # loaded from it until a broker is asked).
        loaded.discard("kombu")
    assert not loaded, f"`{command}` loads {sorted(loaded)}"


def test_a_sync_into_a_folder_store_loads_neither_celery_nor_the_watcher(tmp_path: Path) -> None:
    (tmp_path / "apps" / "app1").mkdir(parents=True)
    (tmp_path / "apps" / "app1" / "main.js").write_text("main\n")
    loaded = _heavy_loaded(tmp_path, "sync",
                           SYNCHRO__APP_ROOT_PATH=str(tmp_path / "apps"),
                           SYNCHRO__STATE_DIR=str(tmp_path / "state"),
                           SYNCHRO__MODULESTORE__directory=str(tmp_path / "mirror"))
    assert (tmp_path / "mirror" / "app1" / "main.js").read_text() == "main\n"
    assert not loaded, f"`sync` loads {sorted(loaded)}"


def test_the_live_commands_load_what_they_run_on(tmp_path: Path) -> None:
    """The probe above sees what a command loads: `run` loads the watcher but not Celery,
    `watch` loads Celery too."""
    run = _heavy_loaded(tmp_path, "run", "--help")
    assert "watchdog" in run and "celery" not in run, run
    assert {"celery", "watchdog"} <= _heavy_loaded(tmp_path, "watch", "--help")


def test_importing_a_command_module_loads_no_more_than_the_command(tmp_path: Path) -> None:
    code = "import sys, worker.cli.sync_cmd\n" + _PRINT_HEAVY
    env = clean_environ(PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _heavy(done.stdout) == set(), done.stdout
