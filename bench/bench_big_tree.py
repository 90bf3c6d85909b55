"""Big trees: peak RSS and time per file of `synchro-sync sync` from 10,000 to 1,000,000 files
(see docs/benchmarks.md, section Mirror, "Big trees").

    python bench/bench_big_tree.py passes --files 100000 --store file [--code DIR,DIR2] [--reps 1]
    python bench/bench_big_tree.py passes --files 100000 --store s3
    python bench/bench_big_tree.py curve --keep DIR [--files 1000000] [--sizes 10000,...]

Data: 10,000 files per app (``--per-app``; ``app000/pkgNNN/fNNNNNNN.js``, folders of 100
files), 100-400 random bytes each (seeded), fixed old mtimes; 100,000 files are 10 apps,
1,000,000 are 100.

``passes``: per contender and repetition, a fresh copy of the tree and an empty store and state
folder (new folders each time, all deleted at the end: the space of every repetition is held
until then), then the passes *initial*, *noop* (no change) and *changed* (100 files changed: 34
touched, 33 rewritten at the same size, 33 at a new size; and 100 others deleted).  The store is
a ``FileModuleStore`` folder (``--store file``) or one moto S3 bucket (``--store s3``, moto
started as ``bench/bench_mirror.py`` does; the bucket is compared with the tree after every
pass).

``curve``: one tree of ``--files`` under ``--keep DIR`` (made once, kept for the next run:
delete it yourself), mirrored once into a ``FileModuleStore`` (the *initial* pass, timed on its
first run only), then no-change passes over its first 10k, 100k, ... files (``sync app000
app001 ...``: the first N / 10,000 apps, with the whole store and index behind them).

``--code DIR[,DIR2]``: the contenders, each a checkout whose ``worker`` package is run (through
``PYTHONPATH``), or ``rclone`` (``rclone sync`` into the folder; ``--store file`` only); the
default is the installed one.  With two, who goes first alternates every
repetition.  ``--fill-once``: the tree, store and state are filled once, by the first
contender's initial pass, and every contender's no-change and changed passes run on them (for
the moto S3 store, whose initial pass of 100,000 files takes 10-25 minutes).  Each pass runs
``synchro-sync sync`` in its own process; wall time around it, and its client CPU and peak RSS
from ``wait4`` (the peak RSS through GNU time: ``ru_maxrss`` would include this process's
own size, see ``bench.peers_cmd.own_peak_rss``); the one-minute load average just before.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.bench_mirror import KEY, OLD_MTIME, SECRET, Moto, mutate, run_tool  # noqa: E402
from bench.peers_cmd import peer_env, run_measured  # noqa: E402

PER_APP = 10_000
PER_FOLDER = 100
#: Runs the CLI from the checkout on PYTHONPATH as its console script does (``script``; a
#: checkout older than it has only ``main``).
_CLI = "import sys, worker.cli as c; sys.exit(getattr(c, 'script', c.main)())"


def app_name(i: int) -> str:
    return f"app{i:03d}"


def gen_tree(root: Path, n: int, seed: int = 7, per_app: int = PER_APP) -> list[str]:
    """``n`` small files, ``per_app`` per app; returns their paths relative to ``root``."""
    rnd = random.Random(seed)
    keys: list[str] = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for i in range(n):
        app, within = divmod(i, per_app)
        folder = root / app_name(app) / f"pkg{within // PER_FOLDER:02d}"
        if within % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        rel = f"{app_name(app)}/pkg{within // PER_FOLDER:02d}/f{i:07d}.js"
        path = str(root / rel)
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, rnd.randbytes(rnd.randint(100, 400)))
        finally:
            os.close(fd)
        os.utime(path, (OLD_MTIME, OLD_MTIME))
        keys.append(rel)
    return keys


def code_env(code: str) -> dict[str, str]:
    """The environment that makes ``code`` (a checkout, or "" for the installed one) run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCHRO")}
    if code:
        env["PYTHONPATH"] = str(Path(code).resolve())
    else:
        env.pop("PYTHONPATH", None)
    return env


def run_file(code: str, phase: str, src: Path, dest: Path, state: Path,
             containers: list[str] | None = None) -> dict[str, Any]:
    """One ``synchro-sync sync`` into a FileModuleStore at ``dest``, measured."""
    env = code_env(code)
    env.update({
        "SYNCHRO__APP_ROOT_PATH": str(src), "SYNCHRO__STATE_DIR": str(state),
        "SYNCHRO__MODULESTORE_SERVICE": "FileModuleStore",
        "SYNCHRO__MODULESTORE": json.dumps({"directory": str(dest)}),
        "SYNCHRO__SYNC__transfers": "16",
    })
    # -P: the checkout on PYTHONPATH, not whatever folder this runs from.
    argv = [sys.executable, "-P", "-c", _CLI, "sync", *(containers or [])]
    lines, row = _measured_row(phase, argv, env)
    return dict(row, errors=[x for x in lines if "failed:" in x][:3])


