"""A pass holds nothing per file: the tree, the index rows and the listing are merged as streams
(see docs/benchmarks.md, "Big trees", for the 1,000,000-file figures)."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.config import load_settings
from worker.mirror.context import MirrorContext
from worker.mirror.passes import full_pass

SMALL, BIG = 2_000, 10_000
OLD = 1_600_000_000


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[MirrorContext]:
    root = tmp_path / "apps"
    for app, n in (("small", SMALL), ("big", BIG)):
        for i in range(n):
            folder = root / app / f"d{i // 100:03d}"
            if i % 100 == 0:
                folder.mkdir(parents=True)
            path = folder / f"f{i:05d}.js"
            path.write_bytes(b"%d" % i)
            # Old: the rows the first pass writes vouch for the files, so every later pass
            # hashes nothing (a file younger than RACY_NS when hashed is hashed again).
            os.utime(path, (OLD, OLD))
    context = MirrorContext.from_settings(load_settings(None, {
        "APP_ROOT_PATH": str(root), "STATE_DIR": str(tmp_path / "state"),
        "MODULESTORE": {"directory": str(tmp_path / "mirror")},
    }, environ={}))
    yield context
    context.close()


def _peak_of_pass(ctx: MirrorContext, app: str) -> tuple[int, int]:
    """(peak bytes traced during a pass of ``app`` alone, files unchanged)."""
    tracemalloc.start()
    try:
        result = full_pass(ctx, [app])
        return tracemalloc.get_traced_memory()[1], result.unchanged
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_of_a_pass_does_not_grow_with_the_tree(ctx: MirrorContext) -> None:
    first = full_pass(ctx)
    assert first.uploaded == SMALL + BIG and first.ok, first.failures
    # Warm: the first traced pass of each pays for imports and caches.
    _peak_of_pass(ctx, "small")
    small, n_small = _peak_of_pass(ctx, "small")
    big, n_big = _peak_of_pass(ctx, "big")
    assert (n_small, n_big) == (SMALL, BIG)
    # The old planner held ~1.1 KB per file (rows, scan, listing): 8,000 more files were
    # ~9 MB more; a FileModuleStore listing of a whole container ~320 B per file.  A merge of
    # streams holds a folder, a page of rows and a page of the listing: ~3 B per file more
    # measured (the same figure every run: the passes hash nothing, their files are old).
    per_file = (big - small) / (BIG - SMALL)
    assert per_file < 60, f"{per_file:.0f} bytes per file more (small {small}, big {big})"
