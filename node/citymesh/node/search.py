"""Practice search: FTS5 full text (prefix matching, diacritics folded, bm25 ranking), filters,
sorting, keyset pagination with opaque cursors, and facet counts.

Filters use the ``practice_codes`` table (facet, code, ref); aggregates come from
``practice_stats``; both are maintained in the ingest transaction (store/catalogue.py).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import msgspec

from citymesh.practices.ratings import DEFAULT_PRIOR_MEAN, DEFAULT_PRIOR_WEIGHT, summarize
from citymesh.protocol import api
from citymesh.protocol.errors import InvalidRecordError
from citymesh.protocol.identity import parse_identity
from citymesh.protocol.records import PracticeBody

FACETS = ("sector", "target_group", "country", "status", "language")
# bm25 weights per column: ref (unindexed), title, summary, body, keywords, place
BM25 = "bm25(practices_fts, 0.0, 10.0, 4.0, 1.0, 3.0, 2.0)"
_TOKEN = re.compile(r"\w+", re.UNICODE)
_summary_decoder = msgspec.json.Decoder(dict[str, Any])


def match_expression(q: str) -> str | None:
    """Every word must occur (as a prefix); FTS syntax in the input is never interpreted."""
    words = _TOKEN.findall(q)[:12]
    if not words:
        return None
    return " AND ".join(f'"{w}"*' for w in words)


def _prior(db: sqlite3.Connection) -> float:
    row = db.execute("SELECT sum(rating_sum), sum(rating_count) FROM practice_stats").fetchone()
    return (row[0] / row[1]) if row and row[1] else DEFAULT_PRIOR_MEAN


def _filters(query: api.PracticeQuery, *, skip: str | None = None) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for facet, value in (
        ("sector", query.sector),
        ("target_group", query.target_group),
        ("country", query.country),
        ("status", query.status),
        ("language", query.language),
    ):
        if value and facet != skip:
            clauses.append("p.ref IN (SELECT ref FROM practice_codes WHERE facet = ? AND code = ?)")
            args += [facet, value]
    if query.author:
        clauses.append("p.author = ?")
        args.append(parse_identity(query.author))
    if query.has_replications:
        clauses.append("s.replications > 0")
    if query.min_rating is not None:
        clauses.append(f"{_BAYES} >= ?")
        args.append(query.min_rating)
    return clauses, args


_BAYES = f"(({DEFAULT_PRIOR_WEIGHT} * :prior + s.rating_sum) / ({DEFAULT_PRIOR_WEIGHT} + s.rating_count))"
# Each sort is an ascending key (so "desc" sorts negate) plus the ref as tie-breaker.
_SORT_KEYS = {
    "relevance": "f.rank",
    "updated": "-p.created",
    "rating": f"-{_BAYES}",
    "replications": "-s.replications",
    "title": "lower(p.title)",
}


def _base(query: api.PracticeQuery, match: str | None) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {}
    sql = " FROM practices p JOIN practice_stats s ON s.ref = p.ref"
    if match:
        sql += (
            f" JOIN (SELECT ref, {BM25} AS rank FROM practices_fts WHERE practices_fts MATCH :match)"
            " f ON f.ref = p.ref"
        )
        params["match"] = match
    return sql, params


def _named(clauses: list[str], args: list[Any], params: dict[str, Any]) -> str:
    """Turn positional filter args into named ones (the base query uses names)."""
    out = []
    n = 0
    for clause in clauses:
        parts = clause.split("?")
        built = parts[0]
        for part in parts[1:]:
            name = f"a{n}"
            params[name] = args[n]
            n += 1
            built += f":{name}" + part
        out.append(built)
    return (" WHERE " + " AND ".join(out)) if out else ""


def search_practices(
    db: sqlite3.Connection, query: api.PracticeQuery, *, key: bytes
) -> api.PracticeList:
    match = match_expression(query.q) if query.q else None
    sort = query.sort if (query.sort != "relevance" or match) else "updated"
    sort_key = _SORT_KEYS[sort]
    base, params = _base(query, match)
    params["prior"] = _prior(db)
    clauses, args = _filters(query)
    scope = api.query_scope(query)
    if query.cursor:
        cursor = api.decode_cursor(query.cursor, key=key)
        if cursor.scope != scope or cursor.sort != sort or len(cursor.after) != 2:
            raise InvalidRecordError("cursor belongs to another query", field="cursor")
        after_key, after_ref = cursor.after
        if not isinstance(after_ref, str) or not isinstance(after_key, int | float | str):
            raise InvalidRecordError("cursor is malformed", field="cursor")
        clauses.append(f"({sort_key}, p.ref) > (?, ?)")
        args += [after_key, after_ref]
    where = _named(clauses, args, params)
    params["limit"] = query.limit + 1
    rows = db.execute(
        f"SELECT p.ref, p.author, p.title, p.status, p.created, s.rating_count, s.rating_sum,"
        f" s.replications, {sort_key} AS k" + base + where + " ORDER BY k, p.ref LIMIT :limit",
        params,
    ).fetchall()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    items = [_item(db, row, params["prior"]) for row in rows]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = api.encode_cursor(
            api.Cursor(sort=sort, after=[last[8], str(last[0])], scope=scope), key=key
        )
    facets = facet_counts(db, query, match)
    return api.PracticeList(items=items, next=next_cursor, facets=facets)


def _item(db: sqlite3.Connection, row: tuple[Any, ...], prior: float) -> api.PracticeItem:
    ref, author, title, status, created, count, total, replications, _ = row
    body_row = db.execute(
        "SELECT c.body, ci.name, ci.country FROM current c LEFT JOIN cities ci"
        " ON ci.author = c.author WHERE c.author = ? AND c.kind = 'practice' AND c.addr = ?",
        (author, ref.partition("/")[2]),
    ).fetchone()
    body = msgspec.json.decode(body_row[0], type=PracticeBody)
    summary = body.summary.get("en") or next(iter(body.summary.values()), "")
    s = summarize([], prior_mean=prior)
    mean = round(total / count, 2) if count >= s.min_count else None
    bayes = (
        round((DEFAULT_PRIOR_WEIGHT * prior + total) / (DEFAULT_PRIOR_WEIGHT + count), 3)
        if count
        else None
    )
    return api.PracticeItem(
        ref=ref,
        title=str(title),
        summary=summary,
        city=body_row[1],
        country=body_row[2],
        sectors=list(body.sectors),
        target_groups=list(body.target_groups),
        status=status,
        rating=api.RatingSummary(count=count, mean=mean, bayes=bayes, min_count=s.min_count),
        replications=int(replications),
        updated=api.utc_from_ms(int(created)),
    )


def facet_counts(
    db: sqlite3.Connection, query: api.PracticeQuery, match: str | None
) -> dict[str, dict[str, int]]:
    """Per facet, counts over the result set with that facet's own filter left out."""
    out: dict[str, dict[str, int]] = {}
    for facet in FACETS:
        base, params = _base(query, match)
        params["prior"] = _prior(db)
        clauses, args = _filters(query, skip=facet)
        where = _named(clauses, args, params)
        params["facet"] = facet
        rows = db.execute(
            "SELECT pc.code, count(*) FROM practice_codes pc WHERE pc.facet = :facet AND pc.ref IN"
            " (SELECT p.ref" + base + where + ") GROUP BY pc.code ORDER BY count(*) DESC, pc.code",
            params,
        ).fetchall()
        out[facet] = {str(code): int(n) for code, n in rows}
    return out
