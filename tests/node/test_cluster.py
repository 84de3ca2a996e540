"""Relays that survive and relays that link: a three-server JetStream cluster with replicated
streams losing a server mid-publish, and two networks' relays joined by a leaf-node link.

Real nats-server processes on random loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg
from nats.js import api

from citymesh.node import daemon
from citymesh.node.config import Home
from citymesh.node.link import LinkContext
from citymesh.node.natsserver import NatsServer
from citymesh.node.nkey import decode_public
from citymesh.node.relay import Relay, RelayConfig, load_relay_key, public_nkey
from citymesh.node.streams import LinkedSource, linked_prefix
from citymesh.protocol.envelope import seal
from citymesh.protocol.identity import Genesis, SecretKey, identity_of, identity_text
from citymesh.protocol.records import Record
from citymesh.protocol.subjects import stream_name, subject

from .conftest import MakeHome, StartNode, practice, wait_for

NET = "citymesh"
STREAM = stream_name(NET)
RECORDS = 300
T = TypeVar("T")


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free on 127.0.0.1 a moment ago."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def chain(count: int) -> list[Record]:
    """``count`` signed practice records of one city, seq 1..count."""
    key = SecretKey(bytes(range(32)))
    genesis = Genesis(key=key.public_key)
    author = identity_of(genesis)
    out: list[Record] = []
    prev: bytes | None = None
    now = int(time.time() * 1000)
    for seq in range(1, count + 1):
        rec = seal(
            key,
            body=practice(seq),
            network=NET,
            author=author,
            seq=seq,
            prev=prev,
            created=now,
            addr=f"practice-{seq}",
            genesis=genesis if seq == 1 else None,
        )
        out.append(rec)
        prev = rec.id
    return out


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[dict[str, NatsServer]]:
    """Three relays in one JetStream cluster (``relay run --cluster … --route …``), the network's
    stream at three replicas; server name -> its nats-server."""
    ports = free_ports(3)
    routes = tuple(f"nats-route://127.0.0.1:{port}" for port in ports)
    relays = [
        Relay(
            RelayConfig(
                store=tmp_path / f"n{i}",
                port=0,
                monitor=None,
                server_name=f"n{i}",
                cluster="citymesh-relays",
                cluster_listen=("127.0.0.1", port),
                routes=routes,
                replicas=3,
                cluster_wait=60,
            )
        )
        for i, port in enumerate(ports, 1)
    ]
    try:
        # each waits for its peers before it can set up the replicated stream
        await asyncio.gather(*(relay.start() for relay in relays))
        yield {relay.cfg.server_name or "": relay.server for relay in relays}
    finally:
        for relay in relays:
            await relay.stop()


async def settled(call: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
    """``call()`` once the cluster answers it (a meta or stream leader may be being elected)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def publish_until_acked(js: nats.js.JetStreamContext, rec: Record) -> int:
    """Publish one record until a server acknowledges it (retries are deduplicated by id)."""
    while True:
        try:
            ack = await js.publish(
                subject(NET, rec.author, "practice"),
                rec.envelope,
                stream=STREAM,
                timeout=2,
                headers={"Nats-Msg-Id": rec.id.hex()},
            )
            return ack.seq
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
            await asyncio.sleep(0.1)  # a server gone, a leader being elected: try again


@pytest.mark.slow
async def test_cluster_loses_no_acknowledged_record_when_a_server_dies(
    cluster: dict[str, NatsServer],
) -> None:
    urls = [server.client_url for server in cluster.values()]
    records = chain(RECORDS)
    acked: dict[bytes, int] = {}

    async def on_error(err: Exception) -> None:
        pass  # disconnects while a server dies are expected here

    nc = await nats.connect(urls, connect_timeout=5, reconnect_time_wait=0.2, error_cb=on_error)
    victim: str | None = None
    try:
        js = nc.jetstream(timeout=5)
        info = await settled(lambda: js.stream_info(STREAM))
        assert info.config.num_replicas == 3
        window = asyncio.Semaphore(16)

        async def one(rec: Record) -> None:
            async with window:
                acked[rec.id] = await publish_until_acked(js, rec)

        publishing = asyncio.gather(*(one(rec) for rec in records))

        async def third_acked() -> bool:
            return len(acked) >= RECORDS // 3

        await wait_for(third_acked)
        victim = (await settled(lambda: js.stream_info(STREAM))).cluster.leader  # type: ignore[union-attr]
        assert victim in cluster
        await asyncio.to_thread(cluster[victim].kill)  # mid-stream: publishes are in flight
        await asyncio.wait_for(publishing, 120)
    finally:
        await nc.close()
    assert len(acked) == RECORDS

    survivor = next(s for name, s in cluster.items() if name != victim)
    assert survivor.running
    stored = await read_stream(survivor.client_url, RECORDS)
    assert {rec.id for rec in records} <= stored.keys()
    assert all(stored[rec.id] == rec.envelope for rec in records)
    assert len(stored) == RECORDS  # retried publishes were deduplicated


