"""100,000 hostile inputs through the node's verification batch functions and `open_envelope`
under them: `verify_chunk` (what repair runs in the thread pool) and the relay ingest's two halves,
`check_chunk` (the thread pool) then `decode_chunk` (the writer, in `Store.ingest_signed`), which
must accept and refuse exactly the same inputs.

Inputs come from the protocol fuzzer (tests/protocol/test_fuzz.py: random bytes, mutated
envelopes, payloads re-signed after mutation so they reach every later check) plus the
Ed25519 and encoding edge cases of tests/hostile/corpus.py. Every input is either a valid record
or counted under a protocol error code; anything else raised fails the test.
Seeded: a failure names its seed and batch and reproduces.
"""

from __future__ import annotations

import os
import time
from collections import Counter

from citymesh.node.verify import check_chunk, decode_chunk, verify_chunk
from citymesh.protocol.errors import ERROR_CODES

from ..protocol.builders import NOW_MS
from ..protocol.test_fuzz import Fuzzer
from .corpus import edge_cases

INPUTS = 100_000
BATCH = 500
SEED = int(os.environ.get("CITYMESH_FUZZ_SEED", "20251202"))


def test_verify_batches_only_count_protocol_errors() -> None:
    fuzzer = Fuzzer(SEED)
    rng = fuzzer.rng
    makers = [
        (fuzzer.random_bytes, 2),
        (fuzzer.mutated_envelope, 5),
        (fuzzer.resigned_bytes, 3),
        (fuzzer.resigned_value, 6),
        (fuzzer.resigned_scratch, 2),
    ]
    edges = [data for _, data in edge_cases()]
    accepted = 0
    rejected: Counter[str] = Counter()
    started = time.perf_counter()
    done = 0
    batch_no = 0
    while done < INPUTS:
        batch = [
            rng.choices(makers, [w for _, w in makers])[0][0]() for _ in range(BATCH - 10)
        ] + rng.sample(edges, min(10, len(edges)))
        try:
            ok, bad = verify_chunk(batch, NOW_MS)
            signed, unsigned = check_chunk(batch)
            split_ok, undecoded = decode_chunk(signed, NOW_MS)
            split_bad = unsigned + undecoded
        except Exception as err:  # the finding: anything but a counted rejection
            raise AssertionError(f"seed={SEED} batch={batch_no}: {err!r}") from err
        assert split_ok == ok and split_bad == bad, (SEED, batch_no)
        assert len(ok) + sum(bad.values()) == len(batch), (SEED, batch_no)
        assert set(bad) <= set(ERROR_CODES), bad
        for record in ok:
            assert record.envelope in batch
        accepted += len(ok)
        rejected.update(bad)
        done += len(batch)
        batch_no += 1
    elapsed = time.perf_counter() - started
    print(
        f"\nverify fuzz seed={SEED}: {done} inputs in {elapsed:.1f} s, {accepted} valid, "
        f"rejected {dict(rejected)}"
    )
    assert done >= 100_000
    # Reach: the inputs got past the signature to the later checks.
    for code in ("malformed", "bad_signature", "non_canonical", "invalid", "bad_key", "too_large"):
        assert rejected[code] > 0, code
    assert accepted > 0
