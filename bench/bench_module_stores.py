"""Module-store benchmark: our contract against each provider's raw SDK, in the same run.

    python bench/bench_module_stores.py [--providers amazon,google,azure,openstack]
                                        [--files 2000] [--size 4096] [--workers 16] [--rounds 2]

Per provider, against its emulator started here (moto, fake-gcs-server, Azurite, single-node
Swift with the tests' Keystone v3 endpoint): put N local files of SIZE bytes with W threads,
then list them all; once through ``ModuleStore.put_file`` / ``ModuleStore.list`` and once
through the raw SDK (its default client, sized for W threads: boto3 ``put_object``,
google-cloud-storage ``upload_from_filename``, azure-storage-blob ``upload_blob``,
swiftclient ``put_object`` with a connection per thread; the raw listing extracts the same
four fields ours returns: key, size, modified time, checksum), for ROUNDS rounds (who goes
first alternates), each into a fresh container.
Reported: the median over rounds of put throughput,
client CPU per file and listing time (best of three listings per round), and ours/raw for both
(goal >= 0.9).

Large files: ``--files 8 --size-mib 64 --workers 8`` puts N files of S MiB each; ours goes
through the pass's byte budget (``worker/mirror/transfer.py``: at most 32 MiB of content held), and
the raw side is each SDK's own transfer manager, tuned: boto3 ``upload_file`` (s3transfer,
8 MiB parts, 10 threads a file), azure-storage-blob ``upload_blob(max_concurrency=4)`` (8 MiB
blocks), google-cloud-storage ``upload_from_filename`` (its 100 MiB resumable chunk: one
request for a 64 MiB file).  Every round is printed with the load average; MB/s and client
CPU ms per MB, split into user and system (kernel) time; the head line gives what one MD5 of the
same files costs here, the floor under any upload that sends the MD5.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.servers.azure_server import ACCOUNT, ACCOUNT_KEY, start_azurite  # noqa: E402
from tests.servers.cloud import pooled_session  # noqa: E402
from tests.servers.gcs_server import start_gcs  # noqa: E402
from tests.servers.s3_server import start_s3  # noqa: E402
from tests.servers.swift_server import (  # noqa: E402
    DOMAIN_ID,
    PASSWORD,
    PROJECT_ID,
    REGION,
    USER,
    start_swift,
)
from worker.mirror.transfer import ByteBudget  # noqa: E402

#: (put(bucket, key, path), listing(bucket) -> count, make_bucket(bucket)) of one raw SDK
Peer = tuple[Callable[..., None], Callable[[str], int], Callable[[str], None]]


def make_files(root: Path, n: int, size: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = root / f"m{i // 100:02d}" / f"f{i:05d}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for start in range(0, size, 1 << 20):
                f.write(os.urandom(min(1 << 20, size - start)))
        paths.append(path)
    return paths


def large_amazon(server: Any) -> Peer:
    from boto3.s3.transfer import TransferConfig

    put_, listing, mk = raw_amazon(server)
    client = server.client()
    config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20,
                            max_concurrency=10)

    def put(bucket: str, key: str, path: Path) -> None:
        client.upload_file(str(path), bucket, key, Config=config)

    return put, listing, mk


def large_azure(server: Any, validate: bool = False) -> Peer:
    """``validate``: the SDK MD5s every block it sends (``validate_content``), as ours does the
    whole file: the same check by Azure of every byte."""
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient

    _put, listing, mk = raw_azure(server)
    tuned = BlobServiceClient(
        server.endpoint, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
        transport=RequestsTransport(session=pooled_session(64), session_owner=False),
        max_single_put_size=8 << 20, max_block_size=8 << 20,
    )

    def put(bucket: str, key: str, path: Path) -> None:
        with open(path, "rb") as f:
            tuned.get_blob_client(bucket, key).upload_blob(
                f, overwrite=True, max_concurrency=4, length=path.stat().st_size,
                validate_content=validate,
            )

    return put, listing, mk


LARGE = {"amazon": large_amazon, "azure": large_azure, "google": lambda s: raw_google(s),
         "azure-validated": lambda s: large_azure(s, validate=True)}


# --- raw SDK peers: what a user of the SDK alone would write -------------------------------


def raw_amazon(server: Any) -> Peer:
    client = server.client()

    def mk(bucket: str) -> None:
        client.create_bucket(Bucket=bucket)

    def put(bucket: str, key: str, path: Path) -> None:
        with open(path, "rb") as f:
            client.put_object(Bucket=bucket, Key=key, Body=f)

    def listing(bucket: str) -> int:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        rows = [(o["Key"], o["Size"], o["LastModified"].timestamp(), o["ETag"])
                for p in pages for o in p.get("Contents", [])]
        return len(rows)

    return put, listing, mk


def raw_google(server: Any) -> Peer:
    client = server.client()

    def mk(bucket: str) -> None:
        client.create_bucket(bucket)

    def put(bucket: str, key: str, path: Path) -> None:
        client.bucket(bucket).blob(key).upload_from_filename(str(path))

    def listing(bucket: str) -> int:
        rows = [(b.name, b.size, b.updated.timestamp(), b.md5_hash)
                for b in client.list_blobs(bucket)]
        return len(rows)

    return put, listing, mk


def raw_azure(server: Any) -> Peer:
    service = server.client()

    def mk(bucket: str) -> None:
        service.create_container(bucket)

    def put(bucket: str, key: str, path: Path) -> None:
        with open(path, "rb") as f:
            service.get_blob_client(bucket, key).upload_blob(f, overwrite=True)

    def listing(bucket: str) -> int:
        rows = [(b.name, b.size, b.last_modified.timestamp(), b.content_settings.content_md5)
                for b in service.get_container_client(bucket).list_blobs()]
        return len(rows)

    return put, listing, mk


def raw_openstack(server: Any) -> Peer:
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3
    from swiftclient import client as swift

    auth = v3.Password(auth_url=server.auth_url, username=USER, password=PASSWORD,
                       user_domain_id=DOMAIN_ID, project_id=PROJECT_ID)
    sess = ks_session.Session(auth=auth)
    local = threading.local()

    def conn() -> Any:
        if not hasattr(local, "conn"):  # swiftclient connections are not thread-safe
            local.conn = swift.Connection(session=sess, os_options={"region_name": REGION})
        return local.conn

    def mk(bucket: str) -> None:
        conn().put_container(bucket)

    def put(bucket: str, key: str, path: Path) -> None:
        with open(path, "rb") as f:
            conn().put_object(bucket, key, f)

    def listing(bucket: str) -> int:
        entries = conn().get_container(bucket, full_listing=True)[1]
        rows = [(e["name"], e["bytes"], datetime.fromisoformat(e["last_modified"]).timestamp(),
                 e["hash"]) for e in entries]
        return len(rows)

    return put, listing, mk


STARTERS: dict[str, Callable[[], Any]] = {
    "amazon": start_s3,
    "google": start_gcs,
    "azure": start_azurite,
    "openstack": start_swift,
}
RAW = {"amazon": raw_amazon, "google": raw_google, "azure": raw_azure,
       "openstack": raw_openstack}


def md5_ms_per_mb(files: list[Path]) -> float:
    """The CPU one MD5 of the files' content costs, per MB (10^6 bytes), read from the page
    cache in 1 MiB blocks: the floor under any upload that sends each file's MD5."""
    cpu0, size = time.process_time(), 0
    for path in files:
        digest = hashlib.md5()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
                size += len(block)
    return 1000 * (time.process_time() - cpu0) / (size / 1e6)


