"""A single-node OpenStack Swift (from its own venv, .test-servers/swift) with memcached and
tempauth, plus a small Keystone v3 identity endpoint in front of it: what the ``openstack``
(and, with the v2.0 API-key flow, ``rackspace``) module stores are tested against.

The identity endpoint checks user, password, user domain and project scope the way Keystone
does, and hands out a real tempauth token it obtained from this Swift, so Swift itself still
rejects anything bogus.  It stands in for Keystone, whose own server takes 16-25 s to start.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.servers.cloud import CloudStoreServer
from tests.servers.process import TEST_SERVERS, ServerProcess, free_port

USER, PASSWORD = "synchro", "synchro-swift-pass"
DOMAIN_ID, DOMAIN_NAME = "default", "Default"
PROJECT_ID = "synchro-project"
REGION = "RegionOne"
#: A second region in the catalog whose object-store URL is a fault proxy's, when one is set.
PROXY_REGION = "ProxyRegion"
RAX_USER, RAX_API_KEY = "synchro-rax", "rax-api-key-123"
_TEMPAUTH = ("test:tester", "testing")

_SWIFT_CONF = """[swift-hash]
swift_hash_path_suffix = synchro-test
swift_hash_path_prefix = synchro-test
[storage-policy:0]
name = gold
default = yes
[swift-constraints]
"""
_COMMON = """[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
swift_dir = {dir}
devices = {dir}/devices
mount_check = false
log_udp_host = 127.0.0.1
log_udp_port = {log_port}
log_level = WARNING
"""
_BACKEND = """[pipeline:main]
pipeline = {name}-server
[app:{name}-server]
use = egg:swift#{name}
"""
_PROXY = """[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk slo dlo
    tempauth copy proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
token_life = 86400
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached}
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:slo]
use = egg:swift#slo
min_segment_size = 1
[filter:dlo]
use = egg:swift#dlo
[filter:copy]
use = egg:swift#copy
"""


@dataclass
class SwiftServer(CloudStoreServer):
    provider: ClassVar[str] = "openstack"
    workdir: Path
    proxy_port: int
    identity_port: int
    processes: list[ServerProcess] = field(default_factory=list)
    identity: ThreadingHTTPServer | None = None
    #: Storage URL the identity endpoint puts in its catalog (a fault proxy may take its place).
    catalog_url: str = ""

    @property
    def storage_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}/v1/AUTH_test"

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.identity_port}/v3"

    def store_keys(self, endpoint: str | None) -> dict[str, Any]:
        """With ``endpoint`` (a fault proxy) the store picks the catalog's second region, whose
        object-store URL is that endpoint."""
        if endpoint:
            self.catalog_url = endpoint
        return {
            "keystoneAuthVersion": "v3",
            "authUrl": self.auth_url,
            "region": PROXY_REGION if endpoint else REGION,
            "tenantId": PROJECT_ID,
            "username": USER,
            "password": PASSWORD,
            "domainId": DOMAIN_ID,
        }

    def tempauth_token(self) -> str:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.proxy_port}/auth/v1.0",
            headers={"X-Auth-User": _TEMPAUTH[0], "X-Auth-Key": _TEMPAUTH[1]},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(resp.headers["X-Auth-Token"])

    def catalog_endpoints(self, interfaces: tuple[str, ...]) -> list[dict[str, str]]:
        regions = [(REGION, self.storage_url)]
        if self.catalog_url:
            regions.append((PROXY_REGION, self.catalog_url))
        return [
            {"id": f"e-{region}-{iface}", "interface": iface, "region": region,
             "region_id": region, "url": url}
            for region, url in regions
            for iface in interfaces
        ]

    def stop(self) -> None:
        if self.identity is not None:
            self.identity.shutdown()
            self.identity.server_close()
        for proc in self.processes:
            proc.cleanup()


class _IdentityHandler(BaseHTTPRequestHandler):
    """``POST /v3/auth/tokens`` (password method) and ``POST /v2.0/tokens`` (Rackspace API key)."""

    swift: SwiftServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
        pass

    def _reply(self, status: int, body: dict[str, Any], token: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if token:
            self.send_header("X-Subject-Token", token)
        self.end_headers()
        self.wfile.write(data)

    def _denied(self) -> None:
        message = "The request you have made requires authentication."
        self._reply(401, {"error": {"code": 401, "title": "Unauthorized", "message": message}})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._reply(400, {"error": {"code": 400, "message": "malformed JSON"}})
            return
        if self.path.rstrip("/") == "/v3/auth/tokens":
            self._v3(body)
        elif self.path.rstrip("/") == "/v2.0/tokens":
            self._v2_rackspace(body)
        else:
            self._reply(404, {"error": {"code": 404, "message": "not found"}})

    def _v3(self, body: dict[str, Any]) -> None:
        auth = body.get("auth", {})
        identity = auth.get("identity", {})
        user = identity.get("password", {}).get("user", {})
        domain = user.get("domain", {})
        project = auth.get("scope", {}).get("project", {})
        ok = (
            "password" in identity.get("methods", [])
            and user.get("name") == USER
            and user.get("password") == PASSWORD
            and (domain.get("id") == DOMAIN_ID or domain.get("name") == DOMAIN_NAME)
            and project.get("id") == PROJECT_ID
        )
        if not ok:
            self._denied()
            return
        token = self.swift.tempauth_token()
        expires = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + 3600))
        catalog = [{
            "type": "object-store", "name": "swift", "id": "swift1",
            "endpoints": self.swift.catalog_endpoints(("public", "internal", "admin")),
        }]
        self._reply(201, {"token": {
            "methods": ["password"], "expires_at": expires, "issued_at": expires,
            "user": {"id": "u-synchro", "name": USER,
                     "domain": {"id": DOMAIN_ID, "name": DOMAIN_NAME}},
            "project": {"id": PROJECT_ID, "name": "synchro",
                        "domain": {"id": DOMAIN_ID, "name": DOMAIN_NAME}},
            "roles": [{"id": "r1", "name": "member"}],
            "catalog": catalog,
        }}, token=token)

    def _v2_rackspace(self, body: dict[str, Any]) -> None:
        creds = body.get("auth", {}).get("RAX-KSKEY:apiKeyCredentials", {})
        if creds.get("username") != RAX_USER or creds.get("apiKey") != RAX_API_KEY:
            self._denied()
            return
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        url = self.swift.storage_url
        self._reply(200, {"access": {
            "token": {"id": self.swift.tempauth_token(), "expires": expires,
                      "tenant": {"id": "AUTH_test", "name": "AUTH_test"}},
            "user": {"id": "u-rax", "name": RAX_USER, "roles": []},
            "serviceCatalog": [{
                "type": "object-store", "name": "cloudFiles",
                "endpoints": [{"region": "DFW", "tenantId": "AUTH_test",
                               "publicURL": url, "internalURL": url}],
            }],
        }})


def swift_bin(name: str) -> str:
    path = TEST_SERVERS / "swift" / "bin" / name
    if not path.exists():
        raise RuntimeError("Swift is missing: run scripts/install-test-servers")
    return str(path)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_swift() -> SwiftServer:
    main = ServerProcess("swift", [], healthy=lambda: True)
    root = main.workdir
    (root / "devices" / "d1").mkdir(parents=True)
    (root / "swift.conf").write_text(_SWIFT_CONF)
    log_port = free_port()
    ports = {name: free_port() for name in ("account", "container", "object", "proxy")}
    for name in ("account", "container", "object"):
        builder = str(root / f"{name}.builder")
        for args in (
            ["create", "10", "1", "1"],
            ["add", f"r1z1-127.0.0.1:{ports[name]}/d1", "1"],
            ["rebalance"],
        ):
            # Exit status 1 means warnings only (one device, one replica).
            res = subprocess.run([swift_bin("swift-ring-builder"), builder, *args],
                                 capture_output=True, text=True)
            if res.returncode > 1:
                raise RuntimeError(f"swift-ring-builder {args}: {res.stdout}{res.stderr}")
        conf = _COMMON.format(port=ports[name], dir=root, log_port=log_port)
        (root / f"{name}-server.conf").write_text(conf + _BACKEND.format(name=name))
    memcached_port = free_port()
    proxy_conf = _COMMON.format(port=ports["proxy"], dir=root, log_port=log_port)
    (root / "proxy-server.conf").write_text(proxy_conf + _PROXY.format(memcached=memcached_port))

    swift = SwiftServer(root, ports["proxy"], free_port())
    mc = ServerProcess(
        f"memcached-{memcached_port}",
        ["memcached", "-l", "127.0.0.1", "-p", str(memcached_port), "-U", "0", "-m", "64",
         "-u", "root"],
        healthy=lambda: _port_answers(memcached_port),
        workdir=root,
    )
    procs = [mc] + [
        ServerProcess(
            f"swift-{name}",
            [swift_bin(f"swift-{name}-server"), str(root / f"{name}-server.conf")],
            healthy=lambda p=ports[name]: _ok(f"http://127.0.0.1:{p}/healthcheck")
            if p == ports["proxy"] else _port_answers(p),
            workdir=root,
        )
        for name in ("account", "container", "object", "proxy")
    ]
    swift.processes = procs
    try:
        # Start all, then wait for each: about 5 s in parallel instead of 20 in a row.
        threads = [threading.Thread(target=p.start, kwargs={"timeout": 60}) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in procs:
            if p.proc is None or p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} did not start:\n{p.tail()}")
        _wait(lambda: bool(swift.tempauth_token()), 30)
        handler = type("Handler", (_IdentityHandler,), {"swift": swift})
        swift.identity = ThreadingHTTPServer(("127.0.0.1", swift.identity_port), handler)
        threading.Thread(target=swift.identity.serve_forever, daemon=True).start()
    except BaseException:
        swift.stop()
        raise
    return swift


def _port_answers(port: int) -> bool:
    from tests.servers.process import port_open

    return port_open(port)


def _wait(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(0.1)  # poll interval
    raise RuntimeError(f"Swift not ready: {last}")


@pytest.fixture(scope="session")
def swift_server() -> Iterator[SwiftServer]:
    srv = start_swift()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def openstack_store_server(swift_server: SwiftServer) -> SwiftServer:
    """The server the conformance suite uses for the ``openstack`` provider."""
    return swift_server
