"""The node's trust policy in the store: who counts, revocation, re-admission, order independence.

Real SQLite files and real signed chains: a steward S signs a charter and admits A and B; X is
known to nobody. The node follows S's network (S is its trust anchor) unless a test says open.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from citymesh.node.store import Store
from citymesh.node.store.apply import HOUR_MS
from citymesh.protocol.envelope import seal
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import (
    MembershipBody,
    NetworkBody,
    Outcome,
    Policies,
    RatingBody,
    Record,
    ReplicationBody,
)
from tests.protocol.builders import NETWORK, NOW_MS

from .conftest import practice
from .test_store import Chain, city

LATER = NOW_MS + 10**8
"""'Now' for standings: after every record's created time."""
OWN = b"\x07" * 32


def admit(chain: Chain, member: Chain, name: str, **fields: Any) -> Record:
    body = MembershipBody(
        network=NETWORK, member=member.author, city=name, valid_from=NOW_MS, **fields
    )
    return chain.add(body, identity_text(member.author))


class World:
    def __init__(self) -> None:
        self.s, self.a, self.b, self.x = (Chain.new(k) for k in (40, 10, 20, 50))
        s, a, b, x = self.s, self.a, self.b, self.x
        s.add(city("Brussels", "BEL"))
        s.add(NetworkBody(title="Cities of Migration", stewards=[s.author]), NETWORK)
        admit(s, a, "Mechelen")
        admit(s, b, "Ghent")
        a.add(city("Mechelen", "BEL"))
        a.add(practice(1, title="Welcome desk"), "welcome-desk")
        self.ref = a.ref("welcome-desk")
        b.add(city("Ghent", "BEL"))  # 1
        b.add(RatingBody(score=4), self.ref)  # 2
        b.add(
            ReplicationBody(relation="adapted", status="running", outcome=Outcome(worked="yes")),
            self.ref,
        )  # 3
        x.add(city("Nowhere", "NLD"))
        x.add(RatingBody(score=1), self.ref)
        x.add(
            ReplicationBody(relation="adapted", status="running", outcome=Outcome(worked="yes")),
            self.ref,
        )

    def records(self) -> list[Record]:
        return [*self.s.records, *self.a.records, *self.b.records, *self.x.records]


def open_store(tmp_path: Path, name: str, *, anchors: list[bytes] | None) -> Store:
    store = Store(tmp_path / f"{name}.db")
    follows = {NETWORK: anchors} if anchors else {}
    store.configure_trust(own=OWN, follows=follows, now_ms=LATER)
    return store


def ingest(store: Store, records: list[Record]) -> Counter[str]:
    result = store.ingest(records, Counter(), now_ms=LATER)
    return result.rejected


def stats(store: Store, ref: str) -> tuple[int, int, int, int]:
    row = store.db.execute(
        "SELECT rating_count, rating_sum, replications, worked FROM practice_stats WHERE ref = ?",
        (ref,),
    ).fetchone()
    return (0, 0, 0, 0) if row is None else tuple(row)


def derived(store: Store) -> dict[str, list[Any]]:
    queries = {
        "ratings": "SELECT rater, ref, id, score, counts FROM ratings ORDER BY 1, 2",
        "replications": "SELECT author, ref, id, worked, counts FROM replications ORDER BY 1, 2",
        "stats": "SELECT ref, rating_count, rating_sum, replications, worked FROM practice_stats"
        " WHERE rating_count OR replications ORDER BY 1",
        "current": "SELECT author, kind, addr, id FROM current ORDER BY 1, 2, 3",
        "trust": "SELECT author, state, until_seq FROM trust ORDER BY 1",
        "authors": "SELECT author, applied_seq, revoked_seq FROM authors ORDER BY 1",
    }
    return {k: store.db.execute(q).fetchall() for k, q in queries.items()}


def test_open_network_counts_everyone(tmp_path: Path) -> None:
    w = World()
    store = open_store(tmp_path, "open", anchors=None)
    ingest(store, w.records())
    assert stats(store, w.ref) == (2, 5, 2, 2)


def test_only_members_count_and_the_others_are_kept(tmp_path: Path) -> None:
    w = World()
    store = open_store(tmp_path, "follow", anchors=[w.s.author])
    assert not ingest(store, w.records())
    assert stats(store, w.ref) == (1, 4, 1, 1)  # B's rating and replication; X's kept apart
    kept = store.db.execute("SELECT counts FROM ratings WHERE rater = ?", (w.x.author,)).fetchone()
    assert kept == (0,)
    trust = dict(store.db.execute("SELECT author, state FROM trust").fetchall())
    assert trust == {w.s.author: "member", w.a.author: "member", w.b.author: "member"}


def test_admitting_a_city_later_makes_its_records_count(tmp_path: Path) -> None:
    w = World()
    store = open_store(tmp_path, "late", anchors=[w.s.author])
    ingest(store, w.records())
    assert stats(store, w.ref)[0] == 1
    ingest(store, [admit(w.s, w.x, "Nowhere")])
    assert stats(store, w.ref) == (2, 5, 2, 2)


