"""The node: store, verifier, relay links (or the embedded relay), signing, live events.

`Node` holds the running pieces; `create_app` (app.py) wires it into the HTTP API. Start order:
store → embedded relay (if no relay is configured) → links (each checks the stream and asks the
relay for this city's latest seq) → profile and head checkpoint once every relay answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import msgspec

from citymesh.protocol.envelope import seal
from citymesh.protocol.identity import Genesis, SecretKey, identity_of
from citymesh.protocol.records import Body, CityBody, HeadBody, KeyRotationBody, Record
from citymesh.protocol.signing import rotation_message

from .config import Home, NodeConfig
from .link import LinkContext, RelayLink
from .natsserver import NatsServer, ServerConfig
from .repair import Repairer
from .setup import city_body
from .store.apply import HOUR_MS, ApplyResult
from .store.db import StoreError
from .verify import Verifier
from .warmup import warm
from .writer import Writer

log = logging.getLogger("citymesh.node")

EMBEDDED = "embedded"
HEAD_INTERVAL_MS = 24 * 3600 * 1000
TRUST_INTERVAL_S = 60.0
"""Seconds between re-checks of time-bounded memberships (valid_from / valid_until)."""


class RateLimitedError(Exception):
    """Signing now would break the followed network's records-per-hour limit."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RecoveryKeyError(Exception):
    """The key offered for a recovery is not one the city's genesis names."""


