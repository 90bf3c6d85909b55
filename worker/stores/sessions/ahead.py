"""Producing ahead: a generator run in a background thread a few items ahead of its consumer
(:func:`prefetch`), so that a round trip, a decompression or a parse overlaps the work on the
items already produced."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def prefetch(batches: Iterator[T], depth: int = 4) -> Generator[T, None, None]:
    """Run ``batches`` in a background thread, ``depth`` items ahead, so that producing the
    next batch (decompressing, parsing, a store's round trip) overlaps consuming this one.
    An exception in the producer is raised here; closing this generator stops the producer."""
    q: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        q.put((0, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((1, None))
        except BaseException as exc:
            q.put((2, exc))

    thread = threading.Thread(target=run, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == 1:
                return
            if kind == 2:
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