def test_a_city_that_is_not_an_anchor_cannot_admit(tmp_path: Path) -> None:
    w = World()
    store = open_store(tmp_path, "rogue", anchors=[w.s.author])
    ingest(store, w.records())
    # X signs a charter naming itself and admits itself: nobody trusts X as a steward
    w.x.add(NetworkBody(title="Rogue", stewards=[w.x.author]), NETWORK)
    ingest(store, [w.x.records[-1], admit(w.x, w.x, "Nowhere")])
    assert stats(store, w.ref)[0] == 1
    assert (
        store.db.execute("SELECT 1 FROM trust WHERE author = ?", (w.x.author,)).fetchone() is None
    )


def test_configuring_anchors_re_marks_what_is_stored(tmp_path: Path) -> None:
    w = World()
    store = open_store(tmp_path, "switch", anchors=None)
    ingest(store, w.records())
    assert stats(store, w.ref)[0] == 2
    store.configure_trust(own=OWN, follows={NETWORK: [w.s.author]}, now_ms=LATER)
    assert stats(store, w.ref) == (1, 4, 1, 1)
    store.configure_trust(own=OWN, follows={}, now_ms=LATER)
    assert stats(store, w.ref) == (2, 5, 2, 2)


def revoke(w: World, until_seq: int | None) -> Record:
    return admit(w.s, w.b, "Ghent", status="revoked", reason="left", until_seq=until_seq)


def test_revocation_keeps_earlier_records_and_refuses_later_ones(tmp_path: Path) -> None:
    w = World()
    store = open_store(tmp_path, "revoke", anchors=[w.s.author])
    ingest(store, w.records())
    ingest(store, [revoke(w, 2)])  # B's rating (seq 2) still counts, its replication (3) not
    assert stats(store, w.ref) == (1, 4, 0, 0)
    assert store.db.execute(
        "SELECT seq, state FROM records WHERE author = ? ORDER BY seq", (w.b.author,)
    ).fetchall() == [(1, "applied"), (2, "applied"), (3, "revoked")]
    # B's later records are refused, counted, not stored
    later = w.b.add(RatingBody(score=1), w.ref)
    assert ingest(store, [later]) == Counter(revoked=1)
    assert store.db.execute("SELECT 1 FROM records WHERE id = ?", (later.id,)).fetchone() is None
    assert stats(store, w.ref) == (1, 4, 0, 0)
    trust = store.db.execute(
        "SELECT state, until_seq FROM trust WHERE author = ?", (w.b.author,)
    ).fetchone()
    assert trust == ("revoked", 2)


def test_revocation_in_any_order_gives_the_same_state(tmp_path: Path) -> None:
    w = World()
    revocation = revoke(w, 2)
    records = w.records()
    reference = open_store(tmp_path, "ref", anchors=[w.s.author])
    ingest(reference, [r for r in records if r is not revocation])
    ingest(reference, [revocation])
    want = derived(reference)
    rng = random.Random(7)
    for i in range(6):
        shuffled = list(records)
        rng.shuffle(shuffled)
        store = open_store(tmp_path, f"order{i}", anchors=[w.s.author])
        for start in range(0, len(shuffled), 3):
            ingest(store, shuffled[start : start + 3])
        assert derived(store) == want, f"order {i}"


def test_re_admission_lifts_the_revocation(tmp_path: Path) -> None:
    w = World()
    store = open_store(tmp_path, "readmit", anchors=[w.s.author])
    ingest(store, w.records())
    ingest(store, [revoke(w, 2)])
    assert stats(store, w.ref)[2] == 0
    ingest(store, [admit(w.s, w.b, "Ghent")])
    assert stats(store, w.ref) == (1, 4, 1, 1)
    assert store.db.execute(
        "SELECT count(*) FROM records WHERE author = ? AND state = 'applied'", (w.b.author,)
    ).fetchone() == (3,)


def test_a_revocation_without_a_boundary_counts_nothing_and_refuses_nothing(
    tmp_path: Path,
) -> None:
    w = World()
    store = open_store(tmp_path, "noseq", anchors=[w.s.author])
    ingest(store, w.records())
    ingest(store, [revoke(w, None)])
    assert stats(store, w.ref) == (0, 0, 0, 0)
    assert not ingest(store, [w.b.add(RatingBody(score=5), w.ref)])


def test_this_nodes_own_records_are_never_refused(tmp_path: Path) -> None:
    w = World()
    store = Store(tmp_path / "own.db")
    store.configure_trust(own=w.b.author, follows={NETWORK: [w.s.author]}, now_ms=LATER)
    ingest(store, w.records())
    ingest(store, [revoke(w, 2)])
    own = w.b.add(RatingBody(score=5), w.ref)
    assert not ingest(store, [own])
    assert store.db.execute("SELECT state FROM records WHERE id = ?", (own.id,)).fetchone() == (
        "applied",
    )
    # ... but they stop counting like anyone else's
    assert store.db.execute(
        "SELECT counts FROM ratings WHERE rater = ?", (w.b.author,)
    ).fetchone() == (0,)


