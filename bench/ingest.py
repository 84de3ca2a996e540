"""Catch-up ingest benchmark: how fast a fresh node takes in a relay's full log.

    python bench/ingest.py [--records N] [--authors A] [--json-only] [--profile]

1. starts a nats-server (``NatsServer`` in a temp dir) and the network's stream;
2. signs N records from A authors (each: a genesis city record at seq 1, then practices with
   1-3 KB of description, ratings and replications, in chain order; signing runs in a process
   pool) and publishes them with JetStream publish in concurrent chunks (``Nats-Msg-Id`` = id);
3. measures the single-thread pynacl verification rate on ~5,000 of the same envelopes: the
   limit a node's catch-up is compared with;
4. starts a fresh ``Node`` (``init_home`` with the relay configured) in a child process, so the
   generator's memory does not count, and times it from start until its SQLite holds all N
   records applied (polled every 50 ms through a read-only connection); the child reports its
   peak RSS (``ru_maxrss`` and ``/proc/self/status`` VmHWM);
5. prints one JSON object with the figures and ``ratio`` = records/s over raw verifications/s.

``--profile`` additionally runs the child with cProfile on the event loop thread and the writer
thread, and with wall/CPU timers around the verifier and the store, and prints the top entries
to stderr. Never part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import io
import json
import multiprocessing
import os
import pstats
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import nacl.bindings
import nats

from citymesh.node import verify as verify_mod
from citymesh.node.config import CityConfig, Home, NodeConfig
from citymesh.node.daemon import Node
from citymesh.node.natsserver import NatsServer, ServerConfig, nats_server_binary
from citymesh.node.setup import init_home
from citymesh.node.store import db as db_mod
from citymesh.node.streams import ensure_stream
from citymesh.protocol.codes import SECTORS, TARGET_GROUPS
from citymesh.protocol.envelope import seal, split_envelope
from citymesh.protocol.identity import Genesis, SecretKey, identity_of, identity_text
from citymesh.protocol.records import (
    CityBody,
    Contact,
    Outcome,
    PracticeBody,
    PracticePeriod,
    RatingBody,
    ReplicationBody,
    Result,
    Scores,
)
from citymesh.protocol.signing import signed_message
from citymesh.protocol.subjects import stream_name, subject

NETWORK = "benchnet"
PUBLISH_CHUNK = 1000
VERIFY_SAMPLE = 5000
POLL = 0.05
CATCHUP_TIMEOUT = 600.0

WORDS = tuple(
    (  # noqa: SIM905
        "city newcomers housing desk language course mentor volunteer school health clinic welcome "
        "employment training outreach family community services shelter legal advice interpreter "
        "youth neighbourhood participation council partners evaluation results budget coordination "
        "migrants refugees registration documents access rights information social worker office "
        "programme pilot lessons learned funding local integration support dialogue"
    ).split()
)
COUNTRIES = ("BEL", "DEU", "ESP", "ITA", "NLD", "FRA", "GRC", "SWE", "POL", "PRT", "KEN", "COL")


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# -- generation ----------------------------------------------------------------------------------
def _text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        word = rng.choice(WORDS)
        out.append(word)
        n += len(word) + 1
    return " ".join(out)[:size]


def _markdown(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    n = 0
    while n < size:
        para = f"## {_text(rng, 30).capitalize()}\n\n{_text(rng, rng.randint(200, 600))}.\n\n"
        parts.append(para)
        n += len(para)
    return "".join(parts)[:size]


def _practice(rng: random.Random, n: int) -> PracticeBody:
    return PracticeBody(
        title={"en": f"{_text(rng, 40).capitalize()} {n}"},
        summary={"en": _text(rng, rng.randint(150, 400))},
        description=_markdown(rng, rng.randint(1024, 3072)),
        status=rng.choice(("pilot", "active", "regular_service", "ended")),
        period=PracticePeriod(
            start=datetime.date(2020, 1, 1) + datetime.timedelta(rng.randint(0, 1500))
        ),
        sectors=rng.sample(SECTORS, rng.randint(1, 3)),  # type: ignore[arg-type]
        target_groups=rng.sample(TARGET_GROUPS, rng.randint(1, 4)),  # type: ignore[arg-type]
        results=[
            Result(label=_text(rng, 40), value=float(rng.randint(1, 900)), unit="persons")
            for _ in range(rng.randint(0, 2))
        ],
        lessons=_text(rng, rng.randint(100, 400)),
        contact=Contact(role_mailbox=f"integration{n}@city.example.org", role="Coordinator"),
    )


def _rating(rng: random.Random) -> RatingBody:
    return RatingBody(
        score=rng.randint(1, 5),
        scores=Scores(relevance=rng.randint(1, 5), evidence=rng.randint(1, 5)),
        comment=_text(rng, rng.randint(60, 400)),
        role=rng.choice(("peer", "expert", "adopter")),
    )


def _replication(rng: random.Random) -> ReplicationBody:
    worked = rng.choice((None, "yes", "partly", "no", "too_early"))
    return ReplicationBody(
        relation=rng.choice(("inspired_by", "adapted", "replicated", "scaled")),
        status=rng.choice(("planned", "piloting", "running", "ended")),
        start=datetime.date(2022, 1, 1) + datetime.timedelta(rng.randint(0, 900)),
        adaptations=_text(rng, rng.randint(200, 800)),
        outcome=None
        if worked is None
        else Outcome(worked=worked, lessons=_text(rng, rng.randint(50, 300))),  # type: ignore[arg-type]
    )


Generated = list[tuple[str, str, bytes]]
"""(subject, record id hex, envelope) of one author, in chain order."""


def generate_author(job: tuple[int, bytes, bytes, int, list[str], int]) -> Generated:
    index, seed, salt, count, all_idents, base_ms = job
    rng = random.Random(index)
    key = SecretKey(seed)
    genesis = Genesis(key=key.public_key, salt=salt)
    author = identity_of(genesis)
    out: Generated = []
    prev: bytes | None = None
    practices = 0
    created = base_ms
    for seq in range(1, count + 1):
        created += rng.randint(1000, 60_000)
        addr = ""
        body: Any
        if seq == 1:
            body = CityBody(
                name=f"Bench City {index}",
                country=rng.choice(COUNTRIES),
                languages=["en"],
                networks=[NETWORK],
                role_mailbox=f"desk{index}@city.example.org",
                description=_text(rng, rng.randint(200, 600)),
            )
        else:
            roll = rng.random()
            if roll < 0.45 or practices == 0:
                # mostly new practices, sometimes a new version of an earlier one
                if practices and rng.random() < 0.2:
                    n = rng.randrange(practices)
                else:
                    n = practices
                    practices += 1
                addr = f"practice-{n}"
                body = _practice(rng, n)
            else:
                ref = f"{rng.choice(all_idents)}/practice-{rng.randint(0, 15)}"
                addr = ref
                body = _rating(rng) if roll < 0.8 else _replication(rng)
        rec = seal(
            key,
            body=body,
            network=NETWORK,
            author=author,
            seq=seq,
            prev=prev,
            created=created,
            addr=addr,
            genesis=genesis if seq == 1 else None,
        )
        prev = rec.id
        out.append((subject(NETWORK, author, rec.header.kind), rec.id.hex(), rec.envelope))
    return out


def generate(records: int, authors: int, quiet: bool) -> list[Generated]:
    seeds = [os.urandom(32) for _ in range(authors)]
    salts = [os.urandom(16) for _ in range(authors)]
    idents = [
        identity_text(identity_of(Genesis(key=SecretKey(s).public_key, salt=salt)))
        for s, salt in zip(seeds, salts, strict=True)
    ]
    per, extra = divmod(records, authors)
    # created times end well before now, so nothing is "from the future"
    base_ms = int(time.time() * 1000) - (per + 2) * 60_000 - 86_400_000
    jobs = [
        (i, seeds[i], salts[i], per + (1 if i < extra else 0), idents, base_ms)
        for i in range(authors)
    ]
    jobs = [j for j in jobs if j[3] > 0]
    procs = max(1, os.cpu_count() or 1)
    log(f"generating {records} records from {len(jobs)} authors on {procs} processes", quiet)
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        return pool.map(generate_author, jobs, chunksize=max(1, len(jobs) // (procs * 8)))


def interleave(per_author: list[Generated]) -> Generated:
    """Round-robin over authors by seq: every author's records stay in chain order."""
    out: Generated = []
    longest = max(len(a) for a in per_author)
    for i in range(longest):
        out.extend(a[i] for a in per_author if i < len(a))
    return out


