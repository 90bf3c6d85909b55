"""The light S3 request path the mirror uses (small PUTs, listing pages, batched deletes): signed
by botocore's SigV4 signer, accepted by a signature-checking server, and working end to end
against moto (errors mapped like the boto3 path)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.servers.process import ServerProcess, free_port
from worker.errors import AccessDenied
from worker.stores.modules import ContainerNotFound
from worker.stores.modules.base import SourceChanged, crc32_of, stream_md5
from worker.stores.modules.s3_put import FastPut


@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize(
    ("endpoint", "bucket", "key"),
    [
        ("http://127.0.0.1:9000", "bkt", "app1/ünï cödé/a+b=c.js"),
        (None, "my-bucket", "dir/file with space.txt"),
        (None, "dotted.bucket", "x~y_z-1.js"),
    ],
)
def test_signed_headers_are_botocore_sigv4(
    endpoint: str | None, bucket: str, key: str, token: str | None
) -> None:
    """The light path signs with botocore itself: the request a light PUT sends carries the
    same SigV4 signature botocore's signer gives that request (path-style, virtual-hosted,
    session tokens, awkward keys)."""
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    fast = FastPut(endpoint, "eu-west-1", creds)
    data = b"hello world"
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    host, path = fast._target(bucket, key)
    assert "%" in path or " " not in key  # the key travels percent-encoded
    ours = fast.sign("PUT", host, path, {"Content-MD5": md5, "Content-Length": "11"}, data)
    assert ours["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "content-md5" in ours["Authorization"] and "host" in ours["Authorization"]
    if token:
        assert ours["X-Amz-Security-Token"] == token
    # The path is signed as it goes on the wire (percent-encoded once, never twice).
    req = AWSRequest(method="PUT", url=f"{fast.scheme}://{host}{path}", data=data)
    canonical = S3SigV4Auth(creds, "s3", "eu-west-1").canonical_request(req)
    assert canonical.split("\n")[1] == path and "%25" not in path


@pytest.fixture(scope="module")
def signing_moto() -> Iterator[tuple[str, Credentials]]:
    """A moto server that checks SigV4 signatures (after 3 unauthenticated set-up requests),
    with an IAM user allowed everything: (endpoint, that user's credentials)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        return bool(urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).status == 200)

    server = ServerProcess(
        f"moto-sigv4-{port}",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        healthy=healthy,
        env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"},
    ).start()
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="mirror")
        iam.put_user_policy(UserName="mirror", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="mirror")["AccessKey"]
        yield endpoint, Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.cleanup()


def test_light_requests_pass_a_signature_checking_server(
    signing_moto: tuple[str, Credentials],
) -> None:
    """PUT, listing page and batched delete, signed by botocore over the light transport, are
    accepted by a server that verifies SigV4; a wrong secret is AccessDenied at once."""
    endpoint, creds = signing_moto
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)
    s3.create_bucket(Bucket="sigv4-bkt")
    fast = FastPut(endpoint, "us-east-1", creds)
    data = b"signed body"
    md5 = hashlib.md5(data).hexdigest()
    # (moto's signature check mis-handles percent-encoded paths and queries, boto3's own
    # requests included, so no '/' or ' ' in the key or prefix below: the encoded cases are
    # covered against moto without the check in the other tests.)
    assert fast.put("sigv4-bkt", "app-index.js", data, md5) == md5
    page, token = fast.list_page("sigv4-bkt", "app", None)
    assert [row[0] for row in page] == ["app-index.js"] and token is None
    assert fast.delete_batch("sigv4-bkt", ["app-index.js"]) == []
    assert s3.list_objects_v2(Bucket="sigv4-bkt").get("KeyCount") == 0
    fast.close()
    wrong = FastPut(endpoint, "us-east-1", Credentials(creds.access_key, "not-the-secret"))
    with pytest.raises(AccessDenied, match="SignatureDoesNotMatch"):
        wrong.put("sigv4-bkt", "app-x.js", data, md5)
    wrong.close()


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


def test_light_prefix_listing_against_moto(s3_server: Any) -> None:
    """The containers of a shared bucket (MODULESTORE.bucket) are listed on the light path:
    the same common prefixes boto3 lists, decoded, over several pages; and listing them builds
    no boto3 client (a few hundred ms of a command's start-up)."""
    client = s3_server.client()
    bucket = f"light-prefix-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    for key in ("apps/ünï cödé+&<x>/a.js", "apps/b/x.js", "apps/b/y.js", "apps/c/d/e.js",
                "apps/top.js", "other/z.js"):
        client.put_object(Bucket=bucket, Key=key, Body=b"1")
    theirs = [p["Prefix"] for p in client.list_objects_v2(
        Bucket=bucket, Prefix="apps/", Delimiter="/").get("CommonPrefixes", [])]
    fast = FastPut(s3_server.endpoint, "us-east-1", Credentials("k", "s"))
    assert fast.list_prefixes(bucket, "apps/", max_keys=1) == theirs
    assert theirs == ["apps/b/", "apps/c/", "apps/ünï cödé+&<x>/"]
    assert fast.list_prefixes(bucket, "") == ["apps/", "other/"]
    fast.close()
    store = s3_server.module_store(bucket=bucket)
    try:
        assert store.containers() == ["apps", "other"]
        assert store.backend._client is None  # nothing needed boto3
    finally:
        store.close()


