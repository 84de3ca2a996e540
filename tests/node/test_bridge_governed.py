"""Bridging into a governed relay: it takes each city's records from that city only. The node
skips the other cities' records it would bridge there (counted), and its own still go through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import nats.js
import pytest

from citymesh.node.config import Home
from citymesh.node.natsserver import NatsServer
from citymesh.node.relay import Relay
from citymesh.protocol.records import NetworkBody
from citymesh.protocol.subjects import subject

from .conftest import MakeHome, StartNode, practice, wait_for
from .test_relay_auth import (  # noqa: F401  (fixtures)
    NET,
    governed,
    last_seq_on,
    operator_js,
    steward_home,
    with_transport,
)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_other_cities_records_are_skipped_own_ones_delivered(
    governed: Relay,  # noqa: F811
    steward_home: Home,  # noqa: F811
    nats_server: NatsServer,
    make_home: MakeHome,
    start_node: StartNode,
    monkeypatch: pytest.MonkeyPatch,
    operator_js: Callable[[], Awaitable[nats.js.JetStreamContext]],  # noqa: F811
    tmp_path: Path,
) -> None:
    open_url, governed_url = nats_server.client_url, governed.client_url
    outsider_home = make_home("Elsewhere", "NLD", network=NET)
    outsider = await start_node(outsider_home, relays=[open_url])
    await outsider.wait_ready()
    foreign = await outsider.publish(practice(1), "night-school")

    with_transport(monkeypatch, steward_home)
    steward = await start_node(steward_home, relays=[governed_url, open_url])
    await steward.wait_ready()
    link = steward.links[governed_url]

    async def skipped() -> bool:
        return link.state.not_permitted >= 1

    await wait_for(skipped, timeout=60)
    own = await steward.publish(NetworkBody(title="Cities", stewards=[steward.identity]), NET)
    js = await operator_js()

    async def delivered() -> bool:
        return await last_seq_on(js, subject(NET, steward.identity, "network")) == own.seq

    await wait_for(delivered, timeout=30)
    assert await last_seq_on(js, subject(NET, outsider.identity, "practice")) == 0
    assert foreign.seq >= 1
    store = steward.writer.store
    assert store is not None
    assert await steward.writer.run(store.outbox_size, governed_url) == 0
