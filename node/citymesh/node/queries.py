"""Read queries for the HTTP API, over a read-only connection (WAL: readers never block the writer).

Each function takes a `sqlite3.Connection` and returns API Structs from citymesh.protocol.api.
"""

from __future__ import annotations

import datetime
import sqlite3

import msgspec

from citymesh.practices.freshness import freshness
from citymesh.practices.lineage import ReplicationFact, changed_fields, evidence_level
from citymesh.practices.ratings import DEFAULT_PRIOR_MEAN, summarize
from citymesh.protocol import api
from citymesh.protocol.api import identity_from_text
from citymesh.protocol.envelope import decode_stored
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.records import PracticeBody, RatingBody, ReplicationBody

from . import trust_view
from .idtext import identity_text

_practice_decoder = msgspec.json.Decoder(PracticeBody)
_rating_decoder = msgspec.json.Decoder(RatingBody)
_replication_decoder = msgspec.json.Decoder(ReplicationBody)


def practice_detail(
    db: sqlite3.Connection, author: bytes, addr: str, *, own: bytes, today: datetime.date
) -> api.PracticeDetail | None:
    row = db.execute(
        "SELECT c.id, c.seq, c.created, c.body, ci.name, ci.country FROM current c"
        " LEFT JOIN cities ci ON ci.author = c.author"
        " WHERE c.author = ? AND c.kind = 'practice' AND c.addr = ? AND c.retracted = 0",
        (author, addr),
    ).fetchone()
    if row is None:
        return None
    record_id, seq, created, body, city, country = row
    ref = api.format_ref(author, addr)
    practice = _practice_decoder.decode(body)
    ratings = _ratings(db, ref)
    replications = _replications(db, ref)
    facts = [
        ReplicationFact(
            identity_from_text(r.author), r.status, r.outcome.worked if r.outcome else None
        )
        for r in replications
        if not r.unverified  # only members' replications are evidence
    ]
    flag = trust_view.mark(db, author)
    own_text = identity_text(own)
    adapted_into = [
        str(r[0])
        for r in db.execute("SELECT ref FROM practices WHERE adapted_from = ? ORDER BY ref", (ref,))
    ]
    return api.PracticeDetail(
        ref=ref,
        author=identity_text(author),
        addr=addr,
        seq=int(seq),
        id=bytes(record_id).hex(),
        updated=api.utc_from_ms(int(created)),
        city=city,
        country=country,
        practice=practice,
        rating=_rating_summary(db, [r.score for r in ratings if not r.unverified]),
        ratings=ratings,
        replications=replications,
        history=_history(db, author, addr),
        adapted_from=practice.adapted_from,
        adapted_into=adapted_into,
        freshness=freshness(practice.review_by, today),
        evidence_level=evidence_level(practice, author, facts),
        own=author == own,
        own_rating=next((r for r in ratings if r.author == own_text), None),
        own_replication=next((r for r in replications if r.author == own_text), None),
        unverified=flag.unverified,
        revoked=flag.revoked,
    )


def _rating_summary(db: sqlite3.Connection, scores: list[int]) -> api.RatingSummary:
    # The totals of all current ratings, kept by the store (the sum over practice_stats, which
    # a detail used to compute by reading every practice's row).
    row = db.execute("SELECT rating_sum, rating_count FROM search_state WHERE id = 0").fetchone()
    prior = (row[0] / row[1]) if row and row[1] else DEFAULT_PRIOR_MEAN
    s = summarize(scores, prior_mean=prior)
    return api.RatingSummary(
        count=s.count,
        mean=s.mean,
        bayes=s.bayes,
        distribution=s.distribution,  # type: ignore[arg-type]
        min_count=s.min_count,
    )