# -- publishing ----------------------------------------------------------------------------------
async def publish_all(url: str, messages: Generated) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=60)
        await ensure_stream(js, NETWORK)
        stream = stream_name(NETWORK)
        for i in range(0, len(messages), PUBLISH_CHUNK):
            chunk = messages[i : i + PUBLISH_CHUNK]
            await asyncio.gather(
                *(
                    js.publish(subj, env, stream=stream, headers={"Nats-Msg-Id": rid})
                    for subj, rid, env in chunk
                )
            )
        info = await js.stream_info(stream)
        if info.state.messages < len(messages):
            raise SystemExit(f"stream holds {info.state.messages} of {len(messages)} messages")
    finally:
        await nc.close()


async def make_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_stream(nc.jetstream(timeout=30), NETWORK)
    finally:
        await nc.close()


# -- the limit -----------------------------------------------------------------------------------
_signer_only = msgspec.msgpack.Decoder(dict[str, Any])


VerifyInputs = list[tuple[bytes, bytes, bytes]]


def verify_inputs(envelopes: list[bytes]) -> VerifyInputs:
    """(signature, payload, signer key) of each envelope: what a verifier starts from."""
    inputs: VerifyInputs = []
    for env in envelopes:
        payload, signature = split_envelope(env)
        inputs.append((signature, payload, _signer_only.decode(payload)["signer"]))
    return inputs


