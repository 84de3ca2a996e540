"""Applying verified records to the store: chain order, held gaps, equivocation, derived state.

Derived state is a function of the set of valid records only: each author's records are applied in
seq order (a record beyond a gap is held until the gap fills), so the same records in any order,
with any duplicates, give the same tables. Every function here runs inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from citymesh.protocol.chain import KeyState
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.errors import ChainError, ProtocolError
from citymesh.protocol.records import (
    CityBody,
    KeyRotationBody,
    PracticeBody,
    RatingBody,
    Record,
    ReplicationBody,
)

from ..idtext import identity_text
from .catalogue import index_practice, practice_ref, reindex_author, unindex_practice
from .standing import counting_limit
from .stats import refresh_many

MAX_HELD_PER_AUTHOR = 10_000
"""Records beyond a gap kept per author while waiting for it to fill."""

_json = msgspec.json.Encoder(order="sorted")


@dataclass
class ApplyResult:
    batch: dict[bytes, Record] = field(default_factory=dict)
    """Records of the batch being applied, by id (spares re-verifying what was just verified)."""
    stored: list[Record] = field(default_factory=list)
    """Newly stored records (applied or held): the ones to bridge to other relays."""
    applied: list[Record] = field(default_factory=list)
    """Records that changed derived state, in the order applied (for live events)."""
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    limits: tuple[bytes | None, int | None, int] | None = None
    """(this node's identity, the hourly record limit, the first hour it applies to), read once
    per batch."""
    hours: dict[tuple[bytes, int], int] = field(default_factory=dict)
    """Records counted per (author, created-hour): read when first touched, written by
    `_finish` (one statement per record less than counting in the table)."""
    stats: set[str] = field(default_factory=set)
    """Practices whose rating and replication figures `_finish` recomputes."""
    inserted: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Records inserted per (state, kind): `_finish` adds them to ``record_counts`` (m008: no
    insert trigger; changes of state and deletions are counted by triggers)."""
    counting: dict[bytes, int] = field(default_factory=dict)
    """Each author's counting limit under the trust policy, read once per batch (the policy
    itself changes only after the batch, in `_follow_trust`)."""


@dataclass
class _Author:
    author: bytes
    applied_seq: int = 0
    last_id: bytes | None = None
    key: bytes | None = None
    recovery: bytes = b""
    commitment: bytes | None = None
    frozen_seq: int | None = None
    revoked_seq: int | None = None
    """Set by a network revocation: records after this seq are refused."""
    limited_seq: int | None = None
    """The record at this seq broke the network's hourly limit: it and later ones are refused."""
    held: bool = True
    """False only while the author is known to have no held records (then a record that follows
    the chain is applied directly, without the held round trip through the table)."""

    def refuses(self, seq: int) -> str | None:
        """Why a record at ``seq`` is not applied (frozen by equivocation, revoked), if so."""
        if self.frozen_seq is not None and seq >= self.frozen_seq:
            return "frozen"
        if self.revoked_seq is not None and seq > self.revoked_seq:
            return "revoked"
        if self.limited_seq is not None and seq >= self.limited_seq:
            return "rate_limited"
        return None


def _load_author(db: sqlite3.Connection, author: bytes) -> _Author:
    row = db.execute(
        "SELECT applied_seq, last_id, key, recovery, commitment, frozen_seq, revoked_seq,"
        " limited_seq, EXISTS (SELECT 1 FROM records WHERE author = ?1 AND state = 'held')"
        " FROM authors WHERE author = ?1",
        (author,),
    ).fetchone()
    if row is None:
        db.execute("INSERT INTO authors (author) VALUES (?)", (author,))
        held = db.execute(
            "SELECT EXISTS (SELECT 1 FROM records WHERE author = ? AND state = 'held')", (author,)
        ).fetchone()[0]
        return _Author(author, held=bool(held))
    return _Author(
        author, row[0], row[1], row[2], row[3] or b"", row[4], row[5], row[6], row[7], bool(row[8])
    )


def _save_author(db: sqlite3.Connection, a: _Author) -> None:
    db.execute(
        "UPDATE authors SET applied_seq = ?, last_id = ?, key = ?, recovery = ?, commitment = ?,"
        " frozen_seq = ?, revoked_seq = ?, limited_seq = ? WHERE author = ?",
        (
            a.applied_seq,
            a.last_id,
            a.key,
            a.recovery,
            a.commitment,
            a.frozen_seq,
            a.revoked_seq,
            a.limited_seq,
            a.author,
        ),
    )


def _store(
    db: sqlite3.Connection, rec: Record, state: str, now_ms: int, result: ApplyResult
) -> None:
    h = rec.header
    result.inserted[(state, h.kind)] += 1
    db.execute(
        "INSERT INTO records (id, author, seq, kind, addr, network, created, signer, prev,"
        " envelope, state, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rec.id,
            h.author,
            h.seq,
            h.kind,
            h.addr,
            h.network,
            h.created,
            h.signer,
            h.prev,
            rec.envelope,
            state,
            now_ms,
        ),
    )


