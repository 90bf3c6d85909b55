"""The pending-path hash: paths handed to a host's queue whose task has not started yet.

Written by the watcher's dispatcher (:meth:`PendingPaths.claim`), cleared by the task before it
reads the file (:meth:`PendingPaths.clear`), read by ``status`` (:func:`list_pending`).  With a
Redis broker it coalesces submissions: a path whose task has not started is not sent twice.  A
pending entry older than :data:`STALE_SECONDS` is assumed lost (a killed worker) and the path is
sent again.
"""

from __future__ import annotations

import time

from worker.coord import redis as shared

STALE_SECONDS = 15.0


def pending_key(host_queue: str) -> str:
    """The Redis hash of paths queued for ``host_queue`` whose task has not started."""
    return shared.key("pending", host_queue)


def path_field(container: str, relpath: str) -> str:
    return f"{container}/{relpath}"


class PendingPaths:
    """The pending hash of one host queue on one Redis broker."""

    def __init__(self, url: str, host_queue: str) -> None:
        self.client = shared.client(url)
        self.key = pending_key(host_queue)

    def claim(self, container: str, relpath: str) -> bool:
        """True if this submission must be sent (no fresh pending entry for the path)."""
        fld, now = path_field(container, relpath), time.time()
        if self.client.hsetnx(self.key, fld, now):
            return True
        since = self.client.hget(self.key, fld)
        if since is None or now - float(since) > STALE_SECONDS:
            self.client.hset(self.key, fld, now)
            return True
        return False

    def clear(self, container: str, relpath: str) -> None:
        self.client.hdel(self.key, path_field(container, relpath))


def list_pending(url: str, limit: int) -> tuple[list[str], int]:
    """Up to ``limit`` pending paths of every host queue, and how many there are in all."""
    client = shared.client(url)
    paths: list[str] = []
    count = 0
    for k in client.scan_iter(match=pending_key("*"), count=100):
        count += int(client.hlen(k))
        if len(paths) < limit:
            paths += [f.decode() for f in client.hkeys(k)][: limit - len(paths)]
    return paths, count