def raw_verify_rate(inputs: VerifyInputs, passes: int = 2) -> tuple[float, float]:
    """Single-thread crypto_sign_open calls per second over signature + signed message:
    (best wall-clock rate, best rate per CPU second of this thread) over ``passes`` passes.
    The best pass is the limit; the machine may be busy with other work."""
    open_ = nacl.bindings.crypto_sign_open
    best_wall = best_cpu = 0.0
    for _ in range(passes):
        wall, cpu = time.perf_counter(), time.thread_time()
        for signature, payload, key in inputs:
            open_(signature + signed_message(payload), key)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        best_wall = max(best_wall, len(inputs) / wall)
        best_cpu = max(best_cpu, len(inputs) / max(cpu, 1e-9))
    return best_wall, best_cpu


# -- the node under test (child process) ---------------------------------------------------------
def peak_rss_mb() -> tuple[float, float]:
    """(ru_maxrss, VmHWM) of this process in MiB."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    hwm = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return maxrss, hwm


class _Timers:
    """Wall and CPU seconds spent in the verifier chunks and the store's ingest (profile mode)."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}

    def wrap(self, name: str, fn: Any, profiler: Any = None) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            w0, c0 = time.perf_counter(), time.thread_time()
            if profiler is not None:
                profiler.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                if profiler is not None:
                    profiler.disable()
                t = self.totals.setdefault(name, [0.0, 0.0, 0])
                t[0] += time.perf_counter() - w0
                t[1] += time.thread_time() - c0
                t[2] += 1

        return wrapped


async def child_main(home_dir: str, profile: str | None) -> None:
    timers = _Timers()
    loop_prof = writer_prof = None
    if profile:
        loop_prof, writer_prof = cProfile.Profile(), cProfile.Profile()
        verify_mod.check_chunk = timers.wrap("check_chunk (pool threads)", verify_mod.check_chunk)
        db_mod.Store.ingest_signed = timers.wrap(  # type: ignore[method-assign]
            "Store.ingest_signed (writer thread: decode, apply, commit)",
            db_mod.Store.ingest_signed,
            writer_prof,
        )
    home = Home(Path(home_dir))
    config = home.load_config()
    cpu0 = time.process_time()
    if loop_prof is not None:
        loop_prof.enable()
    t0 = time.monotonic()
    node = Node(home, config)
    await node.start()
    print(f"started {t0!r}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the parent saw every record applied
    if loop_prof is not None:
        loop_prof.disable()
    cpu = time.process_time() - cpu0
    maxrss, hwm = peak_rss_mb()
    link = next(iter(node.links.values()))
    report = {
        "ru_maxrss_mb": round(maxrss, 1),
        "vmhwm_mb": round(hwm, 1),
        "cpu_seconds": round(cpu, 2),
        "received": link.state.received,
        "timers": {
            k: {"wall": round(v[0], 3), "cpu": round(v[1], 3), "calls": int(v[2])}
            for k, v in timers.totals.items()
        },
    }
    await node.stop()
    if profile and loop_prof is not None and writer_prof is not None:
        loop_prof.dump_stats(profile + ".loop")
        writer_prof.dump_stats(profile + ".writer")
    print("report " + json.dumps(report), flush=True)


# -- orchestration -------------------------------------------------------------------------------
def applied_count(db: sqlite3.Connection, own: bytes) -> int:
    row = db.execute(
        "SELECT coalesce(sum(applied_seq), 0) FROM authors WHERE author != ?", (own,)
    ).fetchone()
    return int(row[0])


def nats_version() -> str:
    out = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=False
    )
    return (out.stdout or out.stderr).strip()