def _rates_itself(author: bytes, ref: str) -> bool:
    return ref.startswith(identity_text(author) + "/")


def _counts(db: sqlite3.Connection, result: ApplyResult, author: bytes, seq: int) -> bool:
    limit = result.counting.get(author)
    if limit is None:
        limit = result.counting[author] = counting_limit(db, author)
    return seq <= limit


def _derive(db: sqlite3.Connection, rec: Record, result: ApplyResult) -> None:
    """Update current-state tables for one record applied in chain order."""
    h = rec.header
    body = rec.body
    db.execute(
        "INSERT INTO current (author, kind, addr, id, seq, created, retracted, body)"
        " VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (author, kind, addr) DO UPDATE SET"
        " id = excluded.id, seq = excluded.seq, created = excluded.created, retracted = 0,"
        " body = excluded.body",
        (h.author, h.kind, h.addr, rec.id, h.seq, h.created, _json.encode(body).decode()),
    )
    if isinstance(body, CityBody):
        db.execute(
            "INSERT OR REPLACE INTO cities (author, name, country, seq) VALUES (?, ?, ?, ?)",
            (h.author, body.name, body.country, h.seq),
        )
        reindex_author(db, h.author)
    elif isinstance(body, PracticeBody):
        title = body.title.get("en") or next(iter(body.title.values()))
        db.execute(
            "INSERT OR REPLACE INTO practices (author, addr, id, seq, created, title, status,"
            " sectors, target_groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                h.author,
                h.addr,
                rec.id,
                h.seq,
                h.created,
                title,
                body.status,
                " ".join(body.sectors),
                " ".join(body.target_groups),
            ),
        )
        index_practice(db, h.author, h.addr, body)
    elif isinstance(body, RatingBody):
        if _rates_itself(h.author, h.addr):
            return  # a city's rating of its own practice never counts
        db.execute(
            "INSERT OR REPLACE INTO ratings (rater, ref, id, score, created, counts)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (h.author, h.addr, rec.id, body.score, h.created, _counts(db, result, h.author, h.seq)),
        )
        result.stats.add(h.addr)
    elif isinstance(body, ReplicationBody):
        if _rates_itself(h.author, h.addr):
            return  # replicating one's own practice is not evidence
        db.execute(
            "INSERT OR REPLACE INTO replications (author, ref, id, relation, status, worked,"
            " created, counts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                h.author,
                h.addr,
                rec.id,
                body.relation,
                body.status,
                body.outcome.worked if body.outcome else None,
                h.created,
                _counts(db, result, h.author, h.seq),
            ),
        )
        result.stats.add(h.addr)
    elif h.kind == "retraction":
        target_kind, _, target_addr = h.addr.partition("/")
        db.execute(
            "UPDATE current SET retracted = 1 WHERE author = ? AND kind = ? AND addr = ?"
            " AND seq < ?",
            (h.author, target_kind, target_addr, h.seq),
        )
        table = {
            "practice": ("practices", "addr"),
            "rating": ("ratings", "ref"),
            "replication": ("replications", "ref"),
        }.get(target_kind)
        if table is not None:
            name, column = table
            author_col = "rater" if name == "ratings" else "author"
            db.execute(
                f"DELETE FROM {name} WHERE {author_col} = ? AND {column} = ?",
                (h.author, target_addr),
            )
            if target_kind == "practice":
                unindex_practice(db, practice_ref(h.author, target_addr))
            else:
                result.stats.add(target_addr)


