"""A pass's failures are typed (mirror.results.Failure): status matches them to their container
by field, never by the text's prefix."""

from __future__ import annotations

from worker.errors import NotFound, UnsafePath
from worker.mirror.pass_log import per_container
from worker.mirror.results import Failure, PassResult, failure_of


def test_a_failure_reads_as_before_and_names_its_container_and_key() -> None:
    assert str(Failure("app1", None, "delete failed: denied")) == "app1: delete failed: denied"
    assert str(Failure("app1", "lib/a.js", "refused")) == "app1/lib/a.js: refused"
    assert str(Failure(None, None, "MODULESTORE.bucket 'x' does not exist")) == (
        "MODULESTORE.bucket 'x' does not exist"
    )


def test_a_store_error_gives_its_key_and_is_not_repeated_in_the_text() -> None:
    failure = failure_of("app1", NotFound("no such key", store="amazon", container="app1",
                                          key="lib/a.js"))
    assert (failure.container, failure.key) == ("app1", "lib/a.js")
    assert str(failure) == "app1/lib/a.js: amazon: no such key"
    other = failure_of("app1", UnsafePath("lib/b.js: a symlink out of the root"))
    assert other.key is None and str(other) == "app1: lib/b.js: a symlink out of the root"


def test_status_counts_each_failure_under_its_own_container() -> None:
    result = PassResult(containers=["app", "app-2"])
    result.failures = [
        Failure("app", "x.js", "refused"),
        Failure("app-2", "y.js", "refused"),  # "app-2/y.js" starts with "app": not app's
        Failure("app-2", None, "delete failed"),
        Failure(None, None, "the bucket is missing"),  # the whole pass: under no container
    ]
    result.withheld = [Failure("app", None, "would delete 9 of 10 objects")]
    rows = per_container(result)
    assert rows["app"]["failures"] == 1 and rows["app"]["errors"] == ["app/x.js: refused"]
    assert rows["app-2"]["failures"] == 2 and rows["app"]["withheld"] == 1
    assert rows["app-2"]["withheld"] == 0
