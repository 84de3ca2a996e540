"""How the trust policy shows in API answers: unverified and revoked marks, memberships.

Reads the tables `store.trust` keeps (on the reader connection). In an open network (no anchors
configured) nothing is marked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from citymesh.protocol import api
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import MembershipBody

_membership = msgspec.json.Decoder(MembershipBody)


@dataclass(frozen=True, slots=True)
class Mark:
    unverified: bool = False
    """Not a member of any followed network: shown, never counted."""
    revoked: bool = False
    """Revoked: what is shown predates the revocation and still counts."""


OPEN = Mark()


def marks(db: sqlite3.Connection, authors: Iterable[bytes]) -> dict[bytes, Mark]:
    wanted = sorted(set(authors))
    if not wanted or not db.execute("SELECT EXISTS (SELECT 1 FROM trust_anchors)").fetchone()[0]:
        return {a: OPEN for a in wanted}
    states: dict[bytes, str] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        states.update(
            (bytes(a), str(s))
            for a, s in db.execute(
                f"SELECT author, state FROM trust WHERE author IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        )
    return {a: Mark(unverified=a not in states, revoked=states.get(a) == "revoked") for a in wanted}


def mark(db: sqlite3.Connection, author: bytes) -> Mark:
    return marks(db, [author])[author]


def min_count_threshold(db: sqlite3.Connection) -> int | None:
    """The strictest disclosure threshold the followed networks' charters set (None: open)."""
    row = db.execute("SELECT min_count_threshold FROM trust_local WHERE id = 0").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def unverified_records(db: sqlite3.Connection) -> int:
    """Records applied from authors that are not members (0 in an open network)."""
    if not db.execute("SELECT EXISTS (SELECT 1 FROM trust_anchors)").fetchone()[0]:
        return 0
    row = db.execute(
        "SELECT coalesce(sum(a.applied_seq), 0) FROM authors a"
        " WHERE NOT EXISTS (SELECT 1 FROM trust t WHERE t.author = a.author)"
    ).fetchone()
    return int(row[0])


@dataclass(frozen=True, slots=True)
class Governance:
    """What the followed networks' stewards say of each city, read in one pass (a city list
    asks it for every city)."""

    memberships: dict[bytes, list[api.MembershipInfo]]
    continues: dict[bytes, str]
    continued_by: dict[bytes, str]

    def links(self, city: bytes) -> tuple[str | None, str | None]:
        return self.continues.get(city), self.continued_by.get(city)


def governance(db: sqlite3.Connection) -> Governance:
    """Current membership records signed by stewards of followed networks, by the city they
    name, and the re-admissions (``replaces``) linking a city's old and new identities."""
    stewards = {
        (str(n), bytes(s))
        for n, s in db.execute(
            "SELECT DISTINCT network, member FROM standings WHERE role = 'steward'"
        )
    }
    by_member: dict[bytes, list[api.MembershipInfo]] = {}
    continues: dict[bytes, str] = {}
    continued_by: dict[bytes, str] = {}
    if not stewards:
        return Governance(by_member, continues, continued_by)
    for issuer, body in db.execute(
        "SELECT author, body FROM current WHERE kind = 'membership' AND retracted = 0"
        " ORDER BY created"
    ):
        m = _membership.decode(body)
        if (m.network, bytes(issuer)) not in stewards:
            continue  # signed by someone this node does not trust as a steward
        by_member.setdefault(m.member, []).append(
            api.MembershipInfo(
                network=m.network,
                role=m.role,
                status=m.status,
                valid_from=api.utc_from_ms(m.valid_from),
                valid_until=api.utc_from_ms(m.valid_until) if m.valid_until else None,
                issuer=identity_text(bytes(issuer)),
            )
        )
        if m.replaces is not None:
            continues[m.member] = identity_text(m.replaces)
            continued_by[m.replaces] = identity_text(m.member)
    return Governance(by_member, continues, continued_by)
