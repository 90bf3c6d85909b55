"""The light S3 PUT path the mirror uses for small files: signatures equal botocore's, and it
works end to end against moto (errors mapped like the boto3 path)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from worker.stores.modules import ContainerNotFound
from worker.stores.modules.s3_put import FastPut

NOW = 1_790_000_000.0


@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize(
    ("endpoint", "bucket", "key"),
    [
        ("http://127.0.0.1:9000", "bkt", "app1/ünï cödé/a+b=c.js"),
        (None, "my-bucket", "dir/file with space.txt"),
        (None, "dotted.bucket", "x~y_z-1.js"),
    ],
)
def test_signature_matches_botocore(
    endpoint: str | None, bucket: str, key: str, token: str | None, monkeypatch: Any
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    fast = FastPut(endpoint, "eu-west-1", creds)
    data = b"hello world"
    md5 = hashlib.md5(data).digest()
    host, path = fast._target(bucket, key)
    import base64

    ours = fast.sign(
        "PUT", host, path,
        {"Content-MD5": base64.b64encode(md5).decode(), "Content-Length": str(len(data))},
        hashlib.sha256(data).hexdigest(), now=NOW,
    )
    req = AWSRequest(
        method="PUT", url=f"{fast.scheme}://{host}{path}", data=data,
        headers={"Content-MD5": base64.b64encode(md5).decode(),
                 "Content-Length": str(len(data))},
    )
    import datetime

    class _Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:  # botocore reads the clock here
            return datetime.datetime.fromtimestamp(NOW, tz)

        @classmethod
        def utcnow(cls) -> Any:
            return datetime.datetime.utcfromtimestamp(NOW)

    monkeypatch.setattr("botocore.auth.datetime.datetime", _Frozen)
    S3SigV4Auth(creds, "s3", "eu-west-1").add_auth(req)
    assert ours["authorization"] == req.headers["Authorization"]


def test_fast_put_against_moto(s3_server: Any) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="fastput-bkt")
    fast = FastPut(s3_server.endpoint, "us-east-1", Credentials("k", "s"))
    data = b"x" * 5000
    md5 = hashlib.md5(data).hexdigest()
    assert fast.put("fastput-bkt", "a/ü b.js", data, md5) == md5
    assert client.get_object(Bucket="fastput-bkt", Key="a/ü b.js")["Body"].read() == data
    with pytest.raises(ContainerNotFound):
        fast.put("no-such-bucket-here", "k", data, md5)
    fast.close()
