"""Read queries about cities (GET /v1/cities, /v1/cities/{key})."""

from __future__ import annotations

import sqlite3

import msgspec

from citymesh.protocol import api
from citymesh.protocol.identity import public_key_text
from citymesh.protocol.records import CityBody

from . import trust_view
from .idtext import fingerprint, identity_text
from .search import search_practices

_city_decoder = msgspec.json.Decoder(CityBody)


def list_cities(db: sqlite3.Connection, *, own: bytes) -> api.CityList:
    rows = db.execute(
        "SELECT a.author, ci.name, ci.country, c.body, c.created,"
        " (SELECT count(*) FROM practices p WHERE p.author = a.author)"
        " FROM authors a LEFT JOIN cities ci ON ci.author = a.author"
        " LEFT JOIN current c ON c.author = a.author AND c.kind = 'city' AND c.addr = ''"
        " ORDER BY ci.name IS NULL, ci.name, a.author"
    ).fetchall()
    flags = trust_view.marks(db, (bytes(r[0]) for r in rows))
    said = trust_view.governance(db)
    items = []
    for raw_author, name, country, body, created, practices in rows:
        author = bytes(raw_author)
        profile = _city_decoder.decode(body) if body else None
        flag = flags[author]
        continues, continued_by = said.links(author)
        items.append(
            api.CityItem(
                identity=identity_text(author),
                fingerprint=fingerprint(author),
                name=name,
                country=country,
                population_band=profile.population_band if profile else None,
                networks=list(profile.networks) if profile else [],
                practices=int(practices),
                updated=api.utc_from_ms(int(created)) if created is not None else None,
                own=author == own,
                memberships=said.memberships.get(author, []),
                continues=continues,
                continued_by=continued_by,
                unverified=flag.unverified,
                revoked=flag.revoked,
            )
        )
    return api.CityList(items=items)


def city_detail(
    db: sqlite3.Connection, author: bytes, *, own: bytes, cursor_key: bytes
) -> api.CityDetail | None:
    row = db.execute(
        "SELECT applied_seq, key, frozen_seq FROM authors WHERE author = ?", (author,)
    ).fetchone()
    if row is None:
        return None
    seq, key, frozen = row
    flag = trust_view.mark(db, author)
    said = trust_view.governance(db)
    continues, continued_by = said.links(author)
    current = db.execute(
        "SELECT body, created FROM current WHERE author = ? AND kind = 'city' AND addr = ''",
        (author,),
    ).fetchone()
    # INDEXED BY: the city's own records. Left to choose (no statistics), SQLite took an index
    # on (state, kind) while there was one (m005 to m006) and read every applied record of the
    # node to spare the sort of GROUP BY kind: seconds at a million records.
    records = {
        str(k): int(n)
        for k, n in db.execute(
            "SELECT kind, count(*) FROM records INDEXED BY records_state"
            " WHERE author = ? AND state = 'applied' GROUP BY kind",
            (author,),
        )
    }
    practices = search_practices(
        db,
        api.PracticeQuery(author=identity_text(author), sort="updated", limit=200),
        key=cursor_key,
    ).items
    return api.CityDetail(
        identity=identity_text(author),
        fingerprint=fingerprint(author),
        key=public_key_text(bytes(key)) if key else None,
        profile=_city_decoder.decode(current[0]) if current else None,
        seq=int(seq),
        records=records,  # type: ignore[arg-type]
        practices=practices,
        updated=api.utc_from_ms(int(current[1])) if current else None,
        own=author == own,
        equivocated=frozen is not None,
        memberships=said.memberships.get(author, []),
        continues=continues,
        continued_by=continued_by,
        unverified=flag.unverified,
        revoked=flag.revoked,
    )
