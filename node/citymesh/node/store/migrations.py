"""Schema migrations: an ordered list of named functions, each applied once and recorded.

Tables (m001): ``records`` holds every accepted record as the exact bytes received, with a state
(applied | held: waiting for a gap to fill | evidence: equivocation); ``authors`` how far each chain
is applied and which key signs next; ``current`` the current version per address with its body as
JSON; ``cities``/``practices``/``ratings``/``replications`` indexed views of ``current``;
``cursors``/``outbox``/``rejections`` transport bookkeeping.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from .catalogue import index_practice, refresh_stats

Migration = Callable[[sqlite3.Connection], None]


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run several statements inside the caller's transaction (executescript would commit)."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def m001_records(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE records (
            id BLOB PRIMARY KEY,
            author BLOB NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            addr TEXT NOT NULL,
            network TEXT NOT NULL,
            created INTEGER NOT NULL,
            signer BLOB NOT NULL,
            prev BLOB,
            envelope BLOB NOT NULL,
            state TEXT NOT NULL,
            received INTEGER NOT NULL
        );
        CREATE INDEX records_author_seq ON records (author, seq);
        CREATE INDEX records_state ON records (state, author, seq);

        CREATE TABLE authors (
            author BLOB PRIMARY KEY,
            applied_seq INTEGER NOT NULL DEFAULT 0,
            last_id BLOB,
            key BLOB,
            recovery BLOB,
            commitment BLOB,
            frozen_seq INTEGER,
            network TEXT
        );

        CREATE TABLE equivocations (
            author BLOB NOT NULL,
            seq INTEGER NOT NULL,
            id_a BLOB NOT NULL,
            id_b BLOB NOT NULL,
            detected INTEGER NOT NULL,
            PRIMARY KEY (author, seq, id_a, id_b)
        );

        CREATE TABLE current (
            author BLOB NOT NULL,
            kind TEXT NOT NULL,
            addr TEXT NOT NULL,
            id BLOB NOT NULL,
            seq INTEGER NOT NULL,
            created INTEGER NOT NULL,
            retracted INTEGER NOT NULL DEFAULT 0,
            body TEXT NOT NULL,
            PRIMARY KEY (author, kind, addr)
        );
        CREATE INDEX current_kind ON current (kind, retracted);

        CREATE TABLE cities (
            author BLOB PRIMARY KEY,
            name TEXT NOT NULL,
            country TEXT NOT NULL,
            seq INTEGER NOT NULL
        );

        CREATE TABLE practices (
            author BLOB NOT NULL,
            addr TEXT NOT NULL,
            id BLOB NOT NULL,
            seq INTEGER NOT NULL,
            created INTEGER NOT NULL,
            title TEXT NOT NULL,
            status TEXT NOT NULL,
            sectors TEXT NOT NULL,
            target_groups TEXT NOT NULL,
            PRIMARY KEY (author, addr)
        );
        CREATE INDEX practices_created ON practices (created);

        CREATE TABLE ratings (
            rater BLOB NOT NULL,
            ref TEXT NOT NULL,
            id BLOB NOT NULL,
            score INTEGER NOT NULL,
            created INTEGER NOT NULL,
            PRIMARY KEY (rater, ref)
        );
        CREATE INDEX ratings_ref ON ratings (ref);

        CREATE TABLE replications (
            author BLOB NOT NULL,
            ref TEXT NOT NULL,
            id BLOB NOT NULL,
            relation TEXT NOT NULL,
            status TEXT NOT NULL,
            worked TEXT,
            created INTEGER NOT NULL,
            PRIMARY KEY (author, ref)
        );
        CREATE INDEX replications_ref ON replications (ref);

        CREATE TABLE cursors (
            relay TEXT PRIMARY KEY,
            stream TEXT NOT NULL,
            stream_created TEXT NOT NULL DEFAULT '',
            seq INTEGER NOT NULL
        );
        CREATE TABLE outbox (
            relay TEXT NOT NULL,
            id BLOB NOT NULL,
            queued INTEGER NOT NULL,
            sent INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (relay, id)
        );
        CREATE INDEX outbox_pending ON outbox (relay, sent);
        CREATE TABLE rejections (
            reason TEXT PRIMARY KEY,
            count INTEGER NOT NULL
        );
        """,
    )


