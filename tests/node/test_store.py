"""The node's SQLite store: order-independent derived state, gaps, forks, keys, outbox, pragmas.

Everything runs against real SQLite files (tmp dirs); records are real signed envelopes.
"""

from __future__ import annotations

import datetime
import itertools
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citymesh.node.store import Store, StoreError
from citymesh.node.store.db import connect
from citymesh.node.store.migrations import MIGRATIONS, m007_leaner_ingest, migrate
from citymesh.protocol.envelope import seal
from citymesh.protocol.identity import (
    Genesis,
    SecretKey,
    identity_of,
    identity_text,
    next_key_commitment,
)
from citymesh.protocol.records import (
    Body,
    CityBody,
    HeadBody,
    KeyRotationBody,
    Outcome,
    RatingBody,
    Record,
    ReplicationBody,
    RetractionBody,
)
from citymesh.protocol.signing import rotation_message
from citymesh.protocol.subjects import subject
from tests.protocol.builders import NETWORK, NOW_MS, make_genesis, secret_key

from .conftest import practice

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- building chains ------------------------------------------------------------------------------
@dataclass
class Chain:
    """One author's chain: seals the next record with the right seq, prev and genesis."""

    secret: SecretKey
    genesis: Genesis
    records: list[Record] = field(default_factory=list)

    @classmethod
    def new(cls, key: int, *, next_key: SecretKey | None = None) -> Chain:
        secret = secret_key(key)
        commitment = None if next_key is None else next_key_commitment(next_key.public_key)
        return cls(secret, make_genesis(secret, next_key=commitment, salt=b"store-%d" % key))

    @property
    def author(self) -> bytes:
        return identity_of(self.genesis)

    def ref(self, addr: str) -> str:
        return f"{identity_text(self.author)}/{addr}"

    def seal(
        self,
        body: Body,
        addr: str = "",
        *,
        seq: int | None = None,
        prev: bytes | None = None,
        secret: SecretKey | None = None,
    ) -> Record:
        """A record at ``seq`` (default: the next one) without appending it to the chain."""
        seq = len(self.records) + 1 if seq is None else seq
        if prev is None and seq > 1:
            prev = self.records[seq - 2].id
        return seal(
            secret or self.secret,
            body=body,
            network=NETWORK,
            author=self.author,
            seq=seq,
            prev=prev,
            created=NOW_MS + seq * 60_000,
            addr=addr,
            genesis=self.genesis if seq == 1 else None,
        )

    def add(self, body: Body, addr: str = "", *, secret: SecretKey | None = None) -> Record:
        rec = self.seal(body, addr, secret=secret)
        self.records.append(rec)
        return rec


def city(name: str, country: str) -> CityBody:
    return CityBody(name=name, country=country, networks=[NETWORK])


def rotation(chain: Chain, new: SecretKey) -> KeyRotationBody:
    """A rotation to ``new`` with the new key's real counter-signature."""
    return KeyRotationBody(
        new_key=new.public_key,
        counter_signature=new.sign(rotation_message(chain.author, new.public_key)),
    )


@dataclass
class History:
    a: Chain
    b: Chain
    c: Chain
    a_new_key: SecretKey

    @property
    def records(self) -> list[Record]:
        return [*self.a.records, *self.b.records, *self.c.records]