def run_once(
    put: Callable[[str, str, Path], Any],
    listing: Callable[[str], int],
    bucket: str,
    files: list[Path],
    root: Path,
    workers: int,
) -> dict[str, float]:
    keys = [p.relative_to(root).as_posix() for p in files]
    times0, t0 = os.times(), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda kp: put(bucket, kp[0], kp[1]), zip(keys, files, strict=True)):
            pass
    t_put = time.perf_counter() - t0
    times1 = os.times()
    user, system = times1.user - times0.user, times1.system - times0.system
    cpu_put = user + system
    # Listing: the best of three (one listing is a fraction of a second: load spikes on this
    # shared machine would otherwise decide it).
    t_list = float("inf")
    for _ in range(3):
        t1 = time.perf_counter()
        count = listing(bucket)
        t_list = min(t_list, time.perf_counter() - t1)
    if count != len(files):
        raise RuntimeError(f"listed {count} objects, put {len(files)}")
    return {"put_s": t_put, "list_s": t_list, "cpu_ms_per_put": 1000 * cpu_put / len(files),
            "user_s": user, "sys_s": system, "load": os.getloadavg()[0]}


def bench_provider(
    provider: str, args: argparse.Namespace, files: list[Path], root: Path
) -> dict[str, Any]:
    server = STARTERS[provider]()
    try:
        store = server.module_store()
        raw = provider + ("-validated" if args.raw_validated else "")
        raw_put, raw_list, raw_mk = (LARGE if args.size_mib else RAW)[raw](server)
        budget = ByteBudget()
        memory = getattr(store.backend, "upload_memory", lambda size: min(size, 8 << 20))

        def ours_put(bucket: str, key: str, path: Path) -> None:
            with budget.hold(memory(path.stat().st_size)):
                store.put_file(bucket, key, path)

        def ours_list(bucket: str) -> int:
            return len(list(store.list(bucket)))

        results: dict[str, list[dict[str, float]]] = {"ours": [], "raw": []}
        for n in range(args.rounds):
            # Alternate who goes first: a server that slows down (or warms up) over a round
            # must not favour either side.
            for who in ("ours", "raw") if n % 2 == 0 else ("raw", "ours"):
                bucket = f"bench-{who}-{uuid.uuid4().hex[:8]}"
                if who == "ours":
                    store.ensure_container(bucket)
                    results[who].append(run_once(ours_put, ours_list, bucket, files, root,
                                                 args.workers))
                else:
                    raw_mk(bucket)
                    results[who].append(run_once(raw_put, raw_list, bucket, files, root,
                                                 args.workers))
                if args.size_mib:
                    r = results[who][-1]
                    mb = len(files) * args.size_mib * 1.048576
                    print(f"| {provider} | {n} | {who} | {r['load']:.1f} | {r['put_s']:.2f} | "
                          f"{mb / r['put_s']:.0f} | "
                          f"{r['cpu_ms_per_put'] * len(files) / mb:.2f} | "
                          f"{1000 * r['user_s'] / mb:.2f} / {1000 * r['sys_s'] / mb:.2f} |",
                          flush=True)
        # Spot-check that what we put is what the files hold.
        sample = files[:: max(1, len(files) // 20)]
        last = [b for b in store.containers() if b.startswith("bench-ours-")][-1]
        for path in sample:
            key = path.relative_to(root).as_posix()
            if store.read_bytes(last, key) != path.read_bytes():
                raise RuntimeError(f"{provider}: {key} differs")
        store.close()
    finally:
        if hasattr(server, "stop"):
            server.stop()
        else:
            server.server.cleanup()
    summary: dict[str, Any] = {"provider": provider}
    for who, runs in results.items():
        summary[who] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        summary[who]["put_per_s"] = len(files) / summary[who]["put_s"]
    summary["ratio_put"] = summary["ours"]["put_per_s"] / summary["raw"]["put_per_s"]
    summary["ratio_list"] = summary["raw"]["list_s"] / summary["ours"]["list_s"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", default="amazon,google,azure,openstack")
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--size-mib", type=int, default=0,
                        help="large files of this many MiB (raw: the SDK's transfer manager)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--raw-validated", action="store_true",
                        help="large files, azure: the raw SDK with validate_content=True "
                             "(an MD5 per block, checked by Azure), the check ours makes")
    args = parser.parse_args()
    if args.raw_validated and (not args.size_mib or args.providers != "azure"):
        parser.error("--raw-validated: only with --size-mib and --providers azure")
    with tempfile.TemporaryDirectory(prefix="bench-modules-") as tmp:
        root = Path(tmp)
        if args.size_mib:
            args.size = args.size_mib << 20
        files = make_files(root, args.files, args.size)
        digest = hashlib.md5(b"".join(p.read_bytes()[:16] for p in files[:10])).hexdigest()[:8]
        print(f"# {args.files} files x {args.size} B, {args.workers} workers, "
              f"{args.rounds} rounds (median), data {digest}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        if args.size_mib:
            print(f"# MD5 alone (hashlib, one thread): {md5_ms_per_mb(files):.2f} ms of CPU "
                  "per MB")
            print("| provider | round | who (in the order run) | load | put s | MB/s | "
                  "client CPU ms/MB | user / sys |")
            print("|---|---|---|---|---|---|---|---|")
        else:
            print("| provider | ours put/s | raw put/s | ours/raw put | ours CPU ms/put | "
                  "raw CPU ms/put | ours list s | raw list s | ours/raw list |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for provider in args.providers.split(","):
            s = bench_provider(provider, args, files, root)
            o, r = s["ours"], s["raw"]
            if args.size_mib:
                mb = len(files) * args.size_mib * 1.048576
                print(f"| {provider} | median | ours/raw {s['ratio_put']:.2f} | | "
                      f"{o['put_s']:.2f} vs {r['put_s']:.2f} | {mb / o['put_s']:.0f} vs "
                      f"{mb / r['put_s']:.0f} | {o['cpu_ms_per_put'] * len(files) / mb:.2f} vs "
                      f"{r['cpu_ms_per_put'] * len(files) / mb:.2f} | "
                      f"{1000 * o['user_s'] / mb:.2f} / {1000 * o['sys_s'] / mb:.2f} vs "
                      f"{1000 * r['user_s'] / mb:.2f} / {1000 * r['sys_s'] / mb:.2f} |",
                      flush=True)
                continue
            print(f"| {provider} | {o['put_per_s']:.0f} | {r['put_per_s']:.0f} | "
                  f"{s['ratio_put']:.2f} | {o['cpu_ms_per_put']:.2f} | "
                  f"{r['cpu_ms_per_put']:.2f} | {o['list_s']:.3f} | {r['list_s']:.3f} | "
                  f"{s['ratio_list']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
