"""``python -m worker.cli``: the ``synchro-sync`` command."""

from worker.cli import script

script()
