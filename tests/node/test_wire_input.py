"""Bad input on the wire: hostile bytes published straight onto a network's subjects.

A running node consumes the relay. For every kind of bad message: nothing invalid is stored,
nothing stored changes, the rejection is counted under its protocol error code, and the node
keeps serving (the honest city's next record, at the very seq the bad one claimed, still arrives
and applies: the bad message neither took its place nor froze the chain).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from citymesh.node.daemon import Node
from citymesh.node.natsserver import NatsServer
from citymesh.protocol.codec import encode
from citymesh.protocol.envelope import MAX_ENVELOPE, encode_envelope, seal
from citymesh.protocol.identity import SecretKey, identity_text
from citymesh.protocol.records import MAX_PAYLOAD, PracticeBody, Record
from citymesh.protocol.signing import SIGNING_CONTEXT
from citymesh.protocol.subjects import stream_name, subject

from .conftest import MakeHome, StartNode, practice, wait_for

NETWORK = "citymesh"
STREAM = stream_name(NETWORK)
SMALL_ORDER_POINT = b"\x01" + bytes(31)
"""The Ed25519 identity point: order 1, a key every signature 'verifies' against in lax code."""
ATTACKER = SecretKey(bytes(range(32)))
TABLES = {
    "records": "SELECT id, author, seq, kind, addr, state, envelope FROM records",
    "authors": "SELECT author, applied_seq, last_id, key, frozen_seq FROM authors",
    "current": "SELECT author, kind, addr, id, seq, retracted, body FROM current",
    "practices": "SELECT author, addr, id, seq, title FROM practices",
    "cities": "SELECT author, name, country, seq FROM cities",
    "equivocations": "SELECT author, seq, id_a, id_b FROM equivocations",
    "outbox": "SELECT relay, id, sent FROM outbox",
}


# -- helpers ---------------------------------------------------------------------------------------
async def query(node: Node, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    store = node.writer.store
    assert store is not None
    return await node.writer.run(lambda: store.db.execute(sql, args).fetchall())


async def snapshot(node: Node) -> dict[str, list[tuple[Any, ...]]]:
    """Everything stored that bad input must not touch, in a stable order."""
    return {name: sorted(await query(node, sql)) for name, sql in TABLES.items()}


async def rejections(node: Node) -> dict[str, int]:
    return {str(k): int(v) for k, v in await query(node, "SELECT reason, count FROM rejections")}


async def cursor(node: Node, relay: str) -> int:
    rows = await query(node, "SELECT seq FROM cursors WHERE relay = ?", relay)
    return int(rows[0][0]) if rows else 0


async def applied(node: Node, record_id: bytes) -> bool:
    rows = await query(node, "SELECT state FROM records WHERE id = ?", record_id)
    return rows == [("applied",)]


async def head(node: Node, author: bytes) -> tuple[int, bytes | None]:
    rows = await query(node, "SELECT applied_seq, last_id FROM authors WHERE author = ?", author)
    return (int(rows[0][0]), bytes(rows[0][1])) if rows else (0, None)


def now_ms() -> int:
    return int(time.time() * 1000)


def sign_by_hand(secret: SecretKey, payload: bytes) -> bytes:
    """Envelope bytes around any payload, signed without validating anything."""
    return encode_envelope(payload, secret.sign(SIGNING_CONTEXT + payload))


def plain(record: Record) -> dict[str, Any]:
    """The record's payload as plain values, to alter and re-encode canonically."""
    value: dict[str, Any] = msgspec.msgpack.decode(record.payload)
    return value


@dataclass
class Mesh:
    """A relay, the node under test (``node``) and an honest city (``city``) whose key we hold."""

    url: str
    node: Node
    city: Node
    nc: Client
    js: JetStreamContext
    first: Record
    """The city's practice ``welcome`` (version 1), applied by the node."""

    @property
    def practice_subject(self) -> str:
        return subject(NETWORK, self.city.identity, "practice")

    async def city_next(self, body: PracticeBody, *, created: int | None = None) -> Record:
        """A genuine next record of the city, signed with its key but not published."""
        seq, last = await head(self.city, self.city.identity)
        return seal(
            self.city.key,
            body=body,
            network=NETWORK,
            author=self.city.identity,
            seq=seq + 1,
            prev=last,
            created=created if created is not None else now_ms(),
            addr="next",
        )


@pytest.fixture
async def mesh(
    nats_server: NatsServer, make_home: MakeHome, start_node: StartNode
) -> AsyncIterator[Mesh]:
    url = nats_server.client_url
    node = await start_node(make_home("Mechelen", "BEL"), relays=[url])
    city = await start_node(make_home("Ghent", "BEL"), relays=[url])
    first = await city.publish(practice(1), addr="welcome")

    async def settled() -> bool:
        # Both published their profile and start-up head, the node's own are acknowledged by the
        # relay (no outbox row changes later), and the node holds the city's whole chain.
        mine, theirs = await head(node, node.identity), await head(city, city.identity)
        unsent = await query(node, "SELECT count(*) FROM outbox WHERE sent IS NULL")
        return (
            mine[0] >= 2
            and theirs[0] >= 3
            and unsent == [(0,)]
            and await head(node, city.identity) == theirs
        )

    await wait_for(settled)
    nc = await nats.connect(url, connect_timeout=5)
    try:
        yield Mesh(url, node, city, nc, nc.jetstream(timeout=10), first)
    finally:
        await nc.close()


