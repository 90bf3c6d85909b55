"""Scheduled-run ticks: a schedule sent twice (two beats, a restarted beat) runs once per
interval.  In Redis when the broker is Redis (every worker sees it), else a stamp file under the
host lock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from worker.coord import redis as shared
from worker.coord.locks import host_lock

if TYPE_CHECKING:
    from worker.config import Settings


def claim_tick(settings: Settings, name: str, interval: float) -> bool:
    """True for the first scheduled run of ``name`` in (about) half an interval; else False."""
    window_ms = max(1, int(interval * 500))
    if shared.is_redis_url(settings.BROKER_URL):
        assert settings.BROKER_URL is not None
        client = shared.client(settings.BROKER_URL)
        return bool(client.set(shared.key("tick", name), str(time.time()), nx=True, px=window_ms))
    stamp = Path(settings.STATE_DIR) / "locks" / f"tick-{name}"
    with host_lock(settings, f"tick-{name}", timeout=5.0):
        try:
            last = float(stamp.read_text())
        except (OSError, ValueError):
            last = 0.0
        now = time.time()
        if now - last < window_ms / 1000:
            return False
        stamp.write_text(str(now))
        return True
