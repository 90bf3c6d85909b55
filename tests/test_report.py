"""The status report's problems are typed: ``status`` and ``status --check`` decide by cause."""

from __future__ import annotations

import json

from worker.ops.report import UNHEALTHY, UNREADABLE, Cause, Problem, StatusReport


def _report(*problems: Problem) -> StatusReport:
    return StatusReport(mode="distributed", problems=list(problems))


def test_the_broker_is_the_cause_named_first_whatever_the_order_found() -> None:
    report = _report(
        Problem(Cause.NOT_RUNNING, "synchro-sync run is not running"),
        Problem(Cause.PENDING, "pending paths unavailable: timeout"),
        Problem(Cause.BROKER, "broker unreachable: ConnectionError: refused"),
    )
    assert [p.cause for p in report.has(UNHEALTHY)] == [Cause.BROKER, Cause.NOT_RUNNING]
    assert [p.cause for p in report.has(UNREADABLE)] == [Cause.BROKER]


def test_a_problem_that_only_mentions_the_broker_is_not_a_broker_problem() -> None:
    report = _report(Problem(Cause.PENDING, "pending paths unavailable: broker unreachable"))
    assert report.has(UNHEALTHY) == [] and report.has(UNREADABLE) == []


def test_the_json_form_keeps_problems_as_lines() -> None:
    report = _report(Problem(Cause.STATUS_STORE, "status store unreachable: denied"))
    data = json.loads(json.dumps(report.to_json()))
    assert data["problems"] == ["status store unreachable: denied"]