def _measured_row(phase: str, argv: list[str], env: dict[str, str] | None = None
                  ) -> tuple[list[str], dict[str, Any]]:
    """Run ``argv`` (:func:`run_measured`): its output lines and the pass's row."""
    load = os.getloadavg()[0]
    run = run_measured(argv, env)
    lines = run.out.strip().splitlines()
    return lines, {
        "phase": phase, "wall": round(run.wall, 3), "load": round(load, 2),
        "at": time.strftime("%H:%M:%S", time.gmtime()), "exit": run.exit,
        "client_cpu": round(run.cpu, 2), "rss_mb": run.rss_mb, "tail": lines[-1:],
    }


def compare_dirs(src: Path, dest: Path) -> str:
    """The store folder against the tree: same keys and sizes (apps only)."""
    def walk(base: Path) -> dict[str, int]:
        out = {}
        for dirpath, _d, files in os.walk(base):
            for name in files:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, base)
                if "/" in rel:
                    out[rel] = os.stat(full).st_size
        return out

    a, b = walk(src), walk(dest)
    missing = sum(1 for k in a if k not in b)
    extra = sum(1 for k in b if k not in a)
    differ = sum(1 for k in a if k in b and a[k] != b[k])
    return "ok" if not (missing or extra or differ) else (
        f"missing {missing}, extra {extra}, size differs {differ}")


def run_rclone(phase: str, src: Path, dest: Path) -> dict[str, Any]:
    """``rclone sync`` of the tree into the folder ``dest`` (the peer of a FileModuleStore:
    its default check, size and modification time, as our index's stat check)."""
    return _measured_row(phase, ["rclone", "sync", str(src), str(dest), "--config", "/dev/null",
                                 "--transfers", "16", "--checkers", "16"])[1]


def run_pass(args: argparse.Namespace, moto: Moto | None, code: str, phase: str, src: Path,
             dest: Path, state: Path) -> dict[str, Any]:
    """One measured pass of ``code`` (or of rclone, ``--code rclone``) into the bench's
    store."""
    if code == "rclone":
        if moto is not None:
            raise SystemExit("--code rclone: only with --store file (bench_mirror.py runs "
                             "rclone against S3)")
        r = run_rclone(phase, src, dest)
        if args.check:
            r["check"] = compare_dirs(src, dest)
    elif moto is None:
        r = run_file(code, phase, src, dest, state)
        if args.check:
            r["check"] = compare_dirs(src, dest)
    else:
        env = peer_env(KEY, SECRET, moto.url)
        env.update({k: v for k, v in code_env(code).items() if k == "PYTHONPATH"})
        r = run_tool("ours", phase, src, "bench", moto, state, env)
    r.update(code=code or "installed", files=args.files, store=args.store)
    print(json.dumps(r), flush=True)
    return r


def cmd_filled_once(args: argparse.Namespace, moto: Moto | None, work: Path
                    ) -> list[dict[str, Any]]:
    """``--fill-once``: one tree, store and state for every contender.  The first contender's
    initial pass fills them (reported once); then per repetition and contender, in alternating
    order, a no-change pass and a pass after 100 changed + 100 deleted files (new ones each
    time), each on what the one before left (both contenders read the same index format)."""
    codes = args.code.split(",")
    src, dest, state = work / "src", work / "dest", work / "state"
    keys = gen_tree(src, args.files, per_app=args.per_app)
    if moto is not None:
        moto.reset("bench")
    results = [dict(run_pass(args, moto, codes[0], "initial", src, dest, state), rep="fill")]
    for rep in range(args.reps):
        order = codes[rep % len(codes):] + codes[: rep % len(codes)]
        for n, code in enumerate(order):
            results.append(dict(run_pass(args, moto, code, "noop", src, dest, state), rep=rep))
            mutate(src, keys, seed=100 + rep * len(codes) + n)
            keys = [k for k in keys if (src / k).exists()]
            # The rows the changed pass writes vouch for the files only once their mtime is
            # RACY_NS old: so that the next contender's no-change pass hashes nothing.
            time.sleep(2.5)
            results.append(dict(run_pass(args, moto, code, "changed", src, dest, state),
                                rep=rep))
    return results


