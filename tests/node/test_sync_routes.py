"""Sync routes for peers (heads, records after a seq or by id, negentropy rounds), in-process
against a real nats-server and SQLite: happy paths, no token needed, and bad input on every
parameter → a 4xx naming the field, while the node keeps serving.

What the OpenAPI document states (types, ranges, patterns, msgpack that does not decode) is a 400;
rules it can only state in words (an identity's checksum, bounds that must increase, ``until``
after ``since``) may be a 422, as elsewhere in the API (middlewares.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from citymesh.node.app import create_app
from citymesh.node.keys import NODE
from citymesh.protocol import api_sync
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.identity import identity_text
from citymesh.protocol.reconcile import ItemSet, Message, Reconciler, encode_message

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


def node_of(c: Client) -> Any:
    return c.app[NODE]


async def get_json(c: Client, path: str) -> tuple[int, Any]:
    async with c.get(path) as resp:  # no Authorization header: public
        return resp.status, await resp.json()


async def records(c: Client, query: str) -> api_sync.SyncRecords:
    async with c.get(f"/v1/sync/records?{query}") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == MSGPACK
        return msgspec.msgpack.decode(await resp.read(), type=api_sync.SyncRecords)


async def test_heads_records_and_reconcile_need_no_token(client: Client) -> None:
    node = node_of(client)
    me = identity_text(node.identity)
    seq, last = await node.own_head()
    status, body = await get_json(client, "/v1/sync/heads")
    assert status == 200, body
    heads = msgspec.convert(body, api_sync.SyncHeads)
    assert heads.network == node.network
    mine = next(h for h in heads.heads if h.author == me)
    assert (mine.seq, mine.id) == (seq, last.hex())

    page = await records(client, f"author={me}&after=0&limit=3")
    assert [open_envelope(e, now_ms=2**62).header.seq for e in page.records] == [1, 2, 3]
    assert (page.more, page.last) == (True, 3)
    rest = await records(client, f"author={me}&after=3")
    assert [open_envelope(e, now_ms=2**62).header.seq for e in rest.records] == list(
        range(4, seq + 1)
    )
    assert not rest.more
    ids = [open_envelope(e, now_ms=2**62).id for e in page.records]
    by_id = await records(client, "ids=" + ",".join(i.hex() for i in reversed(ids)))
    assert by_id.records == page.records  # chain order, whatever order asked

    # A reconcile round from an empty set: the node answers with every id it holds.
    rec = Reconciler(ItemSet([]))
    message: Message | None = rec.initiate()
    rounds = 0
    while message is not None:
        body_in = api_sync.ReconcileIn(message=message)
        async with client.post(
            "/v1/sync/reconcile",
            data=msgspec.msgpack.encode(body_in),
            headers={"Content-Type": MSGPACK},
        ) as resp:
            assert resp.status == 200, await resp.text()
            out = msgspec.msgpack.decode(await resp.read(), type=api_sync.ReconcileOut)
        message = rec.reconcile(out.message)
        rounds += 1
    assert len(rec.need) == seq and rounds == 1

    # Scoped to one kind, in JSON.
    rec = Reconciler(ItemSet([]))
    payload = msgspec.json.encode(api_sync.ReconcileIn(message=rec.initiate(), kind="practice"))
    async with client.post(
        "/v1/sync/reconcile", data=payload, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        out = msgspec.json.decode(await resp.read(), type=api_sync.ReconcileOut)
    assert rec.reconcile(out.message) is None
    assert len(rec.need) == 5


AUTHOR = "cmid1" + "q" * 38


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("author=nonsense", "author"),
        (f"author={AUTHOR[:-1]}x", "author"),
        ("after=-1&author={me}", "after"),
        ("after=abc&author={me}", "after"),
        ("after=99999999999999999999&author={me}", "after"),
        ("limit=0&author={me}", "limit"),
        ("limit=1001&author={me}", "limit"),
        ("limit=-5&author={me}", "limit"),
        ("ids=zz", "ids"),
        ("ids=" + "a" * 63, "ids"),
        ("ids=" + ",".join(["a" * 64] * 101), "ids"),
        ("ids=" + "a" * 64 + "&author={me}", "ids"),
        ("", "author"),
        ("bogus=1&author={me}", "bogus"),
    ],
)
async def test_bad_record_queries_are_400_naming_the_field(
    client: Client, query: str, field: str
) -> None:
    me = identity_text(node_of(client).identity)
    status, body = await get_json(client, "/v1/sync/records?" + query.format(me=me))
    assert status in (400, 422), body
    assert body["error"]["field"] == field, body
    assert body["error"]["message"]
    status, _ = await get_json(client, "/v1/sync/heads")
    assert status == 200


def good_message() -> Message:
    return Reconciler(ItemSet([])).initiate()


@pytest.mark.parametrize(
    ("content_type", "data", "status", "field"),
    [
        (MSGPACK, b"", 400, "body"),
        (MSGPACK, b"\xc1\xc1", 400, "body"),
        (MSGPACK, msgspec.msgpack.encode([1, 2, 3]), 400, None),
        (MSGPACK, msgspec.msgpack.encode({"message": "x"}), 400, "message"),
        (MSGPACK, msgspec.msgpack.encode({"message": [9, []]}), 400, "message"),
        (MSGPACK, msgspec.msgpack.encode({"message": [1, [[1, b"", 7, b""]]]}), 400, "message"),
        (
            MSGPACK,
            msgspec.msgpack.encode({"message": [1, [[1, b"", 1, b"short"]]]}),
            400,
            "message.ranges[0]",
        ),
        (
            MSGPACK,
            msgspec.msgpack.encode({"message": [1, [[4, b"", 0, b""], [1, b"", 0, b""]]]}),
            400,
            "message.ranges[1]",
        ),
        (MSGPACK, msgspec.msgpack.encode({"message": [1, []], "kind": "nope"}), 400, "kind"),
        (MSGPACK, msgspec.msgpack.encode({"message": [1, []], "since": -1}), 400, "since"),
        (
            MSGPACK,
            msgspec.msgpack.encode({"message": [1, []], "since": 10, "until": 5}),
            400,
            "until",
        ),
        (MSGPACK, msgspec.msgpack.encode({"message": [1, []], "extra": 1}), 400, "extra"),
        ("application/json", b"{not json", 400, "body"),
        ("application/json", b"\xff\xfe", 400, "body"),
        ("text/plain", b"hello", 415, None),
    ],
)
async def test_garbage_reconcile_bodies_are_refused(
    client: Client, content_type: str, data: bytes, status: int, field: str | None
) -> None:
    async with client.post(
        "/v1/sync/reconcile", data=data, headers={"Content-Type": content_type}
    ) as resp:
        body = await resp.json()
        assert resp.status == status or (status == 400 and resp.status == 422), body
    assert body["error"]["message"]
    if field is not None:
        assert (body["error"]["field"] or "").startswith(field), body
    # The node keeps serving.
    async with client.post(
        "/v1/sync/reconcile",
        data=msgspec.msgpack.encode(api_sync.ReconcileIn(message=good_message())),
        headers={"Content-Type": MSGPACK},
    ) as resp:
        assert resp.status == 200


async def test_oversize_reconcile_body_is_413(client: Client) -> None:
    big = encode_message(good_message()) + b"\x00" * (300 * 1024)
    async with client.post(
        "/v1/sync/reconcile", data=big, headers={"Content-Type": MSGPACK}
    ) as resp:
        assert resp.status == 413

    async def serving() -> bool:
        status, _ = await get_json(client, "/v1/sync/heads")
        return status == 200

    await wait_for(serving)