def _ratings(db: sqlite3.Connection, ref: str) -> list[api.RatingItem]:
    out = []
    # CROSS JOIN keeps the practice's ratings as the outer loop: left to choose (no statistics),
    # SQLite walked every current rating of the node (current_kind) and looked each up here.
    for rater, created, body, city, counted, revoked in db.execute(
        "SELECT r.rater, r.created, c.body, ci.name, r.counts, t.state IS 'revoked'"
        " FROM ratings r"
        " CROSS JOIN current c ON c.author = r.rater AND c.kind = 'rating' AND c.addr = r.ref"
        " LEFT JOIN cities ci ON ci.author = r.rater LEFT JOIN trust t ON t.author = r.rater"
        " WHERE r.ref = ? ORDER BY r.created",
        (ref,),
    ):
        rating = _rating_decoder.decode(body)
        out.append(
            api.RatingItem(
                city=city,
                author=identity_text(bytes(rater)),
                score=rating.score,
                scores=rating.scores,
                comment=rating.comment,
                role=rating.role,
                conflict_of_interest=rating.conflict_of_interest,
                updated=api.utc_from_ms(int(created)),
                unverified=not counted,
                revoked=bool(revoked),
            )
        )
    return out


def _replications(db: sqlite3.Connection, ref: str) -> list[api.ReplicationItem]:
    out = []
    for author, created, body, city, counted, revoked in db.execute(
        "SELECT r.author, r.created, c.body, ci.name, r.counts, t.state IS 'revoked'"
        " FROM replications r"
        " CROSS JOIN current c ON c.author = r.author AND c.kind = 'replication' AND c.addr = r.ref"
        " LEFT JOIN cities ci ON ci.author = r.author LEFT JOIN trust t ON t.author = r.author"
        " WHERE r.ref = ? ORDER BY r.created",
        (ref,),
    ):
        rep = _replication_decoder.decode(body)
        out.append(
            api.ReplicationItem(
                city=city,
                author=identity_text(bytes(author)),
                relation=rep.relation,
                status=rep.status,
                start=rep.start,
                adaptations=rep.adaptations,
                mentor=identity_text(rep.mentor) if rep.mentor else None,
                outcome=rep.outcome,
                updated=api.utc_from_ms(int(created)),
                unverified=not counted,
                revoked=bool(revoked),
            )
        )
    return out


def _history(db: sqlite3.Connection, author: bytes, addr: str) -> list[api.HistoryItem]:
    """Every applied version, newest first, with the fields each changed.

    Applied records were verified (signature, signer, chain) when the store took them, so their
    stored bytes are decoded without verifying them again (`decode_stored`)."""
    versions = db.execute(
        "SELECT id, seq, created, envelope FROM records WHERE author = ? AND kind = 'practice'"
        " AND addr = ? AND state = 'applied' ORDER BY seq",
        (author, addr),
    ).fetchall()
    items: list[api.HistoryItem] = []
    previous: PracticeBody | None = None
    for record_id, seq, created, envelope in versions:
        try:
            _, body = decode_stored(bytes(envelope))
        except ProtocolError:
            continue
        assert isinstance(body, PracticeBody)
        items.append(
            api.HistoryItem(
                seq=int(seq),
                id=bytes(record_id).hex(),
                created=api.utc_from_ms(int(created)),
                changed=changed_fields(previous, body),
            )
        )
        previous = body
    items.reverse()
    return items


def raw_record(db: sqlite3.Connection, record_id: bytes) -> bytes | None:
    row = db.execute(
        "SELECT envelope FROM records WHERE id = ? AND state != 'held'", (record_id,)
    ).fetchone()
    return None if row is None else bytes(row[0])


def counts(db: sqlite3.Connection) -> tuple[dict[str, int], dict[str, int]]:
    """Applied records by kind (kept by triggers, m006) and rejections by reason."""
    kinds = {
        str(k): int(n)
        for k, n in db.execute(
            "SELECT kind, n FROM record_counts WHERE state = 'applied' AND n > 0 ORDER BY kind"
        )
    }
    rejected = {str(r): int(n) for r, n in db.execute("SELECT reason, count FROM rejections")}
    return kinds, rejected
