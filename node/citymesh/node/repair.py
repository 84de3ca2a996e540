"""Omission repair and anti-entropy: fill chain gaps, catch up with peers, refill relays.

Three jobs, one task (`Repairer`), started by the daemon:

- **Gaps.** An author with records held behind a gap (a relay dropped a record, or delivered it
  while it was invalid here, e.g. rejected as ``future`` and since become valid) has its subject
  ``cm.<net>.<author>.*`` read again from every relay; what is still missing is asked of the
  configured peer nodes (``GET /v1/sync/records?author=&after=``). Checked every
  ``interval`` seconds and whenever ingest holds a record; an author that stays behind is retried
  with a growing delay (up to ``MAX_BACKOFF``).
- **Anti-entropy with peers**, every ``anti_entropy_interval``: per-author heads
  (``GET /v1/sync/heads``) and the records after our applied seq wherever a peer is ahead; then a
  set reconciliation over all record ids for the rest (held records, evidence of equivocation),
  fetching what we lack by id. It tries the sketch first (``POST /v1/sync/sketch``: coded symbols,
  a few kilobytes wherever the differences lie) and falls back to negentropy ranges
  (``POST /v1/sync/reconcile``) when the sketch does not decode within its bound or the peer is
  a node without the route (404). This node's own symbols are kept between passes and updated
  with the records that came and went.
- **Relay audit**, every ``audit_interval``: this city's own records on each relay are compared
  with its own log, and the ones a relay lost are queued again for it (the outbox sends them in
  chain order) once they were sent longer ago than the stream's duplicate window. A wiped stream, and own records lost past the relay's head, are refilled by the
  link itself at (re)connect (link.py); the audit finds holes in the middle.

Everything fetched goes through the ingest path of relay records: signatures verified in the
thread pool with the link's clock, then the store's chain rules in one transaction. A peer is
never trusted: it can only withhold, and what it sends must verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import msgspec
import nats.errors
import nats.js.errors
from nats.js import api as js_api

from citymesh.protocol import api_sync, sketch
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import identity_text, parse_identity
from citymesh.protocol.reconcile import ItemSet, Message, Reconciler
from citymesh.protocol.records import Record
from citymesh.protocol.subjects import author_filter

from . import link as link_clock
from . import streams
from .store import StoreError

if TYPE_CHECKING:
    from .daemon import Node
    from .link import RelayLink

log = logging.getLogger("citymesh.repair")

MSGPACK = "application/msgpack"
MAX_BACKOFF = 300.0
MAX_RESPONSE = 32 * 1024 * 1024
"""Bytes read from a peer's response at most (a page of envelopes is far smaller)."""
PAGE = 500
MAX_ROUNDS = 32
FETCH_TIMEOUT = 10.0
SKETCH_ATTEMPTS = 2
"""Sketch sessions tried with a peer before ranges, when the symbols contradict each other."""

_records = msgspec.msgpack.Decoder(api_sync.SyncRecords)
_reconcile_out = msgspec.msgpack.Decoder(api_sync.ReconcileOut)
_sketch_out = msgspec.msgpack.Decoder(api_sync.SketchOut)
_heads = msgspec.json.Decoder(api_sync.SyncHeads)
_encoder = msgspec.msgpack.Encoder()


class PeerError(Exception):
    """A peer answered badly (status, size, shape); the message says which and how."""


@dataclass
class PeerSync:
    """What one anti-entropy pass with a peer did."""

    peer: str
    fetched: int = 0
    applied: int = 0
    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    need: int = 0
    have: int = 0
    reconcile_bytes: int = 0
    """Of those, the set reconciliation's requests and replies (sketch, then ranges if used)."""
    method: str = ""
    """How the sets were reconciled: ``sketch`` or ``ranges``."""
    sketch_failed: str | None = None
    """Why the sketch was not used, when it was tried and ranges followed."""


@dataclass
class RepairState:
    passes: int = 0
    gaps: int = 0
    """Authors with records held behind a gap at the last pass."""
    fetched_from_relays: int = 0
    fetched_from_peers: int = 0
    requeued_for_relays: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    """Fetched records that did not verify (not counted again in the store's rejections)."""
    last_error: str | None = None
    peers: dict[str, PeerSync] = field(default_factory=dict)