@cache
def history() -> History:
    """Three cities with updates, retractions, re-publications, ratings, replications, a rotation."""
    a_new = secret_key(11)
    a = Chain.new(10, next_key=a_new)
    b = Chain.new(20)
    c = Chain.new(30)
    a.add(city("Mechelen", "BEL"))  # 1
    b.add(city("Ghent", "BEL"))  # 1
    c.add(city("Utrecht", "NLD"))  # 1

    a.add(practice(1, title="Welcome desk v1"), "welcome-desk")  # 2
    a.add(practice(2, title="Language cafe", sector="EDUCATION"), "language-cafe")  # 3
    a.add(practice(1, title="Welcome desk v2"), "welcome-desk")  # 4
    a.add(rotation(a, a_new))  # 5, signed by the genesis key
    a.add(practice(1, title="Welcome desk v3"), "welcome-desk", secret=a_new)  # 6
    a.add(RetractionBody(reason="paused"), "practice/language-cafe", secret=a_new)  # 7
    a.add(
        practice(2, title="Language cafe again", sector="EDUCATION"),
        "language-cafe",
        secret=a_new,
    )  # 8
    a.add(RatingBody(score=4), b.ref("housing-first"), secret=a_new)  # 9

    b.add(practice(3, title="Housing first"), "housing-first")  # 2
    b.add(RatingBody(score=3, comment="promising"), a.ref("welcome-desk"))  # 3
    b.add(ReplicationBody(relation="adapted", status="planned"), a.ref("welcome-desk"))  # 4
    b.add(RatingBody(score=5, comment="it works"), a.ref("welcome-desk"))  # 5
    b.add(practice(3, title="Housing first, city-wide"), "housing-first")  # 6
    b.add(practice(4, title="Old shelter"), "old-shelter")  # 7
    b.add(RetractionBody(reason="ended"), "practice/old-shelter")  # 8

    c.add(
        ReplicationBody(relation="replicated", status="piloting", start=datetime.date(2024, 1, 1)),
        a.ref("welcome-desk"),
    )  # 2
    c.add(RatingBody(score=2), b.ref("housing-first"))  # 3
    c.add(
        ReplicationBody(relation="replicated", status="running", outcome=Outcome(worked="yes")),
        a.ref("welcome-desk"),
    )  # 4
    c.add(practice(5, title="Night school", sector="EDUCATION"), "night-school")  # 5
    c.add(RetractionBody(), "practice/night-school")  # 6
    c.add(practice(5, title="Night school 2", sector="EDUCATION"), "night-school")  # 7
    c.add(HeadBody(latest_seq=7, latest_id=c.records[-1].id))  # 8
    return History(a, b, c, a_new)


# -- reading the store back -----------------------------------------------------------------------
DERIVED = {
    "current": "SELECT author, kind, addr, id, seq, created, retracted, body FROM current",
    "cities": "SELECT author, name, country, seq FROM cities",
    "practices": "SELECT author, addr, id, seq, created, title, status, sectors, target_groups"
    " FROM practices",
    "ratings": "SELECT rater, ref, id, score, created FROM ratings",
    "replications": "SELECT author, ref, id, relation, status, worked, created FROM replications",
    "authors": "SELECT author, applied_seq, last_id, key, commitment, frozen_seq FROM authors",
    "author_hours": "SELECT author, hour, n FROM author_hours",
}
AUTHOR_COLUMN = {"ratings": "rater"}
FIGURES = {
    "practice_stats": "SELECT ref, rating_count, rating_sum, replications, worked"
    " FROM practice_stats",
    "practice_search": "SELECT ref, live, rating_count, rating_sum, replications"
    " FROM practice_search",
    "search_totals": "SELECT rating_count, rating_sum FROM search_state",
}
"""Figures over every author (compared when the whole store is dumped)."""


def dump(store: Store, author: bytes | None = None) -> dict[str, Any]:
    """Derived tables (optionally one author's) and the set of (id, state) of stored records."""
    args: tuple[Any, ...] = () if author is None else (author,)
    out: dict[str, Any] = {}
    for table, select in DERIVED.items():
        where = "" if author is None else f" WHERE {AUTHOR_COLUMN.get(table, 'author')} = ?"
        out[table] = sorted(store.db.execute(select + where, args).fetchall(), key=repr)
    if author is None:
        for table, select in FIGURES.items():
            out[table] = sorted(store.db.execute(select).fetchall(), key=repr)
    where = "" if author is None else " WHERE author = ?"
    out["records"] = set(store.db.execute(f"SELECT id, state FROM records{where}", args))
    return out