def m002_catalogue(db: sqlite3.Connection) -> None:
    """Search and aggregates: full text (diacritics folded), filter codes, rating/replication stats."""
    _script(
        db,
        """
        ALTER TABLE practices ADD COLUMN ref TEXT NOT NULL DEFAULT '';
        ALTER TABLE practices ADD COLUMN adapted_from TEXT;
        CREATE INDEX practices_ref ON practices (ref);
        CREATE INDEX practices_adapted_from ON practices (adapted_from);
        CREATE TABLE practice_codes (
            facet TEXT NOT NULL,
            code TEXT NOT NULL,
            ref TEXT NOT NULL,
            PRIMARY KEY (facet, code, ref)
        ) WITHOUT ROWID;
        CREATE INDEX practice_codes_ref ON practice_codes (ref);
        CREATE TABLE practice_stats (
            ref TEXT PRIMARY KEY,
            rating_count INTEGER NOT NULL DEFAULT 0,
            rating_sum INTEGER NOT NULL DEFAULT 0,
            replications INTEGER NOT NULL DEFAULT 0,
            worked INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        CREATE VIRTUAL TABLE practices_fts USING fts5 (
            ref UNINDEXED, title, summary, body, keywords, place,
            tokenize = 'unicode61 remove_diacritics 2'
        )
        """,
    )
    # Existing rows: rebuild their search entries from the current state.
    rows = db.execute("SELECT author, addr FROM practices").fetchall()
    for author, addr in rows:
        index_practice(db, bytes(author), str(addr))
    for (ref,) in db.execute("SELECT DISTINCT ref FROM ratings UNION SELECT ref FROM replications"):
        refresh_stats(db, str(ref))


def m003_search_rows(db: sqlite3.Connection) -> None:
    """Search without per-result lookups: one row per practice ref with what a result shows, a
    change counter readers catch up with, the full-text rowid = that row's docid, a second
    full-text index without descriptions (ranking title and summary matches cheaply), and the
    totals of all current ratings (the prior of the shrunk mean) kept up to date."""
    _script(
        db,
        """
        CREATE TABLE practice_search (
            docid INTEGER PRIMARY KEY,
            ref TEXT NOT NULL UNIQUE,
            author BLOB NOT NULL,
            live INTEGER NOT NULL,
            changed INTEGER NOT NULL,
            title TEXT NOT NULL,
            summary TEXT NOT NULL,
            city TEXT,
            country TEXT,
            sectors TEXT NOT NULL,
            target_groups TEXT NOT NULL,
            languages TEXT NOT NULL,
            status TEXT NOT NULL,
            created INTEGER NOT NULL,
            rating_count INTEGER NOT NULL,
            rating_sum INTEGER NOT NULL,
            replications INTEGER NOT NULL
        );
        CREATE INDEX practice_search_changed ON practice_search (changed);
        CREATE VIRTUAL TABLE practices_head_fts USING fts5 (
            title, summary, keywords, place, tokenize = 'unicode61 remove_diacritics 2'
        );
        CREATE TABLE search_state (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            token BLOB NOT NULL,
            changes INTEGER NOT NULL,
            text_changes INTEGER NOT NULL,
            rating_count INTEGER NOT NULL,
            rating_sum INTEGER NOT NULL
        );
        INSERT INTO search_state (id, token, changes, text_changes, rating_count, rating_sum)
        SELECT 0, randomblob(16), 0, 0, coalesce(sum(rating_count), 0),
            coalesce(sum(rating_sum), 0) FROM practice_stats
        """,
    )
    # Full-text rows are keyed by docid from now on: rebuild them.
    db.execute("DELETE FROM practices_fts")
    for author, addr in db.execute("SELECT author, addr FROM practices").fetchall():
        index_practice(db, bytes(author), str(addr))


def m004_trust(db: sqlite3.Connection) -> None:
    """Network trust: the steward identities the node trusts per followed network (anchors), the
    standing of every author those networks name, whether each rating and replication counts, the
    seq after which a revoked author's records are refused, and the per-author hourly record
    counts the followed networks' rate limit is checked against."""
    _script(
        db,
        """
        CREATE TABLE trust_anchors (
            network TEXT NOT NULL,
            steward BLOB NOT NULL,
            PRIMARY KEY (network, steward)
        );
        CREATE TABLE trust_local (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            own BLOB NOT NULL,
            max_per_hour INTEGER,
            limit_since_hour INTEGER,
            min_count_threshold INTEGER
        );
        CREATE TABLE author_hours (
            author BLOB NOT NULL,
            hour INTEGER NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (author, hour)
        );
        CREATE TABLE standings (
            network TEXT NOT NULL,
            member BLOB NOT NULL,
            state TEXT NOT NULL,
            until_seq INTEGER,
            role TEXT NOT NULL,
            city TEXT,
            PRIMARY KEY (network, member)
        );
        CREATE TABLE trust (
            author BLOB PRIMARY KEY,
            state TEXT NOT NULL,
            until_seq INTEGER
        );
        ALTER TABLE authors ADD COLUMN revoked_seq INTEGER;
        ALTER TABLE authors ADD COLUMN limited_seq INTEGER;
        ALTER TABLE ratings ADD COLUMN counts INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE replications ADD COLUMN counts INTEGER NOT NULL DEFAULT 1;
        CREATE INDEX ratings_rater ON ratings (rater);
        """,
    )


