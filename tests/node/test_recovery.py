"""Taking an identity back after a theft: a rotation signed by a genesis recovery key.

The thief holds the city's signing key and publishes with it; the city signs a rotation with an
offline recovery key at the same seq. Within the window the recovery wins on every node, in any
order of arrival: the thief's records are superseded, its later ones refused, and the city goes on
under its new key with its history before the theft intact.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nats
from aiohttp.test_utils import TestClient, TestServer

from citymesh.node.app import create_app
from citymesh.node.config import CityConfig, Home, NodeConfig
from citymesh.node.keys import NODE
from citymesh.node.natsserver import NatsServer
from citymesh.node.setup import init_home
from citymesh.node.store import Store
from citymesh.node.store.apply import RECOVERY_WINDOW_MS
from citymesh.protocol.envelope import seal
from citymesh.protocol.identity import SecretKey, identity_of, public_key_text
from citymesh.protocol.records import KeyRotationBody, Record
from citymesh.protocol.signing import rotation_message
from citymesh.protocol.subjects import subject
from tests.protocol.builders import NETWORK, NOW_MS, make_genesis, secret_key

from .conftest import City, practice, wait_for
from .test_catalogue import PRACTICE
from .test_store import Chain, city

LATER = NOW_MS + 10**9


@dataclass
class Theft:
    honest: list[Record]
    """seq 1..3, before the theft."""
    stolen: list[Record]
    """seq 4..6, signed by the thief with the stolen key."""
    recovery: Record
    """seq 4, a rotation signed by the recovery key."""
    after: list[Record]
    """seq 5..6 under the new key, following the recovery."""
    author: bytes


def theft(*, delay_ms: int = 3_600_000) -> Theft:
    key, rescue, new = secret_key(1), secret_key(2), secret_key(3)
    chain = Chain(key, make_genesis(key, recovery=[rescue.public_key], salt=b"recovery"))
    chain.add(city("Mechelen", "BEL"))
    chain.add(practice(1), "desk")
    chain.add(practice(2), "cafe")
    honest = list(chain.records)
    stolen = [chain.add(practice(10 + i, title=f"Scam {i}"), f"scam-{i}") for i in range(3)]
    author = identity_of(chain.genesis)
    body = KeyRotationBody(
        new_key=new.public_key,
        counter_signature=new.sign(rotation_message(author, new.public_key)),
        by_recovery=True,
    )
    created = stolen[0].header.created + delay_ms
    recovery = seal(
        rescue,
        body=body,
        network=NETWORK,
        author=author,
        seq=4,
        prev=honest[-1].id,
        created=created,
    )
    after, prev = [], recovery.id
    for seq in (5, 6):
        rec = seal(
            new,
            body=practice(20 + seq),
            network=NETWORK,
            author=author,
            seq=seq,
            prev=prev,
            created=created + seq,
            addr=f"after-{seq}",
        )
        after.append(rec)
        prev = rec.id
    return Theft(honest, stolen, recovery, after, author)


def state(store: Store, author: bytes) -> tuple[object, ...]:
    head = store.applied_head(author)
    frozen = store.db.execute(
        "SELECT frozen_seq FROM authors WHERE author = ?", (author,)
    ).fetchone()[0]
    practices = sorted(
        str(r[0])
        for r in store.db.execute("SELECT addr FROM practices WHERE author = ?", (author,))
    )
    return head, frozen, practices, store.current_key(author)


def test_the_recovery_wins_in_any_order(tmp_path: Path) -> None:
    t = theft()
    everything = [*t.honest, *t.stolen, t.recovery, *t.after]
    want = (
        (6, t.after[-1].id),
        None,
        ["after-5", "after-6", "cafe", "desk"],
        secret_key(3).public_key,
    )
    rng = random.Random(5)
    orders = [everything, [*t.honest, t.recovery, *t.after, *t.stolen]]
    for _ in range(6):
        shuffled = list(everything)
        rng.shuffle(shuffled)
        orders.append(shuffled)
    for i, order in enumerate(orders):
        store = Store(tmp_path / f"order{i}.db")
        for start in range(0, len(order), 2):
            store.ingest(order[start : start + 2], Counter(), now_ms=LATER)
        # A record of the new key that came while the thief's branch was applied cannot be
        # checked then and is not kept: the gap behind the recovery makes the node read it
        # again (repair.py), as here.
        store.ingest(t.after, Counter(), now_ms=LATER)
        assert state(store, t.author) == want, f"order {i}"


def test_the_thiefs_later_records_are_refused_after_the_recovery(tmp_path: Path) -> None:
    t = theft()
    store = Store(tmp_path / "later.db")
    store.ingest([*t.honest, *t.stolen], Counter(), now_ms=LATER)
    assert store.applied_head(t.author)[0] == 6  # the theft, as nodes first see it
    result = store.ingest([t.recovery], Counter(), now_ms=LATER)
    assert store.applied_head(t.author) == (4, t.recovery.id)
    assert not result.rejected
    superseded = store.db.execute(
        "SELECT count(*) FROM records WHERE author = ? AND state = 'superseded'", (t.author,)
    ).fetchone()
    assert superseded == (3,)
    store.ingest(t.after, Counter(), now_ms=LATER)
    assert store.applied_head(t.author)[0] == 6


def test_past_the_window_the_fork_freezes_the_author(tmp_path: Path) -> None:
    t = theft(delay_ms=RECOVERY_WINDOW_MS + 60_000)
    store = Store(tmp_path / "late.db")
    store.ingest([*t.honest, *t.stolen, t.recovery], Counter(), now_ms=LATER)
    frozen = store.db.execute(
        "SELECT frozen_seq FROM authors WHERE author = ?", (t.author,)
    ).fetchone()
    assert frozen == (4,)


def test_a_recovery_key_not_in_the_genesis_is_refused(tmp_path: Path) -> None:
    t = theft()
    other: SecretKey = secret_key(7)
    forged = seal(
        other,
        body=t.recovery.body,
        network=NETWORK,
        author=t.author,
        seq=4,
        prev=t.honest[-1].id,
        created=t.recovery.header.created,
    )
    store = Store(tmp_path / "forged.db")
    store.ingest([*t.honest, *t.stolen], Counter(), now_ms=LATER)
    assert store.ingest([forged], Counter(), now_ms=LATER).rejected == Counter(chain=1)
    assert store.applied_head(t.author)[0] == 6


# -- through the node: init with recovery keys, a theft, `POST /v1/keys/recover` ----------------
async def test_a_node_takes_its_identity_back_with_a_recovery_key(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    rescue = SecretKey(os.urandom(32))
    homes = []
    for name, recovery in (("Mechelen", [rescue.public_key]), ("Lyon", [])):
        home = Home(tmp_path / name.lower())
        config = NodeConfig(
            city=CityConfig(name=name, country="BEL"),
            relays=[nats_server.client_url],
            listen="127.0.0.1:0",
        )
        init_home(home, config, recovery=recovery)
        homes.append(home)
    assert homes[0].load_genesis().recovery == [rescue.public_key]
    clients = []
    try:
        for home in homes:
            client = TestClient(TestServer(create_app(home, home.load_config())))
            await client.start_server()
            clients.append(City(client, home.load_token()))
        city, other = clients
        stolen = homes[0].load_key()  # the thief copies the signing key
        status, _ = await city.call("POST", "/v1/practices", PRACTICE)
        assert status == 201

        # the wrong key, a malformed one: refused, nothing signed
        wrong = {"recovery_key": SecretKey(os.urandom(32)).to_text()}
        status, err = await city.call("POST", "/v1/keys/recover", wrong)
        assert (status, err["error"]["code"]) == (422, "not_recovery_key")
        status, err = await city.call("POST", "/v1/keys/recover", {"recovery_key": "cmsk1nope"})
        assert status == 400 and err["error"]["field"] == "recovery_key"

        status, rotated = await city.call(
            "POST", "/v1/keys/recover", {"recovery_key": rescue.to_text()}
        )
        assert status == 201, rotated
        assert rotated["key"] == public_key_text(homes[0].load_key().public_key)
        assert homes[0].load_key().public_key != stolen.public_key

        # the thief signs the next record with the stolen key: refused on the other node
        author = homes[0].identity()
        head, last = await clients[0].client.server.app[NODE].own_head()  # type: ignore[union-attr]
        forged = seal(
            stolen,
            body=practice(66, title="Scam"),
            network="citymesh",
            author=author,
            seq=head + 1,
            prev=last,
            created=int(time.time() * 1000),
            addr="scam",
        )
        nc = await nats.connect(nats_server.client_url)
        try:
            await nc.jetstream().publish(subject("citymesh", author, "practice"), forged.envelope)
        finally:
            await nc.close()

        async def refused() -> bool:
            _, status = await other.call("GET", "/v1/status")
            return status["rejected"].get("chain", 0) >= 1

        await wait_for(refused)
        # the city goes on under its new key, its history intact, on both nodes
        status, published = await city.call("POST", "/v1/practices", {**PRACTICE, "addr": "next"})
        assert status == 201, published

        async def both_have_it() -> bool:
            for node in (city, other):
                listed = (await node.call("GET", f"/v1/practices?author={city.identity}"))[1]
                if {i["ref"].split("/")[1] for i in listed["items"]} != {"welcome-desk", "next"}:
                    return False
            return True

        await wait_for(both_have_it)
        _, detail = await other.call("GET", f"/v1/cities/{city.identity}")
        assert detail["key"] == rotated["key"] and not detail["equivocated"]
    finally:
        for c in clients:
            await c.client.close()
