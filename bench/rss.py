"""Node memory: RSS of a real node process holding 100,000 practices and 1,000,000 ratings.

    python bench/rss.py [--practices 100000] [--ratings 1000000] [--cities 2000] [--home DIR]

1. builds a node home: signs the practices (no new versions) and ratings of other cities'
   practices from ``--cities`` cities (``citygen``, process pool) and loads them through the
   node's own ``Store.ingest`` in-process, in batches of 20,000 (the code path a catch-up uses,
   minus the relay); ``--home DIR`` keeps the home and reuses it next time;
2. starts a throwaway nats-server and, one after the other, two real node processes
   (``citymesh node run --relay``): an idle node (a fresh home: its own genesis record only)
   and the loaded node; for each, RSS after start, then after a few typical requests through
   the HTTP API (status, a text search, a sector filter, sorting by rating, the unfiltered
   listing with its facets, a second page, a practice's detail with its ratings), and the
   peak (VmHWM) over its life;
3. prints one JSON object: the loaded node's RSS after the requests beside the idle node's
   (goal < 300 MB), the difference, anonymous vs file-backed memory, and the database size.

Never part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import citygen
from nodeproc import NodeProcess, make_home, proc_memory_mb

from citymesh.node.config import Home
from citymesh.node.natsserver import NatsServer, ServerConfig
from citymesh.node.store import Store
from citymesh.node.store.db import connect
from citymesh.protocol.records import Record

GOAL_MB = 300.0
BATCH = 20_000
SETTLE = 2.0
"""Seconds to let a started node finish its start-up work before reading its RSS."""


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def build(home: Home, args: argparse.Namespace, relay_url: str, quiet: bool) -> dict[str, Any]:
    make_home(home.root, "Bench RSS Node", citygen.NETWORK, [relay_url])
    mix = citygen.Mix(args.practices, args.ratings, 0, 0, versions=False)
    jobs = citygen.plan(mix, args.cities, seed=args.seed)
    total = mix.total_without_genesis + args.cities
    procs = max(1, os.cpu_count() or 1)
    log(f"signing and loading {total:,} records from {args.cities} cities", quiet)
    t = time.perf_counter()
    store = Store(home.db_path)
    loaded = 0
    ingest_seconds = 0.0
    try:
        batch: list[Record] = []
        now_ms = int(time.time() * 1000)
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            for chain in pool.imap(citygen.sign_city_records, jobs, chunksize=2):
                batch.extend(chain)
                if len(batch) >= BATCH:
                    t_ingest = time.perf_counter()
                    store.ingest(batch, Counter(), now_ms=now_ms)
                    ingest_seconds += time.perf_counter() - t_ingest
                    loaded += len(batch)
                    batch = []
                    log(f"  loaded {loaded:,}/{total:,} ({time.perf_counter() - t:.0f} s)", quiet)
        if batch:
            t_ingest = time.perf_counter()
            store.ingest(batch, Counter(), now_ms=now_ms)
            ingest_seconds += time.perf_counter() - t_ingest
            loaded += len(batch)
    finally:
        store.close()
    seconds = time.perf_counter() - t
    log(f"built in {seconds:.0f} s ({ingest_seconds:.0f} s in Store.ingest)", quiet)
    return {
        "records": loaded,
        "build_seconds": round(seconds, 1),
        "store_ingest_seconds": round(ingest_seconds, 1),
    }


def db_facts(home: Home) -> dict[str, Any]:
    db = connect(home.db_path, readonly=True)
    try:
        facts = {
            "practices": db.execute("SELECT count(*) FROM practices").fetchone()[0],
            "ratings": db.execute("SELECT count(*) FROM ratings").fetchone()[0],
            "records": db.execute("SELECT count(*) FROM records").fetchone()[0],
        }
    finally:
        db.close()
    size = sum(p.stat().st_size for p in home.root.glob("node.db*") if p.name != "node.db-shm")
    facts["db_mb"] = round(size / 2**20, 1)
    return facts


async def typical_requests(node: NodeProcess) -> dict[str, float]:
    """A few requests a coordinator's TUI makes; returns ms per request."""
    timings: dict[str, float] = {}
    async with aiohttp.ClientSession(node.url, headers=node.headers) as session:

        async def get(name: str, path: str, params: dict[str, str] | None = None) -> Any:
            t = time.perf_counter()
            async with session.get(path, params=params) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"GET {path} {params}: {resp.status} {body[:300]!r}")
            timings[name] = round((time.perf_counter() - t) * 1000, 1)
            return json.loads(body)

        await get("status", "/v1/status")
        await get("text_search", "/v1/practices", {"q": "housing language"})
        await get("sector_filter", "/v1/practices", {"sector": "HOUSING"})
        await get("sort_rating", "/v1/practices", {"sort": "rating"})
        listing = await get("listing_unfiltered", "/v1/practices")
        if listing.get("next"):
            await get("second_page", "/v1/practices", {"cursor": listing["next"]})
        await get("text_filtered", "/v1/practices", {"q": "refugees", "target_group": "REFUGEE"})
        if listing["items"]:
            ref = listing["items"][0]["ref"]
            await get("practice_detail", f"/v1/practices/{ref}")
        await get("cities", "/v1/cities")
    return timings