def m005_kind_counts(db: sqlite3.Connection) -> None:
    """Records by state and kind without reading the records themselves (``/v1/status`` counts
    them on every call; the table holds the envelopes, gigabytes at a million records)."""
    db.execute("CREATE INDEX records_state_kind ON records (state, kind)")


def m007_leaner_ingest(db: sqlite3.Connection) -> None:
    """Fewer index writes per ingested record: ``ratings_rater`` repeated the first column of the
    ratings key (rater, ref), and ``author_hours`` kept a rowid table beside its key index
    (two B-trees for what one keyed table holds)."""
    _script(
        db,
        """
        DROP INDEX IF EXISTS ratings_rater;
        CREATE TABLE author_hours_keyed (
            author BLOB NOT NULL,
            hour INTEGER NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (author, hour)
        ) WITHOUT ROWID;
        INSERT INTO author_hours_keyed (author, hour, n) SELECT author, hour, n FROM author_hours;
        DROP TABLE author_hours;
        ALTER TABLE author_hours_keyed RENAME TO author_hours;
        """,
    )


def m006_record_counts(db: sqlite3.Connection) -> None:
    """Records by state and kind kept as counts (``/v1/status`` reads a few rows instead of
    scanning an index entry per record: 0.25-0.4 s at a million records), kept by triggers on
    ``records``. Replaces m005's index ``records_state_kind``, which SQLite, having no statistics,
    also took for a city's own counts (``WHERE author = ? AND state = ? GROUP BY kind``), reading
    every applied record of the node in seconds where ``records_state`` reads only the city's."""
    db.execute(
        "CREATE TABLE record_counts (state TEXT NOT NULL, kind TEXT NOT NULL,"
        " n INTEGER NOT NULL, PRIMARY KEY (state, kind)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT INTO record_counts (state, kind, n)"
        " SELECT state, kind, count(*) FROM records GROUP BY state, kind"
    )
    count_new = (
        "INSERT INTO record_counts (state, kind, n) VALUES (new.state, new.kind, 1)"
        " ON CONFLICT (state, kind) DO UPDATE SET n = n + 1;"
    )
    count_old = "UPDATE record_counts SET n = n - 1 WHERE state = old.state AND kind = old.kind;"
    db.execute(f"CREATE TRIGGER record_counts_insert AFTER INSERT ON records BEGIN {count_new} END")
    db.execute(f"CREATE TRIGGER record_counts_delete AFTER DELETE ON records BEGIN {count_old} END")
    db.execute(
        "CREATE TRIGGER record_counts_update AFTER UPDATE OF state, kind ON records"
        " WHEN old.state IS NOT new.state OR old.kind IS NOT new.kind"
        f" BEGIN {count_old} {count_new} END"
    )
    db.execute("DROP INDEX IF EXISTS records_state_kind")


def m008_counts_without_insert_trigger(db: sqlite3.Connection) -> None:
    """Ingest counts the records it inserts itself (``apply._finish``, once per batch): an AFTER
    INSERT trigger on ``records`` made SQLite open a statement journal for every insert, which
    took about 60 of the 80-100 us an insert cost at catch-up. The update and delete triggers stay
    (state changes are rare and may touch many rows), now as upserts: within a batch a record may
    change state or be dropped before its insert is counted, so a count may pass through a
    negative value or start from a row that does not exist yet."""
    db.execute("DROP TRIGGER IF EXISTS record_counts_insert")
    db.execute("DROP TRIGGER IF EXISTS record_counts_delete")
    db.execute("DROP TRIGGER IF EXISTS record_counts_update")
    count_new = (
        "INSERT INTO record_counts (state, kind, n) VALUES (new.state, new.kind, 1)"
        " ON CONFLICT (state, kind) DO UPDATE SET n = n + 1;"
    )
    count_old = (
        "INSERT INTO record_counts (state, kind, n) VALUES (old.state, old.kind, -1)"
        " ON CONFLICT (state, kind) DO UPDATE SET n = n - 1;"
    )
    db.execute(f"CREATE TRIGGER record_counts_delete AFTER DELETE ON records BEGIN {count_old} END")
    db.execute(
        "CREATE TRIGGER record_counts_update AFTER UPDATE OF state, kind ON records"
        " WHEN old.state IS NOT new.state OR old.kind IS NOT new.kind"
        f" BEGIN {count_old} {count_new} END"
    )


MIGRATIONS: list[Migration] = [
    m001_records,
    m002_catalogue,
    m003_search_rows,
    m004_trust,
    m005_kind_counts,
    m007_leaner_ingest,
    m006_record_counts,
    m008_counts_without_insert_trigger,
]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied INTEGER NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    applied: list[str] = []
    for migration in MIGRATIONS:
        name = migration.__name__
        if name in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            migration(db)
            db.execute(
                "INSERT INTO _migrations (name, applied) VALUES (?, ?)",
                (name, int(time.time() * 1000)),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        applied.append(name)
    return applied
