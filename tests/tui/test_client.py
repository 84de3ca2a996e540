"""The TUI's HTTP client against a real node, finding the node from its home, and bad input:
a missing or broken home, a wrong token, a node that is not there."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from citymesh.protocol import api
from citymesh.protocol.codes import SECTORS, TARGET_GROUPS
from citymesh.tui import labels
from citymesh.tui.client import (
    ApiError,
    HomeError,
    NodeClient,
    NodeLocation,
    NodeUnavailable,
    query_params,
    resolve_home,
    url_from_listen,
)

from .conftest import MakeCity, free_port


def write_home(root: Path, config: str, token: str | None = "t" * 43) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(config, encoding="utf-8")
    if token is not None:
        (root / "api.token").write_text(token + "\n", encoding="utf-8")
    return root


def test_location_from_home(tmp_path: Path) -> None:
    home = write_home(
        tmp_path / "h", 'network = "citymesh"\nlisten = "0.0.0.0:9123"\n[city]\nname = "X"\n'
    )
    location = NodeLocation.from_home(str(home))
    assert location.url == "http://127.0.0.1:9123"  # a node listening everywhere, reached locally
    assert location.token == "t" * 43
    assert location.home == home
    default = write_home(tmp_path / "d", '[city]\nname = "X"\n')
    assert NodeLocation.from_home(default).url == "http://127.0.0.1:8470"
    # A running node started with --listen elsewhere says where in api.url.
    (home / "api.url").write_text("http://127.0.0.1:9200\n", encoding="utf-8")
    assert NodeLocation.from_home(home).url == "http://127.0.0.1:9200"
    (home / "api.url").write_text("file:///etc/passwd\n", encoding="utf-8")
    assert NodeLocation.from_home(home).url == "http://127.0.0.1:9123"


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("127.0.0.1:8470", "http://127.0.0.1:8470"),
        ("0.0.0.0:1", "http://127.0.0.1:1"),
        ("[::]:8470", "http://[::1]:8470"),
        ("[::1]:8471", "http://[::1]:8471"),
        ("node.example.org:80", "http://node.example.org:80"),
    ],
)
def test_url_from_listen(listen: str, url: str) -> None:
    assert url_from_listen(listen) == url


@pytest.mark.parametrize(
    ("config", "token", "message"),
    [
        (None, "t" * 43, "config.toml is missing (create one with `citymesh init"),
        ("listen = [", "t" * 43, "is not valid TOML"),
        ('listen = "no-port"', "t" * 43, "listen 'no-port' is not HOST:PORT"),
        ('listen = "127.0.0.1:99999"', "t" * 43, "the port must be a number"),
        ("listen = 8470", "t" * 43, "listen must be a string HOST:PORT"),
        ('listen = "127.0.0.1:8470"', None, "cannot read the API token"),
        ('listen = "127.0.0.1:8470"', "short", "holds no usable token"),
    ],
)
def test_bad_homes_are_one_clear_error(
    tmp_path: Path, config: str | None, token: str | None, message: str
) -> None:
    root = tmp_path / "home"
    root.mkdir()
    if config is not None:
        (root / "config.toml").write_text(config, encoding="utf-8")
    if token is not None:
        (root / "api.token").write_text(token, encoding="utf-8")
    with pytest.raises(HomeError) as info:
        NodeLocation.from_home(root)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_home_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYMESH_HOME", str(tmp_path / "env"))
    assert resolve_home(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_home(None) == tmp_path / "env"
    monkeypatch.delenv("CITYMESH_HOME")
    assert resolve_home(None).name == "citymesh"
    assert os.path.isabs(resolve_home(None))


def test_query_parameters_leave_out_what_is_unset() -> None:
    query = api.PracticeQuery(q="café", sector="HOUSING", min_rating=4.0, has_replications=True)
    assert query_params(query) == {
        "q": "café",
        "sector": "HOUSING",
        "sort": "relevance",
        "limit": "50",
        "has_replications": "true",
        "min_rating": "4.0",
    }


def test_every_code_has_a_label() -> None:
    assert set(labels.SECTORS) == set(SECTORS)
    assert set(labels.TARGET_GROUPS) == set(TARGET_GROUPS)


async def test_client_against_a_node(make_city: MakeCity) -> None:
    here = await make_city("Mechelen", "BEL")
    there = await make_city("Lisbon", "PRT")
    client = here.client()
    assert (await client.health()).status == "ok"
    status = await client.status()
    assert status.city == "Mechelen"
    assert status.identity == here.identity
    async with client.events() as events:
        ref = await there.publish("welcome-desk", title="Welcome desk", sectors=["HOUSING"])
        seen: list[api.Event] = []

        async def until_practice() -> None:
            async for event in events:
                seen.append(event)
                if event.kind == "practice" and event.ref == ref:
                    return

        await asyncio.wait_for(until_practice(), 20)
    assert seen[-1].author == there.identity
    listing = await client.practices(api.PracticeQuery(sector="HOUSING"))
    assert [i.ref for i in listing.items] == [ref]
    assert listing.facets["sector"] == {"HOUSING": 1}
    detail = await client.practice(ref)
    assert detail.practice.title == {"en": "Welcome desk"}
    cities = await client.cities()
    assert {c.name for c in cities.items} >= {"Mechelen", "Lisbon"}
    # Refusals come back as ApiError with the node's code and the field at fault.
    with pytest.raises(ApiError) as info:
        await client.rate(ref, api.RatingIn(score=9))  # Structs check constraints on decode
    assert info.value.status == 400
    assert info.value.field == "score"
    with pytest.raises(ApiError) as info:
        await client.practice(here.identity + "/nothing-here")
    assert info.value.status == 404
    own = await here.publish("own-practice")
    with pytest.raises(ApiError) as info:
        await client.rate(own, api.RatingIn(score=5))
    assert info.value.code == "own_practice"


async def test_wrong_token_and_no_node(make_city: MakeCity) -> None:
    here = await make_city("Mechelen", "BEL")
    wrong = NodeClient(NodeLocation(url=here.location.url, token="x" * 40))
    try:
        with pytest.raises(ApiError) as info:
            await wrong.status()
        assert info.value.status == 401
        assert info.value.code == "unauthorized"
        with pytest.raises(ApiError):
            async with wrong.events():
                pass
    finally:
        await wrong.close()
    nobody = NodeClient(NodeLocation(url=f"http://127.0.0.1:{free_port()}", token="x" * 40))
    try:
        with pytest.raises(NodeUnavailable) as gone:
            await nobody.status()
        assert "cannot reach the node at http://127.0.0.1:" in str(gone.value)
        with pytest.raises(NodeUnavailable):
            async with nobody.events():
                pass
    finally:
        await nobody.close()


async def test_event_stream_ends_when_the_node_stops(make_city: MakeCity) -> None:
    here = await make_city("Mechelen", "BEL")
    client = here.client()

    async def read_all() -> None:
        async with client.events() as events:
            async for _ in events:
                pass

    reader = asyncio.create_task(read_all())
    await asyncio.sleep(0.2)
    await here.stop()
    with pytest.raises(NodeUnavailable, match="closed"):
        await asyncio.wait_for(reader, 20)
