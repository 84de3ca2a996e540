"""A catch-up larger than the NATS client will hold for a busy writer: it drops deliveries (slow
consumer), including the last ones, which nothing sends again by itself. The link notices that
ingest stopped while the relay holds more, and re-reads from its cursor: every record arrives."""

from __future__ import annotations

import logging

import pytest

from citymesh.node import link as link_module
from citymesh.node.natsserver import NatsServer
from tests.faults.cluster import NETWORK, city_chains, flat, publish_raw

from .conftest import MakeHome, StartNode, wait_for

RECORDS = 2400


async def test_a_backlog_is_pulled_as_the_writer_takes_it_without_drops(
    nats_server: NatsServer,
    make_home: MakeHome,
    start_node: StartNode,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(link_module, "PENDING_BYTES", 64 * 1024)  # a few dozen records
    records = flat(city_chains("backlog", 8, RECORDS // 8))
    await publish_raw(nats_server.client_url, records)
    with caplog.at_level(logging.INFO, logger="citymesh"):
        node = await start_node(
            make_home("Mechelen", network=NETWORK), relays=[nats_server.client_url]
        )
        store = node.writer.store
        assert store is not None

        async def all_in() -> bool:
            return await node.writer.run(store.record_count) >= RECORDS + 1

        await wait_for(all_in, timeout=120)
    messages = [r.getMessage() for r in caplog.records]
    assert any("reading a backlog" in m for m in messages)
    assert not any("dropped deliveries" in m for m in messages), "deliveries were dropped"
    assert await node.writer.run(store.integrity_check) == "ok"


async def test_live_deliveries_dropped_by_a_busy_client_still_arrive(
    nats_server: NatsServer,
    make_home: MakeHome,
    start_node: StartNode,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flood while the node is live (push delivery): past the client's limit it drops
    deliveries, the last ones included; the ordered consumer and the stall watch re-read."""
    monkeypatch.setattr(link_module, "PENDING_BYTES", 64 * 1024)
    monkeypatch.setattr(link_module, "STALL_CHECK_S", 0.3)
    node = await start_node(make_home("Mechelen", network=NETWORK), relays=[nats_server.client_url])
    store = node.writer.store
    assert store is not None
    await node.wait_ready()
    own = await node.writer.run(store.record_count)
    with caplog.at_level(logging.WARNING, logger="citymesh"):
        await publish_raw(nats_server.client_url, flat(city_chains("flood", 8, RECORDS // 8)))

        async def all_in() -> bool:
            return await node.writer.run(store.record_count) >= RECORDS + own

        await wait_for(all_in, timeout=120)
    assert await node.writer.run(store.integrity_check) == "ok"


async def test_a_subscription_that_stopped_delivering_is_renewed(
    nats_server: NatsServer,
    make_home: MakeHome,
    start_node: StartNode,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever silenced the consumer (here: its subscription is dropped behind the link's back,
    as nats-py does to the deliveries it discards), records the relay holds still arrive."""
    monkeypatch.setattr(link_module, "STALL_CHECK_S", 0.3)
    chains = city_chains("late", 2, 40)
    first, later = flat(chains)[:20], flat(chains)[20:]
    await publish_raw(nats_server.client_url, first)
    node = await start_node(make_home("Mechelen", network=NETWORK), relays=[nats_server.client_url])
    store = node.writer.store
    assert store is not None
    link = next(iter(node.links.values()))

    async def holds(n: int) -> bool:
        return await node.writer.run(store.record_count) >= n

    await wait_for(lambda: holds(len(first)))
    assert link._sub is not None
    await link._sub.unsubscribe()  # deliveries stop; the link is not told
    await publish_raw(nats_server.client_url, later)
    await wait_for(lambda: holds(len(first) + len(later)), timeout=30)