@pytest.mark.parametrize("valid_until", [NOW_MS + 1000])
def test_a_membership_that_expired_stops_counting(tmp_path: Path, valid_until: int) -> None:
    w = World()
    store = Store(tmp_path / "expiry.db")
    store.configure_trust(own=OWN, follows={NETWORK: [w.s.author]}, now_ms=NOW_MS + 10)
    ingest(store, [*w.s.records, *w.a.records, *w.x.records])
    ingest(store, [admit(w.s, w.b, "Ghent", valid_until=valid_until), *w.b.records])
    store.refresh_trust(now_ms=NOW_MS + 10)
    assert stats(store, w.ref)[0] == 1
    store.refresh_trust(now_ms=valid_until + 1)
    assert stats(store, w.ref)[0] == 0


# -- the network's records-per-hour limit ---------------------------------------------------------
def limited_world(cap: int) -> tuple[Chain, Chain, list[Record]]:
    """Steward S's charter allows ``cap`` records per hour; Y signs six within one hour."""
    s, y = Chain.new(60), Chain.new(70)
    s.add(city("Brussels", "BEL"))
    s.add(
        NetworkBody(
            title="Cities", stewards=[s.author], policies=Policies(max_records_per_hour=cap)
        ),
        NETWORK,
    )
    y.add(city("Flooder", "NLD"))
    for i in range(5):
        y.add(practice(i), f"p-{i}")
    hours = {r.header.created // HOUR_MS for r in y.records}
    assert len(hours) == 1, "the six records must fall in one hour"
    return s, y, [*s.records, *y.records]


def applied_seqs(store: Store, author: bytes) -> list[int]:
    rows = store.db.execute(
        "SELECT seq FROM records WHERE author = ? AND state = 'applied' ORDER BY seq", (author,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_an_author_over_the_hourly_limit_is_cut_off_at_the_same_record_everywhere(
    tmp_path: Path,
) -> None:
    s, y, records = limited_world(3)
    rejected: Counter[str] = Counter()
    reference = open_store(tmp_path, "limit", anchors=[s.author])
    rejected.update(ingest(reference, records))
    assert applied_seqs(reference, y.author) == [1, 2, 3]
    assert rejected["rate_limited"] >= 1
    assert reference.db.execute(
        "SELECT limited_seq FROM authors WHERE author = ?", (y.author,)
    ).fetchone() == (4,)
    assert reference.hourly_use(y.author, y.records[0].header.created) == (3, 3)
    rng = random.Random(3)
    for i in range(4):
        shuffled = list(records)
        rng.shuffle(shuffled)
        store = open_store(tmp_path, f"limit{i}", anchors=[s.author])
        for start in range(0, len(shuffled), 2):
            ingest(store, shuffled[start : start + 2])
        assert applied_seqs(store, y.author) == [1, 2, 3], f"order {i}"


def test_raising_the_limit_lets_the_author_continue(tmp_path: Path) -> None:
    s, y, records = limited_world(3)
    store = open_store(tmp_path, "raise", anchors=[s.author])
    ingest(store, records)
    s.add(
        NetworkBody(
            title="Cities", stewards=[s.author], policies=Policies(max_records_per_hour=100)
        ),
        NETWORK,
    )
    ingest(store, [s.records[-1]])
    assert not ingest(store, y.records[3:])  # fetched again (from a relay or a peer)
    assert applied_seqs(store, y.author) == [1, 2, 3, 4, 5, 6]


def test_an_open_network_has_no_limit_and_own_records_are_never_limited(tmp_path: Path) -> None:
    s, y, records = limited_world(3)
    open_network = open_store(tmp_path, "open-limit", anchors=None)
    ingest(open_network, records)
    assert applied_seqs(open_network, y.author) == [1, 2, 3, 4, 5, 6]
    own = Store(tmp_path / "own-limit.db")
    own.configure_trust(own=y.author, follows={NETWORK: [s.author]}, now_ms=LATER)
    assert not ingest(own, records)
    assert applied_seqs(own, y.author) == [1, 2, 3, 4, 5, 6]


def test_the_hourly_limit_is_not_retroactive(tmp_path: Path) -> None:
    """A charter's limit holds from the hour it was signed: a city's earlier burst (an import
    before the network set a limit) is not cut off afterwards."""
    s, y = Chain.new(80), Chain.new(90)
    s.add(city("Brussels", "BEL"))
    y.add(city("Importer", "NLD"))
    for i in range(5):
        y.add(practice(i), f"p-{i}")
    charter = seal(
        s.secret,
        body=NetworkBody(
            title="Cities", stewards=[s.author], policies=Policies(max_records_per_hour=3)
        ),
        network=NETWORK,
        author=s.author,
        seq=2,
        prev=s.records[0].id,
        created=y.records[-1].header.created + 2 * HOUR_MS,
        addr=NETWORK,
    )
    store = open_store(tmp_path, "since", anchors=[s.author])
    assert not ingest(store, [*s.records, charter, *y.records])
    assert applied_seqs(store, y.author) == [1, 2, 3, 4, 5, 6]