_DERIVED = (
    ("current", "author"),
    ("cities", "author"),
    ("practices", "author"),
    ("ratings", "rater"),
    ("replications", "author"),
)


def _freeze(
    db: sqlite3.Connection,
    a: _Author,
    seq: int,
    id_a: bytes,
    id_b: bytes,
    now_ms: int,
    result: ApplyResult,
) -> None:
    """Equivocation at ``seq``: keep both as evidence, rebuild the author's state below it."""
    db.execute(
        "INSERT OR IGNORE INTO equivocations (author, seq, id_a, id_b, detected)"
        " VALUES (?, ?, ?, ?, ?)",
        (a.author, seq, min(id_a, id_b), max(id_a, id_b), now_ms),
    )
    result.rejected["equivocation"] += 1
    if a.frozen_seq is not None and a.frozen_seq <= seq:
        return
    a.frozen_seq = seq
    _rebuild_below(db, a, seq, "evidence", now_ms, result)


def _rebuild_below(
    db: sqlite3.Connection,
    a: _Author,
    seq: int,
    state: str,
    now_ms: int,
    result: ApplyResult,
    *,
    only_applied: bool = False,
) -> None:
    """Drop the author's derived state, mark its records from ``seq`` on with ``state`` (only the
    applied ones with ``only_applied``: held ones are judged when their turn comes) and apply the
    ones below again, in order (what is left is what a node that never saw the rest holds)."""
    for (ref,) in db.execute("SELECT ref FROM practices WHERE author = ?", (a.author,)).fetchall():
        unindex_practice(db, str(ref))
    touched = [
        str(r[0])
        for r in db.execute(
            "SELECT ref FROM ratings WHERE rater = ? UNION SELECT ref FROM replications"
            " WHERE author = ?",
            (a.author, a.author),
        ).fetchall()
    ]
    for table, column in _DERIVED:
        db.execute(f"DELETE FROM {table} WHERE {column} = ?", (a.author,))
    db.execute("DELETE FROM author_hours WHERE author = ?", (a.author,))
    for key in [key for key in result.hours if key[0] == a.author]:
        del result.hours[key]
    a.limited_seq = None  # re-applying what is below finds the same limit again, if any
    result.stats.update(touched)
    db.execute(
        "UPDATE records SET state = ? WHERE author = ? AND seq >= ? AND state != 'evidence'"
        + (" AND state = 'applied'" if only_applied else ""),
        (state, a.author, seq),
    )
    db.execute(
        "UPDATE records SET state = 'held' WHERE author = ? AND seq < ? AND state != 'evidence'",
        (a.author, seq),
    )
    a.held = True
    a.applied_seq, a.last_id, a.key, a.recovery, a.commitment = 0, None, None, b"", None
    _release(db, a, now_ms, result)


def _key_before(db: sqlite3.Connection, a: _Author, seq: int) -> bytes | None:
    """The key that signs the author's record at ``seq`` (seq <= applied_seq + 1)."""
    if seq == a.applied_seq + 1:
        return a.key if a.applied_seq else None
    row = db.execute(
        "SELECT envelope FROM records WHERE author = ? AND kind = 'key_rotation'"
        " AND state = 'applied' AND seq < ? ORDER BY seq DESC LIMIT 1",
        (a.author, seq),
    ).fetchone()
    if row is not None:
        try:
            body = open_envelope(bytes(row[0]), now_ms=2**62).body
        except ProtocolError:
            return None
        assert isinstance(body, KeyRotationBody)
        return body.new_key
    row = db.execute(
        "SELECT signer FROM records WHERE author = ? AND seq = 1 AND state = 'applied'",
        (a.author,),
    ).fetchone()
    return None if row is None else bytes(row[0])


