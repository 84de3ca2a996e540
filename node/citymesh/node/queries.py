"""Read queries for the HTTP API, over a read-only connection (WAL: readers never block the writer).

Each function takes a `sqlite3.Connection` and returns API Structs from citymesh.protocol.api.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from citymesh.practices.ratings import summarize
from citymesh.protocol import api
from citymesh.protocol.errors import InvalidRecordError
from citymesh.protocol.identity import identity_text, parse_identity
from citymesh.protocol.records import PracticeBody

_practice_decoder = msgspec.json.Decoder(PracticeBody)
FACETS = ("sector", "target_group", "country", "status")


def _rating_summary(db: sqlite3.Connection, ref: str, *, full: bool) -> api.RatingSummary:
    scores = [int(r[0]) for r in db.execute("SELECT score FROM ratings WHERE ref = ?", (ref,))]
    prior = db.execute("SELECT avg(score) FROM ratings").fetchone()[0]
    s = summarize(scores, prior_mean=float(prior) if prior is not None else 3.0)
    return api.RatingSummary(
        count=s.count,
        mean=s.mean,
        bayes=s.bayes,
        distribution=s.distribution if full else {},  # type: ignore[arg-type]
        min_count=s.min_count,
    )


def _where(query: api.PracticeQuery, *, skip: str | None = None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if query.q:
        for word in query.q.split():
            clauses.append("(p.title LIKE ? ESCAPE '\\' OR c.body LIKE ? ESCAPE '\\')")
            pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern, pattern]
    if query.sector and skip != "sector":
        clauses.append("(' ' || p.sectors || ' ') LIKE ?")
        args.append(f"% {query.sector} %")
    if query.target_group and skip != "target_group":
        clauses.append("(' ' || p.target_groups || ' ') LIKE ?")
        args.append(f"% {query.target_group} %")
    if query.country and skip != "country":
        clauses.append("ci.country = ?")
        args.append(query.country)
    if query.status and skip != "status":
        clauses.append("p.status = ?")
        args.append(query.status)
    if query.author:
        clauses.append("p.author = ?")
        args.append(parse_identity(query.author))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


_FROM = (
    " FROM practices p JOIN current c ON c.author = p.author AND c.kind = 'practice'"
    " AND c.addr = p.addr LEFT JOIN cities ci ON ci.author = p.author"
)


def list_practices(
    db: sqlite3.Connection, query: api.PracticeQuery, *, key: bytes
) -> api.PracticeList:
    where, args = _where(query)
    scope = api.query_scope(query)
    page_args = list(args)
    keyset = ""
    if query.cursor:
        cursor = api.decode_cursor(query.cursor, key=key)
        if cursor.scope != scope or len(cursor.after) != 3:
            raise InvalidRecordError("cursor belongs to another query", field="cursor")
        created, author_hex, addr = cursor.after
        if (
            not isinstance(created, int)
            or not isinstance(author_hex, str)
            or not isinstance(addr, str)
        ):
            raise InvalidRecordError("cursor is malformed", field="cursor")
        keyset = (
            " AND " if where else " WHERE "
        ) + "(p.created, hex(p.author), p.addr) < (?, ?, ?)"
        page_args += [created, author_hex, addr]
    rows = db.execute(
        "SELECT p.author, p.addr, p.title, p.status, p.sectors, p.target_groups, p.created,"
        " ci.name, ci.country, c.body, hex(p.author)"
        + _FROM
        + where
        + keyset
        + " ORDER BY p.created DESC, hex(p.author) DESC, p.addr DESC LIMIT ?",
        [*page_args, query.limit + 1],
    ).fetchall()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    items = []
    for author, addr, title, status, sectors, groups, created, city, country, body, _ in rows:
        ref = api.format_ref(bytes(author), str(addr))
        practice = _practice_decoder.decode(body)
        replications = db.execute(
            "SELECT count(*) FROM replications WHERE ref = ?", (ref,)
        ).fetchone()[0]
        items.append(
            api.PracticeItem(
                ref=ref,
                title=str(title),
                summary=practice.summary.get("en") or next(iter(practice.summary.values()), ""),
                city=city,
                country=country,
                sectors=sectors.split(),
                target_groups=groups.split(),
                status=status,
                rating=_rating_summary(db, ref, full=False),
                replications=int(replications),
                updated=api.utc_from_ms(int(created)),
            )
        )
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = api.encode_cursor(
            api.Cursor(
                sort="updated", after=[int(last[6]), str(last[10]), str(last[1])], scope=scope
            ),
            key=key,
        )
    return api.PracticeList(items=items, next=next_cursor, facets=facets(db, query))


def facets(db: sqlite3.Connection, query: api.PracticeQuery) -> dict[str, dict[str, int]]:
    """Counts per code for each filter, computed with that filter itself left out."""
    out: dict[str, dict[str, int]] = {}
    for facet in FACETS:
        where, args = _where(query, skip=facet)
        counts: dict[str, int] = {}
        if facet in ("sector", "target_group"):
            column = "p.sectors" if facet == "sector" else "p.target_groups"
            for (codes,) in db.execute(f"SELECT {column}" + _FROM + where, args):
                for code in str(codes).split():
                    counts[code] = counts.get(code, 0) + 1
        else:
            column = "ci.country" if facet == "country" else "p.status"
            for value, n in db.execute(
                f"SELECT {column}, count(*)" + _FROM + where + f" GROUP BY {column}", args
            ):
                if value is not None:
                    counts[str(value)] = int(n)
        out[facet] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def practice_detail(
    db: sqlite3.Connection, author: bytes, addr: str, *, own: bytes
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
    history = [
        api.HistoryItem(seq=int(s), id=bytes(i).hex(), created=api.utc_from_ms(int(c)))
        for i, s, c in db.execute(
            "SELECT id, seq, created FROM records WHERE author = ? AND kind = 'practice'"
            " AND addr = ? AND state = 'applied' ORDER BY seq DESC",
            (author, addr),
        )
    ]
    replications = [
        api.ReplicationItem(
            city=name,
            author=identity_text(bytes(a)),
            relation=rel,
            status=status,
            updated=api.utc_from_ms(int(c)),
        )
        for a, rel, status, c, name in db.execute(
            "SELECT r.author, r.relation, r.status, r.created, ci.name FROM replications r"
            " LEFT JOIN cities ci ON ci.author = r.author WHERE r.ref = ? ORDER BY r.created",
            (ref,),
        )
    ]
    practice = _practice_decoder.decode(body)
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
        rating=_rating_summary(db, ref, full=True),
        replications=replications,
        history=history,
        adapted_from=practice.adapted_from,
        own=author == own,
    )


def raw_record(db: sqlite3.Connection, record_id: bytes) -> bytes | None:
    row = db.execute(
        "SELECT envelope FROM records WHERE id = ? AND state != 'held'", (record_id,)
    ).fetchone()
    return None if row is None else bytes(row[0])


def counts(db: sqlite3.Connection) -> tuple[dict[str, int], dict[str, int]]:
    kinds = {
        str(k): int(n)
        for k, n in db.execute(
            "SELECT kind, count(*) FROM records WHERE state = 'applied' GROUP BY kind"
        )
    }
    rejected = {str(r): int(n) for r, n in db.execute("SELECT reason, count FROM rejections")}
    return kinds, rejected
