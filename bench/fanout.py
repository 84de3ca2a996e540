"""Relay fan-out: one nats-server delivering 10,000 records to 200 simulated nodes.

    python bench/fanout.py [--records 10000] [--subscribers 200] [--workers 4] [--rate 0]

The simulated nodes are NATS JetStream ordered push consumers on the network's stream, exactly
the subscription a node's relay link makes (``cm.<network>.>``, ordered consumer, idle
heartbeat), each on its own NATS connection, spread over ``--workers`` Python processes. They
receive and time-stamp records; they do not verify or store them (that is ``scale_catchup.py``):
what is measured is the relay's fan-out, not 200 SQLite writers on 2 cores.

1. starts a real nats-server (``NatsServer``, ``sync_interval: always``) and signs 10,000
   records from 200 cities (``citygen``, cached);
2. baseline: one subscriber; a fresh stream (``ensure_stream``), the subscriber attached, then
   the records published with JetStream publish (``Nats-Msg-Id``), 64 in flight as a node's
   outbox does, or paced at ``--rate`` records/s;
3. the same with ``--subscribers`` subscribers on another fresh stream;
4. delivery time of a record to a subscriber = its arrival (``time.monotonic``, one clock for
   all processes on Linux) minus the moment its publish was sent; prints one JSON object with
   p50/p99 delivery time, the time until the last subscriber has every record, deliveries per
   second, the ratio to the single-subscriber baseline, and CPU seconds of the relay and of the
   subscriber processes.

Never part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import citygen
import nats
from nats.aio.msg import Msg
from nats.js import api as js_api
from nodeproc import percentiles, proc_cpu_seconds

from citymesh.node.natsserver import NatsServer, ServerConfig
from citymesh.node.streams import ensure_stream
from citymesh.protocol.subjects import network_filter, stream_name

PUBLISH_IN_FLIGHT = 64
DELIVERY_TIMEOUT = 600.0


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# -- worker process: a group of simulated nodes ----------------------------------------------------
async def worker_main(url: str, network: str, subs: int, n: int, out: str) -> None:
    arrivals = [array.array("d", [0.0]) * (n + 1) for _ in range(subs)]
    counts = [0] * subs
    done = asyncio.Event()
    conns = []
    t_start = time.monotonic()
    for k in range(subs):
        nc = await nats.connect(url, name=f"bench-fanout-{k}")
        conns.append(nc)
        times, index = arrivals[k], k

        async def on_msg(msg: Msg, times: array.array[float] = times, index: int = index) -> None:
            seq = msg.metadata.sequence.stream
            if seq <= n and times[seq] == 0.0:
                times[seq] = time.monotonic()
                counts[index] += 1
                if counts[index] == n and all(c >= n for c in counts):
                    done.set()

        await nc.jetstream().subscribe(
            network_filter(network),
            stream=stream_name(network),
            cb=on_msg,
            ordered_consumer=True,
            idle_heartbeat=5.0,
            config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
        )
    for nc in conns:
        await nc.flush()
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), DELIVERY_TIMEOUT)
    with open(out, "wb") as f:
        for times in arrivals:
            times.tofile(f)
    for nc in conns:
        await nc.close()
    print(f"done {time.process_time():.3f} {sum(counts)} {t_start:.6f}", flush=True)


# -- the parent -------------------------------------------------------------------------------------
async def publish(
    url: str, network: str, messages: list[citygen.Message], rate: float
) -> tuple[dict[int, float], float]:
    """Publish every message; (stream seq -> monotonic time its publish was sent, seconds)."""
    nc = await nats.connect(url)
    sent: dict[int, float] = {}
    try:
        js = nc.jetstream(timeout=60)
        stream = stream_name(network)
        t0 = time.monotonic()
        # the records were signed for citygen's network: the relay only sees subjects
        prefix, ours = f"cm.{citygen.NETWORK}.", f"cm.{network}."

        async def one(subj: str, rid: str, env: bytes) -> None:
            t = time.monotonic()
            subj = ours + subj.removeprefix(prefix)
            ack = await js.publish(subj, env, stream=stream, headers={"Nats-Msg-Id": rid})
            sent[ack.seq] = t

        for i in range(0, len(messages), PUBLISH_IN_FLIGHT):
            if rate:
                wait = t0 + i / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            chunk = messages[i : i + PUBLISH_IN_FLIGHT]
            await asyncio.gather(*(one(*m) for m in chunk))
        return sent, time.monotonic() - t0
    finally:
        await nc.close()


async def make_stream(url: str, network: str) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_stream(nc.jetstream(timeout=30), network)
    finally:
        await nc.close()


def phase(
    server: NatsServer,
    tmp: Path,
    network: str,
    messages: list[citygen.Message],
    subscribers: int,
    workers: int,
    rate: float,
    *,
    replay: bool = False,
) -> dict[str, Any]:
    """Live (``replay`` False): subscribers attached, then the records published.
    Replay: the stream already holds the records; subscribers attach and take the whole log."""
    url = server.client_url
    if not replay:
        asyncio.run(make_stream(url, network))
    n = len(messages)
    workers = max(1, min(workers, subscribers))
    per, extra = divmod(subscribers, workers)
    procs: list[tuple[subprocess.Popen[str], Path, int]] = []
    relay_cpu0 = proc_cpu_seconds(server.pid or 0)
    for w in range(workers):
        subs = per + (1 if w < extra else 0)
        out = tmp / f"{network}-{w}.bin"
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", url, network, str(subs)]
        cmd += [str(n), str(out)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        procs.append((proc, out, subs))
    try:
        for proc, _, _ in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("a subscriber worker failed to start")
        sent: dict[int, float] = {}
        publish_seconds = 0.0
        if not replay:
            sent, publish_seconds = asyncio.run(publish(url, network, messages, rate))
        worker_cpu = 0.0
        starts: list[float] = []
        delivered = 0
        for proc, _, _ in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            if not line or line[0] != "done":
                raise SystemExit("a subscriber worker failed")
            worker_cpu += float(line[1])
            delivered += int(line[2])
            starts.append(float(line[3]))
            proc.wait(60)
        relay_cpu = proc_cpu_seconds(server.pid or 0) - relay_cpu0
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    start = min(starts) if replay else min(sent.values())
    latencies: list[float] = []
    complete: list[float] = []
    last = start
    for _, out, subs in procs:
        data = array.array("d")
        with out.open("rb") as f:
            data.fromfile(f, subs * (n + 1))
        for k in range(subs):
            row = data[k * (n + 1) : (k + 1) * (n + 1)]
            got = [row[seq] for seq in range(1, n + 1) if row[seq] > 0.0]
            latencies.extend(
                (row[seq] - sent[seq]) * 1000
                for seq in range(1, n + 1)
                if row[seq] > 0.0 and seq in sent
            )
            if got:
                complete.append(max(got) - start)
                last = max(last, *got)
    total_seconds = last - start
    return {
        "mode": "replay of the stored log" if replay else "live",
        "subscribers": subscribers,
        "worker_processes": workers,
        "records": n,
        "deliveries": delivered,
        "missing": subscribers * n - delivered,
        "publish_seconds": round(publish_seconds, 2),
        "delivery_ms": percentiles(latencies, 1) if latencies else None,
        "all_delivered_seconds": round(total_seconds, 2),
        "subscriber_complete_seconds": percentiles(complete, 2),
        "deliveries_per_second": round(delivered / total_seconds, 1) if total_seconds else None,
        "relay_cpu_seconds": round(relay_cpu, 2),
        "relay_cpu_us_per_delivery": round(relay_cpu / delivered * 1e6, 2) if delivered else None,
        "subscriber_cpu_seconds": round(worker_cpu, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json_only
    load0 = os.getloadavg()
    mix = citygen.Mix.typical(args.records, args.cities)
    path, _ = citygen.generate(mix, args.cities, seed=3, quiet=quiet)
    messages = citygen.load_messages(path)
    with tempfile.TemporaryDirectory(prefix="citymesh-bench-fanout-") as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(ServerConfig(store_dir=tmp / "relay", server_name="bench-fanout"))
        server.start()
        try:
            log(f"live, 1 subscriber, {args.rate or 'unpaced'} records/s", quiet)
            one = phase(server, tmp, "fanone", messages, 1, 1, args.rate)
            log(f"live, {args.subscribers} subscribers over {args.workers} processes", quiet)
            many = phase(
                server, tmp, "fanmany", messages, args.subscribers, args.workers, args.rate
            )
            log("replay of the stored log, 1 subscriber", quiet)
            replay_one = phase(server, tmp, "fanone", messages, 1, 1, 0, replay=True)
            log(f"replay of the stored log, {args.subscribers} subscribers", quiet)
            replay_many = phase(
                server, tmp, "fanmany", messages, args.subscribers, args.workers, 0, replay=True
            )
        finally:
            server.stop()
    load1 = os.getloadavg()
    base = replay_one["deliveries_per_second"] or 0.0
    live = many["delivery_ms"] or {}
    return {
        "bench": "fanout",
        "simulated_nodes": "NATS ordered push consumers (one connection each), not node processes",
        "subscribers": args.subscribers,
        "records": args.records,
        "live_delivery_ms_p50": live.get("p50"),
        "live_delivery_ms_p99": live.get("p99"),
        "live_single_delivery_ms_p99": (one["delivery_ms"] or {}).get("p99"),
        "replay_deliveries_per_second": replay_many["deliveries_per_second"],
        "replay_single_deliveries_per_second": base,
        "throughput_ratio_to_single": round(replay_many["deliveries_per_second"] / base, 1)
        if base and replay_many["deliveries_per_second"]
        else None,
        "relay_cpu_us_per_delivery": replay_many["relay_cpu_us_per_delivery"],
        "live": many,
        "live_single": one,
        "replay": replay_many,
        "replay_single": replay_one,
        "rate": args.rate,
        "mean_envelope_bytes": round(sum(len(m[2]) for m in messages) / len(messages)),
        "cpus": os.cpu_count(),
        "load_average_1m": [round(load0[0], 2), round(load1[0], 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4, help="subscriber processes")
    parser.add_argument("--cities", type=int, default=200)
    parser.add_argument(
        "--rate", type=float, default=500.0, help="live publish rate, records/s (0: unpaced)"
    )
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.worker:
        url, network, subs, n, out = args.worker
        asyncio.run(worker_main(url, network, int(subs), int(n), out))
        return
    if args.records < args.cities or args.subscribers < 1:
        parser.error("need records >= cities and at least one subscriber")
    print(json.dumps(run(args), indent=None if args.json_only else 2))


if __name__ == "__main__":
    main()
