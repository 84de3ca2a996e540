"""One relay link: connect (forever), consume the network stream from the cursor, drain the outbox.

Ingest: an ordered push consumer delivers messages to a callback that fills batches; each batch is
verified in the thread pool while the previous one is applied by the writer; the cursor moves in
the same SQLite transaction as the records (so a crash re-reads, never skips). Ingest is idempotent
by record id, so re-reading is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import DEFAULT_INBOX_PREFIX as DEFAULT_INBOX
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from citymesh.protocol.envelope import MAX_ENVELOPE, Signed, open_envelope
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import KINDS
from citymesh.protocol.subjects import author_filter, network_filter, stream_name, subject

from .nkey import encode_seed
from .pull import BatchPull, PullError
from .relay_auth import inbox_prefix
from .store import Store, StoreError
from .store.apply import ApplyResult
from .streams import ensure_stream
from .verify import Checked, Verifier
from .writer import Writer

log = logging.getLogger("citymesh.link")

BATCH = 512
FLUSH_AFTER = 0.02
PIPELINE_DEPTH = 3
GROUP_COMMIT = 2048
"""Records at most in one ingest transaction when verified batches queue up behind the writer."""
PUBLISH_CHUNK = 64
PENDING_BYTES = 64 * 1024 * 1024
"""Bytes of delivered records the NATS client holds for the ingest callback (nats-py's default,
256 MiB, is most of a catch-up's memory). Past it the client drops deliveries: the ordered
consumer re-reads from a gap it sees later, and the stall watch below from the tail."""
PULL_CATCHUP = 2 * BATCH
"""A backlog larger than this is read with a pull consumer first, a batch at a time as the
pipeline takes them (push deliveries outrun a busy writer and the client drops them)."""
PULL_TIMEOUT_S = 2.0
PULL_PENDING_BYTES = BATCH * (MAX_ENVELOPE + 1024)
"""One fetch's worth of the largest records: a pull consumer never gets more than it asked."""
STALL_CHECK_S = 5.0
"""How often the link checks that ingest still moves while the relay holds more."""
PING_INTERVAL = 15
"""Seconds between client pings (the client default of 120 s notices a dead link too late)."""


_DENIED = re.compile(r'Permissions Violation for Publish to "([^"\s]{1,300})"', re.IGNORECASE)
"""nats-server's refusal of a publish on a subject this login may not use."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class LinkContext:
    """What a link needs from its node."""

    network: str
    author: bytes
    writer: Writer
    verifier: Verifier
    relay_names: Callable[[], list[str]]
    on_applied: Callable[[ApplyResult], Awaitable[None]]
    create_stream: bool = True
    transport_seed: bytes | None = None
    """The city's transport key seed (``Home.load_transport_key().seed()``): when set, the link
    logs in to relays with it as a NATS nkey (governed relays refuse anyone else)."""


@dataclass
class LinkState:
    connected: bool = False
    last_error: str | None = None
    cursor: int = 0
    stream_last: int = 0
    own_head_on_relay: int | None = None
    """Highest own seq the relay holds, asked at connect; None until it answered."""
    received: int = 0
    """Records received with a valid signature (those that then fail to decode included)."""
    published: int = 0
    stream_created: str = ""
    errors: list[str] = field(default_factory=list)
    dropped: int = 0
    """Deliveries the NATS client dropped (slow consumer); read again from the relay."""
    not_permitted: int = 0
    """Other cities' records this relay does not let this node publish (a governed relay takes
    each city's records from that city only): skipped, not retried."""


class RelayLink:
    def __init__(self, ctx: LinkContext, name: str, url: str) -> None:
        self.ctx = ctx
        self.name = name
        self.url = url
        self.state = LinkState()
        self.stream = stream_name(ctx.network)
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self._sub: JetStreamContext.PushSubscription | None = None
        self._buf: list[tuple[bytes, int]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._timed: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._stage: asyncio.Queue[tuple[asyncio.Task[Checked], int] | None] = asyncio.Queue(
            PIPELINE_DEPTH
        )
        self._inflight = 0
        """Batches handed to the pipeline and not yet committed."""
        self._outbox_wakeup = asyncio.Event()
        self._denied: set[str] = set()
        """Subjects the relay refused this node's publishing on (permissions violation)."""
        self._resubscribe = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name=f"link-{self.name}"))

    async def stop(self) -> None:
        self._closing = True
        self._resubscribe.set()  # the run loop checks _closing when it wakes
        self._outbox_wakeup.set()
        pending = {t for t in self._tasks if not t.done()}
        while pending:
            # nats-py can swallow a cancellation inside its own awaits: cancel until done.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self.nc.close()

    def wake_outbox(self) -> None:
        self._outbox_wakeup.set()

    async def _run(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                await self._connect()
                break
            except (TimeoutError, nats.errors.Error, OSError) as err:
                self._error(f"cannot reach {self.url}: {err or type(err).__name__}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._tasks.append(asyncio.create_task(self._applier(), name=f"apply-{self.name}"))
        self._tasks.append(asyncio.create_task(self._drain_outbox(), name=f"outbox-{self.name}"))
        self._tasks.append(asyncio.create_task(self._watch_stall(), name=f"watch-{self.name}"))
        while not self._closing:
            try:
                await self._prepare()
                await self._subscribe()
                self._resubscribe.clear()
                await self._resubscribe.wait()
            except (
                TimeoutError,
                nats.errors.Error,
                nats.js.errors.Error,
                OSError,
                sqlite3.Error,
                StoreError,
            ) as err:
                self._error(f"subscription on {self.url}: {err or type(err).__name__}")
                await asyncio.sleep(1.0)

    async def _connect(self) -> None:
        async def on_disconnect() -> None:
            self.state.connected = False

        async def on_reconnect() -> None:
            self.state.connected = True
            self._resubscribe.set()  # the relay may have restarted or lost its store
            self._outbox_wakeup.set()

        async def on_error(err: Exception) -> None:
            if isinstance(err, nats.errors.SlowConsumerError):
                self.state.dropped += 1
                if self.state.dropped % 10_000 == 1:  # one line per burst, not one per record
                    log.warning(
                        "relay %s: the client dropped deliveries while ingest was busy (%d so "
                        "far); they are read again",
                        self.name,
                        self.state.dropped,
                    )
                return
            denied = _DENIED.search(str(err))
            if denied:
                self._denied.add(denied.group(1))
            self._error(f"{type(err).__name__}: {err}")

        # With a transport key: nkey login (nats-py signs the server's nonce with it), and replies
        # and deliveries come to this city's own inbox prefix, the only one a governed relay
        # lets it read.
        seed = self.ctx.transport_seed
        nkey_seed = encode_seed(seed) if seed is not None else None
        inbox: str | bytes = inbox_prefix(self.ctx.author) if seed is not None else DEFAULT_INBOX
        nc = Client()
        try:
            await nc.connect(
                self.url,
                name=f"citymesh {identity_text(self.ctx.author)}",
                ping_interval=PING_INTERVAL,
                max_outstanding_pings=3,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=5,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
                nkeys_seed_str=nkey_seed,
                inbox_prefix=inbox,
            )
        except BaseException:
            # nats-py leaves the socket of a refused login open: close it (a relay that refuses
            # this city would otherwise cost one file descriptor per retry)
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.close()
            raise
        self.nc = nc
        self.js = self.nc.jetstream(timeout=10)
        self.state.connected = True

    def _error(self, message: str) -> None:
        if self.state.last_error != message:
            log.warning("relay %s: %s", self.name, message)
        self.state.last_error = message

    # -- catch-up and own head -------------------------------------------------------------------
    async def _prepare(self) -> None:
        """Check the stream (reset cursor if the relay lost it) and ask for our own latest seq."""
        assert self.js is not None
        try:
            info = await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            if not self.ctx.create_stream:
                raise
            info = await ensure_stream(self.js, self.ctx.network)
        created = str(info.created or "")
        last = info.state.last_seq
        self.state.stream_last = last
        cursor_created, cursor = await self.ctx.writer.run(self._store().cursor, self.name)
        if cursor and (cursor > last or (cursor_created and cursor_created != created)):
            log.warning(
                "relay %s lost its stream (cursor %d > last %d): re-reading, refilling",
                self.name,
                cursor,
                last,
            )
            await self.ctx.writer.run(self._store().reset_cursor, self.name)
            await self.ctx.writer.run(self._store().queue_all, self.name, now_ms())
            cursor = 0
        self.state.cursor = cursor
        self.state.stream_created = created
        await self.ctx.writer.run(
            self._store().queue_unsent_own, self.name, self.ctx.author, now_ms()
        )
        head = await self._own_head_on_relay()
        # A relay can lose our newest records and keep its stream (a truncated block file behind
        # an intact index keeps last_seq): queue again what it acknowledged past its head.
        lost = await self.ctx.writer.run(self._requeue_lost_own, head)
        if lost:
            log.warning(
                "relay %s lost %d own records past seq %d: refilling", self.name, lost, head
            )
        self._outbox_wakeup.set()
        self.state.own_head_on_relay = head

    def _requeue_lost_own(self, head: int) -> int:
        with self._store().transaction() as db:
            return db.execute(
                "UPDATE outbox SET sent = NULL WHERE relay = ? AND sent IS NOT NULL AND id IN"
                " (SELECT id FROM records WHERE author = ? AND seq > ?)",
                (self.name, self.ctx.author, head),
            ).rowcount

    async def _own_head_on_relay(self) -> int:
        assert self.js is not None
        best = 0
        for kind in KINDS:
            try:
                msg = await self.js.get_last_msg(
                    self.stream, subject(self.ctx.network, self.ctx.author, kind)
                )
            except nats.js.errors.NotFoundError:
                continue
            if msg.data:
                seq = _peek_seq(msg.data)
                best = max(best, seq)
        return best

    def _store(self) -> Store:
        assert self.ctx.writer.store is not None
        return self.ctx.writer.store

    async def _subscribe(self) -> None:
        assert self.js is not None
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        start = self.state.cursor + 1
        if self.state.stream_last - start > PULL_CATCHUP:
            start = await self._pull_catchup(start)
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
        )
        self._sub = await self.js.subscribe(
            network_filter(self.ctx.network),
            stream=self.stream,
            cb=self._on_msg,
            ordered_consumer=True,
            config=config,
            idle_heartbeat=5.0,
            pending_bytes_limit=PENDING_BYTES,
        )

    async def _pull_catchup(self, start: int) -> int:
        """Read the backlog from ``start`` with an ephemeral pull consumer, each fetch only once
        the pipeline took the previous one (real back-pressure); return where live delivery
        begins. Ends when the relay has nothing more at once."""
        assert self.js is not None
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=60.0,
        )
        assert self.nc is not None
        config.filter_subject = network_filter(self.ctx.network)
        pull = BatchPull(
            self.nc, self.js, self.stream, config, pending_bytes_limit=PULL_PENDING_BYTES
        )
        await pull.start()
        log.info("relay %s: reading a backlog from stream seq %d", self.name, start)
        try:
            while not self._closing:
                try:
                    got = await pull.fetch(BATCH, timeout=PULL_TIMEOUT_S)
                except (PullError, nats.errors.TimeoutError) as err:
                    # Live delivery reads on from the cursor (the ordered consumer below).
                    self._error(f"backlog read stopped: {err or type(err).__name__}")
                    break
                if not got:
                    break  # caught up with what the relay had: live delivery from here
                self._buf.extend(got)
                start = got[-1][1] + 1
                await self._flush()  # waits while the pipeline is full
        finally:
            await pull.close()
        return start

    # -- ingest ----------------------------------------------------------------------------------
    async def _on_msg(self, msg: Msg) -> None:
        self._buf.append((msg.data, msg.metadata.sequence.stream))
        if len(self._buf) >= BATCH or self._inflight == 0:
            # Nothing in the pipeline: a record arriving alone goes on at once (live
            # propagation); while the writer is busy, deliveries gather into batches.
            await self._flush()
        elif self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(FLUSH_AFTER, self._timed_flush)

    def _timed_flush(self) -> None:
        self._flush_handle = None
        if self._buf:
            self._timed = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        # Batches must enter the stage in stream order: a timed flush waiting on a full stage
        # would otherwise be overtaken by the callback's next put (asyncio.Queue lets a new put
        # take a freed slot before the woken waiter runs), so the cursor could move past records
        # not yet committed, and every chain would stall behind the late batch.
        async with self._flush_lock:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            batch, self._buf = self._buf, []
            if not batch:
                return
            last_seq = batch[-1][1]
            envelopes = [d for d, _ in batch]
            fut = asyncio.create_task(self.ctx.verifier.check(envelopes))
            self._inflight += 1
            await self._stage.put((fut, last_seq))

    async def _applier(self) -> None:
        while True:
            item = await self._stage.get()
            if item is None:
                return
            fut, last_seq = item
            taken = 1
            signed, rejected = await fut
            # Group commit: batches already waiting behind this one join its transaction (one
            # fsync and one load of each author per group, not per batch) while the writer lags.
            stop = False
            while len(signed) < GROUP_COMMIT and not self._stage.empty():
                more = self._stage.get_nowait()
                if more is None:
                    stop = True
                    break
                taken += 1
                more_signed, more_rejected = await more[0]
                signed.extend(more_signed)
                rejected.update(more_rejected)
                last_seq = more[1]
            others = [n for n in self.ctx.relay_names() if n != self.name]
            cursor = (self.name, self.stream, self.state.stream_created, last_seq)
            try:
                result = await self._ingest(signed, rejected, cursor, others)
            finally:
                self._inflight -= taken
            self.state.cursor = last_seq
            self.state.received += len(signed)
            if result.applied or result.stored:
                await self.ctx.on_applied(result)
            if stop:
                return

    async def _watch_stall(self) -> None:
        """Re-read from the cursor when ingest stopped while the relay holds more: deliveries the
        NATS client dropped at the tail of a catch-up (slow consumer) are never sent again by
        themselves. Backs off while the stream's tail cannot be read (deleted messages)."""
        last = (self.state.cursor, self.state.received)
        backoff = STALL_CHECK_S
        quiet = 0.0
        while not self._closing:
            await asyncio.sleep(STALL_CHECK_S)
            progress = (self.state.cursor, self.state.received)
            busy = bool(self._buf) or self._inflight > 0
            if progress != last or busy or not self.state.connected or self._sub is None:
                last, quiet = progress, 0.0
                continue
            quiet += STALL_CHECK_S
            if quiet < backoff or self.js is None:
                continue
            quiet = 0.0
            try:
                info = await self.js.stream_info(self.stream)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as err:
                self._error(f"stream info: {err or type(err).__name__}")
                continue
            self.state.stream_last = info.state.last_seq
            if info.state.last_seq > self.state.cursor:
                log.warning(
                    "relay %s: ingest stopped at stream seq %d of %d: re-reading from there",
                    self.name,
                    self.state.cursor,
                    info.state.last_seq,
                )
                self._resubscribe.set()
                backoff = min(backoff * 2, 300.0)
            else:
                backoff = STALL_CHECK_S

    async def _ingest(
        self,
        signed: list[Signed],
        rejected: Counter[str],
        cursor: tuple[str, str, str, int],
        others: list[str],
    ) -> ApplyResult:
        """Commit a batch, retrying while the database refuses (disk full, locked, I/O error):
        nothing is skipped, later batches wait behind this one, and the node keeps serving."""
        delay = 0.5
        while True:
            try:
                return await self.ctx.writer.run(
                    self._store().ingest_signed,
                    signed,
                    rejected,
                    now_ms=now_ms(),
                    cursor=cursor,
                    bridge_to=others,
                )
            except (sqlite3.Error, StoreError, OSError) as err:
                log.exception("relay %s: cannot commit a batch; retrying", self.name)
                self._error(f"cannot store records: {err}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def wait_idle(self) -> None:
        """Until everything delivered so far is applied (for tests and `demo --check`)."""
        while self._buf or not self._stage.empty():
            await asyncio.sleep(0.01)

    # -- publish ---------------------------------------------------------------------------------
    async def _drain_outbox(self) -> None:
        backoff = 0.2
        while True:
            if not self.state.connected or self.js is None:
                await self._wait_outbox(1.0)
                continue
            rows = await self.ctx.writer.run(self._store().pending_outbox, self.name, 512)
            rows = await self._skip_denied(rows)
            if not rows:
                backoff = 0.2
                await self._wait_outbox(5.0)
                continue
            sent: list[bytes] = []
            try:
                for i in range(0, len(rows), PUBLISH_CHUNK):
                    chunk = rows[i : i + PUBLISH_CHUNK]
                    await asyncio.gather(*(self._publish(*row) for row in chunk))
                    sent.extend(row[0] for row in chunk)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as err:
                self._error(f"publishing to {self.url}: {err or type(err).__name__}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if sent:
                    await self.ctx.writer.run(self._store().mark_sent, self.name, sent, now_ms())
                    self.state.published += len(sent)

    async def _skip_denied(
        self, rows: list[tuple[bytes, bytes, str]]
    ) -> list[tuple[bytes, bytes, str]]:
        """Drop (marking them sent) other cities' records on subjects the relay refused: it will
        not take them from this node, and retrying them would hold up this city's own. Own
        records are always retried (the relay may admit this city later)."""
        if not self._denied:
            return rows
        own = author_filter(self.ctx.network, self.ctx.author).removesuffix("*")
        skip = [r[0] for r in rows if r[2] in self._denied and not r[2].startswith(own)]
        if not skip:
            return rows
        await self.ctx.writer.run(self._store().mark_sent, self.name, skip, now_ms())
        self.state.not_permitted += len(skip)
        skipped = set(skip)
        return [r for r in rows if r[0] not in skipped]

    async def _wait_outbox(self, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._outbox_wakeup.wait()
        self._outbox_wakeup.clear()

    async def _publish(self, record_id: bytes, envelope: bytes, subj: str) -> None:
        assert self.js is not None
        await self.js.publish(
            subj, envelope, stream=self.stream, headers={"Nats-Msg-Id": record_id.hex()}
        )


def _peek_seq(envelope: bytes) -> int:
    """The seq of an own record the relay holds (0 if it does not verify)."""
    try:
        return open_envelope(envelope, now_ms=2**62).header.seq
    except ProtocolError:
        return 0
