"""The convergence check every fault test ends with.

Expected state: every record any origin published (each node's own log, read from its SQLite
file, which is the source of truth for its city's records, plus the chains a test sealed and
published raw), verified as a receiving node verifies it at its own clock, fed into a fresh
`Store` in chain order. Each node's derived tables must equal that state, and
``PRAGMA integrity_check`` must say "ok" on each node's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from citymesh.node.store import Store
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import Record

DERIVED = {
    "current": "SELECT author, kind, addr, id, seq, created, retracted, body FROM current",
    "cities": "SELECT author, name, country, seq FROM cities",
    "practices": "SELECT author, addr, id, seq, created, title, status, sectors, target_groups"
    " FROM practices",
    "ratings": "SELECT rater, ref, id, score, created FROM ratings",
    "replications": "SELECT author, ref, id, relation, status, worked, created FROM replications",
    "authors": "SELECT author, applied_seq, last_id, key, commitment, frozen_seq FROM authors",
}

State = dict[str, list[tuple[Any, ...]]]


class Member(Protocol):
    """A node taking part in a test: in-process (`Local`) or a subprocess (`NodeProc`)."""

    @property
    def name(self) -> str: ...
    @property
    def db_path(self) -> Path: ...
    @property
    def identity(self) -> bytes: ...
    def now_ms(self) -> int:
        """The node's own clock (a skewed node verifies against its skewed time)."""
        ...


def read_only(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 10000")
    return db


def dump(path: Path) -> State:
    """A node database's derived tables, each sorted."""
    with contextlib.closing(read_only(path)) as db:
        return {
            table: sorted(db.execute(sql).fetchall(), key=repr) for table, sql in DERIVED.items()
        }


def integrity(path: Path) -> str:
    with contextlib.closing(read_only(path)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def own_log(member: Member) -> list[bytes]:
    """The envelopes of the member's own chain as its database holds them."""
    with contextlib.closing(read_only(member.db_path)) as db:
        rows = db.execute(
            "SELECT envelope FROM records WHERE author = ? ORDER BY seq", (member.identity,)
        ).fetchall()
    return [bytes(r[0]) for r in rows]


def feed(path: Path, records: Iterable[Record], now_ms: int) -> None:
    """Ingest records into the store at ``path`` in chain order (each author's by seq)."""
    ordered = sorted(records, key=lambda r: (r.header.author, r.header.seq, r.id))
    store = Store(path)
    try:
        for i in range(0, len(ordered), 2000):
            store.ingest(ordered[i : i + 2000], Counter(), now_ms=now_ms)
    finally:
        store.close()


def prebuild(records: Sequence[Record], workdir: Path) -> Path:
    """A store holding ``records`` (all valid now), to start expected states from: the slow
    part of a large convergence check, done while the nodes are still working."""
    path = Path(tempfile.mkdtemp(dir=workdir)) / "base.db"
    feed(path, records, int(time.time() * 1000))
    return path


def expected_state(
    envelopes: Iterable[bytes], now_ms: int, workdir: Path, base: Path | None = None
) -> State:
    """Derived state of a fresh store (or a copy of ``base``) fed every envelope valid at
    ``now_ms``, in chain order."""
    records: dict[bytes, Record] = {}
    for data in envelopes:
        try:
            rec = open_envelope(data, now_ms=now_ms)
        except ProtocolError:
            continue  # what a receiving node rejects (e.g. created too far in the future)
        records[rec.id] = rec
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "expected.db"
        if base is not None:
            with (
                contextlib.closing(read_only(base)) as src,
                contextlib.closing(sqlite3.connect(path)) as dst,
            ):
                src.backup(dst)
        feed(path, records.values(), now_ms)
        return dump(path)


def describe_diff(got: State, want: State, names: dict[bytes, str], limit: int = 6) -> str:
    def show(row: tuple[Any, ...]) -> str:
        return repr(tuple(names.get(v, v.hex()[:12]) if isinstance(v, bytes) else v for v in row))

    lines = []
    for table in DERIVED:
        g, w = set(got[table]), set(want[table])
        if g == w:
            continue
        extra, missing = sorted(g - w, key=repr), sorted(w - g, key=repr)
        lines.append(f"  {table}: {len(extra)} unexpected, {len(missing)} missing")
        lines += [f"    + {show(r)[:300]}" for r in extra[:limit]]
        lines += [f"    - {show(r)[:300]}" for r in missing[:limit]]
    return "\n".join(lines)


@dataclass
class Converged:
    expected: dict[int, State]
    """Expected state by clock offset (ms, rounded) of the members that compared with it."""
    seconds: float
    records: int


async def assert_converged(
    members: Sequence[Member],
    *,
    extra: Sequence[Record] = (),
    workdir: Path,
    timeout: float = 60.0,
    names: dict[bytes, str] | None = None,
    base: Path | None = None,
) -> Converged:
    """Wait until every member's derived state equals the state computed from the union of
    origin logs (members' own logs plus ``extra``), then check each database's integrity.

    ``base``: a `prebuild` of ``extra`` (then only the members' logs are fed on top of it)."""
    started = time.monotonic()
    names = dict(names or {})
    for m in members:
        names.setdefault(m.identity, f"<{m.name}>")
    extra_envelopes = [] if base is not None else [r.envelope for r in extra]
    total_extra = len(extra)
    cache: dict[tuple[frozenset[bytes], int], State] = {}
    diffs: dict[str, str] = {}
    total = 0
    while True:
        union = list(extra_envelopes)
        for m in members:
            union += await asyncio.to_thread(own_log, m)
        key_ids = frozenset(union)
        total = len(key_ids) + (total_extra if base is not None else 0)
        diffs = {}
        used: dict[int, State] = {}
        for m in members:
            # Members on the same clock share one expected state (the future check is minutes).
            offset = round((m.now_ms() - int(time.time() * 1000)) / 60_000) * 60_000
            key = (key_ids, offset)
            if key not in cache:
                now = int(time.time() * 1000) + offset
                cache[key] = await asyncio.to_thread(expected_state, union, now, workdir, base)
            want = used[offset] = cache[key]
            got = await asyncio.to_thread(dump, m.db_path)
            if got != want:
                diffs[m.name] = describe_diff(got, want, names)
        if not diffs:
            break
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"no convergence within {timeout:g} s ({total} records in the union of origin "
                "logs):\n" + "\n".join(f"{n}:\n{d}" for n, d in diffs.items())
            )
        await asyncio.sleep(0.5)
    for m in members:
        assert await asyncio.to_thread(integrity, m.db_path) == "ok", m.name
    return Converged(used, time.monotonic() - started, total)


def label(identity: bytes) -> str:
    return identity_text(identity)[:16]
