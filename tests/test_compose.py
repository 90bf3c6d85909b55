"""docker-compose.yml against the Compose Specification's schema (no Docker engine runs here).

The schema in tests/data is a subset written for these tests from the Compose Specification
(see its description): the keys our file uses are typed, every other service key the spec
defines is accepted, and unknown keys are refused where the spec refuses them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.servers.process import REPO

SCHEMA_FILE = Path(__file__).parent / "data" / "compose-spec-subset.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_compose_file_is_valid() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert errors(compose()) == []


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d["services"]["worker"].update(enviroment={}),  # a typo of a service key
        lambda d: d.update(service={}),  # an unknown top-level key
        lambda d: d["services"]["watcher"]["depends_on"]["redis"].update(condition="healthy"),
        lambda d: d["services"]["redis"]["healthcheck"].update(intervall="5s"),
        lambda d: d["services"]["beat"]["volumes"].append({"source": "x", "target": "/x"}),
        lambda d: d["volumes"].update({"bad name!": {}}),
    ],
)
def test_the_schema_refuses_what_the_spec_refuses(spoil: Any) -> None:
    doc = copy.deepcopy(compose())
    spoil(doc)
    assert errors(doc) != []


def test_the_stack_is_what_the_docs_say() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"redis", "s3", "watcher", "worker", "beat", "flower"}
    commands = {name: services[name]["command"] for name in ("watcher", "worker", "beat")}
    assert commands["watcher"] == ["synchro-sync", "watch"]
    assert commands["worker"][:2] == ["synchro-sync", "worker"]
    assert commands["beat"] == ["synchro-sync", "beat"]
    envs = [services[name]["environment"] for name in ("watcher", "worker", "beat")]
    # One shared volume and one host queue: the workers see the watcher's files.
    assert all(services[n]["volumes"] == services["watcher"]["volumes"] for n in commands)
    assert len({e["SYNCHRO__HOST_QUEUE"] for e in envs}) == 1
    assert all(e["SYNCHRO__BROKER_URL"].startswith("redis://redis:") for e in envs)
    assert all(e["SYNCHRO__MODULESTORE__endpoint"] == "http://s3:5000" for e in envs)
    assert "healthcheck" in services["redis"]


def test_flower_is_behind_a_profile_on_the_same_settings() -> None:
    services = compose()["services"]
    flower = services["flower"]
    assert flower["profiles"] == ["flower"]
    assert flower["command"][:4] == ["celery", "-A", "worker", "flower"]
    assert flower["environment"] == services["beat"]["environment"]
    assert all("profiles" not in services[n] for n in ("watcher", "worker", "beat"))
    # Published on loopback only unless the operator says otherwise.
    assert flower["ports"] and all(str(p).startswith("127.0.0.1:") for p in flower["ports"])


def test_watcher_worker_and_beat_have_health_checks_the_cli_knows() -> None:
    from click.testing import CliRunner

    from worker.cli import main

    services = compose()["services"]
    for name in ("watcher", "worker", "beat"):
        check = services[name]["healthcheck"]
        assert check["test"] == ["CMD", "synchro-sync", "status", "--check"], name
        assert check["start_period"] and check["retries"] >= 1
    # status --check asks the local /healthz where METRICS.port is set: the watcher and the
    # worker serve it; beat serves nothing, so its check must not expect it.
    for name in ("watcher", "worker"):
        assert services[name]["environment"]["SYNCHRO__METRICS__port"] == "9100"
    assert "SYNCHRO__METRICS__port" not in services["beat"]["environment"]
    assert all(services[n]["environment"]["SYNCHRO__HOST_QUEUE"] == "files.compose"
               for n in ("watcher", "worker", "beat"))
    helped = CliRunner().invoke(main, ["status", "--help"])
    assert helped.exit_code == 0 and "--check" in helped.output
