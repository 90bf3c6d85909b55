"""A light request path for small S3 PUTs: SigV4 signed by hand over ``http.client``.

Why: botocore spends 1.4-2.3 ms of CPU per small PutObject (its event system, model-driven
serialisation, checksum handlers); a mirror pass of 10,000 small files on two cores shared with
the server is bound by that CPU.  This path does exactly what a PutObject needs -- one signed
request on a keep-alive connection per thread -- for a fraction of the CPU, and is used only
for single-request uploads (at most one part); everything else stays on boto3.

Credentials are the boto3 client's own (so its credential chain, session tokens and refreshes
apply).  The body is signed (``x-amz-content-sha256``) and ``Content-MD5`` is sent, so S3
verifies every byte.  Errors are mapped like the boto3 path: 5xx, throttling and connection
failures are :class:`~worker.errors.TransientStoreError` (retried above this layer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import os
import re
import select
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

from worker.errors import StoreError, TransientStoreError

_CODE = re.compile(rb"<Code>([^<]+)</Code>")


class FastPut:
    """Signed single-request PUTs, one keep-alive connection per thread."""

    def __init__(
        self, endpoint: str | None, region: str, credentials: Any, timeout: float = 30.0
    ) -> None:
        self.region = region
        self.credentials = credentials  # botocore Credentials (refreshable) or a frozen tuple
        self.timeout = timeout
        if endpoint:
            parts = urlsplit(endpoint)
            self.scheme = parts.scheme or "https"
            self.host = parts.netloc
            self.base = parts.path.rstrip("/")
            self.path_style = True
        else:
            self.scheme, self.host, self.base = "https", f"s3.{region}.amazonaws.com", ""
            self.path_style = False
        self._local = threading.local()
        self._keys: dict[str, bytes] = {}
        self._ssl = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)

    # --- signing ---------------------------------------------------------------------------

    def _signing_key(self, secret: str, day: str) -> bytes:
        cache_key = f"{secret}\0{day}"
        key = self._keys.get(cache_key)
        if key is None:
            k = hmac.digest(b"AWS4" + secret.encode(), day.encode(), "sha256")
            for part in (self.region, "s3", "aws4_request"):
                k = hmac.digest(k, part.encode(), "sha256")
            self._keys = {cache_key: k}  # one day's key is all we need
            key = k
        return key

    def _target(self, bucket: str, key: str) -> tuple[str, str]:
        """(Host header, canonical path) for path-style or virtual-hosted addressing."""
        quoted = quote(key, safe="/-_.~")
        if self.path_style or "." in bucket:
            return self.host, f"{self.base}/{bucket}/{quoted}"
        return f"{bucket}.{self.host}", f"/{quoted}"

    def sign(
        self, method: str, host: str, path: str, headers: dict[str, str], payload_sha: str,
        now: float | None = None,
    ) -> dict[str, str]:
        """Headers with SigV4 added (``x-amz-date``, ``x-amz-content-sha256``, token)."""
        creds = self.credentials
        if hasattr(creds, "get_frozen_credentials"):
            creds = creds.get_frozen_credentials()
        access, secret, token = creds.access_key, creds.secret_key, creds.token
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = stamp[:8]
        out = {k.lower(): v.strip() for k, v in headers.items()}
        out["host"] = host
        out["x-amz-date"] = stamp
        out["x-amz-content-sha256"] = payload_sha
        if token:
            out["x-amz-security-token"] = token
        names = sorted(out)
        canonical = "\n".join([
            method, path, "",
            *(f"{n}:{out[n]}" for n in names), "",
            ";".join(names), payload_sha,
        ])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join([
            "AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()
        ])
        signature = hmac.new(
            self._signing_key(secret, day), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        out["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return out

    # --- the request -----------------------------------------------------------------------

    def _connection(self, host: str) -> http.client.HTTPConnection:
        conns: dict[str, http.client.HTTPConnection] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(host)
        if conn is not None and conn.sock is not None and _closed_by_peer(conn.sock):
            # The server closed the idle keep-alive connection: reconnect before sending
            # anything (what urllib3 does), rather than retrying a request after the fact.
            conn.close()
        if conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(host, timeout=self.timeout, context=self._ssl)
            else:
                conn = http.client.HTTPConnection(host, timeout=self.timeout)
            conns[host] = conn
        return conn

    def _drop(self, host: str) -> None:
        conns = getattr(self._local, "conns", {})
        conn = conns.pop(host, None)
        if conn is not None:
            conn.close()

    def put(self, bucket: str, key: str, data: bytes, md5_hex: str) -> str | None:
        """PUT ``data``; returns the ETag (unquoted).  Raises worker.errors on failure."""
        host, path = self._target(bucket, key)
        headers = self.sign(
            "PUT", host, path,
            {"content-md5": base64.b64encode(bytes.fromhex(md5_hex)).decode(),
             "content-length": str(len(data))},
            hashlib.sha256(data).hexdigest(),
        )
        conn = self._connection(host)
        try:
            conn.request("PUT", path, body=data, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            # No retry here: the store's one retry policy retries (and logs) it.
            self._drop(host)
            raise TransientStoreError(
                f"{type(exc).__name__}: {exc}", store="amazon", container=bucket, key=key
            ) from exc
        if resp.will_close:
            self._drop(host)
        if resp.status == 200:
            etag = resp.getheader("ETag")
            return etag.strip('"') if etag else None
        raise _error(resp.status, body, bucket, key)

    def close(self) -> None:
        for conn in getattr(self._local, "conns", {}).values():
            conn.close()


def _error(status: int, body: bytes, bucket: str, key: str) -> StoreError:
    from worker.stores.modules.s3 import error_class  # one error table for the provider

    m = _CODE.search(body)
    code = m.group(1).decode() if m else str(status)
    return error_class(code, status)(
        f"{code}: HTTP {status}", store="amazon", container=bucket, key=key
    )


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed (or is broken)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
