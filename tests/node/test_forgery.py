"""Records that claim to be a city's but are signed by someone else's key.

Anyone can sign a record naming any author: the signature verifies under the signer's own key.
Such a record must never count as evidence of a fork, or anyone could freeze any city by
publishing one. Only a key the city held at that seq (or a recovery key, for a rotation) can
equivocate.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from citymesh.node.store import Store
from citymesh.protocol.envelope import seal
from citymesh.protocol.records import RatingBody, Record
from tests.protocol.builders import NETWORK, NOW_MS, secret_key

from .conftest import practice
from .test_store import Chain, city

LATER = NOW_MS + 10**8


def chain() -> Chain:
    a = Chain.new(10)
    a.add(city("Mechelen", "BEL"))
    for i in range(4):
        a.add(practice(i), f"desk-{i}")
    return a


def forged(a: Chain, seq: int, prev: bytes) -> Record:
    return seal(
        secret_key(99),
        body=RatingBody(score=1),
        network=NETWORK,
        author=a.author,
        seq=seq,
        prev=prev,
        created=NOW_MS + 5,
        addr=a.ref("desk-0"),
    )


def frozen(store: Store, a: Chain) -> object:
    return store.db.execute(
        "SELECT frozen_seq FROM authors WHERE author = ?", (a.author,)
    ).fetchone()[0]


def test_a_forged_record_at_an_applied_seq_is_refused_not_evidence(tmp_path: Path) -> None:
    a = chain()
    store = Store(tmp_path / "applied.db")
    store.ingest(a.records, Counter(), now_ms=LATER)
    fake = forged(a, 2, a.records[0].id)
    assert store.ingest([fake], Counter(), now_ms=LATER).rejected == Counter(chain=1)
    assert frozen(store, a) is None
    assert store.db.execute("SELECT 1 FROM records WHERE id = ?", (fake.id,)).fetchone() is None


def test_a_forged_fork_at_the_next_seq_is_refused(tmp_path: Path) -> None:
    a = chain()
    store = Store(tmp_path / "next.db")
    store.ingest(a.records[:3], Counter(), now_ms=LATER)
    fake = forged(a, 4, b"\x01" * 32)
    assert store.ingest([fake], Counter(), now_ms=LATER).rejected == Counter(chain=1)
    store.ingest(a.records[3:], Counter(), now_ms=LATER)
    assert frozen(store, a) is None
    assert store.applied_head(a.author)[0] == 5


def test_a_forged_record_held_ahead_does_not_freeze_when_the_real_one_arrives(
    tmp_path: Path,
) -> None:
    a = chain()
    store = Store(tmp_path / "held.db")
    store.ingest(a.records[:2], Counter(), now_ms=LATER)
    fake = forged(a, 4, a.records[2].id)  # waits behind the gap at seq 3
    store.ingest([fake, a.records[3]], Counter(), now_ms=LATER)
    result = store.ingest([a.records[2], a.records[4]], Counter(), now_ms=LATER)
    assert result.rejected == Counter(chain=1)
    assert frozen(store, a) is None
    assert store.applied_head(a.author) == (5, a.records[4].id)


def test_the_authors_own_key_still_equivocates(tmp_path: Path) -> None:
    a = chain()
    store = Store(tmp_path / "real.db")
    store.ingest(a.records, Counter(), now_ms=LATER)
    twin = a.seal(practice(9), "other", seq=3)
    assert store.ingest([twin], Counter(), now_ms=LATER).rejected == Counter(equivocation=1)
    assert frozen(store, a) == 3
