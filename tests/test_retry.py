"""One retry policy per kind (worker.retry): the Celery tasks and the embedded queue use the same
outage policy; the store policy retries transient errors only; the live hand-off retries under
its own policy, defined there too."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from celery.utils.time import get_exponential_backoff_interval

import tasks
from worker.errors import AccessDenied, TransientStoreError
from worker.live.embedded import RetryLater
from worker.live.handoff import HandOff, WatcherStats
from worker.queue.jobs import _retried
from worker.retry import (
    HANDOFF_RETRY,
    OUTAGE_RETRY,
    RETRY_COUNTER,
    STORE_RETRY,
    OutagePolicy,
    RetryPolicy,
    Where,
)


def test_every_celery_task_that_touches_a_store_takes_the_outage_policy() -> None:
    expected = OUTAGE_RETRY.celery_options()
    for task in (tasks.sync_path, tasks.full_pass, tasks.snapshot_sessions):
        assert task.autoretry_for == expected["autoretry_for"], task.name
        assert task.retry_backoff == OUTAGE_RETRY.first_delay, task.name
        assert task.retry_backoff_max == OUTAGE_RETRY.max_delay, task.name
        assert task.retry_jitter is OUTAGE_RETRY.jitter, task.name
        assert task.max_retries == OUTAGE_RETRY.attempts, task.name


def test_the_embedded_queue_retries_under_the_same_policy() -> None:
    assert RetryLater.policy is OUTAGE_RETRY


class _Dispatcher:
    def submit(self, container: str, relpath: str) -> None:
        raise AssertionError("not called")

    def request_full_pass(self, reason: str) -> None:
        raise AssertionError("not called")


def test_the_hand_off_retries_under_the_hand_off_policy() -> None:
    """Whole seconds doubling to 5 s, no jitter; six failures in a row and a full pass is owed."""
    handoff = HandOff(_Dispatcher(), WatcherStats(), wake=lambda: None)
    assert handoff.policy is HANDOFF_RETRY
    assert handoff.retry_attempts == HANDOFF_RETRY.attempts == 6
    assert [HANDOFF_RETRY.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize("attempt", range(1, 10))
def test_celery_countdowns_and_ours_have_the_same_bound(attempt: int) -> None:
    """Celery counts retries from 0; our attempts from 1: the same nominal countdown."""
    policy = OUTAGE_RETRY
    celery_nominal = get_exponential_backoff_interval(
        policy.first_delay, attempt - 1, policy.max_delay, full_jitter=False
    )
    assert policy.nominal(attempt) == celery_nominal
    random.seed(attempt)
    draws = [policy.delay(attempt) for _ in range(50)]
    assert all(0 <= d <= celery_nominal for d in draws)
    assert len(set(draws)) > 1  # jittered: the countdowns of one outage spread out


def test_without_jitter_the_countdown_doubles_to_its_cap() -> None:
    policy = OutagePolicy(attempts=5, first_delay=2, max_delay=10, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_the_store_policy_retries_transient_errors_and_not_others() -> None:
    calls: list[str] = []

    def flaky() -> str:
        calls.append("x")
        if len(calls) < 3:
            raise TransientStoreError("try again")
        return "ok"

    fast = RetryPolicy(attempts=5, max_seconds=5, initial=0.001, max_wait=0.002)
    assert fast.call(flaky) == "ok" and len(calls) == 3

    def broken() -> None:
        calls.append("p")
        raise AccessDenied("no such bucket")

    with pytest.raises(AccessDenied):
        fast.call(broken)
    assert calls.count("p") == 1
    assert STORE_RETRY.attempts >= 2


def test_a_retry_is_counted_with_the_container_and_key_the_store_named() -> None:
    RETRY_COUNTER.drain()
    fast = RetryPolicy(attempts=2, max_seconds=5, initial=0.001, max_wait=0.002)
    tries: list[int] = []

    def once_flaky() -> None:
        tries.append(1)
        if len(tries) == 1:
            raise TransientStoreError("blip")

    fast.call(once_flaky, what=Where("amazon", "/", "apps.json"))  # the store files' container
    fast.call(lambda: None, what="no where")
    tries.clear()
    fast.call(once_flaky, what="redis://localhost read 10")  # a description, not a Where
    (where1, msg1), (where2, _) = RETRY_COUNTER.drain()
    assert msg1 == "blip" and str(where1) == "amazon///apps.json"  # as logged before
    assert _retried(where1, "task-app", "task-key") == ("/", "apps.json")
    assert where2 is None and _retried(where2, "task-app", "task-key") == ("task-app", "task-key")
    assert _retried(Where("google", "app1"), None, None) == ("app1", None)


def test_the_first_attempt_counts_against_both_bounds_of_the_store_policy() -> None:
    """The first attempt runs outside tenacity (a plain call, as every call that succeeds);
    once it fails it is still attempt 1 of ``attempts``, and the time it took is part of
    ``max_seconds``."""
    import time

    tries: list[float] = []

    def always_down() -> None:
        tries.append(time.monotonic())
        raise TransientStoreError("down")

    three = RetryPolicy(attempts=3, max_seconds=30, initial=0.001, max_wait=0.002)
    with pytest.raises(TransientStoreError, match="down"):
        three.call(always_down)
    assert len(tries) == 3  # 1 plain + 2 retries, not 1 + 3

    tries.clear()

    def slow_then_down() -> None:
        tries.append(time.monotonic())
        time.sleep(0.3 if len(tries) == 1 else 0.0)
        raise TransientStoreError("down")

    bounded = RetryPolicy(attempts=100, max_seconds=0.25, initial=0.001, max_wait=0.002)
    with pytest.raises(TransientStoreError):
        bounded.call(slow_then_down)
    assert len(tries) == 1  # the first attempt alone used up the time bound


_PASS_THEN_MODULES = """
import sys
from worker.cli import script
sys.argv = ["synchro-sync", "sync"]
try:
    script()
except SystemExit as exc:
    assert not exc.code, exc.code
print(sorted(m for m in ("tenacity", "tornado") if m in sys.modules))
"""


def test_a_pass_whose_calls_all_succeed_never_loads_tenacity(tmp_path: Path) -> None:
    # Every store call's first attempt is plain; tenacity (and the Tornado support it loads
    # where Flower installed Tornado) is imported on a first failure only: 20 ms of start-up.
    app = tmp_path / "apps" / "app1"
    app.mkdir(parents=True)
    (app / "a.js").write_text("a")
    env = {**os.environ, "SYNCHRO__APP_ROOT_PATH": str(tmp_path / "apps"),
           "SYNCHRO__STATE_DIR": str(tmp_path / "state"),
           "SYNCHRO__MODULESTORE_SERVICE": "FileModuleStore",
           "SYNCHRO__MODULESTORE": json.dumps({"directory": str(tmp_path / "store")})}
    out = subprocess.run([sys.executable, "-c", _PASS_THEN_MODULES], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=True)
    assert (tmp_path / "store" / "app1" / "a.js").read_text() == "a"
    assert out.stdout.strip().splitlines()[-1] == "[]"