def _may_sign(db: sqlite3.Connection, a: _Author, rec: Record) -> bool:
    """Whether ``rec`` is signed by a key the author held at its seq: only then can it be
    evidence of a fork. Anyone can sign a record that claims to be someone else's (a valid
    signature by an unrelated key); such a record must never freeze the author."""
    h = rec.header
    if h.seq == 1:
        return True  # the genesis ties seq 1 to the identity (checked when it was opened)
    recovery = {a.recovery[i : i + 32] for i in range(0, len(a.recovery), 32)}
    if isinstance(rec.body, KeyRotationBody) and h.signer in recovery:
        return True
    return h.signer == _key_before(db, a, h.seq)


RECOVERY_WINDOW_MS = 72 * 3_600_000
"""How far back a recovery rotation overrides records signed with a stolen key (did:plc's
window): a record at the same seq created at most this long before the recovery loses to it."""


def _is_recovery(a: _Author, rec: Record) -> bool:
    recovery = {a.recovery[i : i + 32] for i in range(0, len(a.recovery), 32)}
    body = rec.body
    return isinstance(body, KeyRotationBody) and body.by_recovery and rec.header.signer in recovery


def _recovery_wins(a: _Author, recovery: Record, other: Record) -> bool:
    """At one seq, a rotation by a genesis recovery key beats a record of the ordinary key
    created within the window before it: the city took its identity back after a theft. The
    same rule on every node, in any order of arrival."""
    return (
        _is_recovery(a, recovery)
        and not _is_recovery(a, other)
        and recovery.header.created - other.header.created <= RECOVERY_WINDOW_MS
    )


def _opened(record_id: bytes, envelope: bytes, result: ApplyResult) -> Record | None:
    rec = result.batch.get(bytes(record_id))
    if rec is not None:
        return rec
    try:
        return open_envelope(bytes(envelope), now_ms=2**62)
    except ProtocolError:
        return None


def _drop(db: sqlite3.Connection, record_id: bytes, result: ApplyResult) -> None:
    """Un-store a held record found invalid on release: not kept, not bridged to other relays."""
    db.execute("DELETE FROM records WHERE id = ?", (record_id,))
    db.execute("DELETE FROM outbox WHERE id = ?", (record_id,))
    result.stored = [r for r in result.stored if r.id != record_id]


def _apply_next(
    db: sqlite3.Connection,
    a: _Author,
    rec: Record,
    now_ms: int,
    result: ApplyResult,
    *,
    stored_applied: bool = False,
) -> bool:
    """Apply ``rec`` (seq == applied_seq + 1). Returns False if it was refused.

    ``stored_applied``: the row was inserted with state 'applied' already (a refusal deletes it
    or marks it evidence, as it would a held row).
    """
    h = rec.header
    if h.seq == 1:
        assert h.genesis is not None  # checked when the envelope was opened
        keys = KeyState(h.genesis)
    else:
        if h.prev != a.last_id and not _may_sign(db, a, rec):
            result.rejected[ChainError.code] += 1  # not the author's key: a forgery, not a fork
            _drop(db, rec.id, result)
            return False
        if h.prev != a.last_id:
            # Validly signed by the author yet pointing at another history: a fork.
            assert a.last_id is not None
            _freeze(db, a, h.seq, rec.id, a.last_id, now_ms, result)
            return False
        assert a.key is not None
        recovery = tuple(a.recovery[i : i + 32] for i in range(0, len(a.recovery), 32))
        keys = KeyState.resume(a.key, recovery, a.commitment)
    try:
        keys.apply(rec)
    except ChainError:
        result.rejected[ChainError.code] += 1
        _drop(db, rec.id, result)
        return False
    if _over_hourly_limit(db, h.author, h.created, result):
        # Deterministic on every node: the same records in chain order break the same limit.
        a.limited_seq = h.seq
        result.rejected["rate_limited"] += 1
        _drop(db, rec.id, result)
        return False
    a.applied_seq = h.seq
    a.last_id = rec.id
    a.key = keys.current
    a.recovery = b"".join(keys.recovery)
    a.commitment = keys.commitment
    if not stored_applied:
        db.execute("UPDATE records SET state = 'applied' WHERE id = ?", (rec.id,))
    _derive(db, rec, result)
    result.applied.append(rec)
    return True