def cmd_passes(args: argparse.Namespace) -> list[dict[str, Any]]:
    codes = args.code.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-bigtree-", dir=args.tmp))
    results: list[dict[str, Any]] = []
    moto = Moto(work) if args.store == "s3" else None
    try:
        if args.fill_once:
            return cmd_filled_once(args, moto, work)
        pristine = work / "pristine"
        keys = gen_tree(pristine, args.files, per_app=args.per_app)
        for rep in range(args.reps):
            order = codes[rep % len(codes):] + codes[: rep % len(codes)]
            for n, code in enumerate(order):
                # Fresh folders, none deleted until the end: on an ext4 without a journal (the
                # disks of these machines) every file created within a minute or more of a
                # mass delete first skips each inode just freed, and a pass after deleting the
                # last one's 40,000 files took 2-5x as long, whoever ran it.
                run = work / f"rep{rep}-{n}"
                src, dest, state = run / "src", run / "dest", run / "state"
                run.mkdir()
                subprocess.run(["cp", "-a", str(pristine), str(src)], check=True)
                if moto is not None:
                    moto.reset("bench")
                for phase in ("initial", "noop", "changed"):
                    if phase == "changed":
                        mutate(src, keys)
                    r = run_pass(args, moto, code, phase, src, dest, state)
                    results.append(dict(r, rep=rep))
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    return results


def cmd_curve(args: argparse.Namespace) -> list[dict[str, Any]]:
    keep = Path(args.keep)
    src, dest, state = keep / "src", keep / "dest", keep / "state"
    codes = args.code.split(",")
    results: list[dict[str, Any]] = []
    made, mirrored = keep / "tree.json", keep / "initial.json"
    if not made.exists() or json.loads(made.read_text())["files"] != args.files:
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
        t0 = time.monotonic()
        gen_tree(src, args.files)
        print(f"tree of {args.files} files made in {time.monotonic() - t0:.0f} s", flush=True)
        made.write_text(json.dumps({"files": args.files}))
    if not mirrored.exists():
        for p in (dest, state):
            shutil.rmtree(p, ignore_errors=True)
        r = run_file(codes[0], "initial", src, dest, state)
        r.update(code=codes[0] or "installed", files=args.files, store="file")
        results.append(r)
        print(json.dumps(r), flush=True)
        if r["exit"] != 0:
            raise SystemExit(f"initial pass failed: {r}")
        mirrored.write_text(json.dumps(r))
    sizes = [int(s) for s in args.sizes.split(",")]
    for rep in range(args.reps):
        order = codes[rep % len(codes):] + codes[: rep % len(codes)]
        for size in sizes:
            apps = [app_name(i) for i in range(-(-size // PER_APP))]
            whole = size >= args.files
            for code in order:
                r = run_file(code, "noop", src, dest, state, None if whole else apps)
                r.update(rep=rep, code=code or "installed", files=size, store="file",
                         us_per_file=round(r["wall"] / size * 1e6, 1))
                results.append(r)
                print(json.dumps(r), flush=True)
    if args.check:
        print("store equals tree:", compare_dirs(src, dest), flush=True)
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    print("| rep | files | store | pass | code (in the order run) | load | wall s | µs/file "
          "| client CPU s | peak RSS MB | result |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ok = r.get("check", "ok" if r["exit"] == 0 else f"exit {r['exit']}")
        print(f"| {r.get('rep', '')} | {r['files']} | {r['store']} | {r['phase']} | "
              f"{r['code']} | {r['load']:.1f} | {r['wall']:.2f} | "
              f"{r['wall'] / r['files'] * 1e6:.0f} | {r['client_cpu']:.2f} | "
              f"{r['rss_mb']:.0f} | {ok} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("passes")
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--store", choices=("file", "s3"), default="file")
    p.add_argument("--check", action="store_true", help="compare the store folder after a pass")
    p.add_argument("--per-app", type=int, default=PER_APP,
                   help="files per app (bench_mirror's tree: 5 apps, so --files / 5)")
    p.add_argument("--fill-once", action="store_true",
                   help="one initial pass (the first contender's), then every contender's "
                   "no-change and changed passes on that store (see cmd_filled_once)")
    c = sub.add_parser("curve")
    c.add_argument("--keep", required=True, help="folder for the tree, store and state")
    c.add_argument("--files", type=int, default=1_000_000)
    c.add_argument("--sizes", default="10000,100000,300000,1000000")
    c.add_argument("--check", action="store_true")
    for q in (p, c):
        q.add_argument("--code", default="", help="checkouts to run, comma-separated")
        q.add_argument("--reps", type=int, default=1)
        q.add_argument("--tmp", default=None, help="where the trees go (default: $TMPDIR)")
        q.add_argument("--out", default=str(HERE / "results" / "big_tree.json"))
    args = ap.parse_args()
    results = cmd_passes(args) if args.cmd == "passes" else cmd_curve(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print()
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
