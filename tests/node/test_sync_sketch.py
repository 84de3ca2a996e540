"""The sketch route (``POST /v1/sync/sketch``: coded symbols of a rateless IBLT) and its use in
repair, against a real nats-server, SQLite and nodes serving HTTP on loopback:

- a session from an empty set learns every id the node serves (msgpack and JSON, scoped to a
  kind), and the node's cached symbols follow a record published afterwards;
- bad bodies give a 4xx naming the field, and the node keeps serving;
- a node missing records scattered through a chain (its relay lost them) gets them from a peer
  by the sketch, for a fraction of the id list's bytes; with a peer that has no sketch route
  (an older node: 404), or a difference too large for the bound, it falls back to ranges.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from citymesh.node.app import create_app
from citymesh.node.config import Home
from citymesh.node.daemon import Node
from citymesh.node.keys import NODE
from citymesh.protocol import api_sync
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.records import CityBody
from citymesh.protocol.sketch import MAX_CHUNK, MAX_SYMBOLS, Encoder, Session

from ..faults.cluster import NETWORK, STREAM, Chain, applied_seq, db_rows, publish_raw
from ..faults.cluster import practice as raw_practice
from .conftest import MakeHome, practice, wait_for

MSGPACK = "application/msgpack"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(nats_url: str, make_home: MakeHome) -> AsyncIterator[Client]:
    home = make_home("Mechelen", "BEL", relays=[nats_url])
    c: Client = TestClient(TestServer(create_app(home, home.load_config(), relays=[nats_url])))
    await c.start_server()
    node = c.app[NODE]
    await node.wait_ready()
    for i in range(5):
        await node.publish(practice(i), addr=f"p-{i}")
    yield c
    await c.close()


def served_ids(node: Node, kind: str | None = None) -> set[bytes]:
    sql = "SELECT id FROM records WHERE state != 'held'" + (" AND kind = ?" if kind else "")
    return {bytes(i) for (i,) in db_rows(node.home.db_path, sql, *([kind] if kind else []))}


async def sketch_session(
    c: Client, local: Encoder, *, json: bool = False, **scope: Any
) -> tuple[Session, int]:
    """Run a whole session against the node over HTTP; (the session, bytes both ways)."""
    session = Session(local)
    exchanged = 0
    chunk = session.next_chunk()
    while chunk is not None:
        body = api_sync.SketchIn(chunk=chunk, **scope)
        data = msgspec.json.encode(body) if json else msgspec.msgpack.encode(body)
        ctype = "application/json" if json else MSGPACK
        async with c.post("/v1/sync/sketch", data=data, headers={"Content-Type": ctype}) as resp:
            assert resp.status == 200, await resp.text()  # no token: public
            assert resp.content_type == ctype
            raw = await resp.read()
        exchanged += len(data) + len(raw)
        decode = msgspec.json.decode if json else msgspec.msgpack.decode
        session.receive(decode(raw, type=api_sync.SketchOut).symbols)
        chunk = session.next_chunk()
    return session, exchanged


async def test_a_session_learns_what_the_node_serves_and_follows_new_records(
    client: Client,
) -> None:
    node = client.app[NODE]
    everything = served_ids(node)
    session, _ = await sketch_session(client, Encoder())
    assert set(session.need) == everything and not session.have

    practices = served_ids(node, "practice")
    assert len(practices) == 5
    session, _ = await sketch_session(client, Encoder(), json=True, kind="practice")
    assert set(session.need) == practices

    # Equal sets: one small round. Then one record more: only it is needed.
    session, exchanged = await sketch_session(client, Encoder(everything))
    assert session.rounds == 1 and not session.need and exchanged < 1000
    rec = await node.publish(practice(9), addr="p-9")
    await wait_for(lambda: _served(node, rec.id))
    session, _ = await sketch_session(client, Encoder(everything | {bytes(32)}))
    assert session.need == [rec.id] and session.have == [bytes(32)]


async def _served(node: Node, record_id: bytes) -> bool:
    return record_id in served_ids(node)


def chunk(**fields: object) -> dict[str, object]:
    return {"start": 0, "end": 16} | fields


@pytest.mark.parametrize(
    ("content_type", "data", "status", "field"),
    [
        (MSGPACK, b"", 400, "body"),
        (MSGPACK, b"\xc1\xc1", 400, "body"),
        (MSGPACK, msgspec.msgpack.encode([1, 2, 3]), 400, None),
        (MSGPACK, msgspec.msgpack.encode({"chunk": "x"}), 400, "chunk"),
        (MSGPACK, msgspec.msgpack.encode({"chunk": {"start": 0}}), 400, "chunk"),
        (MSGPACK, msgspec.msgpack.encode({"chunk": chunk(start=9, end=3)}), 422, "chunk.end"),
        (MSGPACK, msgspec.msgpack.encode({"chunk": chunk(start=4, end=4)}), 422, "chunk.end"),
        (MSGPACK, msgspec.msgpack.encode({"chunk": chunk(end=MAX_CHUNK + 1)}), 422, "chunk.end"),
        (MSGPACK, msgspec.msgpack.encode({"chunk": chunk(end=MAX_SYMBOLS + 1)}), 400, "chunk.end"),
        (MSGPACK, msgspec.msgpack.encode({"chunk": chunk(start=-1)}), 400, "chunk.start"),
        (MSGPACK, msgspec.msgpack.encode({"chunk": chunk(version=2)}), 400, "chunk.version"),
        (MSGPACK, msgspec.msgpack.encode({"chunk": chunk(more=1)}), 400, "chunk.more"),
        (MSGPACK, msgspec.msgpack.encode({"chunk": chunk(), "kind": "nope"}), 400, "kind"),
        (
            MSGPACK,
            msgspec.msgpack.encode({"chunk": chunk(), "since": 10, "until": 5}),
            422,
            "until",
        ),
        (MSGPACK, msgspec.msgpack.encode({"chunk": chunk(), "extra": 1}), 400, "extra"),
        ("application/json", b'{"chunk": {"start": 0, "end": "16"}}', 400, "chunk.end"),
        ("application/json", b"{not json", 400, "body"),
        ("application/json", b"\xff\xfe", 400, "body"),
        ("text/plain", b"hello", 415, None),
    ],
)
async def test_bad_sketch_bodies_are_refused_and_the_node_keeps_serving(
    client: Client, content_type: str, data: bytes, status: int, field: str | None
) -> None:
    async with client.post(
        "/v1/sync/sketch", data=data, headers={"Content-Type": content_type}
    ) as resp:
        body = await resp.json()
        assert resp.status == status, body
    assert body["error"]["message"] and body["error"]["code"]
    if field is not None:
        assert (body["error"]["field"] or "").startswith(field), body
    if status == 422 and field == "chunk.end":
        assert body["error"]["code"] in ("bad_sketch", "too_large")
    session, _ = await sketch_session(client, Encoder())
    assert set(session.need) == served_ids(client.app[NODE])


async def test_oversize_sketch_body_is_413(client: Client) -> None:
    big = msgspec.msgpack.encode({"chunk": chunk()}) + b"\x00" * (300 * 1024)
    async with client.post("/v1/sync/sketch", data=big, headers={"Content-Type": MSGPACK}) as r:
        assert r.status == 413
    session, _ = await sketch_session(client, Encoder())
    assert session.need


# -- repair ------------------------------------------------------------------------------------
StartApi = Callable[..., Awaitable[tuple[Node, str]]]


@pytest.fixture
async def api_nodes() -> AsyncIterator[StartApi]:
    """``await api_nodes(home, [relay URLs])``: a node with its HTTP API on 127.0.0.1 in this
    process, no peers configured (nothing automatic); returns it and its base URL."""
    clients: list[Client] = []

    async def start(home: Home, relays: list[str]) -> tuple[Node, str]:
        app = create_app(home, home.load_config(), relays=relays)
        c: Client = TestClient(TestServer(app))
        await c.start_server()
        clients.append(c)
        node = app[NODE]
        await node.wait_ready()
        return node, str(c.make_url("")).rstrip("/")

    yield start
    for c in reversed(clients):
        await c.close()


async def delete_from_relay(url: str, ids: set[bytes]) -> None:
    """Delete the messages carrying these record ids from the relay's stream (a lost record)."""
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(STREAM)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(STREAM, seq)
            if msg.data is not None and open_envelope(msg.data, now_ms=2**62).id in ids:
                await js.delete_msg(STREAM, seq)
    finally:
        await nc.close()


