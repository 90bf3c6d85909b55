"""A light request path for S3's hot requests: botocore's SigV4 signer over ``http.client``.

Why: botocore spends 1.4-2.3 ms of CPU per small PutObject (its event system, model-driven
serialisation, checksum handlers); a mirror pass of 10,000 small files on two cores shared with
the server is bound by that CPU.  This path does exactly what a PutObject needs -- one signed
request on a keep-alive connection per thread -- for a fraction of the CPU, and is used only
for single-request uploads (at most one part), listing pages and batched deletes (what a mirror
pass sends); everything else stays on boto3.  With keys in the configuration, a pass that only
lists never builds a boto3 client at all (a few hundred ms of start-up per command).

Signing is botocore's own (``S3SigV4Auth``: about 0.1 ms a request), so is the credential chain
(the boto3 client's credentials, session tokens and refreshes apply); only the transport and the
three requests' XML are ours.  ``Content-MD5`` is sent (and over plain HTTP the body is signed
too), so S3 verifies every byte.  Errors are mapped like the boto3 path: 5xx, throttling and
connection failures are :class:`~worker.errors.TransientStoreError` (retried above this layer).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import select
import socket
import ssl
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from worker.errors import StoreError, TransientStoreError
from worker.stores.modules import names
from worker.stores.modules.base import SourceChanged, crc32_of
from worker.stores.modules.checksum import crc_extend
from worker.stores.modules.s3_errors import error_class
from worker.stores.modules.s3_listing import NS, Listing, parse_listing

_CODE = re.compile(rb"<Code>([^<]+)</Code>")
#: Bytes read from the file and sent per system call by a streamed PUT (one buffer, reused).
STREAM_BUFFER = 1024 * 1024
#: Tells botocore's signer to sign a streamed body as ``UNSIGNED-PAYLOAD`` (no SHA-256 pass
#: over the file): ``Content-MD5`` is what S3 checks the body against, as over HTTPS.
_UNSIGNED = SimpleNamespace(s3={"payload_signing_enabled": False})


@dataclass(frozen=True)
class StaticCredentials:
    """Keys given in the configuration (no boto3 credential chain needed)."""

    access_key: str
    secret_key: str
    token: str | None = None


def _q(value: str) -> str:
    return quote(value, safe="-_.~")


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
        # Loading the CA certificates costs 35-45 ms of CPU: only for an https endpoint.
        self._ssl = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None) \
            if self.scheme == "https" else None

    # --- signing ---------------------------------------------------------------------------

    def _target(self, bucket: str, key: str) -> tuple[str, str]:
        """(Host header, canonical path) for path-style or virtual-hosted addressing."""
        quoted = quote(key, safe="/-_.~")
        if self.path_style or "." in bucket:
            return self.host, f"{self.base}/{bucket}/{quoted}"
        return f"{bucket}.{self.host}", f"/{quoted}"

    def sign(
        self, method: str, host: str, path: str, headers: dict[str, str], body: bytes,
        query: str = "", unsigned_payload: bool = False,
    ) -> dict[str, str]:
        """``headers`` with botocore's SigV4 added (``Authorization``, ``X-Amz-Date``, ...).

        ``path`` and ``query`` are already percent-encoded, as they go on the wire.  With
        ``unsigned_payload`` the body is not part of the signature (a streamed file).
        """
        creds = self.credentials
        if not hasattr(creds, "get_frozen_credentials"):
            creds = Credentials(creds.access_key, creds.secret_key, creds.token)
        url = f"{self.scheme}://{host}{path}" + (f"?{query}" if query else "")
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        if unsigned_payload:
            request.context["client_config"] = _UNSIGNED
        S3SigV4Auth(creds, "s3", self.region).add_auth(request)
        return dict(request.headers.items())

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

    def _request(
        self, host: str, bucket: str, key: str,
        send: Callable[[http.client.HTTPConnection], None],
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request on this thread's keep-alive connection to ``host``: ``send(conn)``
        sends it, the reply is read whole.  A broken connection is dropped and raised as
        :class:`TransientStoreError` (no retry here: the store's one policy retries and logs
        it); so is one whose request ``send`` cut short (:class:`SourceChanged`: a request
        short of its ``Content-Length`` stores nothing)."""
        conn = self._connection(host)
        try:
            send(conn)
            resp = conn.getresponse()
            data = resp.read()
        except SourceChanged as exc:
            self._drop(host)
            exc.store, exc.container, exc.key = "amazon", bucket, key
            raise
        except (OSError, http.client.HTTPException) as exc:
            self._drop(host)
            raise TransientStoreError(
                f"{type(exc).__name__}: {exc}", store="amazon", container=bucket, key=key or None
            ) from exc
        if resp.will_close:
            self._drop(host)
        return resp, data

    def _put_headers(
        self, host: str, path: str, key: str, size: int, md5_hex: str, data: bytes | None
    ) -> dict[str, str]:
        """Signed headers of a PutObject of ``size`` bytes: ``data``, or (None) a body
        streamed from a file, signed as ``UNSIGNED-PAYLOAD``."""
        return self.sign(
            "PUT", host, path,
            {"Content-MD5": base64.b64encode(bytes.fromhex(md5_hex)).decode(),
             "Content-Length": str(size), "Content-Type": names.content_type(key)},
            b"" if data is None else data, unsigned_payload=data is None,
        )

    def put(self, bucket: str, key: str, data: bytes, md5_hex: str) -> str | None:
        """PUT ``data``; returns the ETag (unquoted).  Raises worker.errors on failure."""
        host, path = self._target(bucket, key)
        headers = self._put_headers(host, path, key, len(data), md5_hex, data)

        def send(conn: http.client.HTTPConnection) -> None:
            conn.request("PUT", path, body=data, headers=headers)

        resp, body = self._request(host, bucket, key, send)
        if resp.status != 200:
            raise _error(resp.status, body, bucket, key)
        return _etag(resp)

    def put_stream(
        self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str
    ) -> str | None:
        """PUT ``size`` bytes streamed from ``body`` (read from its start) in one request.

        One reused buffer: each block is read into it (``readinto``), checked and sent from
        it, so memory stays at :data:`STREAM_BUFFER` whatever the size.  The bytes are checked
        against the content ``md5_hex`` names *before the last block is sent*: by CRC when
        the store hashed that content just before (:func:`~worker.stores.modules.base.
        crc32_of`), else by a running MD5.  If the file changed, the connection is dropped
        short of ``Content-Length`` and S3 stores nothing (:class:`SourceChanged`).  The ETag
        S3 returns (the MD5 of what it received) must equal ``md5_hex`` too.  Returns that
        ETag; raises worker.errors on failure.
        """
        host, path = self._target(bucket, key)
        headers = self._put_headers(host, path, key, size, md5_hex, None)

        def send(conn: http.client.HTTPConnection) -> None:
            buf = bytearray(max(1, min(STREAM_BUFFER, size)))
            view = memoryview(buf)
            want_crc = crc32_of(md5_hex)
            digest = hashlib.md5(usedforsecurity=False) if want_crc is None else None
            crc = 0
            body.seek(0)
            conn.putrequest("PUT", path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            sent = 0
            while sent < size:
                n = body.readinto(view[: min(len(buf), size - sent)])  # type: ignore[attr-defined]
                if not n:
                    raise SourceChanged("the local file is shorter than it was")
                block = view[:n]
                if digest is None:
                    crc = crc_extend(crc, block)
                else:
                    digest.update(block)
                if sent + n == size and (
                    crc != want_crc if digest is None else digest.hexdigest() != md5_hex
                ):
                    raise SourceChanged("the local file changed during the upload")
                conn.send(block)
                sent += n

        resp, data = self._request(host, bucket, key, send)
        if resp.status != 200:
            raise _error(resp.status, data, bucket, key)
        etag = _etag(resp)
        if etag is not None and etag != md5_hex:
            raise TransientStoreError(
                f"S3 stored ETag {etag} for a body with MD5 {md5_hex}",
                store="amazon", container=bucket, key=key,
            )
        return etag

    def _send(
        self, method: str, bucket: str, params: dict[str, str], body: bytes, key: str = "",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One signed request to the bucket (with query ``params``): (status, body)."""
        if self.path_style or "." in bucket:
            host, path = self.host, f"{self.base}/{bucket}"
        else:
            host, path = f"{bucket}.{self.host}", "/"
        query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(params.items()))
        signed = self.sign(
            method, host, path, {**(headers or {}), "Content-Length": str(len(body))}, body,
            query=query,
        )
        target = f"{path}?{query}" if query else path

        def send(conn: http.client.HTTPConnection) -> None:
            conn.request(method, target, body=body or None, headers=signed)

        resp, data = self._request(host, bucket, key, send)
        return resp.status, data

    def list_page(
        self, bucket: str, prefix: str, token: str | None, max_keys: int = 1000
    ) -> tuple[list[tuple[str, int, float, str | None]], str | None]:
        """One ListObjectsV2 page (1,000 keys): ([(key, size, mtime, etag)], next token)."""
        listing = self._list(bucket, prefix, token, {"max-keys": str(max_keys)})
        return listing.items, listing.next_token

    def list_prefixes(self, bucket: str, prefix: str, max_keys: int = 1000) -> list[str]:
        """Every common prefix under ``prefix`` up to the next ``/`` (all pages)."""
        out: list[str] = []
        token: str | None = None
        while True:
            listing = self._list(
                bucket, prefix, token, {"delimiter": "/", "max-keys": str(max_keys)}
            )
            out.extend(listing.prefixes)
            if (token := listing.next_token) is None:
                return out

    def _list(
        self, bucket: str, prefix: str, token: str | None, extra: dict[str, str]
    ) -> Listing:
        params = {"list-type": "2", "encoding-type": "url", **extra}
        if prefix:
            params["prefix"] = prefix
        if token:
            params["continuation-token"] = token
        status, data = self._send("GET", bucket, params, b"")
        if status != 200:
            raise _error(status, data, bucket, "")
        return parse_listing(data)

    def delete_batch(self, bucket: str, keys: list[str]) -> list[tuple[str, str]]:
        """One DeleteObjects request (quiet) for at most 1,000 keys: [(key, code)] that failed."""
        parts = ["<Delete><Quiet>true</Quiet>"]
        for k in keys:
            parts.append(f"<Object><Key>{_xml(k)}</Key></Object>")
        parts.append("</Delete>")
        body = "".join(parts).encode()
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        status, data = self._send(
            "POST", bucket, {"delete": ""}, body,
            headers={"content-md5": md5, "content-type": "application/xml"},
        )
        if status != 200:
            raise _error(status, data, bucket, "")
        root = ET.fromstring(data)
        return [
            (e.findtext(f"{NS}Key") or "", e.findtext(f"{NS}Code") or "")
            for e in root.iter(f"{NS}Error")
        ]

    def close(self) -> None:
        for conn in getattr(self._local, "conns", {}).values():
            conn.close()


def _etag(resp: http.client.HTTPResponse) -> str | None:
    etag = resp.getheader("ETag")
    return etag.strip('"') if etag else None


def _xml(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;").replace("\r", "&#13;"))


def _error(status: int, body: bytes, bucket: str, key: str) -> StoreError:
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
