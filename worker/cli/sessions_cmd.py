"""``synchro-sync sessions ...`` (export, import, snapshot, list, restore, copy)."""

from __future__ import annotations

import click


@click.group("sessions")
def sessions_group() -> None:
    """Export, import, snapshot, list, restore and copy sessions between stores."""


def register(main: click.Group) -> None:
    main.add_command(sessions_group)
