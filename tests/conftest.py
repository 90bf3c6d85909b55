"""Shared fixtures: each real server lives in its own module under tests/servers/."""

from __future__ import annotations

import importlib.util

pytest_plugins = [
    name
    for name in (
        "tests.servers.redis_server",
        "tests.servers.s3_server",
        "tests.servers.gcs_server",
        "tests.servers.azure_server",
        "tests.servers.swift_server",
        "tests.servers.fault_proxy",
        "tests.servers.celery_worker",
    )
    if importlib.util.find_spec(name) is not None
]
