"""Locks: per-path locks shared by every worker process (and thread) on one host
(:class:`PathLocks`), a named host lock (:func:`host_lock`) and a cluster-wide one
(:func:`cluster_lock`).

``flock`` on a lock file under ``STATE_DIR/locks``: the file is picked by a hash of
(container, key), out of a fixed number of stripes, so the folder never grows with the tree.
Two paths that share a stripe only wait for each other; a path never runs twice at once.
``flock`` locks belong to an open file description, so two threads of one process exclude each
other as two processes do.  A crashed holder's lock is released by the kernel.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from worker.coord import redis as shared
from worker.errors import SyncError

if TYPE_CHECKING:
    from worker.config import Settings

log = logging.getLogger("synchro_sync.locks")

STRIPES = 4096


class PathLocks:
    """Host-local exclusive locks, one per (container, key)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._prefix = os.path.join(self.folder, "")

    def lock_file(self, container: str, key: str) -> str:
        digest = hashlib.blake2b(f"{container}\0{key}".encode(), digest_size=8).digest()
        return f"{self._prefix}{int.from_bytes(digest, 'big') % STRIPES:04x}.lock"

    @contextmanager
    def hold(self, container: str, key: str) -> Iterator[None]:
        fd = os.open(self.lock_file(container, key), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the description releases the lock


@contextmanager
def host_lock(settings: Settings, name: str, timeout: float) -> Iterator[bool]:
    """An ``fcntl`` lock in ``STATE_DIR/locks``: held by one process of this host at a time.

    Waits up to ``timeout`` seconds (0: do not wait) and yields whether it was taken; the kernel
    releases it if the process dies, so a ``kill -9`` never leaves it stuck.
    """
    folder = Path(settings.STATE_DIR) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    got = False
                    break
                time.sleep(0.05)
        if timeout > 0 and not got:
            raise SyncError(f"lock {name} still held after {timeout:.0f}s")
        yield got
    finally:
        os.close(fd)


@contextmanager
def cluster_lock(settings: Settings, name: str, ttl: float) -> Iterator[bool]:
    """A lock every worker sees: Redis when the broker is Redis, else the host lock; no wait."""
    if not shared.is_redis_url(settings.BROKER_URL):
        with host_lock(settings, name, timeout=0) as got:
            yield got
        return
    assert settings.BROKER_URL is not None
    lock = shared.client(settings.BROKER_URL).lock(
        shared.key("lock", name), timeout=ttl, blocking_timeout=0
    )
    got = bool(lock.acquire(blocking=False))
    try:
        yield got
    finally:
        if got:
            try:
                lock.release()
            except Exception as exc:  # expired meanwhile: the TTL was the safety net
                log.warning("lock %s: %s", name, exc)
