"""Catalogue indexes kept beside the practices table: full text, filter codes, rating and
replication statistics. Called from apply.py inside the ingest transaction; every function
recomputes from the current-state tables, so the result never depends on arrival order."""

from __future__ import annotations

import hashlib
import sqlite3

import msgspec

from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import PracticeBody

_practice = msgspec.json.Decoder(PracticeBody)


def practice_ref(author: bytes, addr: str) -> str:
    return f"{identity_text(author)}/{addr}"


def index_practice(
    db: sqlite3.Connection, author: bytes, addr: str, body: PracticeBody | None = None
) -> None:
    """(Re)build the search entry and filter codes of one current practice."""
    ref = practice_ref(author, addr)
    unindex_practice(db, ref)
    if body is None:
        row = db.execute(
            "SELECT body FROM current WHERE author = ? AND kind = 'practice' AND addr = ?"
            " AND retracted = 0",
            (author, addr),
        ).fetchone()
        if row is None:
            return
        body = _practice.decode(row[0])
    place = db.execute("SELECT name, country FROM cities WHERE author = ?", (author,)).fetchone()
    city, country = place if place else (None, None)
    db.execute(
        "UPDATE practices SET ref = ?, adapted_from = ? WHERE author = ? AND addr = ?",
        (ref, body.adapted_from, author, addr),
    )
    languages = sorted({*body.title, *body.summary})
    codes = [
        *(("sector", c) for c in body.sectors),
        *(("target_group", c) for c in body.target_groups),
        ("status", body.status),
        *(("language", lang.split("-")[0]) for lang in languages),
    ]
    if country:
        codes.append(("country", country))
    db.executemany(
        "INSERT OR IGNORE INTO practice_codes (facet, code, ref) VALUES (?, ?, ?)",
        [(facet, code, ref) for facet, code in codes],
    )
    db.execute(
        "INSERT INTO practices_fts (rowid, ref, title, summary, body, keywords, place)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            fts_rowid(ref),
            ref,
            " ".join(body.title.values()),
            " ".join(body.summary.values()),
            body.description,
            " ".join([*body.keywords, *(a.name for a in body.actors)]),
            " ".join(x for x in (city, country) if x),
        ),
    )
    db.execute("INSERT OR IGNORE INTO practice_stats (ref) VALUES (?)", (ref,))


def fts_rowid(ref: str) -> int:
    """The full-text row of a practice: a 63-bit hash of its ref, so an entry is found by rowid
    (``ref`` is an unindexed column: deleting by it would scan the whole index)."""
    return int.from_bytes(hashlib.sha256(ref.encode()).digest()[:8], "big") >> 1


def unindex_practice(db: sqlite3.Connection, ref: str) -> None:
    db.execute("DELETE FROM practice_codes WHERE ref = ?", (ref,))
    db.execute("DELETE FROM practices_fts WHERE rowid = ?", (fts_rowid(ref),))


def reindex_author(db: sqlite3.Connection, author: bytes) -> None:
    """After a city profile changes (name, country): refresh its practices' entries."""
    for (addr,) in db.execute("SELECT addr FROM practices WHERE author = ?", (author,)).fetchall():
        index_practice(db, author, str(addr))


def refresh_stats(db: sqlite3.Connection, ref: str) -> None:
    """Recompute rating and replication figures of one practice from the current tables."""
    rating_count, rating_sum = db.execute(
        "SELECT count(*), coalesce(sum(score), 0) FROM ratings r WHERE r.ref = ?", (ref,)
    ).fetchone()
    replications, worked = db.execute(
        "SELECT count(*), coalesce(sum(worked = 'yes'), 0) FROM replications WHERE ref = ?",
        (ref,),
    ).fetchone()
    db.execute(
        "INSERT INTO practice_stats (ref, rating_count, rating_sum, replications, worked)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (ref) DO UPDATE SET"
        " rating_count = excluded.rating_count, rating_sum = excluded.rating_sum,"
        " replications = excluded.replications, worked = excluded.worked",
        (ref, rating_count, rating_sum, replications, worked),
    )
