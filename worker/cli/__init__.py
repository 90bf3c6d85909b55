"""The ``synchro-sync`` command line.

One click group; each family of commands lives in its own module (what they share is in
:mod:`worker.cli.state`), and a command's module is imported only when that command runs
(:data:`COMMANDS`; ``--help`` lists :data:`SUMMARIES`), so a command loads only what it uses:
``sync``, ``status``, ``config`` and ``sessions`` never load Celery or the watcher, and
``--help`` and ``--version`` load no settings.  Every
:class:`~worker.errors.SyncError` ends as one line on stderr and its exit code (1 the work
failed, 2 bad usage or configuration); never a traceback unless ``--debug``.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from worker.errors import EXIT_INTERRUPTED, SyncError

#: Each command: the module that defines it and its name there.  The group imports the module
#: by name when the command is looked up (as the store registry does a provider's), never at
#: start-up: importing ``run``'s module loads the watcher, ``watch``'s loads Celery.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("worker.cli.run_cmd", "run_command"),
    "watch": ("worker.cli.distributed_cmd", "watch_command"),
    "worker": ("worker.cli.distributed_cmd", "worker_command"),
    "beat": ("worker.cli.distributed_cmd", "beat_command"),
    "status": ("worker.cli.status_cmd", "status_command"),
    "sync": ("worker.cli.sync_cmd", "sync"),
    "pull": ("worker.cli.sync_cmd", "pull"),
    "sessions": ("worker.cli.sessions_cmd", "sessions_group"),
    "config": ("worker.cli.config_cmd", "config_group"),
}

#: What ``synchro-sync --help`` lists for each command: the first sentence of its description
#: (tests/test_cli_options.py checks they are the same), so the list imports no command's
#: module (listing them used to load Celery and the watcher: 0.7 s of a 1 s ``--help``).
SUMMARIES: dict[str, str] = {
    "beat": "The scheduler (same as `celery -A worker beat`): full passes and session backups.",
    "config": "Show the effective configuration, or check that every store answers.",
    "pull": "Fill the local module directory from the store (a new server).",
    "run": "Watcher, worker and scheduler in one process, no server needed.",
    "sessions": "Export, import, snapshot, list, restore and copy sessions.",
    "status": "Queue depth, pending paths, last full pass per container, last snapshot, recent "
              "failures and retries.",
    "sync": "One full mirror pass now: APP_ROOT_PATH -> the module store.",
    "watch": "The watcher alone: queue every save on BROKER_URL for this host's workers.",
    "worker": "A Celery worker for the queued work (same as `celery -A worker worker`).",
}

#: Commands whose extra arguments go to Celery, where ``-c`` is the concurrency.
_PASSTHROUGH_COMMANDS = {"worker", "beat"}


def hoist_global_options(args: list[str], commands: set[str] | frozenset[str]) -> list[str]:
    """``args`` with the group's own options (``-c/--config FILE``, ``--debug``) moved in
    front of the command, so that ``synchro-sync sync -c config.json`` works as people type
    it.  Nothing after ``--`` moves; under ``worker``/``beat`` a short ``-c`` is Celery's."""
    front: list[str] = []
    i = 0
    while i < len(args) and args[i] not in commands:
        if args[i] in ("-c", "--config"):
            front.append(args[i])
            i += 1
        if i < len(args):
            front.append(args[i])
        i += 1
    if i >= len(args):
        return list(args)
    command, rest = args[i], args[i + 1:]
    hoisted: list[str] = []
    kept: list[str] = []
    short_c = command not in _PASSTHROUGH_COMMANDS
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            kept += rest[j:]
            break
        if arg == "--debug":
            hoisted.append(arg)
        elif arg == "--config" or (short_c and arg == "-c"):
            hoisted += rest[j:j + 2]
            j += 1
        elif arg.startswith("--config=") or (short_c and arg.startswith("-c") and len(arg) > 2):
            hoisted.append(arg)
        else:
            kept.append(arg)
        j += 1
    return [*front, *hoisted, command, *kept]


