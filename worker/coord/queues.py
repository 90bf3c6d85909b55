"""The queues: their names and their depth as the broker tells it."""

from __future__ import annotations

from typing import Any

import kombu

#: The queue every worker shares: session snapshots, beat's scheduled runs, passes of no host.
SESSIONS_QUEUE = "sessions"


def queue_depths(url: str, names: list[str]) -> dict[str, int | None]:
    """Messages waiting in each queue, asked from the broker (Redis or RabbitMQ)."""
    connection: Any = kombu.Connection  # type: ignore[attr-defined]
    out: dict[str, int | None] = {}
    with connection(url, connect_timeout=3, transport_options={"socket_timeout": 3}) as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.default_channel
        for name in names:
            try:
                out[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception:  # a queue nobody declared yet holds nothing
                out[name] = 0
    return out