def print_profile(path: str, quiet: bool) -> None:
    for part in ("loop", "writer"):
        buf = io.StringIO()
        stats = pstats.Stats(f"{path}.{part}", stream=buf)
        stats.sort_stats("tottime").print_stats(25)
        log(f"---- cProfile, {part} thread, by own time ----\n{buf.getvalue()}", quiet)


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json_only
    with tempfile.TemporaryDirectory(prefix="citymesh-bench-") as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(ServerConfig(store_dir=tmp / "relay", server_name="bench-relay"))
        server.start()
        try:
            url = server.client_url
            asyncio.run(make_stream(url))

            t = time.perf_counter()
            per_author = generate(args.records, args.authors, quiet)
            generate_seconds = time.perf_counter() - t
            messages = interleave(per_author)
            del per_author
            log(f"generated {len(messages)} records in {generate_seconds:.1f} s", quiet)

            t = time.perf_counter()
            asyncio.run(publish_all(url, messages))
            publish_seconds = time.perf_counter() - t
            log(f"published in {publish_seconds:.1f} s", quiet)

            sample = random.Random(1).sample(messages, min(VERIFY_SAMPLE, len(messages)))
            inputs = verify_inputs([env for _, _, env in sample])
            raw, raw_cpu = raw_verify_rate(inputs)
            log(f"raw single-thread verification: {raw:,.0f}/s", quiet)
            payload_bytes = sum(len(env) for _, _, env in messages)
            del messages, sample

            home = Home(tmp / "node")
            init_home(
                home,
                NodeConfig(
                    city=CityConfig(name="Bench Node", country="BEL"),
                    network=NETWORK,
                    relays=[url],
                    listen="127.0.0.1:0",
                ),
            )
            own = home.identity()
            profile = str(tmp / "profile") if args.profile else None
            cmd = [sys.executable, os.path.abspath(__file__), "--child", str(home.root)]
            if profile:
                cmd += ["--profile-out", profile]
            child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert child.stdin is not None and child.stdout is not None
            try:
                line = child.stdout.readline()
                if not line.startswith("started "):
                    raise SystemExit(f"node child failed to start: {line!r}")
                t0 = float(line.split()[1])
                db = sqlite3.connect(f"file:{home.db_path}?mode=ro", uri=True)
                count = 0
                while True:
                    count = applied_count(db, own)
                    if count >= args.records:
                        break
                    if time.monotonic() - t0 > CATCHUP_TIMEOUT or child.poll() is not None:
                        raise SystemExit(f"catch-up stalled at {count} of {args.records}")
                    time.sleep(POLL)
                catchup = time.monotonic() - t0
                stored = db.execute(
                    "SELECT count(*) FROM records WHERE state = 'applied' AND author != ?",
                    (own,),
                ).fetchone()[0]
                rejections = dict(db.execute("SELECT reason, count FROM rejections").fetchall())
                db.close()
                child.stdin.write("stop\n")
                child.stdin.flush()
                report: dict[str, Any] = {}
                for line in child.stdout:
                    if line.startswith("report "):
                        report = json.loads(line[len("report ") :])
                child.wait(60)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            log(f"caught up in {catchup:.2f} s", quiet)
            # and again after the catch-up: the limit is the best pass of the whole run
            after, after_cpu = raw_verify_rate(inputs)
            raw, raw_cpu = max(raw, after), max(raw_cpu, after_cpu)
            if profile:
                print_profile(profile, quiet)
        finally:
            server.stop()

    rate = args.records / catchup
    result: dict[str, Any] = {
        "records": args.records,
        "authors": args.authors,
        "catchup_seconds": round(catchup, 3),
        "records_per_second": round(rate, 1),
        "raw_verify_per_second": round(raw, 1),
        "ratio": round(rate / raw, 3),
        "raw_verify_per_cpu_second": round(raw_cpu, 1),
        # VmHWM, the node's own peak: ru_maxrss survives exec and counts the forking parent
        "peak_rss_mb": report.get("vmhwm_mb", 0.0),
        "peak_rss": {k: report.get(k) for k in ("ru_maxrss_mb", "vmhwm_mb")},
        "node_cpu_seconds": report.get("cpu_seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "generate_seconds": round(generate_seconds, 2),
        "publish_seconds": round(publish_seconds, 2),
        "mean_envelope_bytes": round(payload_bytes / args.records),
        "applied_records": stored,
        "rejections": rejections,
        "python": sys.version.split()[0],
        "nats_server": nats_version(),
    }
    if report.get("timers"):
        result["timers"] = report["timers"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--authors", type=int, default=500)
    parser.add_argument("--json-only", action="store_true", help="print only the JSON result")
    parser.add_argument("--profile", action="store_true", help="profile the node (slower)")
    parser.add_argument("--child", metavar="HOME", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child_main(args.child, args.profile_out))
        return
    if args.records < 1 or not 1 <= args.authors <= args.records:
        parser.error("need records >= authors >= 1")
    print(json.dumps(run(args), indent=None if args.json_only else 2))


if __name__ == "__main__":
    main()
