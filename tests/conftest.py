"""Shared fixtures: each real server lives in its own module under tests/servers/.

Every test gets a marker per server it starts (``redis``, ``s3``, ``gcs``, ``azure``, ``swift``,
``worker``, ``node``) and the umbrella ``servers``; a test with none of them, that starts no
process of its own and is not marked ``slow``, is a ``unit`` test (see docs/testing.md).  The
markers come from the fixtures a test uses and from the parameters that make a fixture start a
server (``provider="amazon"``, ``make_store="redis"``), so no test file has to name them; a
file may add one itself (``pytestmark = pytest.mark.node``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import time
import types
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import process

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

#: marker -> what it stands for (registered in pyproject.toml with --strict-markers).
SERVER_MARKERS = ("redis", "s3", "gcs", "azure", "swift", "worker", "node")

#: Fixtures that start (or hand out) a server, and the server's marker.  Fixtures of test
#: files that start their own server are here too; a test using one is no unit test.
SERVER_FIXTURES: dict[str, tuple[str, ...]] = {
    "redis_server": ("redis",),
    "own_redis": ("redis",),
    "fresh_redis": ("redis",),  # test_sessions_node.py: a second, empty redis-server
    "tls_redis": ("redis",),  # test_session_stores.py: a TLS-only redis-server
    "s3_server": ("s3",),
    "amazon_store_server": ("s3",),
    "signing_moto": ("s3",),  # test_mirror_s3put.py: a moto that checks signatures
    "gcs_server": ("gcs",),
    "google_store_server": ("gcs",),
    "azure_server": ("azure",),
    "azure_store_server": ("azure",),
    "swift_server": ("swift",),
    "openstack_store_server": ("swift",),
    "sync_world": ("worker",),  # real celery workers, synchro-sync run/watch/beat
    "fault_proxy": (),  # an in-process proxy: a server only with the emulator behind it
}

#: Parameter values that make a parametrised fixture start a server (``provider``, ``h``,
#: ``ctx``, ``env``, ``proxied``, ``make_store`` ... fetch it with ``getfixturevalue``).
SERVER_PARAMS: dict[str, tuple[str, ...]] = {
    "amazon": ("s3",),
    "google": ("gcs",),
    "azure": ("azure",),
    "openstack": ("swift",),
    "rackspace": ("swift",),
    "redis": ("redis",),
    "redis-pipelined": ("redis",),
}


#: Names whose use makes a test start a process of its own (the CLI, node, python -c, a
#: ``multiprocessing`` child): such a test is marked ``subprocess`` and is no unit test either.
SPAWN_NAMES = frozenset({"subprocess", "Popen", "multiprocessing", "CLI", "ServerProcess"})


def _code_spawns(code: types.CodeType, module: types.ModuleType, seen: set[object]) -> bool:
    """Whether ``code``, or a function or class of ``module`` it names, uses a SPAWN_NAMES."""
    for name in code.co_names:
        if name in SPAWN_NAMES:
            return True
        target = getattr(module, name, None)
        if target is None or id(target) in seen:
            continue
        seen.add(id(target))
        functions: list[object] = []
        if inspect.isfunction(target) and target.__module__ == module.__name__:
            functions = [target]
        elif inspect.isclass(target) and target.__module__ == module.__name__:
            functions = [f for f in vars(target).values() if inspect.isfunction(f)]
        for func in functions:
            if _code_spawns(func.__code__, module, seen):  # type: ignore[attr-defined]
                return True
    return any(
        _code_spawns(const, module, seen)
        for const in code.co_consts if isinstance(const, types.CodeType)
    )


def spawns(item: pytest.Item) -> bool:
    """Whether the test, a helper of its module it calls, or one of its module's fixtures
    starts a process (read from their code, transitively within the test's module)."""
    module = getattr(item, "module", None)
    function = getattr(item, "function", None)
    if module is None or function is None:
        return False
    codes = [function.__code__]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        for fixturedef in defs:
            func = inspect.unwrap(fixturedef.func)
            if getattr(func, "__module__", None) == module.__name__:
                codes.append(func.__code__)
    seen: set[object] = set()
    return any(_code_spawns(code, module, seen) for code in codes)


def servers_of(item: pytest.Item) -> set[str]:
    """The server markers a collected test needs, from its fixtures and parameters."""
    found: set[str] = set()
    for name in getattr(item, "fixturenames", ()):
        found.update(SERVER_FIXTURES.get(name, ()))
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for value in callspec.params.values():
            if isinstance(value, str):  # "redis-pipelined", "amazon-bucket": by the first word
                found.update(SERVER_PARAMS.get(value, SERVER_PARAMS.get(value.split("-")[0], ())))
    found.update(m for m in SERVER_MARKERS if item.get_closest_marker(m) is not None)
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        found = servers_of(item)
        for name in sorted(found):
            item.add_marker(name)
        if found:
            item.add_marker("servers")
        if spawns(item):
            item.add_marker("subprocess")
        elif not found and item.get_closest_marker("slow") is None:
            item.add_marker("unit")


def _no_process_in_unit_tests(event: str, args: tuple[object, ...]) -> None:
    if process.UNIT_TEST is not None and event in _SPAWN_EVENTS:
        raise RuntimeError(
            f"{process.UNIT_TEST} is marked unit but starts a process ({event} {args[:2]!r}): "
            "it needs the subprocess marker (see SPAWN_NAMES in tests/conftest.py)"
        )


_SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.fork",
                           "os.forkpty", "os.system"})
sys.addaudithook(_no_process_in_unit_tests)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """While a ``unit`` test runs, starting a server or any other process fails it (the
    markers above must know what starts one, or ``-m unit`` would start them after all)."""
    process.UNIT_TEST = item.nodeid if item.get_closest_marker("unit") else None
    try:
        return (yield)
    finally:
        process.UNIT_TEST = None


# --- one clean environment (for a subprocess: tests.servers.process.clean_environ) --------


@pytest.fixture()
def container(store: Any) -> Iterator[str]:
    """A new, empty container in the test's ``store`` (the module defines that fixture),
    deleted afterwards."""
    name = f"app-{uuid.uuid4().hex[:10]}"
    store.ensure_container(name)
    yield name
    store.delete_container(name)


@pytest.fixture()
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test runs in its own empty folder (``tmp_path``, returned) with no ``SYNCHRO*``
    variable of the caller's, so no ``config.json``, ``SYNCHRO_CONFIG`` or ``SYNCHRO__...``
    setting of the surroundings reaches the code under test."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("SYNCHRO"):
            monkeypatch.delenv(name)
    return tmp_path


# --- a clock the test moves ------------------------------------------------------------------


class FakeClock:
    """Seconds since the epoch for code that takes a ``clock`` (the session stores): the real
    time plus what the test added with :meth:`advance`, so a session's expiry comes when the
    test says, not after a wait."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()