def measure(home: Home, relay_url: str) -> dict[str, Any]:
    node = NodeProcess(home, [relay_url]).start()
    try:
        time.sleep(SETTLE)
        started = proc_memory_mb(node.pid)
        timings = asyncio.run(typical_requests(node))
        time.sleep(0.5)
        after = proc_memory_mb(node.pid)
    finally:
        node.stop()
    return {"after_start": started, "after_requests": after, "request_ms": timings}


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json_only
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="citymesh-bench-rss-") as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(ServerConfig(store_dir=tmp / "relay", server_name="bench-rss-relay"))
        server.start()
        try:
            url = server.client_url
            home = Home(Path(args.home) if args.home else tmp / "loaded")
            build_info: dict[str, Any] = {"reused": True}
            if not home.db_path.exists():
                build_info = build(home, args, url, quiet)
            else:
                log(f"reusing {home.root}", quiet)
            facts = db_facts(home)
            if args.build_only:
                return {"bench": "rss", **facts, "build": build_info}
            idle_home = make_home(tmp / "idle", "Bench Idle Node", citygen.NETWORK, [url])
            log("idle node", quiet)
            idle = measure(idle_home, url)
            log("loaded node", quiet)
            loaded = measure(home, url)
        finally:
            server.stop()
    rss = loaded["after_requests"].get("rss_mb", 0.0)
    idle_rss = idle["after_requests"].get("rss_mb", 0.0)
    load1 = os.getloadavg()
    return {
        "bench": "rss",
        "rss_mb": rss,
        "idle_rss_mb": idle_rss,
        "difference_mb": round(rss - idle_rss, 1),
        "ratio_to_idle": round(rss / idle_rss, 2) if idle_rss else None,
        "peak_rss_mb": loaded["after_requests"].get("peak_rss_mb"),
        "goal_mb": GOAL_MB,
        "goal_met": 0 < rss < GOAL_MB,
        "loaded": loaded,
        "idle": idle,
        **facts,
        "build": build_info,
        "cpus": os.cpu_count(),
        "load_average_1m": [round(load0[0], 2), round(load1[0], 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--practices", type=int, default=100_000)
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--cities", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--home", help="keep (or reuse) the loaded node home in this directory")
    parser.add_argument("--build-only", action="store_true", help="build the home, no nodes")
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.cities < 2 or args.practices < args.cities:
        parser.error("need practices >= cities >= 2")
    print(json.dumps(run(args), indent=None if args.json_only else 2))


if __name__ == "__main__":
    main()
