"""The command line as people type it: global options anywhere, whole descriptions in --help,
a hint for a missing module directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from tests.servers.celery_worker import CLI
from tests.servers.process import clean_environ
from worker.cli import COMMANDS, SUMMARIES, hoist_global_options, main


def _env(tmp: Path) -> dict[str, str]:
    return clean_environ(SYNCHRO__STATE_DIR=str(tmp / "state"))


def _cli(tmp: Path, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env or _env(tmp), cwd=tmp, capture_output=True,
                          text=True, timeout=120)


def test_global_options_after_the_command(tmp_path: Path) -> None:
    (tmp_path / "apps" / "app1").mkdir(parents=True)
    (tmp_path / "apps" / "app1" / "a.js").write_text("a")
    cfg = tmp_path / "mine.json"
    cfg.write_text(json.dumps({
        "APP_ROOT_PATH": str(tmp_path / "apps"),
        "MODULESTORE": {"directory": str(tmp_path / "mirror")},
    }))
    out = _cli(tmp_path, "sync", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mirror" / "app1" / "a.js").read_text() == "a"
    out = _cli(tmp_path, "sync", "app1", f"--config={cfg}", "--debug")
    assert out.returncode == 0 and out.stdout.startswith("uploaded 0"), out.stderr
    shown = _cli(tmp_path, "config", "show", "--config", str(cfg))
    assert shown.returncode == 0 and str(cfg) in shown.stdout, shown.stderr
    listed = _cli(tmp_path, "sessions", "list", "-c", str(tmp_path / "missing.json"))
    assert listed.returncode == 2 and "missing.json" in listed.stderr
    assert "No such option" not in listed.stderr and "Traceback" not in listed.stderr


def test_celery_options_of_worker_stay_celerys() -> None:
    commands = set(COMMANDS)
    assert hoist_global_options(["worker", "-c", "4", "--config", "f.json"], commands) == [
        "--config", "f.json", "worker", "-c", "4"]
    assert hoist_global_options(["sync", "--", "-c"], commands) == ["sync", "--", "-c"]
    assert hoist_global_options(["-c", "sync", "sync", "--debug"], commands) == [
        "-c", "sync", "--debug", "sync"]


def test_every_command_of_the_table_is_found_under_its_name() -> None:
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name, (name, command)
    assert main.get_command(ctx, "nosuch") is None


def test_help_lists_each_command_by_its_own_first_sentence() -> None:
    """The top-level list comes from SUMMARIES, which must say what each command's own help
    says (its first sentence, whole)."""
    ctx = click.Context(main)
    assert set(SUMMARIES) == set(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None
        assert SUMMARIES[name] == command.get_short_help_str(limit=10_000), name


def test_help_and_version_load_no_command_and_no_settings(tmp_path: Path) -> None:
    """``--help`` and ``--version`` import neither a command's module (Celery, the watcher)
    nor the settings: they answered in about 1 s and 0.5 s when they did, 0.1 s now."""
    probe = (
        "import sys\n"
        "from worker.cli import main\n"
        "try:\n"
        "    main([sys.argv[1]])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('celery', 'kombu', 'watchdog', 'pydantic', 'pydantic_settings', 'pathspec') "
        "or m.startswith(('worker.config', 'worker.cli.')))\n"
        "print('loaded:', heavy)\n"
    )
    for flag in ("--help", "--version"):
        out = subprocess.run([sys.executable, "-c", probe, flag], env=_env(tmp_path),
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == "loaded: []", (flag, out.stdout[-400:])
        assert ("Commands:" in out.stdout) == (flag == "--help")


def test_a_missing_module_directory_says_how_to_make_it(tmp_path: Path) -> None:
    out = _cli(tmp_path, "sync")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(tmp_path / "synchro-apps") in lines[0]
    assert "mkdir -p" in lines[0] and "set APP_ROOT_PATH" in lines[0]


def test_help_shows_each_description_whole(tmp_path: Path) -> None:
    for args in (["--help"], ["sessions", "--help"], ["config", "--help"]):
        out = _cli(tmp_path, *args)
        assert out.returncode == 0, out.stderr
        listing = out.stdout.split("Commands:", 1)[1]
        assert "..." not in listing, listing
    top = _cli(tmp_path, "--help").stdout
    assert "The scheduler (same as `celery -A worker beat`): full passes and" in top
    assert "session backups." in top


def test_readme_says_where_run_keeps_its_state_and_mirror(tmp_path: Path) -> None:
    """The folders the README names are the defaults `config show` reports."""
    out = _cli(tmp_path, "config", "show", "--json", env=clean_environ())
    assert out.returncode == 0, out.stderr
    values = {row["setting"]: row["value"] for row in map(json.loads, out.stdout.splitlines())}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Where `run` keeps things", 1)[1].split("\n## ", 1)[0]
    for setting in ("APP_ROOT_PATH", "MODULESTORE.directory", "STATE_DIR"):
        assert f"`./{values[setting]}`" in section and f"`{setting}`" in section, setting
    assert "folder of its own" in section


def test_a_state_dir_that_cannot_be_made_is_one_line_naming_it(tmp_path: Path) -> None:
    """STATE_DIR under a regular file: `sync` and `run` fail at once with one line naming the
    setting and the path (no traceback) and exit 1; --debug shows the traceback."""
    (tmp_path / "apps" / "app1").mkdir(parents=True)
    (tmp_path / "a-file").write_text("not a folder")
    state = tmp_path / "a-file" / "state"
    env = clean_environ(SYNCHRO__STATE_DIR=str(state),
                        SYNCHRO__APP_ROOT_PATH=str(tmp_path / "apps"))
    for command in ("sync", "run"):
        out = _cli(tmp_path, command, env=env)
        assert out.returncode == 1, (command, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, (command, out.stderr)
        assert lines[0].startswith("synchro-sync: error: Not a directory: ")
        assert f"(STATE_DIR is {state};" in lines[0], lines[0]
    debug = _cli(tmp_path, "sync", "--debug", env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "NotADirectoryError" in debug.stderr


def test_a_reader_that_stops_early_gets_no_error(tmp_path: Path) -> None:
    """`sync --dry-run | head`: the plan (here about 200 kB, more than a pipe holds) stops at
    the closed pipe quietly, with the status of a program killed by SIGPIPE, as `git log |
    head` does; no error line, no traceback."""
    app = tmp_path / "synchro-apps" / "app1"
    app.mkdir(parents=True)
    for n in range(3000):
        (app / f"a-file-with-a-longer-name-{n:05d}.js").write_text(str(n))
    proc = subprocess.Popen([*CLI, "sync", "--dry-run"], env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert first.startswith(b"upload  app1/"), first
    assert "error" not in err and "Traceback" not in err, err


def test_the_console_script_freezes_its_imports_out_of_the_collector(tmp_path: Path) -> None:
    """``synchro-sync`` (``script``) imports its command with the garbage collector off, then
    freezes what was imported out of every later collection and turns it back on; ``main``
    called in a test's own process leaves the collector as it was."""
    probe = (
        "import gc, sys\n"
        "from worker.cli import {fn}\n"
        "sys.argv = ['synchro-sync', 'config', 'show']\n"
        "try:\n    {fn}()\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print(gc.get_freeze_count(), gc.isenabled(), file=sys.stderr)\n"
    )
    env = clean_environ(SYNCHRO__STATE_DIR=str(tmp_path / "state"))
    counts = {}
    for fn in ("script", "main"):
        out = subprocess.run([sys.executable, "-c", probe.format(fn=fn)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        frozen, enabled = out.stderr.split()[-2:]
        assert enabled == "True"
        counts[fn] = int(frozen)
    assert counts["main"] == 0
    assert counts["script"] > 50_000  # pydantic, click, our settings models: all frozen
