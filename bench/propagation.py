"""Propagation latency: publish on node A (HTTP API) until node B announces it on SSE.

    python bench/propagation.py [--records 10000] [--warmup 200] [--interval-ms 0]

1. starts a real nats-server (``NatsServer``) and two real node processes (``citymesh node run``
   with that relay, each its own home and SQLite), A and B;
2. baseline, through the same nats-server and in the same process as the measurement: raw NATS
   latency from publish to the subscriber's callback for the same number of messages of the
   records' sizes, (a) core NATS publish -> subscription, (b) JetStream publish (acknowledged,
   ``sync_interval: always``) -> ordered push consumer, the way a node consumes its stream;
3. B publishes 20 practices through its API and A receives them; then the bench holds
   ``GET /v1/events`` open on B and publishes on A through its API, one request after the other
   (the next as soon as A answered 201, or every ``--interval-ms``): four ratings of B's
   practices for every new practice of A. Each record's latency is the time from sending the
   POST to A until B's SSE ``id:`` line with the record id arrives; also from A's 201;
4. prints one JSON object: p50/p90/p99/max in ms end to end and from A's answer, the POST
   latency on A, the baselines, and ``goal_met`` (p99 end to end < 50 ms).

Timestamps are ``time.perf_counter`` in this process for every leg. Never part of the test
pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
from nats.js import api as js_api
from nodeproc import NodeProcess, make_home, percentiles, proc_cpu_seconds
from search import practice_body, sentence

from citymesh.node.natsserver import NatsServer, ServerConfig
from citymesh.protocol.identity import identity_text

NETWORK = "benchnet"
GOAL_P99_MS = 50.0
SIZES = (632, 632, 632, 632, 3395)
"""Envelope bytes of the baseline messages: a rating's and a practice's mean size (citygen)."""
DRAIN_TIMEOUT = 60.0


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# -- baseline: raw NATS through the same server ----------------------------------------------------
async def nats_baseline(url: str, n: int, interval: float) -> dict[str, Any]:
    payloads = [os.urandom(SIZES[i % len(SIZES)]) for i in range(len(SIZES))]
    sub_nc = await nats.connect(url)
    pub_nc = await nats.connect(url)
    try:
        # (a) core NATS
        arrivals: dict[int, float] = {}

        async def on_core(msg: Any) -> None:
            arrivals[int.from_bytes(msg.data[:4], "big")] = time.perf_counter()

        await sub_nc.subscribe("benchbase.core", cb=on_core)
        await sub_nc.flush()
        sent: dict[int, float] = {}
        for i in range(n):
            data = i.to_bytes(4, "big") + payloads[i % len(payloads)][4:]
            sent[i] = time.perf_counter()
            await pub_nc.publish("benchbase.core", data)
            await pub_nc.flush()
            if interval:
                await asyncio.sleep(interval)
        await _drain(lambda: len(arrivals) >= n)
        core = [(arrivals[i] - sent[i]) * 1000 for i in range(n) if i in arrivals]

        # (b) JetStream publish -> ordered push consumer, as a node consumes its stream
        js = pub_nc.jetstream(timeout=30)
        await js.add_stream(
            js_api.StreamConfig(
                name="BENCHBASE", subjects=["benchbase.js.>"], storage=js_api.StorageType.FILE
            )
        )
        js_arrivals: dict[int, float] = {}

        async def on_js(msg: Any) -> None:
            js_arrivals[int.from_bytes(msg.data[:4], "big")] = time.perf_counter()

        sub = await sub_nc.jetstream().subscribe(
            "benchbase.js.>", stream="BENCHBASE", cb=on_js, ordered_consumer=True
        )
        js_sent: dict[int, float] = {}
        acked: list[float] = []
        for i in range(n):
            data = i.to_bytes(4, "big") + payloads[i % len(payloads)][4:]
            t = js_sent[i] = time.perf_counter()
            await js.publish(f"benchbase.js.a{i % 100}", data, stream="BENCHBASE")
            acked.append((time.perf_counter() - t) * 1000)
            if interval:
                await asyncio.sleep(interval)
        await _drain(lambda: len(js_arrivals) >= n)
        await sub.unsubscribe()
        jet = [(js_arrivals[i] - js_sent[i]) * 1000 for i in range(n) if i in js_arrivals]
        await js.delete_stream("BENCHBASE")
    finally:
        await pub_nc.close()
        await sub_nc.close()
    return {
        "core_publish_to_subscriber_ms": percentiles(core, 3),
        "jetstream_publish_to_ordered_consumer_ms": percentiles(jet, 3),
        "jetstream_publish_ack_ms": percentiles(acked, 3),
        "lost": {"core": n - len(core), "jetstream": n - len(jet)},
    }


async def _drain(done: Any, timeout: float = DRAIN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


# -- the nodes --------------------------------------------------------------------------------------
class SseReader:
    """Reads B's /v1/events; notes when each record id arrives."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.ready = asyncio.Event()

    async def run(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with session.get(f"{url}/v1/events", headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                raise SystemExit(f"GET /v1/events: {resp.status}")
            async for line in resp.content:
                if line.startswith(b"id: "):
                    self.arrivals[line[4:].strip().decode()] = time.perf_counter()
                elif line.startswith(b":"):
                    self.ready.set()


async def post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: object
) -> dict[str, Any]:
    async with session.post(url, data=msgspec.json.encode(body), headers=headers) as resp:
        data = await resp.read()
        if resp.status != 201:
            raise SystemExit(f"POST {url}: {resp.status} {data[:300]!r}")
        out: dict[str, Any] = json.loads(data)
        return out


def practice_json(rng_seed: int, addr: str) -> dict[str, Any]:
    import random  # noqa: PLC0415

    body = practice_body(random.Random(rng_seed), rng_seed)
    return {**msgspec.to_builtins(body), "addr": addr}


async def measure_nodes(
    a: NodeProcess, b: NodeProcess, n: int, warmup: int, interval: float, quiet: bool
) -> dict[str, Any]:
    import random  # noqa: PLC0415

    rng = random.Random(7)
    hdr_a = {**a.headers, "Content-Type": "application/json"}
    hdr_b = {**b.headers, "Content-Type": "application/json"}
    b_identity = identity_text(b.home.identity())
    connector = aiohttp.TCPConnector(limit=10)
    async with aiohttp.ClientSession(connector=connector) as session:
        reader = SseReader()
        sse_task = asyncio.create_task(reader.run(session, b.url, b.headers))
        await asyncio.wait_for(reader.ready.wait(), 30)
        # B's practices, for A to rate
        addrs = [f"b-practice-{k}" for k in range(20)]
        for k, addr in enumerate(addrs):
            await post(session, f"{b.url}/v1/practices", hdr_b, practice_json(1000 + k, addr))
        deadline = time.monotonic() + 60
        while True:
            async with session.get(
                f"{a.url}/v1/practices/{b_identity}/{addrs[-1]}", headers=a.headers
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("A never received B's practices")
            await asyncio.sleep(0.05)
        log(f"B's practices are on A; publishing {warmup} + {n} records on A", quiet)
        sent: dict[str, tuple[float, float, str]] = {}
        cpu_a0, cpu_b0 = proc_cpu_seconds(a.pid), proc_cpu_seconds(b.pid)
        t_start = time.perf_counter()
        for i in range(warmup + n):
            if i % 5 == 0:
                kind = "practice"
                url, body = f"{a.url}/v1/practices", practice_json(i, f"a-practice-{i}")
            else:
                kind = "rating"
                target = rng.choice(addrs)
                url = f"{a.url}/v1/practices/{b_identity}/{target}/ratings"
                body = {"score": rng.randint(1, 5), "comment": sentence(rng, rng.randint(5, 40))}
            t0 = time.perf_counter()
            answer = await post(session, url, hdr_a, body)
            t1 = time.perf_counter()
            if i >= warmup:
                sent[answer["id"]] = (t0, t1, kind)
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t0)))
        publish_seconds = time.perf_counter() - t_start
        await _drain(lambda: all(rid in reader.arrivals for rid in sent))
        cpu = {
            "node_a": round(proc_cpu_seconds(a.pid) - cpu_a0, 1),
            "node_b": round(proc_cpu_seconds(b.pid) - cpu_b0, 1),
        }
        sse_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await sse_task
    end_to_end: list[float] = []
    from_ack: list[float] = []
    post_ms: list[float] = []
    by_kind: dict[str, list[float]] = {}
    for rid, (t0, t1, kind) in sent.items():
        post_ms.append((t1 - t0) * 1000)
        if rid in reader.arrivals:
            ms = (reader.arrivals[rid] - t0) * 1000
            end_to_end.append(ms)
            from_ack.append((reader.arrivals[rid] - t1) * 1000)
            by_kind.setdefault(kind, []).append(ms)
    return {
        "records": n,
        "delivered": len(end_to_end),
        "publish_seconds": round(publish_seconds, 1),
        "publish_rate_per_s": round(n / publish_seconds, 1),
        "end_to_end_ms": percentiles(end_to_end),
        "from_a_answer_ms": percentiles(from_ack),
        "post_on_a_ms": percentiles(post_ms),
        "end_to_end_by_kind_ms": {k: percentiles(v) for k, v in sorted(by_kind.items())},
        "cpu_seconds": cpu,
    }


