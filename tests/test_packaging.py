"""What the plain install brings: the S3 and GCS SDKs (the project's named packages); the
Azure and Swift SDKs stay extras."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_plain_install_has_boto3_and_google_cloud_storage() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    plain = _names(project["dependencies"])
    assert {"boto3", "google-cloud-storage"} <= plain
    assert not plain & {"azure-storage-blob", "python-swiftclient", "keystoneauth1"}
    extras = project["optional-dependencies"]
    assert "azure-storage-blob" in _names(extras["azure"])
    assert "python-swiftclient" in _names(extras["openstack"])