HOUR_MS = 3_600_000


def _over_hourly_limit(
    db: sqlite3.Connection, author: bytes, created: int, result: ApplyResult
) -> bool:
    """Count the record in its author's created-hour; True if that breaks the network's limit
    (never for this node's own records: its log stays whole). A refused record is not counted."""
    key = (author, created // HOUR_MS)
    n = result.hours.get(key)
    if n is None:
        row = db.execute("SELECT n FROM author_hours WHERE author = ? AND hour = ?", key).fetchone()
        n = int(row[0]) if row else 0
    if result.limits is None:
        row = db.execute(
            "SELECT own, max_per_hour, limit_since_hour FROM trust_local WHERE id = 0"
        ).fetchone()
        result.limits = (bytes(row[0]), row[1], row[2] or 0) if row else (None, None, 0)
    own, cap, since = result.limits
    if cap is not None and author != own and key[1] >= since and n + 1 > cap:
        result.hours[key] = n
        return True
    result.hours[key] = n + 1
    return False


def _finish(db: sqlite3.Connection, result: ApplyResult) -> None:
    """Write what the batch gathered: records inserted, hourly counts, practices' figures."""
    if result.inserted:
        db.executemany(
            "INSERT INTO record_counts (state, kind, n) VALUES (?, ?, ?)"
            " ON CONFLICT (state, kind) DO UPDATE SET n = n + excluded.n",
            [(state, kind, n) for (state, kind), n in result.inserted.items()],
        )
        result.inserted.clear()
    if result.hours:
        db.executemany(
            "INSERT INTO author_hours (author, hour, n) VALUES (?, ?, ?)"
            " ON CONFLICT (author, hour) DO UPDATE SET n = excluded.n",
            [(author, hour, n) for (author, hour), n in result.hours.items()],
        )
        result.hours.clear()
    if result.stats:
        refresh_many(db, result.stats)
        result.stats.clear()


def _release(db: sqlite3.Connection, a: _Author, now_ms: int, result: ApplyResult) -> None:
    """Apply held records that now follow the chain, in order."""
    while a.refuses(a.applied_seq + 1) is None:
        rows = db.execute(
            "SELECT id, envelope FROM records WHERE author = ? AND seq = ? AND state = 'held'",
            (a.author, a.applied_seq + 1),
        ).fetchall()
        if not rows:
            return
        candidates: list[Record] = []
        for record_id, envelope in rows:
            rec = result.batch.get(record_id)
            if rec is None:
                try:
                    rec = open_envelope(envelope, now_ms=2**62)
                except ProtocolError:  # stored bytes no longer verify: drop them, count it
                    _drop(db, record_id, result)
                    result.rejected["corrupt_stored"] += 1
                    continue
            if len(rows) > 1 and a.applied_seq and not _may_sign(db, a, rec):
                _drop(db, record_id, result)  # claims the author but another key signed it
                result.rejected[ChainError.code] += 1
                continue
            candidates.append(rec)
        if not candidates:
            return
        if len(candidates) == 2 and a.applied_seq:
            for winner, loser in (candidates, candidates[::-1]):
                if _recovery_wins(a, winner, loser):
                    _drop(db, loser.id, result)
                    result.rejected["superseded"] += 1
                    candidates = [winner]
                    break
        if len(candidates) > 1:
            first, second = candidates[0], candidates[1]
            _freeze(db, a, a.applied_seq + 1, first.id, second.id, now_ms, result)
            return
        rec = candidates[0]
        if not _apply_next(db, a, rec, now_ms, result):
            return


def _known_ids(db: sqlite3.Connection, ids: list[bytes]) -> set[bytes]:
    found: set[bytes] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            bytes(row[0])
            for row in db.execute(f"SELECT id FROM records WHERE id IN ({marks})", chunk)
        )
    return found


def _held_count(db: sqlite3.Connection, author: bytes) -> int:
    row = db.execute(
        "SELECT count(*) FROM records WHERE author = ? AND state = 'held'", (author,)
    ).fetchone()
    return int(row[0])