def states(store: Store) -> dict[bytes, str]:
    return dict(store.db.execute("SELECT id, state FROM records").fetchall())


def rejections(store: Store) -> dict[str, int]:
    return dict(store.db.execute("SELECT reason, count FROM rejections").fetchall())


def author_row(store: Store, author: bytes) -> tuple[Any, ...]:
    return tuple(
        store.db.execute(
            "SELECT applied_seq, last_id, key, frozen_seq FROM authors WHERE author = ?",
            (author,),
        ).fetchone()
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "node.db")
    yield s
    s.close()


def ingest(store: Store, *batches: list[Record]) -> Counter[str]:
    rejected: Counter[str] = Counter()
    for batch in batches:
        rejected.update(store.ingest(batch, Counter(), now_ms=NOW_MS).rejected)
    return rejected


@st.composite
def arrivals(draw: st.DrawFn, records: list[Record], max_dups: int = 8) -> list[list[Record]]:
    """A random permutation with random duplicates, split into random batches."""
    order = list(draw(st.permutations(records)))
    for dup in draw(st.lists(st.sampled_from(records), max_size=max_dups)):
        order.insert(draw(st.integers(0, len(order))), dup)
    cuts = sorted(draw(st.sets(st.integers(1, len(order) - 1), max_size=5)))
    bounds = [0, *cuts, len(order)]
    return [order[lo:hi] for lo, hi in itertools.pairwise(bounds)]


# -- derived state is a function of the set of records -------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The history applied one record at a time in chain order."""
    h = history()
    s = Store(tmp_path_factory.mktemp("reference") / "node.db")
    try:
        for chain in (h.a, h.b, h.c):
            for rec in chain.records:
                assert ingest(s, [rec]) == Counter()
        return dump(s)
    finally:
        s.close()


def test_reference_state_is_what_the_history_says(reference: dict[str, Any]) -> None:
    """Sanity check of the reference itself, so that 'identical' also means 'right'."""
    h = history()
    a, b, c = h.a, h.b, h.c
    assert reference["records"] == {(r.id, "applied") for r in h.records}
    assert reference["authors"] == sorted(
        [
            (a.author, 9, a.records[-1].id, h.a_new_key.public_key, None, None),
            (b.author, 8, b.records[-1].id, b.secret.public_key, None, None),
            (c.author, 8, c.records[-1].id, c.secret.public_key, None, None),
        ],
        key=repr,
    )
    practices = {(row[0], row[1]): (row[3], row[5]) for row in reference["practices"]}
    assert practices == {
        (a.author, "welcome-desk"): (6, "Welcome desk v3"),
        (a.author, "language-cafe"): (8, "Language cafe again"),
        (b.author, "housing-first"): (6, "Housing first, city-wide"),
        (c.author, "night-school"): (7, "Night school 2"),
    }
    current = {(row[0], row[1], row[2]): (row[4], row[6]) for row in reference["current"]}
    assert current[(b.author, "practice", "old-shelter")] == (7, 1)  # retracted, kept
    assert current[(a.author, "practice", "language-cafe")] == (8, 0)  # published again
    assert current[(a.author, "retraction", "practice/language-cafe")] == (7, 0)
    assert current[(c.author, "head", "")] == (8, 0)
    ratings = {(row[0], row[1]): row[3] for row in reference["ratings"]}
    assert ratings == {
        (a.author, b.ref("housing-first")): 4,
        (b.author, a.ref("welcome-desk")): 5,
        (c.author, b.ref("housing-first")): 2,
    }
    replications = {(row[0], row[1]): row[3:6] for row in reference["replications"]}
    assert replications == {
        (b.author, a.ref("welcome-desk")): ("adapted", "planned", None),
        (c.author, a.ref("welcome-desk")): ("replicated", "running", "yes"),
    }
    assert {row[0]: row[1] for row in reference["cities"]} == {
        a.author: "Mechelen",
        b.author: "Ghent",
        c.author: "Utrecht",
    }


