"""The ``synchro-sync`` command line.

One click group; each family of commands lives in its own module and registers itself here.
Every :class:`~worker.errors.SyncError` ends as one line on stderr and its exit code
(1 the work failed, 2 bad usage or configuration); never a traceback unless ``--debug``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from worker.config import Settings, load_settings
from worker.errors import SyncError
from worker.logs import apply_format

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass
class CliState:
    """What the group's options leave for the sub-commands: settings are loaded on demand."""

    config_file: str | None = None
    debug: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self, **overrides: Any) -> Settings:
        """Load the settings once; command options are the top layer (``SYNC.debounce`` → value)."""
        if self._settings is None or overrides:
            merged = {**self.overrides, **{k: v for k, v in overrides.items() if v is not None}}
            self._settings = load_settings(self.config_file, merged)
            logging.getLogger("synchro_sync").setLevel(self._settings.LOG_LEVEL)
            apply_format(self._settings.LOG_FORMAT)
        return self._settings


pass_state = click.make_pass_decorator(CliState, ensure=True)


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


class SyncGroup(click.Group):
    """Turns our errors into one line and an exit code; takes the group's own options
    anywhere on the line (:func:`hoist_global_options`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args, set(self.commands)))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SyncError as exc:
            state = ctx.find_object(CliState)
            if state is not None and state.debug:
                raise
            click.echo(f"synchro-sync: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


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
    ctx.obj = CliState(config_file=config_file, debug=debug)


def _whole_descriptions(group: click.Group) -> None:
    """The command lists of ``--help`` show each description's first sentence whole (click
    cuts it at 45 characters with "...")."""
    for command in group.commands.values():
        if command.short_help is None and command.help:
            command.short_help = command.get_short_help_str(limit=10_000)
        if isinstance(command, click.Group):
            _whole_descriptions(command)


# The command modules use the names above (CliState, pass_state, the exit codes): imported
# once those exist, each registers its commands on the group.
from worker.cli import config_cmd, run_cmd, sessions_cmd, sync_cmd  # noqa: E402

for _module in (run_cmd, sync_cmd, sessions_cmd, config_cmd):
    _module.register(main)
_whole_descriptions(main)
