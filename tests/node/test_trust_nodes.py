"""Trust across nodes and a relay: a steward's network decides whose ratings count on every node
that follows it; a non-member's are shown as unverified; a revoked city's new ratings stop
counting everywhere while its earlier ones stay, marked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from citymesh.node.app import create_app
from citymesh.node.config import Follow
from citymesh.node.natsserver import NatsServer

from .conftest import City, MakeHome, wait_for
from .test_catalogue import PRACTICE
from .test_indicators import preview_body

MakeFollower = Callable[..., Awaitable[City]]


@pytest.fixture
async def make_node(nats_server: NatsServer, make_home: MakeHome) -> AsyncIterator[MakeFollower]:
    """``await make_node(name, country, follow=[identity text, ...])``."""
    clients: list[TestClient[Any, Any]] = []

    async def make(name: str, country: str, *, follow: list[str] | None = None) -> City:
        home = make_home(name, country, relays=[nats_server.client_url])
        if follow:
            config = msgspec.structs.replace(
                home.load_config(), follow=[Follow(network="citymesh", stewards=follow)]
            )
            home.save_config(config)
        client = TestClient(TestServer(create_app(home, home.load_config())))
        await client.start_server()
        clients.append(client)
        return City(client, home.load_token())

    yield make
    for client in reversed(clients):
        await client.close()


async def ok(city: City, method: str, path: str, body: Any = None) -> Any:
    status, answer = await city.call(method, path, body)
    assert status in (200, 201), (status, answer)
    return answer


async def test_members_count_outsiders_do_not_and_revocation_reaches_every_node(
    make_node: MakeFollower,
) -> None:
    steward = await make_node("Brussels", "BEL")
    follower = await make_node("Lyon", "FRA", follow=[steward.identity])
    a = await make_node("Mechelen", "BEL")
    b = await make_node("Ghent", "BEL")
    x = await make_node("Elsewhere", "NLD")

    await ok(steward, "POST", "/v1/network", {"title": "Cities", "stewards": [steward.identity]})
    for member, name in ((a, "Mechelen"), (b, "Ghent"), (follower, "Lyon")):
        await ok(steward, "POST", "/v1/network/members", {"member": member.identity, "city": name})
    ref = (await ok(a, "POST", "/v1/practices", PRACTICE))["ref"]

    async def everyone_has(path: str) -> bool:
        for city in (steward, follower, b, x):
            if (await city.call("GET", path))[0] != 200:
                return False
        return True

    await wait_for(lambda: everyone_has(f"/v1/practices/{ref}"))
    await ok(b, "POST", f"/v1/practices/{ref}/ratings", {"score": 4})
    await ok(x, "POST", f"/v1/practices/{ref}/ratings", {"score": 1})

    async def rated(city: City, count: int, raters: int) -> bool:
        _, detail = await city.call("GET", f"/v1/practices/{ref}")
        return detail["rating"]["count"] == count and len(detail["ratings"]) == raters

    # following nodes: B counts, X is shown but does not count
    for city in (steward, follower):
        await wait_for(lambda city=city: rated(city, 1, 2))
        detail = await ok(city, "GET", f"/v1/practices/{ref}")
        marks = {r["city"]: (r["unverified"], r["revoked"]) for r in detail["ratings"]}
        assert marks == {"Ghent": (False, False), "Elsewhere": (True, False)}
        assert detail["rating"]["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 0}
        cities = {c["name"]: c for c in (await ok(city, "GET", "/v1/cities"))["items"]}
        assert cities["Elsewhere"]["unverified"] and not cities["Ghent"]["unverified"]
        assert [m["status"] for m in cities["Ghent"]["memberships"]] == ["active"]
        status = await ok(city, "GET", "/v1/status")
        assert status["unverified"] >= 2  # X's profile and rating at least
    # a node that follows no network is open: both count
    await wait_for(lambda: rated(a, 2, 2))

    # the steward revokes B: B's rating so far still counts (marked), its new one nowhere
    await ok(
        steward,
        "POST",
        "/v1/network/members",
        {"member": b.identity, "status": "revoked", "reason": "left the network"},
    )

    async def revoked_seen() -> bool:
        _, detail = await follower.call("GET", f"/v1/cities/{b.identity}")
        return bool(detail.get("revoked"))

    await wait_for(revoked_seen)
    await ok(b, "POST", f"/v1/practices/{ref}/ratings", {"score": 1})

    async def refused_on(city: City) -> bool:
        status = await ok(city, "GET", "/v1/status")
        return status["rejected"].get("revoked", 0) >= 1

    for city in (steward, follower):
        await wait_for(lambda city=city: refused_on(city))
        detail = await ok(city, "GET", f"/v1/practices/{ref}")
        ghent = next(r for r in detail["ratings"] if r["city"] == "Ghent")
        assert (ghent["score"], ghent["revoked"], ghent["unverified"]) == (4, True, False)
        assert detail["rating"]["count"] == 1
    # B's own log keeps its new rating
    own = await ok(b, "GET", f"/v1/practices/{ref}")
    assert own["own_rating"]["score"] == 1


async def test_a_node_will_not_sign_past_the_networks_hourly_limit(make_node: MakeFollower) -> None:
    steward = await make_node("Brussels", "BEL")
    await ok(
        steward,
        "POST",
        "/v1/network",
        {"title": "Cities", "stewards": [steward.identity], "max_records_per_hour": 6},
    )
    city = await make_node("Lyon", "FRA", follow=[steward.identity])
    await ok(steward, "POST", "/v1/network/members", {"member": city.identity, "city": "Lyon"})

    async def follows_the_limit() -> bool:
        status, answer = await city.call("GET", "/v1/status")
        return status == 200 and "network" in answer["records"]

    await wait_for(follows_the_limit)
    statuses = []
    for i in range(8):
        body = {**PRACTICE, "addr": f"desk-{i}"}
        headers = {"Authorization": f"Bearer {city.token}"}
        async with city.client.post("/v1/practices", json=body, headers=headers) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                error = (await resp.json())["error"]
                assert error["code"] == "rate_limited" and "per hour" in error["message"]
                assert int(resp.headers["Retry-After"]) > 0
                break
    assert statuses[-1] == 429 and set(statuses[:-1]) <= {201}, statuses
    # what it did sign stays within the limit, so the steward's node took every record
    _, mine = await city.call("GET", "/v1/status")

    async def steward_has_all() -> bool:
        _, detail = await steward.call("GET", f"/v1/cities/{city.identity}")
        return detail.get("seq") == mine["seq"]

    await wait_for(steward_has_all)
    _, status = await steward.call("GET", "/v1/status")
    assert "rate_limited" not in status["rejected"]


async def test_a_city_that_lost_its_key_is_re_admitted_and_linked(
    make_node: MakeFollower,
) -> None:
    steward = await make_node("Brussels", "BEL")
    follower = await make_node("Lyon", "FRA", follow=[steward.identity])
    lost = await make_node("Ghent", "BEL")
    await ok(steward, "POST", "/v1/network", {"title": "Cities", "stewards": [steward.identity]})
    await ok(steward, "POST", "/v1/network/members", {"member": lost.identity, "city": "Ghent"})
    ref = (await ok(lost, "POST", "/v1/practices", PRACTICE))["ref"]
    await wait_for(lambda: follower_has(follower, ref))
    # Ghent loses its key: a new node, a new identity; the steward revokes the old one and
    # re-admits the city under the new one, naming the identity it replaces
    again = await make_node("Ghent", "BEL")
    await ok(
        steward,
        "POST",
        "/v1/network/members",
        {"member": lost.identity, "status": "revoked", "reason": "key lost"},
    )
    await ok(
        steward,
        "POST",
        "/v1/network/members",
        {"member": again.identity, "city": "Ghent", "replaces": lost.identity},
    )
    # a malformed link is refused and signs nothing
    status, err = await steward.call(
        "POST",
        "/v1/network/members",
        {"member": again.identity, "city": "Ghent", "replaces": "cmid1nope"},
    )
    assert status == 400 and err["error"]["field"] == "replaces"

    async def linked() -> bool:
        _, new = await follower.call("GET", f"/v1/cities/{again.identity}")
        _, old = await follower.call("GET", f"/v1/cities/{lost.identity}")
        return new.get("continues") == lost.identity and old.get("continued_by") == again.identity

    await wait_for(linked)
    _, old = await follower.call("GET", f"/v1/cities/{lost.identity}")
    assert old["revoked"] and not old["unverified"]
    # the old identity's practice, published before the revocation, still counts and shows
    detail = await ok(follower, "GET", f"/v1/practices/{ref}")
    assert detail["revoked"] and not detail["unverified"]
    listed = {c["identity"]: c for c in (await ok(follower, "GET", "/v1/cities"))["items"]}
    assert listed[again.identity]["continues"] == lost.identity


async def follower_has(city: City, ref: str) -> bool:
    return (await city.call("GET", f"/v1/practices/{ref}"))[0] == 200


async def test_the_networks_disclosure_threshold_is_a_floor(make_node: MakeFollower) -> None:
    steward = await make_node("Brussels", "BEL")
    await ok(
        steward,
        "POST",
        "/v1/network",
        {"title": "Cities", "stewards": [steward.identity], "min_count_threshold": 50},
    )
    member = await make_node("Lyon", "FRA", follow=[steward.identity])
    open_node = await make_node("Elsewhere", "NLD")

    async def follows() -> bool:
        status = await ok(member, "GET", "/v1/status")
        return "network" in status["records"]

    await wait_for(follows)
    counts = [30, 120, 45, 260, 70, 95, 60, 410]
    for asked, want in ((None, 50), (12, 50), (80, 80)):
        body = preview_body(counts)
        if asked is not None:
            body["threshold"] = asked
        preview = await ok(member, "POST", "/v1/indicators/preview", body)
        assert preview["method"]["threshold"] == want, asked
        small = [c for c in preview["cells"] if c["reason"] == "primary"]
        assert small and all(c["value"] is None for c in small)
    # a node that follows no network keeps the default
    preview = await ok(open_node, "POST", "/v1/indicators/preview", preview_body(counts))
    assert preview["method"]["threshold"] == 10
    assert not [c for c in preview["cells"] if c["reason"] == "primary"]