async def scattered_loss(
    nats_url: str, make_home: MakeHome, api_nodes: StartApi, *, records: int, lost: int
) -> tuple[Node, str, Node, Chain, list[bytes]]:
    """A holds chain X whole; then the relay loses ``lost`` of X's records at random places
    and B reads it: B holds the rest (those past the first hole held behind it)."""
    x = Chain.new(f"sketch-{records}-{lost}")
    x.add(CityBody(name="Elsewhere", country="BEL", networks=[NETWORK]))
    for i in range(2, records + 1):
        x.add(raw_practice(i), f"x-{i % 40}")
    await publish_raw(nats_url, x.records)
    a, a_url = await api_nodes(make_home("Mechelen", relays=[nats_url]), [nats_url])
    await wait_for(lambda: _applied(a, x.author, records), timeout=60)
    gone = [x.records[i].id for i in random.Random(records).sample(range(1, records), lost)]
    await delete_from_relay(nats_url, set(gone))
    b, _ = await api_nodes(make_home("Ghent", relays=[nats_url]), [nats_url])

    await wait_for(lambda: _holds(b, x.author, records - lost), timeout=60)
    # B's own first records reach A through the relay too: wait for them, so that A's set does
    # not change during the session under test (a change makes it start over; see below).
    own = len(db_rows(b.home.db_path, "SELECT id FROM records WHERE author = ?", b.identity))
    await wait_for(lambda: _holds(a, b.identity, own), timeout=60)
    return a, a_url, b, x, gone