class _EditedMidway(io.FileIO):
    """A file that is rewritten in place (same size, new bytes) by "another program" once
    ``edit_after`` blocks of the upload's stream have been read."""

    def __init__(self, path: Any, edit_after: int, truncate: bool = False) -> None:
        super().__init__(path, "rb")
        self.path, self.edit_after, self.truncate = path, edit_after, truncate
        self.reads, self.edited = 0, False

    def readinto(self, buffer: Any) -> int:
        self.reads += 1
        if self.reads == self.edit_after and not self.edited:
            self.edited = True
            with open(self.path, "r+b") as other:
                if self.truncate:
                    other.truncate(5 * 1024 * 1024)
                else:
                    other.seek(15 * 1024 * 1024)
                    other.write(os.urandom(4096))
        return super().readinto(buffer)


@pytest.mark.parametrize("check", ["crc32", "md5", "truncated"])
def test_streamed_put_of_a_file_changing_midway_stores_nothing(
    s3_server: Any, tmp_path: Any, check: str
) -> None:
    """A large file goes up as one streamed PUT; when its bytes stop matching the content
    hashed before (CRC-32 remembered by that hash, or a running MD5 when the caller brought
    the MD5), the request is cut short of its Content-Length before the last block: S3
    stores nothing, the old object stays whole, and the upload is SourceChanged."""
    client = s3_server.client()
    client.create_bucket(Bucket="stream-edit-bkt")
    client.put_object(Bucket="stream-edit-bkt", Key="big.bin", Body=b"old")
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(20 * 1024 * 1024))
    fast = FastPut(s3_server.endpoint, "us-east-1", Credentials("k", "s"))
    with _EditedMidway(path, edit_after=1 << 30) as f:
        md5 = stream_md5(f) if check != "md5" else hashlib.md5(f.read()).hexdigest()
    if check == "md5":
        assert crc32_of(md5) is None
    with _EditedMidway(path, edit_after=3, truncate=check == "truncated") as f:
        with pytest.raises(SourceChanged):
            fast.put_stream("stream-edit-bkt", "big.bin", f, 20 * 1024 * 1024, md5)
        assert f.edited
    assert client.get_object(Bucket="stream-edit-bkt", Key="big.bin")["Body"].read() == b"old"
    # The same connection path works again afterwards (the cut one was dropped).
    data = path.read_bytes()
    with open(path, "rb") as f:
        etag = fast.put_stream("stream-edit-bkt", "big.bin", f, len(data), stream_md5(f))
    assert etag == hashlib.md5(data).hexdigest()
    got = client.get_object(Bucket="stream-edit-bkt", Key="big.bin")["Body"].read()
    assert hashlib.md5(got).digest() == hashlib.md5(data).digest()
    fast.close()


def test_store_redoes_a_streamed_put_whose_file_changed(s3_server: Any, tmp_path: Any) -> None:
    """Through the store: one streamed PUT per file above 8 MiB (no multipart), the edit
    midway abandons the first attempt and the file goes up again as it is now."""
    store = s3_server.module_store()
    container = f"stream-redo-{uuid.uuid4().hex[:8]}"
    store.ensure_container(container)
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(20 * 1024 * 1024))
    sent: list[str] = []
    real = store.backend.fast.put_stream

    def spy(*args: Any) -> Any:
        try:
            return real(*args)
        except SourceChanged:
            sent.append("cut")
            raise
        finally:
            sent.append("put")

    store.backend.fast.put_stream = spy
    # The pre-hash reads 20 blocks; the stream's third block finds the edit.
    with _EditedMidway(path, edit_after=23) as f:
        info = store.put_file(container, "big.bin", f)
        assert f.edited
    final = path.read_bytes()
    assert sent == ["cut", "put", "put"]
    assert info.md5 == hashlib.md5(final).hexdigest()
    (listed,) = list(store.list(container))
    assert listed.md5 == info.md5 and listed.size == len(final)
    assert hashlib.md5(store.read_bytes(container, "big.bin")).digest() == (
        hashlib.md5(final).digest()
    )
    store.delete_container(container)
    store.close()
