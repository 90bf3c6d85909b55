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


def test_query_signature_matches_botocore(monkeypatch: Any) -> None:
    import datetime
    from urllib.parse import quote

    creds = Credentials("AKIDEXAMPLE", "secret/key+x", None)
    fast = FastPut("http://127.0.0.1:9000", "us-east-1", creds)
    params = {"list-type": "2", "prefix": "app 1/ü+&=x/", "continuation-token": "a/b+c=="}
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                     for k, v in sorted(params.items()))
    ours = fast.sign("GET", "127.0.0.1:9000", "/bkt", {"content-length": "0"},
                     hashlib.sha256(b"").hexdigest(), now=NOW, query=query)

    class _Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.datetime.fromtimestamp(NOW, tz)

        @classmethod
        def utcnow(cls) -> Any:
            return datetime.datetime.utcfromtimestamp(NOW)

    monkeypatch.setattr("botocore.auth.datetime.datetime", _Frozen)
    req = AWSRequest(method="GET", url=f"http://127.0.0.1:9000/bkt?{query}", data=b"",
                     headers={"content-length": "0"})
    S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    assert ours["authorization"] == req.headers["Authorization"]


def test_light_listing_and_batched_delete_against_moto(s3_server: Any) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="light-list-bkt")
    fast = FastPut(s3_server.endpoint, "us-east-1", Credentials("k", "s"))
    keys = [f"app/ünï cödé+&<x>/{i:04d}.js" for i in range(1005)] + ["other/a.js"]
    for k in keys[:3] + keys[1000:]:
        client.put_object(Bucket="light-list-bkt", Key=k, Body=k.encode())
    for k in keys[3:1000]:
        fast.put("light-list-bkt", k, b"x", hashlib.md5(b"x").hexdigest())
    page, token = fast.list_page("light-list-bkt", "app/", None)
    assert len(page) == 1000 and token is not None
    rest, token2 = fast.list_page("light-list-bkt", "app/", token)
    assert token2 is None and len(rest) == 5
    listed = [row[0] for row in page + rest]
    assert listed == sorted(keys[:1005])
    first = keys[0].encode()
    assert page[0][3] == hashlib.md5(first).hexdigest() and page[0][1] == len(first)
    assert fast.delete_batch("light-list-bkt", keys[:1000]) == []
    left = [o["Key"] for o in client.list_objects_v2(Bucket="light-list-bkt")["Contents"]]
    assert left == sorted(keys[1000:])
    with pytest.raises(ContainerNotFound):
        fast.list_page("no-such-bucket-x", "", None)
    fast.close()