#: Whether the command's imports are frozen out of the garbage collector (the console script
#: does it, :func:`script`; a test calling :func:`main` in its own process does not).
SETTLE_HEAP = False


@contextmanager
def _heap_settled(on: bool) -> Iterator[None]:
    """With ``on``: what is imported inside comes in without the collections it would trigger
    (pydantic, the SDKs: objects that live as long as the process), then is kept out of every
    later one.  50-60 ms of the CPU of a one-shot sync of 300 apps went to collections
    scanning them again and again."""
    if not on:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


class SyncGroup(click.Group):
    """Turns our errors into one line and an exit code; takes the group's own options
    anywhere on the line (:func:`hoist_global_options`); finds its commands in
    :data:`COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, name = where
        with _heap_settled(SETTLE_HEAP):
            command: click.Command = getattr(importlib.import_module(module), name)
        _whole_descriptions(command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUMMARIES[name]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args, set(COMMANDS)))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SyncError as exc:
            if _debug(ctx):
                raise
            click.echo(f"synchro-sync: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:  # Ctrl-C where the command has no stop of its own
            click.echo("synchro-sync: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # `sync --dry-run | head`: the reader has all it wanted
            # Quiet, with the status of a program killed by SIGPIPE (as `git log | head`);
            # stdout goes to /dev/null so that its flush at exit does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(128 + signal.SIGPIPE)
        except OSError as exc:  # a folder that cannot be made or written, a full disk
            if _debug(ctx):
                raise
            click.echo(f"synchro-sync: error: {os_problem(exc, ctx.find_root().obj)}", err=True)
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    """Whether --debug was given (read from the CliState main() made, once it ran)."""
    return bool(getattr(ctx.find_root().obj, "debug", False))


#: The settings naming the folders a command makes and writes, for an OSError's line.
_PATH_SETTINGS = ("STATE_DIR", "APP_ROOT_PATH")


def os_problem(exc: OSError, state: Any) -> str:
    """One line for an OSError: what failed on which path, and the setting naming that path
    when it lies under one (settings already loaded; none are loaded for this)."""
    what = exc.strerror or type(exc).__name__
    path = exc.filename
    if path is None:
        return f"{what} ({type(exc).__name__})"
    line = f"{what}: {path}"
    settings = getattr(state, "_settings", None)
    for name in _PATH_SETTINGS:
        value = str(getattr(settings, name, "") or "")
        if value and (str(path) == value or str(path).startswith(value.rstrip("/") + "/")):
            return f"{line} ({name} is {value}; --debug shows the traceback)"
    return f"{line} (--debug shows the traceback)"


@click.group(cls=SyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_file",
    metavar="FILE",
    help="Configuration file (default: $SYNCHRO_CONFIG, else ./config.json if present).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="synchro-sync")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, debug: bool) -> None:
    """Keep a Synchro app server's stores where they must be.

    Mirrors every save in the local module directory (APP_ROOT_PATH) into the configured
    module store, and snapshots, verifies, prunes and restores the session store.

    Settings come from command-line options, then SYNCHRO__ environment variables
    (e.g. SYNCHRO__SESSIONSTORE__password), then the config file, then defaults.
    Exit codes: 0 done, 1 the work failed, 2 bad usage or configuration.
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from worker.cli.state import CliState  # settings and the stores: not for --help, --version

    ctx.obj = CliState(config_file=config_file, debug=debug)


def script() -> None:
    """The ``synchro-sync`` console script (and ``python -m worker.cli``): :func:`main`, with
    the objects its command imports frozen out of the garbage collector (``SETTLE_HEAP``)."""
    global SETTLE_HEAP
    SETTLE_HEAP = True
    main()


def _whole_descriptions(command: click.Command) -> None:
    """The command lists of ``--help`` show each description's first sentence whole (click
    cuts it at 45 characters with "...")."""
    if command.short_help is None and command.help:
        command.short_help = command.get_short_help_str(limit=10_000)
    if isinstance(command, click.Group):
        for each in command.commands.values():
            _whole_descriptions(each)