async def _applied(node: Node, author: bytes, seq: int) -> bool:
    return applied_seq(node.home.db_path, author) >= seq


async def test_scattered_losses_are_filled_from_a_peer_by_the_sketch(
    nats_url: str, make_home: MakeHome, api_nodes: StartApi
) -> None:
    records, lost = 400, 15
    a, a_url, b, x, gone = await scattered_loss(
        nats_url, make_home, api_nodes, records=records, lost=lost
    )
    assert applied_seq(b.home.db_path, x.author) < records
    assert b.repair is not None
    sync = await b.repair.sync_peer(a_url, heads=False, reconcile=True)
    assert sync.method == "sketch" and sync.sketch_failed is None, sync
    assert sync.need >= lost  # and whatever of A's own records B has not read yet
    assert applied_seq(b.home.db_path, x.author) == records
    assert set(gone) <= served_ids(b)
    id_list = len(served_ids(a)) * 32
    print(
        f"\nsketch: {sync.need} of {id_list // 32} ids missing here, {sync.rounds} rounds,"
        f" {sync.reconcile_bytes} bytes exchanged (the id list alone: {id_list} bytes)"
    )
    assert sync.reconcile_bytes < id_list / 4, (sync.reconcile_bytes, id_list)

    # Nothing left to do: one small round.
    again = await b.repair.sync_peer(a_url, heads=False, reconcile=True)
    assert again.method == "sketch" and again.need == 0 and again.rounds == 1


async def test_falls_back_to_ranges_when_the_sketch_cannot_serve(
    nats_url: str, make_home: MakeHome, api_nodes: StartApi
) -> None:
    records, lost = 200, 30
    _, a_url, b, x, _ = await scattered_loss(
        nats_url, make_home, api_nodes, records=records, lost=lost
    )
    # A difference larger than the bound allows: the sketch gives up, ranges do the work.
    assert b.repair is not None
    b.repair.sketch_max_symbols = 16
    sync = await b.repair.sync_peer(a_url, heads=False, reconcile=True)
    assert sync.method == "ranges", sync
    assert "did not decode within 16 symbols" in (sync.sketch_failed or ""), sync
    assert applied_seq(b.home.db_path, x.author) == records

    # An older peer, with no sketch route (404): ranges again.
    c, _ = await api_nodes(make_home("Leuven", relays=[nats_url]), [nats_url])
    await wait_for(lambda: _holds(c, x.author, records - lost), timeout=60)
    assert c.repair is not None
    async with old_node(a_url) as old_url:
        sync = await c.repair.sync_peer(old_url, heads=False, reconcile=True)
    assert sync.method == "ranges" and (sync.sketch_failed or "").startswith("HTTP 404"), sync
    assert applied_seq(c.home.db_path, x.author) == records


