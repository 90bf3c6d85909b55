"""Session-store benchmarks (issue 2), against a private redis-server on loopback.

    python bench/bench_sessions.py throughput [-n 100000]   snapshot/restore vs raw redis-py
    python bench/bench_sessions.py latency [-n 20000]       get/put p50/p99 vs raw GET/SET
    python bench/bench_sessions.py memory [-n 1000000 ...]  peak RSS of snapshot/restore CLI runs

Each mode starts its own redis-server (needs ``redis-server`` on PATH) on a free port and
compares with the raw redis-py peer measured in the same run; ``throughput`` runs each of ours
next to its raw peer in pairs, who goes first alternating, and prints every pair with the load
average (ratio per pair, never a best of N).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from bench.peers_cmd import run_measured  # noqa: E402
from tests.servers.redis_server import RedisServer, start_redis  # noqa: E402
from worker.backups.dest import FolderDestination  # noqa: E402
from worker.backups.snapshots import restore_snapshot, take_snapshot  # noqa: E402
from worker.stores.sessions.base import OnConflict  # noqa: E402
from worker.stores.sessions.redis import RedisSessionStore  # noqa: E402

#: The Synchro server's format: the key is the bare session id.
PREFIX = b""
#: The restore mode whose target is not empty (one key of another application).
OTHER_KEYS = "restore fail, other keys"


def session_state(rng: random.Random, size: int) -> bytes:
    """A plausible, unique session of about ``size`` bytes: user, flags, a cart, a view stack
    and an opaque token (random base64, the part that does not compress)."""
    state = {
        "user": {"id": rng.randrange(10**6), "name": "user" + str(rng.randrange(10**6)),
                 "email": f"user{rng.randrange(10**6)}@example.com"},
        "locale": rng.choice(["en-US", "fr-FR", "de-DE", "pt-BR"]),
        "authenticated": rng.random() < 0.8,
        "cart": [{"sku": rng.randrange(10**5), "qty": rng.randrange(1, 5),
                  "price": round(rng.random() * 100, 2)} for _ in range(rng.randrange(1, 6))],
        "views": ["view" + str(rng.randrange(100)) for _ in range(rng.randrange(3, 9))],
        "csrf": base64.b64encode(rng.randbytes(24)).decode(),
        "token": "",
    }
    text = json.dumps(state, separators=(",", ":"))
    pad = max(0, size - len(text))
    state["token"] = base64.b64encode(rng.randbytes(pad * 3 // 8)).decode()
    state["history"] = ["page" + str(rng.randrange(50)) for _ in range(pad // 16)]
    return json.dumps(state, separators=(",", ":")).encode()


def load(client: redis.Redis, n: int, size: int = 1000, seed: int = 1, pool: int = 0) -> None:
    """n sessions, 4 in 5 with an expiry between 1 and 48 hours.  Every state is distinct,
    or with ``pool`` taken round-robin from that many distinct ones (to load 1M faster;
    repeats 50 MB apart are beyond zstd's window, so they compress like distinct ones)."""
    rng = random.Random(seed)
    states = [session_state(rng, size) for _ in range(pool)]
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        sid = f"s{i:08d}-{rng.randrange(16**6):06x}".encode()
        key = PREFIX + sid
        state = states[i % pool] if pool else session_state(rng, size)
        value = b'{"id":"' + sid + b'",' + state[1:]  # the server's {"id": ..., ...}
        if rng.random() < 0.8:
            pipe.set(key, value, px=rng.randrange(3600_000, 48 * 3600_000))
        else:
            pipe.set(key, value)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def raw_snapshot(client: redis.Redis, path: Path) -> int:
    """The ceiling: SCAN + pipelined MGET and PTTL, plain JSON lines by concatenation."""
    count = 0
    cut = len(PREFIX)
    with open(path, "wb") as out:
        cursor = 0
        while True:
            cursor, keys = client.scan(cursor, match=PREFIX + b"*", count=1000)
            if keys:
                pipe = client.pipeline(transaction=False)
                pipe.mget(keys)
                for k in keys:
                    pipe.pttl(k)
                res = pipe.execute()
                vals = res[0]
                lines = [
                    b'{"id":"' + k[cut:] + b'","pttl":' + str(res[i + 1]).encode()
                    + b',"state":' + vals[i] + b"}\n"
                    for i, k in enumerate(keys) if vals[i] is not None
                ]
                out.write(b"".join(lines))
                count += len(lines)
            if cursor == 0:
                break
    return count


def raw_restore(client: redis.Redis, rows: list[tuple[bytes, bytes, int]]) -> int:
    """The ceiling: pipelined SET with expiry from rows already in memory."""
    for start in range(0, len(rows), 1000):
        pipe = client.pipeline(transaction=False)
        for key, value, px in rows[start : start + 1000]:
            if px > 0:
                pipe.set(key, value, px=px)
            else:
                pipe.set(key, value)
        pipe.execute()
    return len(rows)


def dump_rows(client: redis.Redis) -> list[tuple[bytes, bytes, int]]:
    rows = []
    for keys in _scan(client):
        pipe = client.pipeline(transaction=False)
        pipe.mget(keys)
        for k in keys:
            pipe.pttl(k)
        res = pipe.execute()
        rows += [(k, res[0][i], res[i + 1]) for i, k in enumerate(keys)]
    return rows


def _scan(client: redis.Redis):  # type: ignore[no-untyped-def]
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=PREFIX + b"*", count=1000)
        if keys:
            yield keys
        if cursor == 0:
            return


