"""Catalogue indexes kept beside the practices table: full text, filter codes, rating and
replication statistics. Called from apply.py inside the ingest transaction; every function
recomputes from the current-state tables, so the result never depends on arrival order.

``practice_search`` (m003) holds one row per practice ref ever indexed: what a search result shows
(title, summary, city, …, rating and replication figures), ``live`` (0 once retracted) and
``changed``, the value of ``search_state.changes`` when the row last changed, so a reader can
catch up with what changed since it last looked (search.py keeps its facet bitsets that way).
Its ``docid`` is the row's id in ``practices_fts`` and in ``practices_head_fts`` (the same text
without the description, so title and summary matches are ranked without reading descriptions);
a ref keeps its docid across versions.
``search_state`` (one row) also keeps the totals of all current ratings (the prior mean)."""

from __future__ import annotations

import sqlite3

import msgspec

from citymesh.protocol.records import PracticeBody

from ..idtext import identity_text

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
    docid = None
    if _has_search(db):
        docid = _search_row(db, ref, author, addr, body, (city, country), languages)
    texts = (
        " ".join(body.title.values()),
        " ".join(body.summary.values()),
        " ".join([*body.keywords, *(a.name for a in body.actors)]),
        " ".join(x for x in (city, country) if x),
    )
    db.execute(
        "INSERT INTO practices_fts (rowid, ref, title, summary, body, keywords, place)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (docid, ref, texts[0], texts[1], body.description, texts[2], texts[3]),
    )
    if docid is not None:
        db.execute(
            "INSERT INTO practices_head_fts (rowid, title, summary, keywords, place)"
            " VALUES (?, ?, ?, ?, ?)",
            (docid, *texts),
        )
    db.execute("INSERT OR IGNORE INTO practice_stats (ref) VALUES (?)", (ref,))


class Connection(sqlite3.Connection):
    """The store's connections (``connect(factory=Connection)``): they remember that the search
    tables exist, so ingest does not ask sqlite_master for every practice and rating."""

    search_ready: bool = False


def _has_search(db: sqlite3.Connection) -> bool:
    """False while migrating a database from before m003 (m002 reindexes with these functions)."""
    if getattr(db, "search_ready", False):
        return True
    found = (
        db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'practice_search'"
        ).fetchone()
        is not None
    )
    if found and isinstance(db, Connection):
        db.search_ready = True  # the tables are never dropped again
    return found


def _bump(db: sqlite3.Connection, *, text: bool) -> int:
    """Next value of the change counter (and of the full-text one if ``text``)."""
    # WHERE id = 0: a one-row update needs no statement journal (an UPDATE that may touch
    # several rows of a table with a CHECK constraint opens one); no RETURNING (it goes through
    # an ephemeral table): together a third of what this cost.
    db.execute(
        "UPDATE search_state SET changes = changes + 1, text_changes = text_changes + ?"
        " WHERE id = 0",
        (int(text),),
    )
    return int(db.execute("SELECT changes FROM search_state WHERE id = 0").fetchone()[0])


def _search_row(
    db: sqlite3.Connection,
    ref: str,
    author: bytes,
    addr: str,
    body: PracticeBody,
    place: tuple[str | None, str | None],
    languages: list[str],
) -> int:
    """Write the practice's ``practice_search`` row (live); return its docid."""
    stats = db.execute(
        "SELECT rating_count, rating_sum, replications FROM practice_stats WHERE ref = ?", (ref,)
    ).fetchone() or (0, 0, 0)
    created = db.execute(
        "SELECT created FROM practices WHERE author = ? AND addr = ?", (author, addr)
    ).fetchone()
    values = (
        author,
        _bump(db, text=True),
        body.title.get("en") or next(iter(body.title.values())),
        body.summary.get("en") or next(iter(body.summary.values()), ""),
        *place,
        " ".join(body.sectors),
        " ".join(body.target_groups),
        " ".join(sorted({lang.split("-")[0] for lang in languages})),
        body.status,
        created[0] if created else 0,
        *stats,
        ref,
    )
    # Look the row up first: an UPDATE … RETURNING costs several times a plain statement.
    row = db.execute("SELECT docid FROM practice_search WHERE ref = ?", (ref,)).fetchone()
    if row is not None:
        db.execute(
            "UPDATE practice_search SET author = ?, live = 1, changed = ?, title = ?,"
            " summary = ?, city = ?, country = ?, sectors = ?, target_groups = ?, languages = ?,"
            " status = ?, created = ?, rating_count = ?, rating_sum = ?, replications = ?"
            " WHERE ref = ?",
            values,
        )
        return int(row[0])
    cur = db.execute(
        "INSERT INTO practice_search (author, live, changed, title, summary, city, country,"
        " sectors, target_groups, languages, status, created, rating_count, rating_sum,"
        " replications, ref) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        values,
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def unindex_practice(db: sqlite3.Connection, ref: str) -> None:
    if not _has_search(db):
        db.execute("DELETE FROM practices_fts WHERE ref = ?", (ref,))
        return
    row = db.execute("SELECT docid, live FROM practice_search WHERE ref = ?", (ref,)).fetchone()
    if row is None:
        return
    db.execute("DELETE FROM practices_fts WHERE rowid = ?", (row[0],))
    db.execute("DELETE FROM practices_head_fts WHERE rowid = ?", (row[0],))
    if row[1]:
        db.execute(
            "UPDATE practice_search SET live = 0, changed = ? WHERE docid = ?",
            (_bump(db, text=True), row[0]),
        )


def reindex_author(db: sqlite3.Connection, author: bytes) -> None:
    """After a city profile changes (name, country): refresh its practices' entries."""
    for (addr,) in db.execute("SELECT addr FROM practices WHERE author = ?", (author,)).fetchall():
        index_practice(db, author, str(addr))


def refresh_stats(db: sqlite3.Connection, ref: str) -> None:
    """Recompute rating and replication figures of one practice from the current tables."""
    rating_count, rating_sum = db.execute(
        "SELECT count(*), coalesce(sum(score), 0) FROM ratings WHERE ref = ? AND counts",
        (ref,),
    ).fetchone()
    replications, worked = db.execute(
        "SELECT count(*), coalesce(sum(worked = 'yes'), 0) FROM replications"
        " WHERE ref = ? AND counts",
        (ref,),
    ).fetchone()
    old = db.execute(
        "SELECT rating_count, rating_sum, replications FROM practice_stats WHERE ref = ?", (ref,)
    ).fetchone() or (0, 0, 0)
    db.execute(
        "INSERT INTO practice_stats (ref, rating_count, rating_sum, replications, worked)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (ref) DO UPDATE SET"
        " rating_count = excluded.rating_count, rating_sum = excluded.rating_sum,"
        " replications = excluded.replications, worked = excluded.worked",
        (ref, rating_count, rating_sum, replications, worked),
    )
    if tuple(old) == (rating_count, rating_sum, replications) or not _has_search(db):
        return
    db.execute(
        "UPDATE search_state SET rating_count = rating_count + ?, rating_sum = rating_sum + ?"
        " WHERE id = 0",
        (rating_count - old[0], rating_sum - old[1]),
    )
    db.execute(
        "UPDATE practice_search SET rating_count = ?, rating_sum = ?, replications = ?,"
        " changed = ? WHERE ref = ?",
        (rating_count, rating_sum, replications, _bump(db, text=False), ref),
    )
