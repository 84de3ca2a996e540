"""First requests on a freshly started node (cold) against the same requests once warm.

    python bench/cold.py --home DIR [--practices 100000 --ratings 1000000 --cities 2000]
                         [--evict] [--settle S] [--warm-runs 5] [--json-only]

1. builds the node home as ``rss.py`` does (practices and ratings from ``--cities`` cities,
   loaded through ``Store.ingest``), or reuses ``--home DIR`` when it holds one;
2. starts a throwaway nats-server and, per request kind, a fresh node process
   (``citymesh node run --relay``); the moment its API answers, it sends that one request (cold:
   the node's caches are empty, its start-up work may still be running), then the same request
   ``--warm-runs`` times (warm: the median); ``--settle S`` waits S seconds before the first
   request (a coordinator opening the TUI a little after the start). Kinds: ``/v1/status``, a
   text search, a filtered search (sector and target group), the unfiltered listing with its
   facets (what the TUI opens with), a practice's detail, the detail of the most rated practice
   (its ratings), the city list and the detail of the city with the most practices;
3. then one more fresh node taking the kinds in that order (as a coordinator's TUI would);
4. runs the same queries directly against SQLite in this process (the node's query functions on
   a fresh read-only connection with empty caches: cold, then warm): the limit;
5. ``--evict`` first drops the database file's pages from the OS page cache
   (``posix_fadvise(DONTNEED)``, this file only) before each node start and before the direct
   run: a node started after a reboot rather than a restart of the process.

Prints one JSON object: ms per kind, cold and warm, over HTTP and direct. Never part of the test
pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from nodeproc import NodeProcess, proc_memory_mb
from rss import build, db_facts

from citymesh.node import queries, search, trust_view
from citymesh.node.cities import city_detail, list_cities
from citymesh.node.config import Home
from citymesh.node.natsserver import NatsServer, ServerConfig
from citymesh.node.store.db import connect
from citymesh.protocol import api
from citymesh.protocol.identity import identity_of, identity_text

GOAL_MS = 300.0
"""A first request slower than this is what the TUI's coordinator notices."""


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Targets:
    """What the requests ask for, picked from the database before any node starts."""

    practice: str
    rated: str
    city: bytes


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    params: dict[str, str]
    direct: Callable[[Any], object]


def pick(home: Home) -> Targets:
    db = connect(home.db_path, readonly=True)
    try:
        (practice,) = db.execute(
            "SELECT ref FROM practice_search WHERE live ORDER BY docid LIMIT 1 OFFSET 7"
        ).fetchone()
        (rated,) = db.execute(
            "SELECT ref FROM practice_search WHERE live ORDER BY rating_count DESC, ref LIMIT 1"
        ).fetchone()
        (city,) = db.execute(
            "SELECT author FROM practices GROUP BY author ORDER BY count(*) DESC, author LIMIT 1"
        ).fetchone()
    finally:
        db.close()
    return Targets(practice=str(practice), rated=str(rated), city=bytes(city))


def kinds(t: Targets, own: bytes) -> list[Kind]:
    key = b"k" * 32
    today = datetime.datetime.now(datetime.UTC).date()

    def detail(ref: str) -> Callable[[Any], object]:
        author, addr = api.parse_ref(ref)
        return lambda db: queries.practice_detail(db, author, addr, own=own, today=today)

    def found(**params: Any) -> Callable[[Any], object]:
        query = api.PracticeQuery(**params)
        return lambda db: search.search_practices(db, query, key=key)

    def status(db: Any) -> object:
        return queries.counts(db), trust_view.unverified_records(db)

    text = {"q": "housing language"}
    filtered = {"sector": "HOUSING", "target_group": "REFUGEE"}
    city_text = identity_text(t.city)
    return [
        Kind("status", "/v1/status", {}, status),
        Kind("text_search", "/v1/practices", text, found(**text)),
        Kind("filtered_search", "/v1/practices", filtered, found(**filtered)),
        Kind("listing", "/v1/practices", {}, found()),
        Kind("practice_detail", f"/v1/practices/{t.practice}", {}, detail(t.practice)),
        Kind("practice_ratings", f"/v1/practices/{t.rated}", {}, detail(t.rated)),
        Kind("cities", "/v1/cities", {}, lambda db: list_cities(db, own=own)),
        Kind(
            "city_detail",
            f"/v1/cities/{city_text}",
            {},
            lambda db: city_detail(db, t.city, own=own, cursor_key=key),
        ),
    ]


