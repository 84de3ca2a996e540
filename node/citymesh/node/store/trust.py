"""The node's trust policy, kept in step with the signed network records it holds.

A node follows networks, each with trust anchors (steward identities from its configuration).
After any batch that changed a charter or a membership (and at start, and periodically for
time-bounded memberships) the standings are recomputed from the current ``network`` and
``membership`` records (``practices.membership``, pure) and each author's effective trust is
derived:

- ``member``: a member (or steward) of at least one followed network; its records count;
- ``revoked``: revoked everywhere it was named; records up to the revocation's ``until_seq`` still
  count (and are marked), later ones are refused (this node's own excepted: its log stays whole);
- no row: unverified; kept and shown, never counted.

A change re-marks that author's ratings and replications and refreshes the figures of the
practices they touch, so a revocation reaches the stats on every node that holds it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import msgspec

from citymesh.practices.membership import Admission, Charter, Standing, standings
from citymesh.protocol.records import MembershipBody, NetworkBody

from .apply import HOUR_MS, ApplyResult, reapply, set_revoked
from .catalogue import refresh_stats
from .standing import counting_limit

GOVERNANCE_KINDS = frozenset({"network", "membership"})

_network = msgspec.json.Decoder(NetworkBody)
_membership = msgspec.json.Decoder(MembershipBody)

Effective = tuple[str, int | None]
"""(state, until_seq) of one author: ('member', None) or ('revoked', seq | None)."""


@dataclass
class TrustChange:
    changed: list[bytes] = field(default_factory=list)
    """Authors whose effective trust changed."""
    applied: ApplyResult = field(default_factory=ApplyResult)
    """Records a lifted revocation applied again (for live events)."""


def touches_trust(kind: str, addr: str) -> bool:
    """Whether applying a record of this kind/addr may change standings."""
    if kind in GOVERNANCE_KINDS:
        return True
    return kind == "retraction" and addr.partition("/")[0] in GOVERNANCE_KINDS


def configure(db: sqlite3.Connection, *, own: bytes, follows: dict[str, list[bytes]]) -> bool:
    """Set this node's identity and trust anchors (network -> stewards). True if they changed."""
    db.execute(
        "INSERT INTO trust_local (id, own) VALUES (0, ?) ON CONFLICT (id) DO UPDATE"
        " SET own = excluded.own",
        (own,),
    )
    wanted = {(net, s) for net, stewards in follows.items() for s in stewards}
    have = {(str(n), bytes(s)) for n, s in db.execute("SELECT network, steward FROM trust_anchors")}
    if wanted == have:
        return False
    db.execute("DELETE FROM trust_anchors")
    db.executemany("INSERT INTO trust_anchors (network, steward) VALUES (?, ?)", sorted(wanted))
    return True


def add_anchor(db: sqlite3.Connection, network: str, steward: bytes) -> bool:
    cur = db.execute(
        "INSERT OR IGNORE INTO trust_anchors (network, steward) VALUES (?, ?)", (network, steward)
    )
    return cur.rowcount > 0


def anchors(db: sqlite3.Connection) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for network, steward in db.execute(
        "SELECT network, steward FROM trust_anchors ORDER BY network, steward"
    ):
        out.setdefault(str(network), []).append(bytes(steward))
    return out


def _governance(db: sqlite3.Connection) -> tuple[list[Charter], list[Admission]]:
    charters: list[Charter] = []
    admissions: list[Admission] = []
    for author, kind, addr, body in db.execute(
        "SELECT author, kind, addr, body FROM current WHERE kind IN ('network', 'membership')"
        " AND retracted = 0"
    ):
        if kind == "network":
            charters.append(Charter(bytes(author), str(addr), _network.decode(body)))
        else:
            admissions.append(Admission(bytes(author), _membership.decode(body)))
    return charters, admissions


def _effective(per_network: dict[str, dict[bytes, Standing]]) -> dict[bytes, Effective]:
    """Member of any followed network counts; revoked wherever named: the latest boundary."""
    named: dict[bytes, list[Standing]] = {}
    for table in per_network.values():
        for member, standing in table.items():
            named.setdefault(member, []).append(standing)
    out: dict[bytes, Effective] = {}
    for member, found in named.items():
        if any(s.state == "member" for s in found):
            out[member] = ("member", None)
        elif any(s.state == "revoked" for s in found):
            untils = [s.until_seq for s in found if s.until_seq is not None]
            out[member] = ("revoked", max(untils) if untils else None)
    return out


def recompute(db: sqlite3.Connection, *, now_ms: int) -> TrustChange:
    """Bring standings and effective trust up to date with the records held. Caller commits."""
    change = TrustChange()
    for _ in range(4):  # re-applying a steward's records can change standings again
        step = _recompute_once(db, now_ms=now_ms)
        change.changed.extend(step.changed)
        change.applied.applied.extend(step.applied.applied)
        change.applied.rejected.update(step.applied.rejected)
        if not step.changed:
            break
    return change


