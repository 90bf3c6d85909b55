"""The raw boto3 peer of the mirror benchmark: 16 threads, one client, a PUT per file.

    python bench/peer_boto3.py put  SRC BUCKET   # initial: a PutObject per file, nothing else
    python bench/peer_boto3.py sync SRC BUCKET   # one listing + compare (size, mtime), PUT what
                                                 # differs, DeleteObjects for what is gone

Endpoint and keys come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config


def client() -> Any:
    return boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                      retries={"max_attempts": 3, "mode": "standard"}),
    )


def local_files(src: Path) -> dict[str, os.stat_result]:
    out = {}
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, src)] = os.stat(full)
    return out


def main(argv: list[str]) -> int:
    mode, src, bucket = argv[0], Path(argv[1]), argv[2]
    s3 = client()
    files = local_files(src)
    todo = list(files)
    gone: list[str] = []
    if mode == "sync":
        remote = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                remote[o["Key"]] = o
        todo = [
            k for k, st in files.items()
            if k not in remote or remote[k]["Size"] != st.st_size
            or int(st.st_mtime) > remote[k]["LastModified"].timestamp()
        ]
        gone = [k for k in remote if k not in files]

    def put(key: str) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=(src / key).read_bytes())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, todo))
    for i in range(0, len(gone), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in gone[i:i+1000]]})
    print(f"put {len(todo)}, deleted {len(gone)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