@PROPERTY
@given(data=st.data())
def test_any_order_duplicates_and_batches_give_the_same_state(
    data: st.DataObject, reference: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    records = history().records
    batches = data.draw(arrivals(records))
    s = Store(tmp_path_factory.mktemp("perm") / "node.db")
    try:
        duplicates = 0
        for batch in batches:
            result = s.ingest(batch, Counter(), now_ms=NOW_MS)
            assert result.rejected == Counter()
            duplicates += result.duplicates
        assert duplicates == sum(len(b) for b in batches) - len(records)
        assert rejections(s) == {}
        assert dump(s) == reference
    finally:
        s.close()


# -- gaps -----------------------------------------------------------------------------------------
def test_record_after_a_gap_is_held_until_the_gap_fills(store: Store) -> None:
    chain = Chain.new(40)
    r1 = chain.add(city("Leuven", "BEL"))
    r2 = chain.add(practice(1), "welcome-desk")
    r3 = chain.add(practice(1, title="Welcome desk, renamed"), "welcome-desk")

    store.ingest([r1], Counter(), now_ms=NOW_MS)
    result = store.ingest([r3], Counter(), now_ms=NOW_MS)
    assert result.applied == []
    assert [r.id for r in result.stored] == [r3.id]
    assert states(store) == {r1.id: "applied", r3.id: "held"}
    assert store.applied_head(chain.author) == (1, r1.id)
    assert store.current_body(chain.author, "practice", "welcome-desk") is None
    assert store.db.execute("SELECT count(*) FROM practices").fetchone()[0] == 0

    result = store.ingest([r2], Counter(), now_ms=NOW_MS)
    assert [r.id for r in result.applied] == [r2.id, r3.id]
    assert states(store) == {r1.id: "applied", r2.id: "applied", r3.id: "applied"}
    assert store.applied_head(chain.author) == (3, r3.id)
    assert store.db.execute("SELECT seq, title FROM practices").fetchall() == [
        (3, "Welcome desk, renamed")
    ]


def test_held_records_wait_for_the_genesis(store: Store) -> None:
    chain = Chain.new(41)
    r1 = chain.add(city("Leuven", "BEL"))
    r2 = chain.add(practice(1), "welcome-desk")
    store.ingest([r2], Counter(), now_ms=NOW_MS)
    assert states(store) == {r2.id: "held"}
    assert store.applied_head(chain.author) == (0, None)
    result = store.ingest([r1], Counter(), now_ms=NOW_MS)
    assert [r.id for r in result.applied] == [r1.id, r2.id]


# -- equivocation ---------------------------------------------------------------------------------
@cache
def equivocation() -> tuple[Chain, Record, Chain]:
    """Author E: seq 1-4 plus a second, different seq 3; author B: three honest records."""
    e = Chain.new(50)
    e.add(city("Antwerp", "BEL"))
    e.add(practice(1), "welcome-desk")
    e.add(practice(1, title="Welcome desk v2"), "welcome-desk")
    e.add(practice(2), "second")
    other = e.seal(practice(1, title="Welcome desk, the other story"), "welcome-desk", seq=3)
    b = Chain.new(51)
    b.add(city("Bruges", "BEL"))
    b.add(practice(3), "housing")
    b.add(RatingBody(score=4), e.ref("welcome-desk"))
    return e, other, b


@pytest.fixture(scope="module")
def honest_below_fork(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """E's derived state from seq 1-2 only, and B's from all of B."""
    e, _, b = equivocation()
    s = Store(tmp_path_factory.mktemp("below") / "node.db")
    try:
        ingest(s, e.records[:2], b.records)
        return {"e": dump(s, e.author), "b": dump(s, b.author)}
    finally:
        s.close()


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


@PROPERTY
@given(data=st.data())
def test_equivocation_keeps_both_and_freezes_whatever_the_order(
    data: st.DataObject,
    honest_below_fork: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    e, other, b = equivocation()
    e1, e2, e3, e4 = e.records
    batches = data.draw(arrivals([*e.records, other, *b.records], max_dups=4))
    s = Store(tmp_path_factory.mktemp("equiv") / "node.db")
    try:
        ingest(s, *batches)
        st_ = states(s)
        assert st_[e3.id] == "evidence"
        assert st_[other.id] == "evidence"
        assert st_[e1.id] == st_[e2.id] == "applied"
        # seq 4 is either kept as evidence (arrived before the freeze) or refused (after it).
        assert st_.get(e4.id, "evidence") == "evidence"
        # The pair at seq 3 is recorded. When seq 4 was applied on top of the other seq 3 first,
        # its prev link (to our seq 3) is also recorded as a fork at seq 4: extra, never lower.
        rows = s.db.execute("SELECT author, seq, id_a, id_b FROM equivocations").fetchall()
        assert (e.author, 3, min(e3.id, other.id), max(e3.id, other.id)) in rows
        assert all(row[0] == e.author and row[1] >= 3 for row in rows)
        assert author_row(s, e.author) == (2, e2.id, e.secret.public_key, 3)
        assert rejections(s).get("equivocation", 0) >= 1

        # E's derived state is exactly that of its records below the frozen seq; B is untouched.
        below = honest_below_fork["e"]
        got = dump(s, e.author)
        assert _without(got, "records", "authors") == _without(below, "records", "authors")
        assert got["authors"] == [(e.author, 2, e2.id, e.secret.public_key, None, 3)]
        assert dump(s, b.author) == honest_below_fork["b"]

        # Anything at or past the frozen seq is refused and not stored.
        e5 = e.seal(practice(9), "late", seq=5)
        e3_third = e.seal(practice(9, title="a third story"), "welcome-desk", seq=3)
        before = s.record_count()
        result = s.ingest([e5, e3_third], Counter(), now_ms=NOW_MS)
        assert result.rejected == Counter({"frozen": 2})
        assert result.stored == result.applied == []
        assert s.record_count() == before
        assert s.known_ids([e5.id, e3_third.id]) == set()
        assert rejections(s)["frozen"] >= 2
    finally:
        s.close()


# -- broken prev link -----------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["chain", "reversed", "fork-first"])
def test_broken_prev_link_is_a_fork(store: Store, order: str) -> None:
    f = Chain.new(60)
    f1 = f.add(city("Liege", "BEL"))
    f2 = f.add(practice(1), "welcome-desk")
    # seq 3 validly signed by the author but pointing at seq 1: another history.
    f3 = f.seal(practice(1, title="forked"), "welcome-desk", seq=3, prev=f1.id)
    f4 = f.seal(practice(2), "second", seq=4, prev=f3.id)
    arrival = {
        "chain": [[f1], [f2], [f3], [f4]],
        "reversed": [[f4], [f3], [f2], [f1]],
        "fork-first": [[f3, f4], [f1, f2]],
    }[order]
    ingest(store, *arrival)

    s = states(store)
    assert s[f1.id] == s[f2.id] == "applied"
    assert s[f3.id] == "evidence"
    assert s.get(f4.id, "evidence") == "evidence"  # never applied
    assert author_row(store, f.author) == (2, f2.id, f.secret.public_key, 3)
    assert store.db.execute("SELECT author, seq FROM equivocations").fetchall() == [(f.author, 3)]
    assert store.db.execute("SELECT addr, seq, title FROM practices").fetchall() == [
        ("welcome-desk", 2, "Practice 1")
    ]
    assert store.db.execute(
        "SELECT kind, addr, seq FROM current WHERE author = ? ORDER BY seq", (f.author,)
    ).fetchall() == [("city", "", 1), ("practice", "welcome-desk", 2)]
    # The honest seq 3 is now refused too: the author is frozen from seq 3 on.
    honest3 = f.add(practice(1, title="honest"), "welcome-desk")
    assert store.ingest([honest3], Counter(), now_ms=NOW_MS).rejected == Counter({"frozen": 1})
    assert store.known_ids([honest3.id]) == set()


# -- signer is not the author's current key --------------------------------------------------------
@pytest.mark.parametrize("late", [False, True], ids=["after-rotation", "before-rotation"])
def test_old_key_after_rotation_is_rejected_as_chain(store: Store, late: bool) -> None:
    new = secret_key(71)
    k = Chain.new(70)
    k.add(city("Namur", "BEL"))
    k.add(practice(1), "welcome-desk")
    k.add(rotation(k, new))
    old_key = k.seal(practice(1, title="signed with the old key"), "welcome-desk")
    good = k.seal(practice(1, title="signed with the new key"), "welcome-desk", secret=new)

    if late:  # the old-key record arrives first and waits (held) for seq 1-3
        held = store.ingest([old_key], Counter(), now_ms=NOW_MS, bridge_to=["other"])
        assert states(store) == {old_key.id: "held"}
        assert held.rejected == Counter()
        result = store.ingest(k.records, Counter(), now_ms=NOW_MS, bridge_to=["other"])
    else:
        store.ingest(k.records, Counter(), now_ms=NOW_MS, bridge_to=["other"])
        result = store.ingest([old_key], Counter(), now_ms=NOW_MS, bridge_to=["other"])

    assert result.rejected == Counter({"chain": 1})
    assert old_key.id not in {r.id for r in result.stored}
    assert old_key.id not in {r.id for r in result.applied}
    assert store.known_ids([old_key.id]) == set()
    assert rejections(store) == {"chain": 1}
    assert author_row(store, k.author) == (3, k.records[-1].id, new.public_key, None)
    assert store.db.execute("SELECT title FROM practices").fetchall() == [("Practice 1",)]
    # The rejected record is not bridged to other relays either.
    assert [row[0] for row in store.pending_outbox("other")] == [r.id for r in k.records]
    assert store.outbox_size("other") == len(k.records)

    # The same seq signed by the new key is applied.
    result = store.ingest([good], Counter(), now_ms=NOW_MS)
    assert [r.id for r in result.applied] == [good.id]
    assert store.db.execute("SELECT title FROM practices").fetchall() == [
        ("signed with the new key",)
    ]


def test_stranger_key_is_rejected_as_chain(store: Store) -> None:
    k = Chain.new(72)
    k.add(city("Namur", "BEL"))
    forged = k.seal(practice(1), "welcome-desk", secret=secret_key(73))
    result = store.ingest([*k.records, forged], Counter(), now_ms=NOW_MS)
    assert result.rejected == Counter({"chain": 1})
    assert store.known_ids([forged.id]) == set()
    assert store.applied_head(k.author) == (1, k.records[0].id)


# -- rejection counters and the cursor commit with the batch -------------------------------------
def test_ingest_counts_rejections_and_sets_cursor_in_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    chain = Chain.new(80)
    r1 = chain.add(city("Ostend", "BEL"))
    r2 = chain.add(practice(1), "welcome-desk")
    r3 = chain.add(practice(2), "second")

    s = Store(path)
    try:
        s.ingest(
            [r1],
            Counter({"bad_signature": 2}),
            now_ms=NOW_MS,
            cursor=("relay", "STREAM", "created", 17),
        )
        s.ingest([], Counter({"bad_signature": 1, "future": 1, "invalid": 0}), now_ms=NOW_MS)
    finally:
        s.close()

    # What was committed is there for the next process.
    s = Store(path)
    try:
        assert rejections(s) == {"bad_signature": 3, "future": 1}
        assert s.cursor("relay") == ("created", 17)
        assert s.db.execute(
            "SELECT relay, stream, stream_created, seq FROM cursors"
        ).fetchall() == [("relay", "STREAM", "created", 17)]
        assert s.known_ids([r1.id]) == {r1.id}

        # A failure half-way through a batch (r2 already stored and applied inside the
        # transaction) leaves records, derived state, counters and cursor as they were.
        before = dump(s)
        not_a_record = SimpleNamespace(id=b"\x01" * 32, header=None)
        with pytest.raises(AttributeError):
            s.ingest(
                [r2, not_a_record],  # type: ignore[list-item]
                Counter({"bad_signature": 5}),
                now_ms=NOW_MS,
                cursor=("relay", "STREAM", "created", 30),
                bridge_to=["other"],
            )
        assert dump(s) == before
        assert rejections(s) == {"bad_signature": 3, "future": 1}
        assert s.cursor("relay") == ("created", 17)
        assert s.outbox_size("other") == 0
        assert not s.db.in_transaction

        # The store keeps working: the same batch, corrected, goes through.
        result = s.ingest(
            [r2, r3], Counter(), now_ms=NOW_MS, cursor=("relay", "STREAM", "created", 30)
        )
        assert [r.id for r in result.applied] == [r2.id, r3.id]
        assert s.cursor("relay") == ("created", 30)
    finally:
        s.close()
    assert not Path(f"{path}-journal").exists()


# -- outbox ---------------------------------------------------------------------------------------
def _expected(records: list[Record]) -> list[tuple[bytes, bytes, str]]:
    return [
        (r.id, r.envelope, subject(r.header.network, r.header.author, r.header.kind))
        for r in records
    ]


def test_outbox_queue_send_and_requeue(store: Store) -> None:
    own = Chain.new(90)
    own.add(city("Mechelen", "BEL"))
    own.add(practice(1), "welcome-desk")
    own.add(practice(2), "second")
    own.add(RetractionBody(), "practice/second")
    other = Chain.new(91)
    other.add(city("Ghent", "BEL"))
    other.add(practice(3), "housing")

    # Two records queued at the same ms, the rest later: chain order either way.
    for i, rec in enumerate(own.records[:3]):
        result = store.add_own(rec, relays=["r1", "r2"], now_ms=NOW_MS + (i // 2))
        assert [r.id for r in result.applied] == [rec.id]
    assert store.pending_outbox("r1") == _expected(own.records[:3])
    assert store.pending_outbox("r2") == _expected(own.records[:3])
    assert store.pending_outbox("r3") == []
    assert store.pending_outbox("r1", limit=2) == _expected(own.records[:2])

    # A record this node cannot apply is refused whole: not stored, not queued.
    gap = own.seal(practice(5), "gap", seq=6, prev=own.records[-1].id)
    with pytest.raises(StoreError, match="seq 6"):
        store.add_own(gap, relays=["r1"], now_ms=NOW_MS + 2)
    assert store.known_ids([gap.id]) == set()
    assert store.outbox_size("r1") == 3

    store.add_own(own.records[3], relays=["r1"], now_ms=NOW_MS + 3)
    store.ingest(other.records, Counter(), now_ms=NOW_MS + 4)  # not own, not bridged

    store.mark_sent("r1", [own.records[0].id, own.records[1].id], NOW_MS + 5)
    assert store.pending_outbox("r1") == _expected(own.records[2:])
    assert store.outbox_size("r1") == 2
    assert store.pending_outbox("r2") == _expected(own.records[:3])

    # A new relay gets every own record, once; relays that had them get nothing new.
    assert store.queue_unsent_own("r3", own.author, NOW_MS + 6) == 4
    assert store.pending_outbox("r3") == _expected(own.records)
    assert store.queue_unsent_own("r3", own.author, NOW_MS + 7) == 0
    assert store.queue_unsent_own("r1", own.author, NOW_MS + 7) == 0  # sent ones stay sent
    assert store.pending_outbox("r1") == _expected(own.records[2:])
    assert store.queue_unsent_own("r2", own.author, NOW_MS + 7) == 1  # only the retraction
    assert store.pending_outbox("r2") == _expected(own.records)

    # A relay that lost its stream gets everything again, sent or not, own or not.
    store.mark_sent("r1", [r.id for r in own.records], NOW_MS + 8)
    assert store.pending_outbox("r1") == []
    assert store.queue_all("r1", NOW_MS + 9, author=other.author) == 2
    assert store.pending_outbox("r1") == _expected(other.records)
    assert store.queue_all("r1", NOW_MS + 10) == 6
    pending = store.pending_outbox("r1")
    assert sorted(pending) == sorted(_expected([*own.records, *other.records]))
    for chain in (own, other):
        ids = [row[0] for row in pending if row[0] in {r.id for r in chain.records}]
        assert ids == [r.id for r in chain.records]  # each author in chain order
    assert store.outbox_size("r1") == 6


# -- pragmas and migrations -----------------------------------------------------------------------
def test_wal_and_synchronous_full(store: Store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    reader = connect(store.path, readonly=True)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        reader.close()


def test_migrations_are_recorded_and_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    names = [m.__name__ for m in MIGRATIONS]
    chain = Chain.new(95)
    rec = chain.add(city("Mechelen", "BEL"))

    s = Store(path)
    try:
        first = s.db.execute("SELECT name, applied FROM _migrations ORDER BY name").fetchall()
        assert [name for name, _ in first] == sorted(names)
        s.ingest([rec], Counter(), now_ms=NOW_MS)
    finally:
        s.close()

    s = Store(path)
    try:
        again = s.db.execute("SELECT name, applied FROM _migrations ORDER BY name").fetchall()
        assert again == first
        assert migrate(s.db) == []
        assert (
            s.db.execute("SELECT name, applied FROM _migrations ORDER BY name").fetchall() == first
        )
        assert s.known_ids([rec.id]) == {rec.id}
        assert s.integrity_check() == "ok"
    finally:
        s.close()


def test_fresh_database_applies_every_migration(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "plain.db", isolation_level=None)
    try:
        assert migrate(db) == [m.__name__ for m in MIGRATIONS]
        assert migrate(db) == []
    finally:
        db.close()


def test_garbage_file_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    garbage = b"this is not an SQLite database, just some bytes\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as info:
        Store(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == garbage  # nothing overwritten


def test_m007_keeps_hourly_counts_and_drops_the_repeated_index(tmp_path: Path) -> None:
    """A database from before m007 (author_hours with a rowid, ratings_rater) keeps its hourly
    counts and answers rater lookups from the ratings key afterwards."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied INTEGER NOT NULL)")
        upto = MIGRATIONS.index(m007_leaner_ingest)
        for migration in MIGRATIONS[:upto]:
            migration(db)
            db.execute("INSERT INTO _migrations VALUES (?, 0)", (migration.__name__,))
        db.executemany(
            "INSERT INTO author_hours (author, hour, n) VALUES (?, ?, ?)",
            [(b"a" * 32, 100, 7), (b"b" * 32, 101, 600)],
        )
        assert migrate(db) == [m.__name__ for m in MIGRATIONS[upto:]]
        assert db.execute("SELECT author, hour, n FROM author_hours ORDER BY hour").fetchall() == [
            (b"a" * 32, 100, 7),
            (b"b" * 32, 101, 600),
        ]
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "ratings_rater" not in names
        assert "author_hours_keyed" not in names
        plan = " ".join(
            str(row[-1])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT ref FROM ratings WHERE rater = ?", (b"",)
            )
        )
        assert "sqlite_autoindex_ratings_1" in plan
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
