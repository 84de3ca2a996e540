"""Omission repair and anti-entropy on real relays and nodes over loopback.

- A relay loses records (messages deleted from its stream) before a node reads them: the node
  holds the author's later records behind the gap, finds the missing ones at a peer node over
  HTTP (``/v1/sync/records``), and the author's own node queues what the relay lost again, which
  the relay then holds in chain order.
- The same loss repaired by negentropy reconciliation alone (``/v1/sync/reconcile``), with the
  bytes exchanged beside the size of the plain id list.

Each test ends with the convergence check and ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from citymesh.node import streams
from citymesh.node.app import create_app
from citymesh.node.config import Home
from citymesh.node.keys import NODE
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.records import CityBody

from .cluster import (
    NETWORK,
    STREAM,
    Chain,
    Local,
    applied_seq,
    db_rows,
    practice,
    publish_raw,
    relay_ids,
    relay_messages,
    wait_for,
)
from .conftest import MakeHome, MemoryRelays
from .convergence import assert_converged

pytestmark = pytest.mark.faults

StartApi = Callable[..., Awaitable[tuple[Local, str]]]


@pytest.fixture
async def api_nodes() -> AsyncIterator[StartApi]:
    """``await api_nodes(name, home, [relay URLs], peers=[...])``: a node with its HTTP API in
    this process on 127.0.0.1; returns it and its base URL."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(
        name: str, home: Home, relays: list[str], *, peers: list[str] | None = None
    ) -> tuple[Local, str]:
        config = msgspec.structs.replace(home.load_config(), peers=peers or [])
        app = create_app(home, config, relays=relays)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        node = app[NODE]
        await node.wait_ready()
        return Local(name, node), str(client.make_url("")).rstrip("/")

    yield start
    for client in reversed(clients):
        await client.close()


async def delete_from_relay(url: str, ids: set[bytes]) -> None:
    """Delete the messages carrying these record ids from the relay's stream (a lost block)."""
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        for m in await relay_messages(url):
            if open_envelope(m.data, now_ms=2**62).id in ids:
                await js.delete_msg(STREAM, m.seq)
    finally:
        await nc.close()


async def test_gap_repaired_from_a_peer_over_http_and_the_relay_refilled_in_chain_order(
    memory_relays: MemoryRelays,
    homes: MakeHome,
    api_nodes: StartApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The relay drops a republished record it saw within its duplicate window (same
    # Nats-Msg-Id): shorten the window so the audit may send A's lost records again soon.
    monkeypatch.setattr(streams, "DUPLICATE_WINDOW", 1.0)
    relay = memory_relays()
    url = relay.client_url
    a, a_url = await api_nodes("A", homes("Mechelen"), [url])
    published = [await a.publish(i) for i in range(12)]
    await wait_for(lambda: _relay_has(url, {r.id for r in published}))
    lost = [published[3], published[4], published[8]]
    await delete_from_relay(url, {r.id for r in lost})
    assert not {r.id for r in lost} & set(await relay_ids(url, a.identity))

    # B reads the relay: A's records after the first hole are held behind it; the relay cannot
    # help, A (its peer) can.
    b, _ = await api_nodes("B", homes("Ghent"), [url], peers=[a_url])
    head = max(r.header.seq for r in published)
    await wait_for(lambda: _applied(b, a.identity, head), timeout=30)
    repair = b.node.repair
    assert repair is not None and repair.state.fetched_from_peers >= len(lost)
    assert not db_rows(b.db_path, "SELECT 1 FROM records WHERE state = 'held'")

    # A's audit finds what the relay lost of A's own chain and sends it again, in chain order.
    assert a.node.repair is not None
    link = next(iter(a.node.links.values()))
    await asyncio.sleep(streams.DUPLICATE_WINDOW + 0.2)
    assert await a.node.repair.audit_relay(link) == len(lost)
    await wait_for(lambda: _relay_has(url, {r.id for r in lost}))
    tail = (await relay_ids(url, a.identity))[-len(lost) :]
    assert tail == [r.id for r in lost]  # lost is in chain order
    assert await a.node.repair.audit_relay(link) == 0  # nothing lost any more

    await assert_converged([a, b], workdir=tmp_path, timeout=30)


async def test_relay_loss_repaired_by_reconciliation_with_its_bandwidth(
    memory_relays: MemoryRelays, homes: MakeHome, api_nodes: StartApi, tmp_path: Path
) -> None:
    relay = memory_relays()
    url = relay.client_url
    x = Chain.new("reconcile-x")
    x.add(CityBody(name="Elsewhere", country="BEL", networks=[NETWORK]))
    for i in range(2, 3001):
        x.add(practice(i), f"x-{i % 50}")
    await publish_raw(url, x.records)
    a, a_url = await api_nodes("A", homes("Mechelen"), [url])
    await wait_for(lambda: _applied(a, x.author, len(x.records)), timeout=60)

    # The relay loses 20 of X's records (some in the middle, the newest ones) before B reads it.
    lost = x.records[1000:1010] + x.records[-10:]
    await delete_from_relay(url, {r.id for r in lost})
    b, _ = await api_nodes("B", homes("Ghent"), [url])  # no peers configured: nothing automatic
    await wait_for(lambda: _applied(b, x.author, 1000), timeout=60)
    # Wait until B holds everything the relay still has: only what the relay lost may be left
    # for reconciliation, or its bytes would count records the relay was still delivering.
    relay_has = len(x.records) - len(lost)
    await wait_for(lambda: _holds(b, x.author, relay_has), timeout=60)
    assert applied_seq(b.db_path, x.author) == 1000

    assert b.node.repair is not None
    sync = await b.node.repair.sync_peer(a_url, heads=False, reconcile=True)
    held = db_rows(b.db_path, "SELECT count(*) FROM records WHERE author = ?", x.author)[0][0]
    total = int(db_rows(a.db_path, "SELECT count(*) FROM records")[0][0])
    id_list = total * 32
    exchanged = sync.bytes_sent + sync.bytes_received
    print(
        f"\nreconcile: {total} records on the peer, {sync.need} missing here, {sync.rounds} "
        f"rounds, {exchanged} bytes exchanged (ids list alone: {id_list} bytes; "
        f"{exchanged / id_list:.1%})"
    )
    # B lacks X's 20 records and A's own chain beyond what the relay gave it (none lost).
    assert sync.need >= len(lost)
    assert held == len(x.records)
    assert applied_seq(b.db_path, x.author) == len(x.records)
    assert exchanged < id_list / 2
    await assert_converged([a, b], extra=x.records, workdir=tmp_path, timeout=30)


async def _applied(m: Local, author: bytes, seq: int) -> bool:
    return applied_seq(m.db_path, author) >= seq


async def _holds(m: Local, author: bytes, count: int) -> bool:
    rows = db_rows(m.db_path, "SELECT count(*) FROM records WHERE author = ?", author)
    return int(rows[0][0]) >= count


async def _relay_has(url: str, ids: set[bytes]) -> bool:
    return ids <= set(await relay_ids(url))
