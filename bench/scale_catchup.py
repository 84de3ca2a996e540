"""Catch-up at scale: a fresh node takes in a relay's log of N records from 2,000 cities.

    python bench/scale_catchup.py [--records 1000000] [--cities 2000] [--seed 1] [--profile]

1. signs N records (``citygen``: genesis city records, then 15% practices, 55% ratings, 10%
   replications, 20% indicator tables, shuffled per city, every chain in seq order) in a process
   pool, cached under the bench cache directory keyed by N, cities and seed;
2. starts a real nats-server (``NatsServer``, ``sync_interval: always``), creates the network's
   stream with ``ensure_stream`` and publishes the records interleaved across cities with
   JetStream publish (``Nats-Msg-Id`` = record id) on ``cm.<network>.<author>.<kind>``. The
   relay's store is cached too (copied back on the next run with the same key), because
   publishing a million records one fsync each takes a while;
3. measures the raw single-thread signature verification rate (``crypto_sign_open``) on 5,000
   of the same envelopes, before and after the catch-up (the best pass is the limit);
4. starts a fresh node in a child process (``bench/ingest.py --child``: ``Node.start`` with the
   relay configured, nothing else) and polls its SQLite every 50 ms until all N records are
   applied; records the elapsed time at every tenth of N, so the rate's change with the size of
   the store is visible in one run;
5. prints one JSON object: records/s, the ratio to raw verification (goal >= 1.0), peak RSS of
   the node, wall time, the rate per tenth, the mix and sizes, and the load average.

``--profile`` runs the node child under cProfile (event loop and writer threads) and prints the
top entries to stderr. Never part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import citygen
import ingest

from citymesh.node.config import CityConfig, Home, NodeConfig
from citymesh.node.natsserver import NatsServer, ServerConfig
from citymesh.node.setup import init_home

GOAL_RATIO = 1.0
POLL = 0.05
VERIFY_SAMPLE = 5000


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def relay_cache(cache_file: Path) -> Path:
    return cache_file.with_name(cache_file.stem + ".relay")


def start_relay(
    tmp: Path, cached: Path, messages: list[citygen.Message], quiet: bool
) -> tuple[NatsServer, float, bool]:
    """A relay holding every message: from the cached store if there is one, else published now
    (and then cached). Returns (server, publish seconds, reused)."""
    store = tmp / "relay"
    if cached.exists():
        t = time.perf_counter()
        shutil.copytree(cached, store)
        log(f"relay store copied from {cached} in {time.perf_counter() - t:.1f} s", quiet)
        server = NatsServer(ServerConfig(store_dir=store, server_name="bench-scale-relay"))
        server.start()
        return server, 0.0, True
    server = NatsServer(ServerConfig(store_dir=store, server_name="bench-scale-relay"))
    server.start()
    t = time.perf_counter()
    asyncio.run(ingest.publish_all(server.client_url, messages))
    seconds = time.perf_counter() - t
    log(f"published {len(messages):,} in {seconds:.1f} s", quiet)
    server.stop()
    partial = cached.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(store, partial)
    partial.rename(cached)
    server = NatsServer(ServerConfig(store_dir=store, server_name="bench-scale-relay"))
    server.start()
    return server, seconds, False


async def stream_count(url: str) -> int:
    import nats  # noqa: PLC0415

    from citymesh.protocol.subjects import stream_name  # noqa: PLC0415

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream(timeout=30).stream_info(stream_name(citygen.NETWORK))
        return int(info.state.messages)
    finally:
        await nc.close()


def catch_up(
    home: Home, records: int, profile: str | None, timeout: float
) -> tuple[float, list[tuple[int, float]], dict[str, Any], dict[str, Any]]:
    """Run the node child until all records are applied: (seconds, [(applied, elapsed)] at each
    tenth, child report, db facts)."""
    own = home.identity()
    cmd = [sys.executable, str(Path(ingest.__file__).resolve()), "--child", str(home.root)]
    if profile:
        cmd += ["--profile-out", profile]
    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    marks: list[tuple[int, float]] = []
    try:
        line = child.stdout.readline()
        if not line.startswith("started "):
            raise SystemExit(f"node child failed to start: {line!r}")
        t0 = float(line.split()[1])
        db = sqlite3.connect(f"file:{home.db_path}?mode=ro", uri=True)
        next_mark = 1
        while True:
            count = ingest.applied_count(db, own)
            elapsed = time.monotonic() - t0
            while next_mark <= 10 and count >= records * next_mark // 10:
                marks.append((count, elapsed))
                next_mark += 1
            if count >= records:
                break
            if elapsed > timeout or child.poll() is not None:
                raise SystemExit(f"catch-up stalled at {count} of {records}")
            time.sleep(POLL)
        seconds = time.monotonic() - t0
        facts = {
            "applied_records": db.execute(
                "SELECT count(*) FROM records WHERE state = 'applied' AND author != ?", (own,)
            ).fetchone()[0],
            "rejections": dict(db.execute("SELECT reason, count FROM rejections").fetchall()),
        }
        db.close()
        child.stdin.write("stop\n")
        child.stdin.flush()
        report: dict[str, Any] = {}
        for out in child.stdout:
            if out.startswith("report "):
                report = json.loads(out[len("report ") :])
        child.wait(120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return seconds, marks, report, facts


def tenths(marks: list[tuple[int, float]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    prev_n, prev_t = 0, 0.0
    for n, t in marks:
        window = n - prev_n
        out.append(
            {
                "applied": n,
                "elapsed_s": round(t, 1),
                "window_records_per_s": round(window / (t - prev_t), 1) if t > prev_t else None,
            }
        )
        prev_n, prev_t = n, t
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json_only
    mix = citygen.Mix.typical(args.records, args.cities)
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    cache_file, sign_seconds = citygen.generate(mix, args.cities, args.seed, quiet=quiet)
    t = time.perf_counter()
    messages = citygen.load_messages(cache_file)
    read_seconds = time.perf_counter() - t
    if len(messages) != args.records:
        raise SystemExit(f"cache holds {len(messages)} records, not {args.records}")
    sizes = citygen.size_stats(messages)
    payload_bytes = sum(len(env) for _, _, env in messages)
    sample = random.Random(1).sample(messages, min(VERIFY_SAMPLE, len(messages)))
    inputs = ingest.verify_inputs([env for _, _, env in sample])
    with tempfile.TemporaryDirectory(prefix="citymesh-bench-scale-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        server, publish_seconds, reused = start_relay(tmp, relay_cache(cache_file), messages, quiet)
        del messages, sample
        try:
            url = server.client_url
            held = asyncio.run(stream_count(url))
            if held != args.records:
                raise SystemExit(f"the relay holds {held} records, not {args.records}")
            if args.prepare_only:
                return {
                    "bench": "scale_catchup",
                    "prepared": str(cache_file),
                    "records": args.records,
                    "sign_seconds": round(sign_seconds, 1),
                    "publish_seconds": round(publish_seconds, 1),
                }
            raw, raw_cpu = ingest.raw_verify_rate(inputs)
            log(f"raw single-thread verification: {raw:,.0f}/s", quiet)
            home = Home(tmp / "node")
            init_home(
                home,
                NodeConfig(
                    city=CityConfig(name="Bench Node", country="BEL"),
                    network=citygen.NETWORK,
                    relays=[url],
                    listen="127.0.0.1:0",
                ),
            )
            profile = str(tmp / "profile") if args.profile else None
            log(f"catching up {args.records:,} records", quiet)
            seconds, marks, report, facts = catch_up(home, args.records, profile, args.timeout)
            log(f"caught up in {seconds:.1f} s", quiet)
            after, after_cpu = ingest.raw_verify_rate(inputs)
            raw, raw_cpu = max(raw, after), max(raw_cpu, after_cpu)
            db_bytes = sum(
                p.stat().st_size for p in home.root.glob("node.db*") if p.name != "node.db-shm"
            )
            if profile:
                ingest.print_profile(profile, quiet)
        finally:
            server.stop()
    rate = args.records / seconds
    load1 = os.getloadavg()
    # VmHWM: the node process's own peak since it started. ru_maxrss is not it: Linux carries the
    # high-water mark across exec, so it includes the bench parent (holding every signed record)
    # that the node child was forked from: 2 GB at 1,000,000 records, none of it the node's.
    peak = report.get("vmhwm_mb", 0.0)
    result: dict[str, Any] = {
        "bench": "scale_catchup",
        "records": args.records,
        "cities": args.cities,
        "seed": args.seed,
        "catchup_seconds": round(seconds, 1),
        "records_per_second": round(rate, 1),
        "raw_verify_per_second": round(raw, 1),
        "ratio": round(rate / raw, 3),
        "goal_ratio": GOAL_RATIO,
        "goal_met": rate / raw >= GOAL_RATIO,
        "peak_rss_mb": peak,
        "ru_maxrss_mb_incl_fork": report.get("ru_maxrss_mb"),
        "by_tenth": tenths(marks),
        "node_cpu_seconds": report.get("cpu_seconds"),
        "raw_verify_per_cpu_second": round(raw_cpu, 1),
        "mix": sizes,
        "mean_envelope_bytes": round(payload_bytes / args.records),
        "db_mb": round(db_bytes / 2**20, 1),
        **facts,
        "sign_seconds": round(sign_seconds, 1),
        "cache_read_seconds": round(read_seconds, 1),
        "publish_seconds": round(publish_seconds, 1),
        "relay_store_reused": reused,
        "wall_seconds_total": round(time.perf_counter() - t_all, 1),
        "cpus": os.cpu_count(),
        "load_average_1m": [round(load0[0], 2), round(load1[0], 2)],
        "python": sys.version.split()[0],
        "nats_server": ingest.nats_version(),
    }
    if report.get("timers"):
        result["timers"] = report["timers"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--cities", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0, help="catch-up seconds at most")
    parser.add_argument("--tmp", help="directory for the relay store and the node home")
    parser.add_argument("--profile", action="store_true", help="profile the node (slower)")
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="sign, publish and cache the records and the relay store, then exit",
    )
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.cities < 2 or args.records < args.cities:
        parser.error("need records >= cities >= 2")
    print(json.dumps(run(args), indent=None if args.json_only else 2))


if __name__ == "__main__":
    main()
