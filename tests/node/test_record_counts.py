"""Records by state and kind (m006; m008: inserts counted by ingest, state changes and deletions by
triggers), for ``/v1/status``: always what counting the records table says, through held
records, gaps filled, equivocations and revocations."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from citymesh.node import queries
from citymesh.node.store import Store
from citymesh.node.store.migrations import migrate
from citymesh.protocol.records import RatingBody

from .test_search import T0, Author, Catalogue, body, build


def kept(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
    negative = db.execute("SELECT state, kind, n FROM record_counts WHERE n < 0").fetchall()
    assert not negative, f"counts below zero: {negative}"
    return {
        (str(s), str(k)): int(n)
        for s, k, n in db.execute("SELECT state, kind, n FROM record_counts WHERE n > 0")
    }


def counted(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
    return {
        (str(s), str(k)): int(n)
        for s, k, n in db.execute("SELECT state, kind, count(*) FROM records GROUP BY 1, 2")
    }


@pytest.fixture
def catalogue(tmp_path: Path) -> Iterator[Catalogue]:
    store = Store(tmp_path / "node.db")
    try:
        yield build(store)
    finally:
        store.close()


def test_counts_follow_ingest(catalogue: Catalogue) -> None:
    db = catalogue.store.db
    assert kept(db) == counted(db)
    assert kept(db)[("applied", "practice")] == len(catalogue.practices)
    catalogue.retract("mentoring")
    catalogue.rate("r3", "welcome", 5)
    assert kept(db) == counted(db)


def test_counts_follow_held_records_and_the_gap_filling(catalogue: Catalogue) -> None:
    db = catalogue.store.db
    author = catalogue.authors["me"]
    lost = author.seal(body({"en": "Arrives late"}), addr="late")
    after = [author.seal(body({"en": f"Then {i}"}), addr=f"then-{i}") for i in range(3)]
    catalogue.store.ingest(after, Counter(), now_ms=T0)
    assert kept(db) == counted(db)
    assert kept(db)[("held", "practice")] == 3
    catalogue.store.ingest([lost], Counter(), now_ms=T0)
    assert kept(db) == counted(db)
    assert ("held", "practice") not in kept(db)


def test_counts_follow_a_gap_filled_within_one_batch(catalogue: Catalogue) -> None:
    """Held on insert and applied in the same transaction, or dropped in it: the state change is
    counted (trigger) before the insert is (end of batch), and the sum is still right."""
    db = catalogue.store.db
    author = catalogue.authors["me"]
    first = author.seal(body({"en": "First"}), addr="first")
    later = [author.seal(body({"en": f"Later {i}"}), addr=f"later-{i}") for i in range(4)]
    catalogue.store.ingest([*later[::-1], first], Counter(), now_ms=T0)
    assert kept(db) == counted(db)
    assert ("held", "practice") not in kept(db)


def test_no_insert_trigger_after_m008(catalogue: Catalogue) -> None:
    db = catalogue.store.db
    triggers = {
        str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    }
    assert triggers == {"record_counts_update", "record_counts_delete"}


def test_counts_follow_an_equivocation(catalogue: Catalogue) -> None:
    db = catalogue.store.db
    author = catalogue.authors["li"]
    seq, prev = author.seq, author.prev
    one = author.seal(RatingBody(score=4), addr=catalogue.ref("welcome"))
    author.seq, author.prev = seq, prev
    two = author.seal(RatingBody(score=1), addr=catalogue.ref("welcome"))
    catalogue.store.ingest([one], Counter(), now_ms=T0)
    catalogue.store.ingest([two], Counter(), now_ms=T0)
    assert ("evidence", "rating") in kept(db)
    assert kept(db) == counted(db)


def test_status_counts_are_the_applied_ones(catalogue: Catalogue) -> None:
    db = catalogue.store.db
    kinds, _ = queries.counts(db)
    assert kinds == {
        kind: n for (state, kind), n in sorted(counted(db).items()) if state == "applied"
    }
    assert list(kinds) == sorted(kinds)


def test_migration_counts_what_is_stored_and_drops_the_kind_index(tmp_path: Path) -> None:
    """A database from before m006 with records in it."""
    path = tmp_path / "old.db"
    store = Store(path)
    try:
        cat = build(store)
        held = Author(50, "Ghent", "BEL")
        held.city()  # seq 1 never arrives: what follows is held
        store.ingest([held.seal(body({"en": "Held"}), addr="held")], Counter(), now_ms=T0)
        assert cat.practices
    finally:
        store.close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("DROP TRIGGER record_counts_delete")
        db.execute("DROP TRIGGER record_counts_update")
        db.execute("DROP TABLE record_counts")
        db.execute("CREATE INDEX records_state_kind ON records (state, kind)")
        db.execute(
            "DELETE FROM _migrations WHERE name IN"
            " ('m006_record_counts', 'm008_counts_without_insert_trigger')"
        )
        assert migrate(db) == ["m006_record_counts", "m008_counts_without_insert_trigger"]
        assert kept(db) == counted(db)
        assert ("held", "practice") in kept(db)
        names = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master")}
        assert "records_state_kind" not in names
        # A city's own counts read its records only (records_state), not every applied record.
        plan = " ".join(
            str(row[-1])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT kind, count(*) FROM records"
                " WHERE author = ? AND state = 'applied' GROUP BY kind",
                (b"",),
            )
        )
        assert "records_state (state=? AND author=?)" in plan
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