def apply_records(db: sqlite3.Connection, records: list[Record], *, now_ms: int) -> ApplyResult:
    """Store and apply verified records (any order, duplicates allowed). Caller commits."""
    result = ApplyResult(batch={rec.id: rec for rec in records})
    authors: dict[bytes, _Author] = {}
    # Ids that may be in the table: the batch's stored ones (one query) plus those stored below;
    # only those need the per-record check (a refused record is deleted again).
    present = _known_ids(db, list(result.batch))
    for rec in records:
        h = rec.header
        if (
            rec.id in present
            and db.execute("SELECT 1 FROM records WHERE id = ?", (rec.id,)).fetchone()
        ):
            result.duplicates += 1
            continue
        present.add(rec.id)
        a = authors.get(h.author)
        if a is None:
            a = authors[h.author] = _load_author(db, h.author)
        refusal = a.refuses(h.seq)
        if refusal is not None:
            result.rejected[refusal] += 1
            continue
        if h.seq <= a.applied_seq:
            if not _may_sign(db, a, rec):
                result.rejected[ChainError.code] += 1
                continue
            other = db.execute(
                "SELECT id, envelope FROM records WHERE author = ? AND seq = ? AND state = 'applied'",
                (h.author, h.seq),
            ).fetchone()
            applied = _opened(other[0], other[1], result) if other else None
            if applied is not None and _recovery_wins(a, applied, rec):
                result.rejected["superseded"] += 1  # the city took its identity back here
                continue
            if applied is not None and _recovery_wins(a, rec, applied):
                _rebuild_below(db, a, h.seq, "superseded", now_ms, result, only_applied=True)
                _store(db, rec, "held", now_ms, result)
                result.stored.append(rec)
                _release(db, a, now_ms, result)
                continue
            _store(db, rec, "evidence", now_ms, result)
            result.stored.append(rec)
            _freeze(db, a, h.seq, rec.id, other[0] if other else rec.id, now_ms, result)
            continue
        if h.seq > a.applied_seq + 1 and _held_count(db, h.author) >= MAX_HELD_PER_AUTHOR:
            result.rejected["held_limit"] += 1
            continue
        if h.seq == a.applied_seq + 1 and not a.held:
            # Next in the chain and nothing held for this author: what _release would find is
            # this record alone, so apply it directly (catch-up is almost always this case).
            _store(db, rec, "applied", now_ms, result)
            result.stored.append(rec)
            _apply_next(db, a, rec, now_ms, result, stored_applied=True)
            continue
        a.held = True
        _store(db, rec, "held", now_ms, result)
        result.stored.append(rec)
        _release(db, a, now_ms, result)
    for a in authors.values():
        _save_author(db, a)
    _finish(db, result)
    return result


def set_revoked(
    db: sqlite3.Connection, author: bytes, until_seq: int | None, *, now_ms: int
) -> ApplyResult:
    """A network revoked ``author`` after ``until_seq`` (None: revocation lifted).

    Records after it stop counting at once: their derived state is rebuilt from the records up to
    it, they are kept as ``revoked`` and later ones are refused. Lifting puts them back in the
    chain. Caller commits.
    """
    result = ApplyResult()
    a = _load_author(db, author)
    if a.revoked_seq == until_seq:
        return result
    a.revoked_seq = until_seq
    if until_seq is None:
        db.execute(
            "UPDATE records SET state = 'held' WHERE author = ? AND state = 'revoked'", (author,)
        )
        a.held = True
        _release(db, a, now_ms, result)
    elif a.applied_seq > until_seq:
        _rebuild_below(db, a, until_seq + 1, "revoked", now_ms, result)
    _save_author(db, a)
    _finish(db, result)
    return result


def reapply(db: sqlite3.Connection, author: bytes, *, now_ms: int) -> ApplyResult:
    """Apply the author's chain again from its start (after the hourly limit was set or
    lowered: the records past the limit are refused as if they had arrived now). Caller
    commits."""
    result = ApplyResult()
    a = _load_author(db, author)
    if a.applied_seq:
        _rebuild_below(db, a, a.applied_seq + 1, "held", now_ms, result)
        _save_author(db, a)
        _finish(db, result)
    return result