async def read_stream(url: str, expect: int) -> dict[bytes, bytes]:
    """Every record of the stream, read from the server at ``url``: id -> envelope."""
    nc = await nats.connect(url, connect_timeout=5)
    out: dict[bytes, bytes] = {}
    try:
        js = nc.jetstream(timeout=5)

        async def on_msg(msg: Msg) -> None:
            assert msg.headers is not None
            out[bytes.fromhex(msg.headers["Nats-Msg-Id"])] = msg.data

        sub = await settled(
            lambda: js.subscribe(
                f"cm.{NET}.>",
                stream=STREAM,
                cb=on_msg,
                ordered_consumer=True,
                config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL),
            )
        )

        async def complete() -> bool:
            return len(out) >= expect

        await wait_for(complete)
        await sub.unsubscribe()
    finally:
        await nc.close()
    return out


# -- linked networks -------------------------------------------------------------------------
@pytest.fixture
async def linked(tmp_path: Path, make_home: MakeHome) -> AsyncIterator[tuple[Relay, Relay, Path]]:
    """Relay A (network alpha, governed, leaf port) and relay B (network beta) linked to it,
    B's stream sourcing alpha's records."""
    a_home = make_home("Antwerp", "BEL", network="alpha")
    b_key = public_nkey(load_relay_key(tmp_path / "b" / "relay.nk"))
    relay_a = Relay(
        RelayConfig(
            store=tmp_path / "a",
            port=0,
            monitor=None,
            networks=("alpha",),
            stewards=(a_home.identity(),),
            steward_keys=((a_home.identity(), a_home.load_transport_key().public_key),),
            link_keys=(decode_public(b_key),),
            leaf_listen=("127.0.0.1", 0),
        )
    )
    await relay_a.start()
    relay_b: Relay | None = None
    try:
        relay_b = Relay(
            RelayConfig(
                store=tmp_path / "b",
                port=0,
                monitor=None,
                networks=("beta",),
                leaf_remotes=(f"nats-leaf://127.0.0.1:{relay_a.server.leafnode_port}",),
                sources=(LinkedSource(network="alpha", domain="alpha"),),
            )
        )
        await relay_b.start()
        yield relay_a, relay_b, a_home.root
    finally:
        if relay_b is not None:
            await relay_b.stop()
        await relay_a.stop()


@pytest.mark.slow
async def test_linked_relays_deliver_across_networks(
    linked: tuple[Relay, Relay, Path],
    make_home: MakeHome,
    start_node: StartNode,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay_a, relay_b, a_root = linked
    a_home = Home(a_root)
    b_home = make_home("Bologna", "ITA", network="beta")
    # A's node logs in to its governed relay with its transport key
    seed = a_home.load_transport_key().seed()
    monkeypatch.setattr(daemon, "LinkContext", functools.partial(LinkContext, transport_seed=seed))
    antwerp = await start_node(a_home, relays=[relay_a.client_url])
    monkeypatch.setattr(daemon, "LinkContext", LinkContext)
    bologna = await start_node(b_home, relays=[relay_b.client_url])  # follows beta only

    await antwerp.wait_ready()
    rec = await antwerp.publish(practice(1, title="Welcome desk"), "welcome-desk")

    async def arrived() -> bool:
        store = bologna.writer.store
        assert store is not None
        return rec.id in await bologna.writer.run(store.known_ids, [rec.id])

    await wait_for(arrived)

    # it travelled as alpha's record inside beta's stream, in the linked namespace
    nc = await nats.connect(relay_b.client_url)
    try:
        js = nc.jetstream(timeout=5)
        where = f"{linked_prefix('beta', 'alpha')}.{subject('alpha', rec.author, 'practice').split('.', 2)[2]}"
        msg = await js.get_last_msg(stream_name("beta"), where)
        assert msg.data == rec.envelope
        # one hop only: beta's own governance filters never see it
        own = f"cm.beta.{identity_text(rec.author)}.*"
        info = await js.stream_info(stream_name("beta"), subjects_filter=own)
        assert not info.state.subjects
        # and the link carries no records the other way: nothing on B reaches alpha's stream
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await js.publish(subject("alpha", rec.author, "practice"), rec.envelope)
    finally:
        await nc.close()
    await antwerp.stop()
    await bologna.stop()
    gc.collect()