def _recompute_once(db: sqlite3.Connection, *, now_ms: int) -> TrustChange:
    follows = anchors(db)
    own_row = db.execute("SELECT own FROM trust_local WHERE id = 0").fetchone()
    own = bytes(own_row[0]) if own_row else b""
    charters, admissions = _governance(db)
    per_network = {
        network: standings(network, stewards, charters, admissions, now_ms=now_ms)
        for network, stewards in follows.items()
    }
    db.execute("DELETE FROM standings")
    db.executemany(
        "INSERT INTO standings (network, member, state, until_seq, role, city)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (network, member, s.state, s.until_seq, s.role, s.city)
            for network, table in per_network.items()
            for member, s in table.items()
        ],
    )
    change = TrustChange()
    for author in _set_hourly_limit(db, follows, charters):
        result = reapply(db, author, now_ms=now_ms)
        change.applied.applied.extend(result.applied)
        change.applied.rejected.update(result.rejected)
    new = _effective(per_network)
    old: dict[bytes, Effective] = {
        bytes(a): (str(s), None if u is None else int(u))
        for a, s, u in db.execute("SELECT author, state, until_seq FROM trust")
    }
    for author in sorted(set(old) | set(new)):
        before, after = old.get(author), new.get(author)
        if before == after:
            continue
        change.changed.append(author)
        if after is None:
            db.execute("DELETE FROM trust WHERE author = ?", (author,))
        else:
            db.execute(
                "INSERT INTO trust (author, state, until_seq) VALUES (?, ?, ?)"
                " ON CONFLICT (author) DO UPDATE SET state = excluded.state,"
                " until_seq = excluded.until_seq",
                (author, *after),
            )
        refuse_after = after[1] if after is not None and after[0] == "revoked" else None
        if author != own:
            result = set_revoked(db, author, refuse_after, now_ms=now_ms)
            change.applied.applied.extend(result.applied)
            change.applied.rejected.update(result.rejected)
        _remark(db, author)
    return change


def _set_hourly_limit(
    db: sqlite3.Connection, follows: dict[str, list[bytes]], charters: list[Charter]
) -> list[bytes]:
    """The records-per-hour limit of the followed networks' charters (the most lenient one when
    several; none for an open network), in force from the created-hour of the newest of them
    (never for earlier hours: a limit is not retroactive), and their disclosure threshold (the
    strictest). Raising the limit lets limited authors continue; setting or lowering it returns
    the authors already past it since then (their chains are applied again)."""
    limits = [
        c.body.policies.max_records_per_hour
        for c in charters
        if c.network in follows and c.author in follows[c.network]
    ]
    cap = max(limits) if limits else None
    since = None
    if cap is not None:
        created = [
            int(row[2])
            for row in db.execute(
                "SELECT author, addr, created FROM current WHERE kind = 'network' AND retracted = 0"
            )
            if str(row[1]) in follows and bytes(row[0]) in follows[str(row[1])]
        ]
        since = max(created) // HOUR_MS if created else None
    thresholds = [
        c.body.policies.min_count_threshold
        for c in charters
        if c.network in follows and c.author in follows[c.network]
    ]
    db.execute(
        "UPDATE trust_local SET min_count_threshold = ? WHERE id = 0",
        (max(thresholds) if thresholds else None,),
    )
    old, old_since = db.execute(
        "SELECT max_per_hour, limit_since_hour FROM trust_local WHERE id = 0"
    ).fetchone() or (None, None)
    if (cap, since) == (old, old_since):
        return []
    db.execute(
        "UPDATE trust_local SET max_per_hour = ?, limit_since_hour = ? WHERE id = 0",
        (cap, since),
    )
    if cap is None or (old is not None and cap > old):
        db.execute("UPDATE authors SET limited_seq = NULL WHERE limited_seq IS NOT NULL")
        return []
    return [
        bytes(r[0])
        for r in db.execute(
            "SELECT DISTINCT author FROM author_hours WHERE n > ? AND hour >= ?"
            " AND author NOT IN (SELECT own FROM trust_local) ORDER BY author",
            (cap, since or 0),
        )
    ]


def _remark(db: sqlite3.Connection, author: bytes) -> None:
    """Re-mark whether the author's ratings and replications count; refresh what they touch."""
    limit = counting_limit(db, author)
    refs: set[str] = set()
    for table, column in (("ratings", "rater"), ("replications", "author")):
        db.execute(
            f"UPDATE {table} SET counts = ((SELECT seq FROM records"
            f" WHERE records.id = {table}.id) <= ?) WHERE {column} = ?",
            (limit, author),
        )
        refs.update(
            str(r[0]) for r in db.execute(f"SELECT ref FROM {table} WHERE {column} = ?", (author,))
        )
    for ref in sorted(refs):
        refresh_stats(db, ref)


def remark_all(db: sqlite3.Connection) -> None:
    """After the anchors changed: every rating and replication re-marked, every figure refreshed."""
    for (author,) in db.execute(
        "SELECT rater FROM ratings UNION SELECT author FROM replications"
    ).fetchall():
        _remark(db, bytes(author))
