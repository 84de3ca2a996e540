"""Set reconciliation bandwidth: two sets of records that differ by a few, negentropy ranges
beside the sketch (coded symbols of a rateless IBLT).

    python bench/reconcile.py [--records 100000] [--differ 100]

Items are (created ms, 32-byte id) as a node reconciles them. The client lacks ``--differ`` of the
server's records, placed three ways: ``burst`` (a contiguous stretch of time: a node or relay that
was away for a while, the usual case), ``tail`` (the newest ones) and ``scattered`` (uniformly at
random: the worst case for range-based reconciliation). For each: rounds (request/response pairs),
bytes exchanged both ways as encoded msgpack messages, and that as a ratio of the baseline: the
plain id list (records x 32 bytes) a node would otherwise send. The sketch's figures (``sketch``)
split the bytes by direction; its ``seconds`` are the session's with both sides' symbols already
computed (nodes keep them), ``client_encoder_seconds`` what computing the client's took from
cold. Goal: a few KB. Prints one JSON object; never part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import random
import time
from typing import Any

from citymesh.protocol import sketch
from citymesh.protocol.reconcile import BUCKETS, FINGERPRINT_SIZE, ID_LIST_BELOW, ItemSet
from citymesh.protocol.reconcile import reconcile_sets as run

START_MS = 1_764_000_000_000


def item(n: int) -> tuple[int, bytes]:
    # About one record every 2 s, with some sharing a millisecond (bounds then need id prefixes).
    return START_MS + n * 2000 - (n % 7 == 0) * 2000, hashlib.sha256(n.to_bytes(8, "big")).digest()


def run_sketch(client: sketch.Encoder, server: sketch.Encoder) -> dict[str, Any]:
    """One sketch session over msgpack, as the node's repair runs it (fresh per pass)."""
    session = sketch.Session(client)
    sent = received = 0
    t0 = time.perf_counter()
    chunk = session.next_chunk()
    while chunk is not None:
        request = sketch.encode(chunk)
        reply = sketch.encode(sketch.respond(server, sketch.decode_chunk(request)))
        sent, received = sent + len(request), received + len(reply)
        session.receive(sketch.decode_symbols(reply))
        chunk = session.next_chunk()
    return {
        "have": session.have,
        "need": session.need,
        "rounds": session.rounds,
        "symbols": session.received,
        "bytes_sent": sent,
        "bytes_received": received,
        "bytes": sent + received,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--differ", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20251126)
    args = parser.parse_args()
    n, d = args.records, args.differ
    all_items = [item(i) for i in range(n)]
    started = time.perf_counter()
    server = ItemSet(all_items)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    server_sketch = sketch.Encoder((i for _, i in all_items), size=sketch.GROW_FROM)
    sketch_build_s = time.perf_counter() - started
    rng = random.Random(args.seed)
    start = rng.randrange(0, n - d)
    placements = {
        "burst": set(range(start, start + d)),
        "tail": set(range(n - d, n)),
        "scattered": set(rng.sample(range(n), d)),
    }
    baseline = n * 32
    results: dict[str, Any] = {}
    for name, gone in placements.items():
        client = ItemSet(it for i, it in enumerate(all_items) if i not in gone)
        t0 = time.perf_counter()
        have, need, rounds, size = run(client, server)
        elapsed = time.perf_counter() - t0
        assert not have and sorted(need) == sorted(all_items[i][1] for i in gone)
        t0 = time.perf_counter()
        client_sketch = sketch.Encoder(
            (it[1] for i, it in enumerate(all_items) if i not in gone), size=sketch.GROW_FROM
        )
        client_encoder_s = time.perf_counter() - t0
        sk = run_sketch(client_sketch, server_sketch)
        assert not sk.pop("have") and sorted(sk.pop("need")) == sorted(need)
        results[name] = {
            "rounds": rounds,
            "bytes": size,
            "kib": round(size / 1024, 1),
            "ratio_to_id_list": round(size / baseline, 5),
            "seconds": round(elapsed, 3),
            "sketch": sk
            | {
                "kib": round(sk["bytes"] / 1024, 1),
                "ratio_to_id_list": round(sk["bytes"] / baseline, 5),
                "client_encoder_seconds": round(client_encoder_s, 3),
            },
        }
    print(
        json.dumps(
            {
                "bench": "reconcile",
                "date": datetime.date.today().isoformat(),
                "python": platform.python_version(),
                "records": n,
                "differ": d,
                "buckets": BUCKETS,
                "id_list_below": ID_LIST_BELOW,
                "fingerprint_bytes": FINGERPRINT_SIZE,
                "baseline_id_list_bytes": baseline,
                "item_set_build_seconds": round(build_s, 3),
                "sketch_symbol_bytes": sketch.SYMBOL_SIZE,
                "sketch_encoder_build_seconds": round(sketch_build_s, 3),
                "results": results,
                "goal": "a few KB (vs the id list)",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
