"""Set reconciliation bandwidth: two sets of records that differ by a few, negentropy style.

    python bench/reconcile.py [--records 100000] [--differ 100]

Items are (created ms, 32-byte id) as a node reconciles them. The client lacks ``--differ`` of the
server's records, placed three ways: ``burst`` (a contiguous stretch of time: a node or relay that
was away for a while, the usual case), ``tail`` (the newest ones) and ``scattered`` (uniformly at
random: the worst case for range-based reconciliation). For each: rounds (request/response pairs),
bytes exchanged both ways as encoded msgpack messages, and that as a ratio of the baseline: the
plain id list (records x 32 bytes) a node would otherwise send. Goal: a few KB. Prints one JSON
object; never part of the test pass/fail.
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

from citymesh.protocol.reconcile import BUCKETS, FINGERPRINT_SIZE, ID_LIST_BELOW, ItemSet
from citymesh.protocol.reconcile import reconcile_sets as run

START_MS = 1_764_000_000_000


def item(n: int) -> tuple[int, bytes]:
    # About one record every 2 s, with some sharing a millisecond (bounds then need id prefixes).
    return START_MS + n * 2000 - (n % 7 == 0) * 2000, hashlib.sha256(n.to_bytes(8, "big")).digest()


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
        results[name] = {
            "rounds": rounds,
            "bytes": size,
            "kib": round(size / 1024, 1),
            "ratio_to_id_list": round(size / baseline, 5),
            "seconds": round(elapsed, 3),
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
                "results": results,
                "goal": "a few KB (vs the id list)",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
