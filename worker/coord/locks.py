"""Per-path locks shared by every worker process (and thread) on one host.

``flock`` on a lock file under ``STATE_DIR/locks``: the file is picked by a hash of
(container, key), out of a fixed number of stripes, so the folder never grows with the tree.
Two paths that share a stripe only wait for each other; a path never runs twice at once.
``flock`` locks belong to an open file description, so two threads of one process exclude each
other as two processes do.  A crashed holder's lock is released by the kernel.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STRIPES = 4096


class PathLocks:
    """Host-local exclusive locks, one per (container, key)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def lock_file(self, container: str, key: str) -> Path:
        digest = hashlib.blake2b(f"{container}\0{key}".encode(), digest_size=8).digest()
        stripe = int.from_bytes(digest, "big") % STRIPES
        return self.folder / f"{stripe:04x}.lock"

    @contextmanager
    def hold(self, container: str, key: str) -> Iterator[None]:
        fd = os.open(self.lock_file(container, key), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the description releases the lock
