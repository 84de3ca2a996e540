"""Two nodes and a relay converge (the basic promise; the sync suite goes further)."""

from __future__ import annotations

from citymesh.node.natsserver import NatsServer

from .conftest import MakeHome, StartNode, practice, wait_for


async def _practices(node) -> int:  # type: ignore[no-untyped-def]
    return int(node.writer.store.db.execute("SELECT count(*) FROM practices").fetchone()[0])


async def test_two_nodes_converge(
    nats_server: NatsServer, make_home: MakeHome, start_node: StartNode
) -> None:
    url = nats_server.client_url
    a = await start_node(make_home("Mechelen", "BEL"), relays=[url])
    b = await start_node(make_home("Lisbon", "PRT"), relays=[url])
    for i in range(20):
        await a.publish(practice(i), addr=f"p-{i}")
    await b.publish(practice(99), addr="from-lisbon")

    async def both_have_all() -> bool:
        return await _practices(a) == 21 and await _practices(b) == 21

    await wait_for(both_have_all)
