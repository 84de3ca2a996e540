"""The node's SQLite store: one writer connection, WAL with synchronous=FULL.

All methods are synchronous; the daemon calls them from a single writer thread, so the event loop
never blocks on disk. Readers (the HTTP API) open their own connection (`open_reader`).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from citymesh.protocol.envelope import Signed
from citymesh.protocol.records import Record
from citymesh.protocol.subjects import subject

from ..verify import decode_chunk
from . import trust
from .apply import HOUR_MS, ApplyResult, apply_records
from .catalogue import Connection
from .migrations import migrate

STATEMENT_CACHE = 1024
"""Prepared statements kept per connection."""
WRITER_CACHE_KIB = 32 * 1024
"""Page cache of the writer connection, KiB."""


class StoreError(Exception):
    """The database cannot be opened or is damaged; the message says which file and why."""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    try:
        if readonly:
            db = sqlite3.connect(
                f"file:{path}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                factory=Connection,
            )
        else:
            db = sqlite3.connect(
                path,
                isolation_level=None,
                check_same_thread=False,
                factory=Connection,
                # Ingest runs a few dozen distinct statements per batch, plus id lookups with
                # varying numbers of placeholders: the default cache (128) made SQLite prepare
                # the same statements again and again.
                cached_statements=STATEMENT_CACHE,
            )
        db.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{path}: cannot switch to WAL journal mode (got {mode})")
        # FULL: NORMAL in WAL mode can lose acknowledged commits on power loss.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        # Statement journals and RETURNING's ephemeral tables in memory, not in temp files.
        db.execute("PRAGMA temp_store = MEMORY")
        return db
    except sqlite3.DatabaseError as err:
        raise StoreError(f"cannot open the node database {path}: {err}") from err


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = connect(path)
        try:
            # The writer's page cache (default 2 MB): catch-up inserts into the records id index
            # and the full-text index at random places; 32 MB spares re-reading hot pages from
            # the OS (10-20% less CPU per ingested record). It grows only as pages are used.
            self.db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            migrate(self.db)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot migrate the node database {path}: {err}") from err

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- ingest --------------------------------------------------------------------------------
    def known_ids(self, ids: Iterable[bytes]) -> set[bytes]:
        ids = list(ids)
        found: set[bytes] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self.db.execute(f"SELECT id FROM records WHERE id IN ({marks})", chunk)
            )
        return found

    def ingest(
        self,
        records: list[Record],
        rejected: Counter[str],
        *,
        now_ms: int,
        cursor: tuple[str, str, str, int] | None = None,
        bridge_to: Iterable[str] = (),
    ) -> ApplyResult:
        """Apply a verified batch, count rejections, queue bridging, advance the cursor: one commit.

        ``cursor`` is (relay, stream, stream_created, last stream seq in the batch).
        """
        bridge_to = list(bridge_to)
        with self.transaction() as db:
            result = apply_records(db, records, now_ms=now_ms)
            _follow_trust(db, result, now_ms)
            result.rejected.update(rejected)
            self._count_rejections(result.rejected)
            for relay in bridge_to:
                db.executemany(
                    "INSERT OR IGNORE INTO outbox (relay, id, queued) VALUES (?, ?, ?)",
                    [(relay, rec.id, now_ms) for rec in result.stored],
                )
            if cursor is not None:
                relay, stream, created, seq = cursor
                db.execute(
                    "INSERT INTO cursors (relay, stream, stream_created, seq) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (relay) DO UPDATE SET stream = excluded.stream,"
                    " stream_created = excluded.stream_created, seq = excluded.seq",
                    (relay, stream, created, seq),
                )
        return result

    def ingest_signed(
        self,
        signed: list[Signed],
        rejected: Counter[str],
        *,
        now_ms: int,
        cursor: tuple[str, str, str, int] | None = None,
        bridge_to: Iterable[str] = (),
    ) -> ApplyResult:
        """`ingest` for envelopes whose signatures were checked elsewhere: decoded here, on the
        writer's thread (see `citymesh.node.verify`); the ones that do not decode are counted
        with ``rejected``."""
        records, undecoded = decode_chunk(signed, now_ms)
        return self.ingest(
            records, rejected + undecoded, now_ms=now_ms, cursor=cursor, bridge_to=bridge_to
        )

    def count_rejections(self, rejected: Counter[str]) -> None:
        with self.transaction():
            self._count_rejections(rejected)

    def _count_rejections(self, rejected: Counter[str]) -> None:
        self.db.executemany(
            "INSERT INTO rejections (reason, count) VALUES (?, ?)"
            " ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count",
            [(reason, n) for reason, n in rejected.items() if n],
        )

    # -- own records ---------------------------------------------------------------------------
    def own_head(self, author: bytes) -> tuple[int, bytes | None]:
        """Highest seq of the author stored here (any state), and the id of the applied one."""
        row = self.db.execute(
            "SELECT seq, id FROM records WHERE author = ? ORDER BY seq DESC LIMIT 1", (author,)
        ).fetchone()
        return (0, None) if row is None else (int(row[0]), bytes(row[1]))

    def applied_head(self, author: bytes) -> tuple[int, bytes | None]:
        """How far the author's chain is applied here: (seq, id of that record)."""
        row = self.db.execute(
            "SELECT applied_seq, last_id FROM authors WHERE author = ?", (author,)
        ).fetchone()
        if row is None:
            return 0, None
        return int(row[0]), None if row[1] is None else bytes(row[1])

    def current_key(self, author: bytes) -> bytes | None:
        """The key that signs the author's next record, as its applied chain says."""
        row = self.db.execute("SELECT key FROM authors WHERE author = ?", (author,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def own_counts(self, author: bytes) -> dict[str, int]:
        rows = self.db.execute(
            # Pinned: with the planner's choice a count of one city read every applied record.
            "SELECT kind, count(*) FROM records INDEXED BY records_state"
            " WHERE author = ? AND state = 'applied' GROUP BY kind",
            (author,),
        ).fetchall()
        return {str(k): int(n) for k, n in rows}

    def add_own(self, record: Record, *, relays: Iterable[str], now_ms: int) -> ApplyResult:
        """Store a record this node just signed, and queue it for every relay: one commit."""
        with self.transaction() as db:
            result = apply_records(db, [record], now_ms=now_ms)
            _follow_trust(db, result, now_ms)
            if record not in result.applied:
                raise StoreError(
                    f"own record seq {record.header.seq} was not applied: {dict(result.rejected)}"
                )
            db.executemany(
                "INSERT OR IGNORE INTO outbox (relay, id, queued) VALUES (?, ?, ?)",
                [(relay, record.id, now_ms) for relay in relays],
            )
        return result

    def current_body(self, author: bytes, kind: str, addr: str) -> str | None:
        row = self.db.execute(
            "SELECT body FROM current WHERE author = ? AND kind = ? AND addr = ? AND retracted = 0",
            (author, kind, addr),
        ).fetchone()
        return None if row is None else str(row[0])

    def hourly_use(self, author: bytes, created: int) -> tuple[int | None, int]:
        """(the followed networks' records-per-hour limit or None, records of ``author`` applied
        in the hour of ``created``)."""
        (cap,) = self.db.execute(
            "SELECT max_per_hour FROM trust_local WHERE id = 0"
        ).fetchone() or (None,)
        row = self.db.execute(
            "SELECT n FROM author_hours WHERE author = ? AND hour = ?",
            (author, created // HOUR_MS),
        ).fetchone()
        return cap, 0 if row is None else int(row[0])

    # -- trust policy --------------------------------------------------------------------------
    def configure_trust(
        self, *, own: bytes, follows: dict[str, list[bytes]], now_ms: int
    ) -> list[bytes]:
        """Set the trust anchors (network -> stewards) and bring standings up to date."""
        with self.transaction() as db:
            if trust.configure(db, own=own, follows=follows):
                trust.remark_all(db)
            return trust.recompute(db, now_ms=now_ms).changed

    def add_trust_anchor(self, network: str, steward: bytes, *, now_ms: int) -> bool:
        """Trust ``steward`` for ``network`` from now on (a node that signs its own charter)."""
        with self.transaction() as db:
            added = trust.add_anchor(db, network, steward)
            if added:
                trust.remark_all(db)
                trust.recompute(db, now_ms=now_ms)
            return added

    def refresh_trust(self, *, now_ms: int) -> list[bytes]:
        """Re-check time-bounded memberships; returns the authors whose trust changed."""
        with self.transaction() as db:
            return trust.recompute(db, now_ms=now_ms).changed

    # -- cursors and outbox --------------------------------------------------------------------
    def cursor(self, relay: str) -> tuple[str, int]:
        row = self.db.execute(
            "SELECT stream_created, seq FROM cursors WHERE relay = ?", (relay,)
        ).fetchone()
        return ("", 0) if row is None else (str(row[0]), int(row[1]))

    def reset_cursor(self, relay: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM cursors WHERE relay = ?", (relay,))

    def pending_outbox(self, relay: str, limit: int = 256) -> list[tuple[bytes, bytes, str]]:
        """(id, envelope, subject) of queued records, oldest first, each author in chain order."""
        rows = self.db.execute(
            "SELECT r.id, r.envelope, r.network, r.author, r.kind FROM outbox o"
            " JOIN records r ON r.id = o.id WHERE o.relay = ? AND o.sent IS NULL"
            " ORDER BY o.queued, r.author, r.seq LIMIT ?",
            (relay, limit),
        ).fetchall()
        return [(bytes(i), bytes(e), subject(n, bytes(a), k)) for i, e, n, a, k in rows]

    def queue_unsent_own(self, relay: str, author: bytes, now_ms: int) -> int:
        """Queue this city's records that were never queued for ``relay`` (new relay, init)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO outbox (relay, id, queued) SELECT ?, id, ? FROM records"
                " WHERE author = ? AND state = 'applied'",
                (relay, now_ms, author),
            )
            return cur.rowcount

    def outbox_size(self, relay: str) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM outbox WHERE relay = ? AND sent IS NULL", (relay,)
        ).fetchone()
        return int(row[0])

    def mark_sent(self, relay: str, ids: Iterable[bytes], now_ms: int) -> None:
        with self.transaction() as db:
            db.executemany(
                "UPDATE outbox SET sent = ? WHERE relay = ? AND id = ?",
                [(now_ms, relay, i) for i in ids],
            )

    def queue_all(self, relay: str, now_ms: int, *, author: bytes | None = None) -> int:
        """Queue every stored record (or one author's) for a relay that lost them."""
        with self.transaction() as db:
            # An upsert's SELECT needs a WHERE: without one SQLite parses ON CONFLICT as a join.
            where, args = ("WHERE author = ?", (author,)) if author else ("WHERE true", ())
            cur = db.execute(
                f"INSERT INTO outbox (relay, id, queued) SELECT ?, id, ? FROM records {where}"
                " ON CONFLICT (relay, id) DO UPDATE SET sent = NULL",
                (relay, now_ms, *args),
            )
            return cur.rowcount

    # -- whole-store walks ---------------------------------------------------------------------
    def iter_envelopes(self, batch: int = 1000) -> Iterator[list[tuple[bytes, bytes]]]:
        last = b""
        while True:
            rows = self.db.execute(
                "SELECT id, envelope FROM records WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            yield [(bytes(i), bytes(e)) for i, e in rows]
            last = bytes(rows[-1][0])

    def record_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM records").fetchone()[0])

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])


def _follow_trust(db: sqlite3.Connection, result: ApplyResult, now_ms: int) -> None:
    """A batch that changed a charter or a membership: recompute trust in the same transaction."""
    if any(trust.touches_trust(r.header.kind, r.header.addr) for r in result.applied):
        change = trust.recompute(db, now_ms=now_ms)
        result.applied.extend(change.applied.applied)
        result.rejected.update(change.applied.rejected)