# -- the bad messages ------------------------------------------------------------------------------
Bad = tuple[str, bytes, str | None]
"""(subject, raw bytes, the rejection code expected; None: a duplicate, nothing to count)."""


async def random_bytes(m: Mesh) -> Bad:
    data = random.Random(20251009).randbytes(300)
    assert data[0] != 0x93  # not even an envelope header
    return m.practice_subject, data, "malformed"


async def flipped_bit(m: Mesh) -> Bad:
    genuine = await m.city_next(practice(2, title="Genuine title"))
    data = bytearray(genuine.envelope)
    at = data.index(b"Genuine title")
    data[at] ^= 0x01  # "G" -> "F": still valid text, the signature no longer covers it
    return m.practice_subject, bytes(data), "bad_signature"


async def forged_signature(m: Mesh) -> Bad:
    """The city's author, key and next seq in the payload; the signature is someone else's."""
    genuine = await m.city_next(practice(3, title="Forged in Ghent's name"))
    return m.practice_subject, sign_by_hand(ATTACKER, genuine.payload), "bad_signature"


async def small_order_signer(m: Mesh) -> Bad:
    value = plain(await m.city_next(practice(4)))
    value["signer"] = SMALL_ORDER_POINT
    return m.practice_subject, sign_by_hand(ATTACKER, encode(value)), "bad_key"


async def oversize(m: Mesh) -> Bad:
    """Over 64 KiB of payload, properly re-signed with the city's own key."""
    value = plain(await m.city_next(practice(5)))
    value["body"]["description"] = "x" * MAX_PAYLOAD
    data = sign_by_hand(m.city.key, encode(value))
    assert MAX_ENVELOPE < len(data) < MAX_ENVELOPE + 4096  # still fits the stream's limit
    return m.practice_subject, data, "too_large"


async def from_the_future(m: Mesh) -> Bad:
    genuine = await m.city_next(practice(6), created=now_ms() + 3600 * 1000)
    return m.practice_subject, genuine.envelope, "future"


async def unknown_kind(m: Mesh) -> Bad:
    value = plain(await m.city_next(practice(7)))
    value["kind"] = "gossip"
    subj = f"cm.{NETWORK}.{identity_text(m.city.identity)}.gossip"
    return subj, sign_by_hand(m.city.key, encode(value)), "unknown_kind"


async def replayed_old_version(m: Mesh) -> Bad:
    """After version 2 of ``welcome`` applied, version 1's exact bytes arrive again."""
    v2 = await m.city.publish(practice(1, title="Welcome desk, second edition"), addr="welcome")
    await wait_for(lambda: applied(m.node, v2.id))
    return m.practice_subject, m.first.envelope, None


CASES: dict[str, Callable[[Mesh], Awaitable[Bad]]] = {
    "random_bytes": random_bytes,
    "flipped_bit": flipped_bit,
    "forged_signature": forged_signature,
    "small_order_signer": small_order_signer,
    "oversize": oversize,
    "future": from_the_future,
    "unknown_kind": unknown_kind,
    "replayed_old_version": replayed_old_version,
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_rejected_counted_and_harmless(mesh: Mesh, case: str) -> None:
    node, city = mesh.node, mesh.city
    subj, data, code = await CASES[case](mesh)
    before = await snapshot(node)
    rejected_before = await rejections(node)
    current_welcome = await query(
        node, "SELECT id FROM current WHERE author = ? AND addr = 'welcome'", city.identity
    )

    # No Nats-Msg-Id: the relay stores it even when its bytes were sent before (the replay).
    ack = await mesh.js.publish(subj, data, stream=STREAM)
    await wait_for(lambda: _cursor_at(node, mesh.url, ack.seq))

    assert await snapshot(node) == before
    counted = await rejections(node)
    expected = dict(rejected_before)
    if code is not None:
        expected[code] = expected.get(code, 0) + 1
    assert counted == expected
    assert (
        await query(
            node, "SELECT id FROM current WHERE author = ? AND addr = 'welcome'", city.identity
        )
        == current_welcome
    )

    # The node keeps serving: the city's genuine next record (the seq the bad one claimed) applies.
    seq_before, _ = await head(node, city.identity)
    follow = await city.publish(practice(8, title="Still arriving"), addr="after")
    assert follow.header.seq == seq_before + 1
    await wait_for(lambda: applied(node, follow.id))
    after = await snapshot(node)
    new_ids = {r[0] for r in after["records"]} - {r[0] for r in before["records"]}
    assert new_ids == {follow.id}
    assert after["equivocations"] == []
    assert await head(node, city.identity) == (follow.header.seq, follow.id)
    assert await rejections(node) == expected


async def _cursor_at(node: Node, relay: str, seq: int) -> bool:
    return await cursor(node, relay) >= seq
