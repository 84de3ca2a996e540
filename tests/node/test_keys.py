"""Key rotation through the API: the city's identity, practices and history continue under the
new key on every node; the old key signs nothing any more."""

from __future__ import annotations

from collections import Counter
from typing import Any

from citymesh.node.keys import NODE
from citymesh.protocol.envelope import seal
from citymesh.protocol.identity import parse_public_key

from .conftest import MakeCity, practice, wait_for

PRACTICE: dict[str, Any] = {
    "addr": "welcome-desk",
    "title": {"en": "Welcome desk"},
    "status": "active",
    "sectors": ["HOUSING"],
    "contact": {"role_mailbox": "desk@city.example.org"},
}


async def test_rotation_keeps_the_city_and_refuses_the_old_key(make_city: MakeCity) -> None:
    a = await make_city("Mechelen", "BEL")
    b = await make_city("Lisbon", "PRT")
    status, first = await a.call("POST", "/v1/practices", PRACTICE)
    assert status == 201
    node = a.client.server.app[NODE]  # type: ignore[union-attr]
    old_key = node.key
    status, rotated = await a.call("POST", "/v1/keys/rotate")
    assert status == 201, rotated
    assert parse_public_key(rotated["key"]) == node.key.public_key != old_key.public_key
    assert (node.home.root / "city.key.1.old").exists()
    assert node.home.load_key().public_key == node.key.public_key
    updated = {**PRACTICE, "title": {"en": "Welcome desk, second edition"}}
    status, second = await a.call("POST", "/v1/practices", updated)
    assert status == 201 and second["ref"] == first["ref"]

    async def b_has_the_update() -> bool:
        code, detail = await b.call("GET", f"/v1/practices/{first['ref']}")
        return code == 200 and detail["practice"]["title"]["en"].endswith("second edition")

    await wait_for(b_has_the_update)
    _, detail = await b.call("GET", f"/v1/practices/{first['ref']}")
    assert [h["seq"] for h in detail["history"]] == [second["seq"], first["seq"]]
    _, city = await b.call("GET", f"/v1/cities/{a.identity}")
    assert city["key"] == rotated["key"]

    # A record signed with the old key after the rotation is refused everywhere.
    store = b.client.server.app[NODE].writer.store  # type: ignore[union-attr]
    seq, prev = store.applied_head(node.identity)
    forged = seal(
        old_key,
        body=practice(9),
        network=node.network,
        author=node.identity,
        seq=seq + 1,
        prev=prev,
        created=1_900_000_000_000,
        addr="forged",
    )
    result = store.ingest([forged], Counter(), now_ms=1_900_000_000_000)
    assert result.rejected["chain"] == 1 and not result.stored
