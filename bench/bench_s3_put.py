"""Client CPU per small PUT: the light request path (worker/stores/modules/s3_put.py: botocore's
SigV4 signer over http.client) against boto3's put_object, 16 threads each, on one moto server.

    python bench/bench_s3_put.py [--puts 2000] [--size 4096]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botocore.credentials import Credentials  # noqa: E402

from tests.servers.s3_server import ACCESS_KEY, SECRET_KEY, start_s3  # noqa: E402
from worker.stores.modules.s3_put import FastPut  # noqa: E402


def _measure(name: str, n: int, fn: Callable[[int], object]) -> None:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fn, range(n)))
    wall = time.monotonic() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    print(f"{name}: {wall:.2f} s, {n / wall:.0f} PUT/s, client CPU {cpu / n * 1000:.2f} ms/PUT")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--puts", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()
    srv = start_s3()
    try:
        client = srv.client()
        client.create_bucket(Bucket="bench")
        data = [os.urandom(args.size) for _ in range(args.puts)]
        fast = FastPut(srv.endpoint, "us-east-1", Credentials(ACCESS_KEY, SECRET_KEY))
        _measure("light path", args.puts, lambda i: fast.put(
            "bench", f"light/{i}", data[i], hashlib.md5(data[i]).hexdigest()))
        _measure("boto3 put_object", args.puts, lambda i: client.put_object(
            Bucket="bench", Key=f"boto3/{i}", Body=data[i]))
    finally:
        srv.server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