class NotReadyError(Exception):
    """The node cannot sign yet: a relay has not confirmed this city's latest seq."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class RelaySpec:
    name: str
    url: str


class Node:
    def __init__(self, home: Home, config: NodeConfig, *, relays: list[str] | None = None) -> None:
        self.home = home
        self.config = config
        self.network = config.network
        self.relay_urls = list(relays if relays is not None else config.relays)
        self.key: SecretKey = home.load_key()
        self.genesis: Genesis = home.load_genesis()
        self.identity = identity_of(self.genesis)
        self.writer = Writer(home.db_path)
        self.verifier = Verifier()
        self.links: dict[str, RelayLink] = {}
        self.embedded: NatsServer | None = None
        self._sign_lock = asyncio.Lock()
        self._subscribers: set[asyncio.Queue[Record]] = set()
        self._head_task: asyncio.Task[None] | None = None
        self._trust_task: asyncio.Task[None] | None = None
        self.repair: Repairer | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.writer.open()
        # Caches the first requests need (search index, identity texts), built on a thread
        # while the node starts and serves: see warmup.py.
        self._warmup = asyncio.create_task(asyncio.to_thread(warm, self.home.db_path))
        await self._finish_rotation()
        await self._configure_trust()
        specs = [RelaySpec(url, url) for url in self.relay_urls]
        if not specs:
            self.home.relay_dir.mkdir(parents=True, exist_ok=True)
            self.embedded = NatsServer(
                ServerConfig(store_dir=self.home.relay_dir, server_name="citymesh-embedded")
            )
            await asyncio.to_thread(self.embedded.start)
            specs = [RelaySpec(EMBEDDED, self.embedded.client_url)]
        ctx = LinkContext(
            network=self.network,
            author=self.identity,
            writer=self.writer,
            verifier=self.verifier,
            relay_names=lambda: list(self.links),
            on_applied=self._on_applied,
            transport_seed=self.home.load_transport_key().seed(),
        )
        for spec in specs:
            self.links[spec.name] = RelayLink(ctx, spec.name, spec.url)
        for link in self.links.values():
            await link.start()
        self._head_task = asyncio.create_task(self._profile_and_heads(), name="heads")
        self._trust_task = asyncio.create_task(self._refresh_trust(), name="trust")
        self.repair = Repairer(self, list(self.config.peers))  # gaps, peers, relay audit
        await self.repair.start()

    async def _finish_rotation(self) -> None:
        """A rotation interrupted between storing it and moving the key file: finish or undo."""
        staged = self.home.next_key_path
        if not staged.exists():
            return
        assert self.writer.store is not None
        current = await self.writer.run(self.writer.store.current_key, self.identity)
        new = self.home.load_key_file(staged)
        if current == new.public_key:
            self.home.commit_next_key()
            self.key = new
        else:
            staged.unlink()

    async def stop(self) -> None:
        for task in (self._head_task, self._trust_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.repair is not None:
            await self.repair.stop()
        for link in self.links.values():
            await link.stop()
        self.verifier.close()
        await self.writer.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)

    # -- trust policy ----------------------------------------------------------------------------
    async def _configure_trust(self) -> None:
        """Anchors from the configuration, plus this city for its own network once it signed a
        charter for it (a steward trusts itself)."""
        store = self.writer.store
        assert store is not None
        follows = self.config.trust_anchors()
        if await self.writer.run(store.current_body, self.identity, "network", self.network):
            stewards = follows.setdefault(self.network, [])
            if self.identity not in stewards:
                stewards.append(self.identity)
        await self.writer.run(
            store.configure_trust, own=self.identity, follows=follows, now_ms=now_ms()
        )

    async def trust_own_charter(self) -> None:
        """Called after this city signed its network's charter: it is an anchor from now on."""
        store = self.writer.store
        assert store is not None
        await self.writer.run(store.add_trust_anchor, self.network, self.identity, now_ms=now_ms())

    async def _refresh_trust(self) -> None:
        """Time-bounded memberships start and end without a record: re-check them."""
        store = self.writer.store
        assert store is not None
        while True:
            await asyncio.sleep(TRUST_INTERVAL_S)
            try:
                await self.writer.run(store.refresh_trust, now_ms=now_ms())
            except StoreError as err:
                log.error("cannot refresh membership standings: %s", err)

    # -- readiness and signing -------------------------------------------------------------------
    async def own_head(self) -> tuple[int, bytes | None]:
        assert self.writer.store is not None
        return await self.writer.run(self.writer.store.applied_head, self.identity)

    async def ready(self) -> bool:
        """True once every relay said how far it holds our chain and we hold at least that."""
        heads = [link.state.own_head_on_relay for link in self.links.values()]
        if any(h is None for h in heads):
            return False
        seq, _ = await self.own_head()
        return all(seq >= (h or 0) for h in heads)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not await self.ready():
            if time.monotonic() > deadline:
                waiting = [n for n, ln in self.links.items() if ln.state.own_head_on_relay is None]
                raise NotReadyError(
                    "cannot sign yet: waiting for "
                    + (
                        f"relays {', '.join(waiting)} to answer"
                        if waiting
                        else "own records to arrive"
                    )
                )
            await asyncio.sleep(0.05)

    async def publish(
        self,
        body: Body | Callable[[int, bytes | None], Body],
        addr: str = "",
        *,
        timeout: float = 30.0,
    ) -> Record:
        """Sign the next record of this city's chain, store it with its outbox rows, send it.

        ``body`` may be a function of the chain head (seq, id) it will follow, for bodies that
        depend on it (a head checkpoint); it is called under the signing lock.
        """
        await self.wait_ready(timeout)
        async with self._sign_lock:
            record, result = await self._sign_and_store(body, addr)
        await self._sent(result)
        return record

    async def _sign_and_store(
        self,
        body: Body | Callable[[int, bytes | None], Body],
        addr: str,
        *,
        signer: SecretKey | None = None,
    ) -> tuple[Record, ApplyResult]:
        """Under the signing lock: seal the next record with the current key and store it."""
        seq, prev = await self.own_head()
        if callable(body):
            body = body(seq, prev)
        created = max(now_ms(), 0)
        assert self.writer.store is not None
        cap, used = await self.writer.run(self.writer.store.hourly_use, self.identity, created)
        if cap is not None and used >= cap:
            wait_s = (HOUR_MS - created % HOUR_MS) // 1000 + 1
            raise RateLimitedError(
                f"this city signed {used} records this hour and the network allows {cap} per "
                f"hour (other nodes would refuse more): try again in {wait_s // 60 + 1} min",
                wait_s,
            )
        record = seal(
            signer or self.key,
            body=body,
            network=self.network,
            author=self.identity,
            seq=seq + 1,
            prev=prev,
            created=created,
            addr=addr,
            genesis=self.genesis if seq == 0 else None,
        )
        assert self.writer.store is not None
        result = await self.writer.run(
            self.writer.store.add_own, record, relays=list(self.links), now_ms=created
        )
        return record, result

    async def _sent(self, result: ApplyResult) -> None:
        for link in self.links.values():
            link.wake_outbox()
        await self._on_applied(result)

    async def rotate_key(self, *, timeout: float = 30.0) -> Record:
        """Replace the signing key: a rotation signed by the old key and counter-signed by the new.

        The new seed is written to ``city.key.next`` before signing and moved to ``city.key``
        once the rotation is stored, so a crash in between is finished at the next start.
        """
        await self.wait_ready(timeout)
        async with self._sign_lock:
            new = SecretKey(os.urandom(32))
            self.home.stage_next_key(new)
            body = KeyRotationBody(
                new_key=new.public_key,
                counter_signature=new.sign(rotation_message(self.identity, new.public_key)),
            )
            record, result = await self._sign_and_store(body, "")
            self.home.commit_next_key()
            self.key = new
        await self._sent(result)
        return record

    async def recover_key(self, recovery: SecretKey, *, timeout: float = 30.0) -> Record:
        """Take the identity back with an offline recovery key (after the signing key was
        stolen): a rotation to a fresh key, signed by the recovery key. Records the old key signs
        after it are refused everywhere; a thief's records at the same seqs, within the window,
        lose to it."""
        if recovery.public_key not in self.genesis.recovery:
            raise RecoveryKeyError("that is not one of the recovery keys this city's genesis names")
        await self.wait_ready(timeout)
        async with self._sign_lock:
            new = SecretKey(os.urandom(32))
            self.home.stage_next_key(new)
            body = KeyRotationBody(
                new_key=new.public_key,
                counter_signature=new.sign(rotation_message(self.identity, new.public_key)),
                by_recovery=True,
            )
            record, result = await self._sign_and_store(body, "", signer=recovery)
            self.home.commit_next_key()
            self.key = new
        await self._sent(result)
        return record

    async def _profile_and_heads(self) -> None:
        """Publish the city profile when it changed, and a head checkpoint now and daily."""
        while True:
            try:
                await self.wait_ready(timeout=3600)
                await self.publish_profile()
                await self.publish_head()
            except (NotReadyError, RateLimitedError) as err:
                log.warning("%s", err)
            await asyncio.sleep(HEAD_INTERVAL_MS / 1000)

    def profile(self) -> CityBody:
        transport = self.home.load_transport_key().public_key
        return city_body(self.config.city, self.network, transport)

    async def publish_profile(self) -> Record | None:
        assert self.writer.store is not None
        body = self.profile()
        have = await self.writer.run(self.writer.store.current_body, self.identity, "city", "")
        if have is not None and msgspec.json.decode(have, type=CityBody) == body:
            return None
        return await self.publish(body)

    async def publish_head(self) -> Record:
        assert self.writer.store is not None
        counts = await self.writer.run(self.writer.store.own_counts, self.identity)
        return await self.publish(
            lambda seq, last: HeadBody(latest_seq=seq, latest_id=last, counts=counts)
        )

    # -- live events -----------------------------------------------------------------------------
    async def _on_applied(self, result: ApplyResult) -> None:
        if self.repair is not None and len(result.stored) > len(result.applied):
            self.repair.wake()  # records held behind a gap: fetch what is missing now
        if result.stored and len(self.links) > 1:
            for link in self.links.values():
                link.wake_outbox()  # ingest queued these for the other relays: bridge them now
        for queue in list(self._subscribers):
            for rec in result.applied:
                if queue.full():
                    continue  # a slow listener misses events rather than stalling ingest
                queue.put_nowait(rec)

    @contextlib.asynccontextmanager
    async def events(self, maxsize: int = 1000) -> AsyncIterator[asyncio.Queue[Record]]:
        queue: asyncio.Queue[Record] = asyncio.Queue(maxsize)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def wait_idle(self) -> None:
        for link in self.links.values():
            await link.wait_idle()