def server_cpu(srv: RedisServer) -> float:
    """CPU seconds the redis-server process has used (utime + stime)."""
    assert srv.server.proc is not None
    fields = Path(f"/proc/{srv.server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(srv: RedisServer, fn, *args):  # type: ignore[no-untyped-def]
    """(wall seconds, client CPU seconds, server CPU seconds, result)."""
    c0, s0, t0 = time.process_time(), server_cpu(srv), time.perf_counter()
    out = fn(*args)
    wall = time.perf_counter() - t0
    return wall, time.process_time() - c0, server_cpu(srv) - s0, out


def throughput(srv: RedisServer, n: int, rounds: int) -> None:
    """Paired runs: each of ours (snapshot; restore in every conflict mode) next to its raw
    peer, who goes first alternating from pair to pair and round to round; every pair is
    printed with the load average, and the ratio is the raw peer's wall time / ours in that
    pair (never a best of N)."""
    client = srv.client()
    load(client, n)
    store = RedisSessionStore(url=srv.url)
    rows = dump_rows(client)
    modes = {
        "snapshot": None,
        "restore overwrite": OnConflict.OVERWRITE,
        "restore skip": OnConflict.SKIP,
        "restore fail (default)": OnConflict.FAIL,
        # Into a server that holds a key (another application's): every id is checked first.
        OTHER_KEYS: OnConflict.FAIL,
    }
    ratios: dict[str, list[float]] = {k: [] for k in modes}
    print("| round | contender | first | load | raw /s | ours /s | raw client CPU s | "
          "ours client CPU s | ours redis CPU s | raw/ours wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        dest = FolderDestination(Path(tmp) / "snaps")
        info = take_snapshot(store, dest)  # a snapshot for the restores of round 0
        for rnd in range(rounds):
            for i, (name, mode) in enumerate(modes.items()):

                def emptied(name: str = name) -> None:
                    client.flushdb()
                    if name == OTHER_KEYS:
                        client.set(b"other-app:counter", b"1")

                def raw(mode: OnConflict | None = mode) -> tuple[float, float, float, Any]:
                    if mode is None:
                        return timed(srv, raw_snapshot, client, Path(tmp) / "raw.jsonl")
                    emptied()
                    return timed(srv, raw_restore, client, rows)

                def ours(mode: OnConflict | None = mode) -> tuple[float, float, float, Any]:
                    if mode is None:
                        return timed(srv, take_snapshot, store, dest)
                    emptied()
                    return timed(srv, restore_snapshot, "latest", dest, store, mode)

                load_avg = os.getloadavg()[0]
                raw_first = (rnd + i) % 2 == 0
                if raw_first:
                    r, o = raw(), ours()
                else:
                    o, r = ours(), raw()
                if mode is None:
                    assert r[3] == n and o[3].count == n, (r[3], o[3])
                    info = o[3]
                else:
                    assert o[3].written == n, o[3]
                ratios[name].append(r[0] / o[0])
                print(f"| {rnd} | {name} | {'raw' if raw_first else 'ours'} | {load_avg:.1f} | "
                      f"{n / r[0]:,.0f} | {n / o[0]:,.0f} | {r[1]:.2f} | {o[1]:.2f} | "
                      f"{o[2]:.2f} | {r[0] / o[0]:.2f} |", flush=True)
            client.flushdb()
            raw_restore(client, rows)  # the data back for the next round's snapshot
        size = (Path(tmp) / "raw.jsonl").stat().st_size
    print()
    print(f"{n} sessions, {size / n:.0f} B/line plain JSON, {info.size / n:.0f} B/session in "
          f"the snapshot (zstd level 1), {rounds} rounds")
    for name, rs in ratios.items():
        print(f"{name}: ratio to raw median {statistics.median(rs):.2f}, "
              f"min {min(rs):.2f}, max {max(rs):.2f}")


def latency(srv: RedisServer, n: int) -> None:
    client = srv.client()
    load(client, 2000)
    store = RedisSessionStore(url=srv.url)
    session = store.create(json.loads(session_state(random.Random(2), 1000)), ttl=3600)
    key = PREFIX + session.id.encode()
    value = client.get(key)
    for _ in range(2000):  # warm up both
        client.get(key)
        store.get(session.id)

    def sample(raw_fn, ours_fn) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
        """Interleaved, so that both see the same machine noise."""
        raw, ours = [], []
        for _ in range(n):
            t = time.perf_counter_ns()
            raw_fn()
            t2 = time.perf_counter_ns()
            ours_fn()
            t3 = time.perf_counter_ns()
            raw.append((t2 - t) / 1e6)
            ours.append((t3 - t2) / 1e6)
        return raw, ours

    pairs = {
        "get": (lambda: client.get(key), lambda: store.get(session.id)),
        "put": (lambda: client.set(key, value, px=3600_000), lambda: store.put(session)),
    }
    for name, (raw_fn, ours_fn) in pairs.items():
        raw, ours = sample(raw_fn, ours_fn)
        q = [statistics.quantiles(x, n=100) for x in (raw, ours)]
        print(f"{name}: raw p50 {q[0][49]:.3f} ms p99 {q[0][98]:.3f} ms | RedisSessionStore "
              f"p50 {q[1][49]:.3f} ms p99 {q[1][98]:.3f} ms | added p50 "
              f"{q[1][49] - q[0][49]:+.3f} ms p99 {q[1][98] - q[0][98]:+.3f} ms")


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """Run ``synchro-sync ARGS``: (its own peak RSS in MB, the wall seconds).  Read through
    :func:`bench.peers_cmd.run_measured` (GNU time's ``%M``), as the mirror benchmarks do."""
    cli = [sys.executable, "-c", "import sys; from worker.cli import main; "
           "sys.argv = ['synchro-sync'] + sys.argv[1:]; main()", *args]
    run = run_measured(cli, cwd=REPO)
    if run.exit != 0:
        raise SystemExit(f"{args} failed:\n{run.out}")
    print("   ", run.out.strip().splitlines()[-1])
    return run.rss_mb, run.wall


def memory(srv: RedisServer, sizes: list[int]) -> None:
    client = srv.client()
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            client.flushdb()
            load(client, n, pool=50_000)
            dest = str(Path(tmp) / f"snaps-{n}")
            rss_s, t_s = peak_rss_mb(["sessions", "snapshot", "--from", srv.url, "--dest", dest])
            client.flushdb()
            rss_r, t_r = peak_rss_mb(["sessions", "restore", "latest", "--dest", dest,
                                      "--to", srv.url])
            assert client.dbsize() == n, client.dbsize()
            print(f"{n:>9} sessions: snapshot peak RSS {rss_s:6.1f} MB ({t_s:5.1f} s), "
                  f"restore peak RSS {rss_r:6.1f} MB ({t_r:5.1f} s)", flush=True)
            shutil.rmtree(dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["throughput", "latency", "memory"])
    ap.add_argument("-n", type=int, nargs="*", help="session count(s)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    srv = start_redis(password=None)
    try:
        if args.mode == "throughput":
            throughput(srv, (args.n or [100_000])[0], args.rounds)
        elif args.mode == "latency":
            latency(srv, (args.n or [20_000])[0])
        else:
            memory(srv, args.n or [100_000, 1_000_000])
    finally:
        srv.server.cleanup()


if __name__ == "__main__":
    main()