class Repairer:
    def __init__(
        self,
        node: Node,
        peers: list[str],
        *,
        interval: float = 2.0,
        anti_entropy_interval: float = 60.0,
        audit_interval: float = 300.0,
    ) -> None:
        self.node = node
        self.peers = [p.rstrip("/") for p in peers]
        self.interval = interval
        self.anti_entropy_interval = anti_entropy_interval
        self.audit_interval = audit_interval
        self.state = RepairState()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._retry_at: dict[bytes, tuple[float, float]] = {}
        """Author → (monotonic time of the next attempt, current delay)."""
        self._next_anti_entropy = 0.0
        self._next_audit = 0.0
        self._sketch = sketch.Encoder()
        """The coded symbols of every record id here (held ones too), kept between passes."""
        self._sketch_version: tuple[int, int] = (-1, -1)
        self._sketch_lock = asyncio.Lock()
        self.sketch_max_symbols = sketch.MAX_SYMBOLS
        """Symbols asked for at most before falling back to ranges (about 1.4 per difference)."""

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60, sock_connect=FETCH_TIMEOUT)
        )
        loop_now = time.monotonic()
        self._next_audit = loop_now + min(self.audit_interval, 30.0)
        self._task = asyncio.create_task(self._run(), name="repair")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except (
                TimeoutError,
                OSError,
                aiohttp.ClientError,
                nats.errors.Error,
                nats.js.errors.Error,
                sqlite3.Error,
                StoreError,
                PeerError,
            ) as err:
                self._error(f"{type(err).__name__}: {err}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wakeup.wait()
            self._wakeup.clear()

    def _error(self, message: str) -> None:
        if self.state.last_error != message:
            log.warning("repair: %s", message)
        self.state.last_error = message

    async def run_once(self) -> None:
        self.state.passes += 1
        await self.repair_gaps()
        now = time.monotonic()
        if self.peers and now >= self._next_anti_entropy:
            self._next_anti_entropy = now + self.anti_entropy_interval
            for peer in self.peers:
                try:
                    await self.sync_peer(peer)
                except (TimeoutError, OSError, aiohttp.ClientError, PeerError) as err:
                    self._error(f"peer {peer}: {type(err).__name__}: {err}")
        if now >= self._next_audit:
            self._next_audit = now + self.audit_interval
            for lk in list(self.node.links.values()):
                await self.audit_relay(lk)

    # -- gaps ------------------------------------------------------------------------------------
    def _store_gaps(self) -> list[tuple[bytes, int, int]]:
        store = self.node.writer.store
        assert store is not None
        rows = store.db.execute(
            "SELECT r.author, coalesce(a.applied_seq, 0), min(r.seq) FROM records r"
            " LEFT JOIN authors a ON a.author = r.author"
            " WHERE r.state = 'held' AND a.frozen_seq IS NULL GROUP BY r.author"
        ).fetchall()
        return [(bytes(a), int(s), int(h)) for a, s, h in rows]

    async def gaps(self) -> list[tuple[bytes, int, int]]:
        """(author, applied seq, first held seq) of every author with a gap."""
        return await self.node.writer.run(self._store_gaps)

    async def repair_gaps(self) -> None:
        gaps = await self.gaps()
        self.state.gaps = len(gaps)
        now = time.monotonic()
        behind = {author for author, _, _ in gaps}
        for author in list(self._retry_at):
            if author not in behind:
                del self._retry_at[author]
        for author, applied, _ in gaps:
            at, delay = self._retry_at.get(author, (0.0, self.interval))
            if now < at:
                continue
            await self._from_relays(author, applied)
            if self.peers and await self._behind(author):
                for peer in self.peers:
                    try:
                        await self._records_after(peer, author, applied)
                    except (TimeoutError, OSError, aiohttp.ClientError, PeerError) as err:
                        self._error(f"peer {peer}: {type(err).__name__}: {err}")
                    if not await self._behind(author):
                        break
            if await self._behind(author):
                self._retry_at[author] = (time.monotonic() + delay, min(delay * 2, MAX_BACKOFF))
            else:
                self._retry_at.pop(author, None)
                log.info("repair: filled the gap of %s", identity_text(author))

    async def _behind(self, author: bytes) -> bool:
        return any(a == author for a, _, _ in await self.gaps())

    async def _from_relays(self, author: bytes, after: int) -> None:
        for lk in list(self.node.links.values()):
            if not lk.state.connected or lk.js is None:
                continue
            try:
                envelopes = await self._read_author(lk, author)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as err:
                self._error(f"relay {lk.name}: reading {identity_text(author)}: {err}")
                continue
            result = await self._ingest(
                envelopes, exclude=lk.name, keep=lambda r: r.header.seq > after
            )
            self.state.fetched_from_relays += result
            if not await self._behind(author):
                return

    async def _read_author(self, lk: RelayLink, author: bytes) -> list[bytes]:
        """Every message on the author's subjects of the relay, in stream order."""
        assert lk.js is not None
        filt = author_filter(self.node.network, author)
        try:
            info = await lk.js.stream_info(lk.stream, subjects_filter=filt)
        except nats.js.errors.NotFoundError:
            return []
        expected = sum((info.state.subjects or {}).values())
        if not expected:
            return []
        sub = await lk.js.subscribe(
            filt,
            stream=lk.stream,
            ordered_consumer=True,
            config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
        )
        out: list[bytes] = []
        try:
            while len(out) < expected:
                try:
                    msg = await sub.next_msg(timeout=FETCH_TIMEOUT)
                except nats.errors.TimeoutError:
                    break  # the relay holds fewer than it counted (deleted meanwhile)
                out.append(msg.data)
        finally:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await sub.unsubscribe()
        return out

    # -- ingest ------------------------------------------------------------------------------------
    async def _ingest(
        self,
        envelopes: list[bytes],
        *,
        exclude: str | None = None,
        keep: Callable[[Record], bool] | None = None,
    ) -> int:
        """Verify and apply like relay ingest; bridge new records to every relay but ``exclude``.
        Returns how many records were newly stored."""
        if not envelopes:
            return 0
        records, rejected = await self.node.verifier.verify(envelopes, link_clock.now_ms())
        self.state.rejected.update(rejected)
        if keep is not None:
            records = [r for r in records if keep(r)]
        if not records:
            return 0
        store = self.node.writer.store
        assert store is not None
        others = [n for n in self.node.links if n != exclude]
        result = await self.node.writer.run(
            store.ingest, records, Counter(), now_ms=link_clock.now_ms(), bridge_to=others
        )
        if result.applied or result.stored:
            await self.node._on_applied(result)
        return len(result.stored)

    # -- peers -------------------------------------------------------------------------------------
    async def _get(self, url: str, sync: PeerSync | None = None) -> tuple[str, bytes]:
        assert self._session is not None
        async with self._session.get(url) as resp:
            body = await _read_capped(resp)
            if resp.status != 200:
                raise PeerError(f"GET {url}: HTTP {resp.status}: {body[:200]!r}")
            if sync is not None:
                sync.bytes_received += len(body)
            return resp.content_type, body

    async def _records_after(
        self, peer: str, author: bytes, after: int, sync: PeerSync | None = None
    ) -> int:
        """Fetch and apply the author's records after ``after`` from a peer, page by page."""
        text = identity_text(author)
        stored = 0
        while True:
            url = f"{peer}/v1/sync/records?author={text}&after={after}&limit={PAGE}"
            _, body = await self._get(url, sync)
            page = _decode_records(body)
            n = await self._ingest(page.records, keep=lambda r: r.header.author == author)
            stored += n
            if sync is not None:
                sync.fetched += len(page.records)
            if not page.more or page.last is None or page.last <= after:
                break
            after = page.last
        self.state.fetched_from_peers += stored
        return stored

    async def _records_by_id(self, peer: str, ids: list[bytes], sync: PeerSync) -> int:
        stored = 0
        for i in range(0, len(ids), api_sync.MAX_IDS):
            chunk = ids[i : i + api_sync.MAX_IDS]
            url = f"{peer}/v1/sync/records?ids={','.join(x.hex() for x in chunk)}"
            _, body = await self._get(url, sync)
            page = _decode_records(body)
            stored += await self._ingest(page.records, keep=_id_in(frozenset(chunk)))
            sync.fetched += len(page.records)
        self.state.fetched_from_peers += stored
        return stored

    def _applied_heads(self) -> dict[bytes, tuple[int, int | None]]:
        store = self.node.writer.store
        assert store is not None
        rows = store.db.execute("SELECT author, applied_seq, frozen_seq FROM authors").fetchall()
        return {bytes(a): (int(s), None if f is None else int(f)) for a, s, f in rows}

    async def sync_peer(self, peer: str, *, heads: bool = True, reconcile: bool = True) -> PeerSync:
        """One anti-entropy pass with a peer node."""
        peer = peer.rstrip("/")
        sync = PeerSync(peer)
        if heads:
            await self._sync_heads(peer, sync)
        if reconcile:
            await self._reconcile(peer, sync)
        self.state.peers[peer] = sync
        return sync

    async def _sync_heads(self, peer: str, sync: PeerSync) -> None:
        _, body = await self._get(f"{peer}/v1/sync/heads", sync)
        try:
            theirs = _heads.decode(body)
        except msgspec.DecodeError as err:
            raise PeerError(f"{peer}: heads: {err}") from err
        if theirs.network != self.node.network:
            raise PeerError(f"{peer} serves network {theirs.network!r}, not {self.node.network!r}")
        ours = await self.node.writer.run(self._applied_heads)
        for head in theirs.heads:
            try:
                author = parse_identity(head.author)
            except ProtocolError:
                continue
            seq, frozen = ours.get(author, (0, None))
            if frozen is not None or head.seq <= seq:
                continue
            await self._records_after(peer, author, seq, sync)

    def _own_items(self) -> ItemSet:
        store = self.node.writer.store
        assert store is not None
        return ItemSet(
            (int(c), bytes(i)) for c, i in store.db.execute("SELECT created, id FROM records")
        )

    async def _reconcile(self, peer: str, sync: PeerSync) -> None:
        """The sketch if it decodes, else ranges; then fetch what we lack by id."""
        need = await self._by_sketch(peer, sync)
        if need is None:
            need = await self._by_ranges(peer, sync)
        if need:
            await self._records_by_id(peer, need, sync)

    def _ids_if_changed(self) -> tuple[tuple[int, int], list[bytes]] | None:
        """(version, every record id here, held ones too) if the records may have changed since
        our symbols were last updated, else None (writer thread)."""
        store = self.node.writer.store
        assert store is not None
        db = store.db
        # data_version moves with other connections' commits, total_changes with this one's.
        version = (int(db.execute("PRAGMA data_version").fetchone()[0]), db.total_changes)
        if version == self._sketch_version:
            return None
        return version, [bytes(i) for (i,) in db.execute("SELECT id FROM records")]

    def _update_sketch(self, version: tuple[int, int], ids: list[bytes]) -> None:
        self._sketch.update(ids)
        self._sketch_version = version

    async def _by_sketch(self, peer: str, sync: PeerSync) -> list[bytes] | None:
        """Ids the peer holds and we lack, from its coded symbols; None when the sketch does not
        serve (a peer without the route, a difference too large to decode within the bound, a
        reply that does not fit) and ranges should be used."""
        async with self._sketch_lock:  # one session at a time uses our symbols
            changed = await self.node.writer.run(self._ids_if_changed)
            if changed is not None:  # walking the ids that came and went takes a while
                await asyncio.to_thread(self._update_sketch, *changed)
            for _ in range(SKETCH_ATTEMPTS):
                session = sketch.Session(self._sketch, max_symbols=self.sketch_max_symbols)
                try:
                    reason = await self._sketch_rounds(peer, session, sync)
                except sketch.SketchError as err:
                    # Symbols that contradict each other: most often the peer's set changed
                    # between two of our requests (a record arrived there); a fresh session
                    # reads the new set from its first symbol.
                    reason = str(err)
                    continue
                except ProtocolError as err:  # not decoded within the bound
                    reason = str(err)
                break
        if reason is not None:
            sync.sketch_failed = reason
            log.log(
                logging.DEBUG if reason.startswith("HTTP 404") else logging.INFO,
                "peer %s: sketch not used (%s); reconciling by ranges",
                peer,
                reason,
            )
            return None
        sync.method = "sketch"
        sync.need, sync.have = len(session.need), len(session.have)
        return session.need

    async def _sketch_rounds(
        self, peer: str, session: sketch.Session, sync: PeerSync
    ) -> str | None:
        """Ask for symbols until the session decodes; why not, if it cannot."""
        assert self._session is not None
        chunk = session.next_chunk()
        while chunk is not None:
            data = _encoder.encode(api_sync.SketchIn(chunk=chunk))
            async with self._session.post(
                f"{peer}/v1/sync/sketch", data=data, headers={"Content-Type": MSGPACK}
            ) as resp:
                body = await _read_capped(resp)
            sync.rounds += 1
            sync.bytes_sent += len(data)
            sync.bytes_received += len(body)
            sync.reconcile_bytes += len(data) + len(body)
            if resp.status != 200:
                return f"HTTP {resp.status}: {body[:200]!r}"
            try:
                reply = _sketch_out.decode(body).symbols
            except msgspec.DecodeError as err:
                return f"reply: {err}"
            # Peeling is quick; computing more of our own symbols can take a while.
            await asyncio.to_thread(session.receive, reply)
            chunk = session.next_chunk()
        return None

    async def _by_ranges(self, peer: str, sync: PeerSync) -> list[bytes]:
        """Ids the peer holds and we lack, by negentropy rounds."""
        assert self._session is not None
        items = await self.node.writer.run(self._own_items)
        rec = Reconciler(items)
        message: Message | None = rec.initiate()
        rounds = 0
        while message is not None:
            if rounds >= MAX_ROUNDS:
                raise PeerError(f"{peer}: no agreement after {MAX_ROUNDS} reconcile rounds")
            data = _encoder.encode(api_sync.ReconcileIn(message=message))
            async with self._session.post(
                f"{peer}/v1/sync/reconcile", data=data, headers={"Content-Type": MSGPACK}
            ) as resp:
                body = await _read_capped(resp)
                if resp.status != 200:
                    raise PeerError(f"{peer}: reconcile: HTTP {resp.status}: {body[:200]!r}")
            rounds += 1
            sync.rounds += 1
            sync.bytes_sent += len(data)
            sync.bytes_received += len(body)
            sync.reconcile_bytes += len(data) + len(body)
            try:
                reply = _reconcile_out.decode(body).message
            except msgspec.DecodeError as err:
                raise PeerError(f"{peer}: reconcile reply: {err}") from err
            try:
                message = rec.reconcile(reply)
            except ProtocolError as err:
                raise PeerError(f"{peer}: reconcile reply: {err}") from err
        sync.method = "ranges"
        sync.need, sync.have = len(rec.need), len(rec.have)
        return rec.need

    # -- relays ------------------------------------------------------------------------------------
    async def audit_relay(self, lk: RelayLink) -> int:
        """Queue again this city's records the relay lost; returns how many."""
        if not lk.state.connected or lk.js is None:
            return 0
        # Only records sent longer ago than the relay's duplicate window: it would drop a
        # republished copy of a younger one as a duplicate (same Nats-Msg-Id) and ack it.
        sent_before = link_clock.now_ms() - int(streams.DUPLICATE_WINDOW * 1000)
        try:
            envelopes = await self._read_author(lk, self.node.identity)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as err:
            self._error(f"relay {lk.name}: audit: {err}")
            return 0
        on_relay: set[bytes] = set()
        for data in envelopes:
            with contextlib.suppress(ProtocolError):
                on_relay.add(open_envelope(data, now_ms=2**62).id)
        n = await self.node.writer.run(self._requeue_missing, lk.name, on_relay, sent_before)
        if n:
            log.warning("relay %s lost %d of this city's records: queued again", lk.name, n)
            self.state.requeued_for_relays += n
            lk.wake_outbox()
        return n

    def _requeue_missing(self, relay: str, on_relay: set[bytes], before_ms: int) -> int:
        """Own applied records sent to ``relay`` before ``before_ms`` that it no longer holds."""
        store = self.node.writer.store
        assert store is not None
        with store.transaction() as db:
            rows = db.execute(
                "SELECT r.id FROM records r JOIN outbox o ON o.id = r.id AND o.relay = ?"
                " WHERE r.author = ? AND r.state = 'applied' AND o.sent IS NOT NULL"
                " AND o.sent < ?",
                (relay, self.node.identity, before_ms),
            ).fetchall()
            lost = [bytes(i) for (i,) in rows if bytes(i) not in on_relay]
            db.executemany(
                "UPDATE outbox SET sent = NULL WHERE relay = ? AND id = ?",
                [(relay, i) for i in lost],
            )
        return len(lost)


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_RESPONSE:
            raise PeerError(f"{resp.url}: response over {MAX_RESPONSE} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _id_in(ids: frozenset[bytes]) -> Callable[[Record], bool]:
    return lambda rec: rec.id in ids


def _decode_records(body: bytes) -> api_sync.SyncRecords:
    try:
        return _records.decode(body)
    except msgspec.DecodeError as err:
        raise PeerError(f"records page: {err}") from err