async def run_async(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    quiet = args.json_only
    interval = args.interval_ms / 1000
    server = NatsServer(ServerConfig(store_dir=tmp / "relay", server_name="bench-prop-relay"))
    await asyncio.to_thread(server.start)
    try:
        url = server.client_url
        log(f"baseline: raw NATS through {url}, {args.records} messages each", quiet)
        baseline = await nats_baseline(url, args.records, interval)
        home_a = make_home(tmp / "a", "Node A", NETWORK, [url])
        home_b = make_home(tmp / "b", "Node B", NETWORK, [url])
        a = await asyncio.to_thread(NodeProcess(home_a, [url]).start)
        try:
            b = await asyncio.to_thread(NodeProcess(home_b, [url]).start)
            try:
                nodes = await measure_nodes(a, b, args.records, args.warmup, interval, quiet)
            finally:
                await asyncio.to_thread(b.stop)
        finally:
            await asyncio.to_thread(a.stop)
    finally:
        await asyncio.to_thread(server.stop)
    p99 = nodes["end_to_end_ms"].get("p99")
    js_p99 = baseline["jetstream_publish_to_ordered_consumer_ms"].get("p99")
    p50 = nodes["end_to_end_ms"].get("p50")
    js_p50 = baseline["jetstream_publish_to_ordered_consumer_ms"].get("p50")
    return {
        "bench": "propagation",
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": p99 is not None and p99 < GOAL_P99_MS and nodes["delivered"] == args.records,
        "ratio_p99_to_jetstream_baseline": round(p99 / js_p99, 1) if p99 and js_p99 else None,
        "ratio_p50_to_jetstream_baseline": round(p50 / js_p50, 1) if p50 and js_p50 else None,
        "nodes": nodes,
        "baseline_raw_nats": baseline,
        "interval_ms": args.interval_ms,
        "cpus": os.cpu_count(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="citymesh-bench-prop-") as tmp_name:
        result = asyncio.run(run_async(args, Path(tmp_name)))
    load1 = os.getloadavg()
    result["load_average_1m"] = [round(load0[0], 2), round(load1[0], 2)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--interval-ms", type=float, default=0.0, help="pace publishes (0: back to back)"
    )
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.records < 1 or args.warmup < 0:
        parser.error("need at least one record")
    print(json.dumps(run(args), indent=None if args.json_only else 2))


if __name__ == "__main__":
    main()