async def _holds(node: Node, author: bytes, n: int) -> bool:
    rows = db_rows(node.home.db_path, "SELECT count(*) FROM records WHERE author = ?", author)
    return int(rows[0][0]) >= n


SketchReply = Callable[[int, bytes], bytes | None]
"""What a proxy answers for the n-th sketch request (from 0) given the node's reply body; None:
404, as a node from before the route."""


@contextlib.asynccontextmanager
async def proxy_node(target: str, sketch_reply: SketchReply) -> AsyncIterator[str]:
    """A proxy in front of a node that passes everything through but lets ``sketch_reply``
    answer for the sketch route. Yields its base URL."""
    sketch_requests = 0
    async with aiohttp.ClientSession() as http:

        async def forward(request: web.Request) -> web.Response:
            nonlocal sketch_requests
            async with http.request(
                request.method,
                target + request.path_qs,
                data=await request.read(),
                headers={"Content-Type": request.content_type},
            ) as resp:
                status, body, ctype = resp.status, await resp.read(), resp.content_type
            if request.path == "/v1/sync/sketch":
                n, sketch_requests = sketch_requests, sketch_requests + 1
                reply = sketch_reply(n, body)
                if reply is None:
                    raise web.HTTPNotFound()
                body = reply
            return web.Response(status=status, body=body, content_type=ctype)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        proxy: Client = TestClient(TestServer(app))
        await proxy.start_server()
        try:
            yield str(proxy.make_url("")).rstrip("/")
        finally:
            await proxy.close()


def old_node(target: str) -> contextlib.AbstractAsyncContextManager[str]:
    """A node from before the sketch route: 404 for it."""
    return proxy_node(target, lambda n, body: None)


def _shifted(body: bytes) -> bytes:
    """The reply with its symbols claiming to start elsewhere: a session cannot use it."""
    out = msgspec.msgpack.decode(body, type=api_sync.SketchOut)
    moved = msgspec.structs.replace(out.symbols, start=out.symbols.start + 1)
    return msgspec.msgpack.encode(api_sync.SketchOut(symbols=moved))


async def test_a_sketch_session_that_goes_wrong_is_started_once_more(
    nats_url: str, make_home: MakeHome, api_nodes: StartApi
) -> None:
    """Symbols that do not fit the session (as when the peer's set changes between two of its
    requests) end it; a second session from the first symbol decodes."""
    _, a_url, b, x, gone = await scattered_loss(nats_url, make_home, api_nodes, records=200, lost=5)
    assert b.repair is not None
    spoil_first: SketchReply = lambda n, body: _shifted(body) if n == 0 else body  # noqa: E731
    async with proxy_node(a_url, spoil_first) as url:
        sync = await b.repair.sync_peer(url, heads=False, reconcile=True)
    assert sync.method == "sketch" and sync.sketch_failed is None, sync
    assert set(gone) <= served_ids(b)
    assert applied_seq(b.home.db_path, x.author) == 200


async def test_after_two_sessions_go_wrong_ranges_take_over(
    nats_url: str, make_home: MakeHome, api_nodes: StartApi
) -> None:
    _, a_url, b, _, gone = await scattered_loss(nats_url, make_home, api_nodes, records=200, lost=5)
    assert b.repair is not None
    async with proxy_node(a_url, lambda n, body: _shifted(body)) as url:
        sync = await b.repair.sync_peer(url, heads=False, reconcile=True)
    assert sync.method == "ranges", sync
    assert "symbols start at" in (sync.sketch_failed or ""), sync
    assert set(gone) <= served_ids(b)