def evict(home: Home) -> None:
    """Drop the database's pages from the OS page cache (this file only)."""
    for path in home.root.glob("node.db*"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


async def _timed(session: aiohttp.ClientSession, kind: Kind) -> float:
    t = time.perf_counter()
    async with session.get(kind.path, params=kind.params) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise SystemExit(f"GET {kind.path} {kind.params}: {resp.status} {body[:300]!r}")
    return round((time.perf_counter() - t) * 1000, 1)


async def _requests(node: NodeProcess, chosen: list[Kind], warm_runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(node.url, headers=node.headers) as session:
        for kind in chosen:
            out[kind.name] = {"cold": await _timed(session, kind)}
        for kind in chosen:
            warm = [await _timed(session, kind) for _ in range(warm_runs)]
            out[kind.name]["warm"] = statistics.median(warm) if warm else None
    return out


def over_http(
    home: Home, relay: str, chosen: list[Kind], args: argparse.Namespace
) -> dict[str, Any]:
    if args.evict:
        evict(home)
    t = time.perf_counter()
    node = NodeProcess(home, [relay]).start()
    started = round((time.perf_counter() - t) * 1000)
    time.sleep(args.settle)
    try:
        timings = asyncio.run(_requests(node, chosen, args.warm_runs))
        memory = proc_memory_mb(node.pid)
    finally:
        node.stop()
    return {"start_ms": started, "requests": timings, "memory": memory}


def direct(home: Home, chosen: list[Kind], args: argparse.Namespace) -> dict[str, Any]:
    """The node's own query functions on one fresh read-only connection, caches empty."""
    if args.evict:
        evict(home)
    search.reset_caches()
    db = connect(home.db_path, readonly=True)
    out: dict[str, Any] = {}
    try:
        for kind in chosen:
            t = time.perf_counter()
            kind.direct(db)
            out[kind.name] = {"cold": round((time.perf_counter() - t) * 1000, 1)}
        for kind in chosen:
            warm = []
            for _ in range(args.warm_runs):
                t = time.perf_counter()
                kind.direct(db)
                warm.append(round((time.perf_counter() - t) * 1000, 1))
            out[kind.name]["warm"] = statistics.median(warm) if warm else None
    finally:
        db.close()
        search.reset_caches()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json_only
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="citymesh-bench-cold-") as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(ServerConfig(store_dir=tmp / "relay", server_name="bench-cold-relay"))
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
            chosen = kinds(pick(home), identity_of(home.load_genesis()))
            isolated: dict[str, Any] = {}
            for kind in chosen:
                log(f"fresh node: {kind.name}", quiet)
                one = over_http(home, url, [kind], args)
                isolated[kind.name] = {**one["requests"][kind.name], "start_ms": one["start_ms"]}
            log("fresh node: every kind in turn", quiet)
            sequence = over_http(home, url, chosen, args)
            log("direct", quiet)
            limit = direct(home, chosen, args)
        finally:
            server.stop()
    load1 = os.getloadavg()
    slow = sorted(k for k, v in isolated.items() if v["cold"] > GOAL_MS)
    return {
        "bench": "cold",
        "evicted_page_cache": args.evict,
        "settle_s": args.settle,
        "isolated": isolated,
        "in_turn": sequence["requests"],
        "in_turn_memory": sequence["memory"],
        "direct": limit,
        "cold_over_goal": slow,
        "goal_ms": GOAL_MS,
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
    parser.add_argument("--evict", action="store_true", help="drop the database from page cache")
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds between the API answering and the first request",
    )
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.cities < 2 or args.practices < args.cities:
        parser.error("need practices >= cities >= 2")
    print(json.dumps(run(args), indent=None if args.json_only else 2))


if __name__ == "__main__":
    main()
