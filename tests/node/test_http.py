"""The HTTP API in-process (aiohttp TestServer on 127.0.0.1) against a real nats-server and SQLite.

Covers the contract in DESIGN.md: authentication, status, publishing and reading practices, raw
records, search with filters, pagination and facets, SSE, the OpenAPI document, and bad input at
every boundary: a clear JSON error, nothing stored, and the node keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from citymesh.node.app import create_app
from citymesh.node.config import Home, NodeConfig
from citymesh.node.keys import NODE
from citymesh.protocol import api
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.identity import identity_text

from .conftest import MakeHome, StartNode, practice, wait_for

# The example body of DESIGN.md (POST /v1/practices).
EXAMPLE: dict[str, Any] = {
    "addr": "welcome-desk",
    "title": {"en": "Welcome desk for newcomers"},
    "summary": {"en": "One door for housing, language classes and registration."},
    "description": "A *single* desk in the city hall.",
    "status": "active",
    "sectors": ["HOUSING"],
    "target_groups": ["REFUGEE"],
    "period": {"start": "2021-03-01"},
    "contact": {"role_mailbox": "welcome@mechelen.example.org"},
    "licence": "CC-BY-4.0",
}


def body(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE, **changes}


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    home: Home
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.client.get(path, headers=self.auth, **kwargs) as resp:
            return resp.status, await resp.json()

    async def post(self, path: str, data: Any, **kwargs: Any) -> tuple[int, Any]:
        async with self.client.post(path, headers=self.auth, json=data, **kwargs) as resp:
            return resp.status, await resp.json()

    async def post_raw(self, data: bytes, content_type: str = "application/json") -> Any:
        headers = {**self.auth, "Content-Type": content_type}
        return await self.client.post("/v1/practices", headers=headers, data=data)

    @property
    def identity(self) -> str:
        return identity_text(self.app[NODE].identity)

    async def count(self, table: str = "records") -> int:
        node = self.app[NODE]
        store = node.writer.store
        assert store is not None

        def run() -> int:
            return int(store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

        return await node.writer.run(run)

    async def wait_ready(self) -> None:
        """Ready to publish, and the start-up records (profile, head) are in, so counts hold."""

        async def ready() -> bool:
            status, st = await self.get("/v1/status")
            assert status == 200, st
            return bool(st["ready_to_publish"]) and st["records"].get("head", 0) >= 1

        await wait_for(ready)


OpenApi = Any  # a callable: ``await open_api(home, relays, config=None) -> Api``


@pytest.fixture
async def open_api() -> AsyncIterator[OpenApi]:
    """Start the app (node + HTTP API) in-process on 127.0.0.1; closed at teardown."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def open_(home: Home, relays: list[str], config: NodeConfig | None = None) -> Api:
        app = create_app(home, config or home.load_config(), relays=relays)
        client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(app, handler_cancellation=True)
        )
        await client.start_server()
        clients.append(client)
        return Api(client=client, app=app, home=home, token=home.load_token())

    yield open_
    for client in reversed(clients):
        await client.close()


@pytest.fixture
async def node_api(nats_url: str, make_home: MakeHome, open_api: OpenApi) -> Api:
    # nats_url first: the relay is set up before, and torn down after, the node.
    home = make_home("Mechelen", "BEL", relays=[nats_url])
    a: Api = await open_api(home, [nats_url])
    await a.wait_ready()
    return a


def assert_error(status: int, payload: Any, want_status: int, code: str | None = None) -> None:
    assert status == want_status, payload
    detail = msgspec.convert(payload, api.ErrorResponse).error
    if code is not None:
        assert detail.code == code, payload
    assert detail.message


# -- authentication ------------------------------------------------------------------------------
async def test_healthz_needs_no_token(node_api: Api) -> None:
    async with node_api.client.get("/healthz") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        health = msgspec.json.decode(await resp.read(), type=api.Health)
    assert health.status == "ok"
    assert health.protocol >= 1


async def test_every_other_route_needs_the_token(node_api: Api) -> None:
    before = await node_api.count()
    some_id = "ab" * 32
    routes = [
        ("GET", "/v1/status"),
        ("GET", "/v1/practices"),
        ("POST", "/v1/practices"),
        ("GET", f"/v1/practices/{node_api.identity}/welcome-desk"),
        ("GET", f"/v1/records/{some_id}"),
        ("GET", "/v1/events"),
        ("GET", "/openapi.json"),
    ]
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token-wrong"},
        {"Authorization": f"Bearer {node_api.token}x"},
        {"Authorization": f"Basic {node_api.token}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {node_api.token[:-1]}"},
        {"Authorization": "Bearer tökén-wïth-nön-ascii"},
        {"Authorization": "Bearer " + "x" * 4000},
    ]
    for method, path in routes:
        for headers in bad_headers:
            async with node_api.client.request(
                method, path, headers=headers, json=EXAMPLE if method == "POST" else None
            ) as resp:
                assert resp.status == 401, (method, path, headers)
                assert resp.content_type == "application/json"
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                payload = await resp.json()
            assert_error(401, payload, 401, "unauthorized")
    # Nothing was published by the unauthenticated POSTs; the token itself still works.
    assert await node_api.count() == before
    assert await node_api.count("practices") == 0
    status, _ = await node_api.get("/v1/status")
    assert status == 200


# -- status --------------------------------------------------------------------------------------
async def test_status(node_api: Api, nats_url: str) -> None:
    status, payload = await node_api.get("/v1/status")
    assert status == 200
    st = msgspec.convert(payload, api.Status)
    node = node_api.app[NODE]
    assert st.city == "Mechelen"
    assert st.country == "BEL"
    assert st.identity == identity_text(node.identity)
    assert st.identity.startswith("cmid1")
    assert st.key.startswith("cmpk1")
    assert st.networks == ["citymesh"]
    assert st.ready_to_publish is True
    assert st.not_ready_reason is None
    assert st.seq >= 2  # genesis city record, then the head checkpoint
    assert st.records.get("city", 0) >= 1
    assert len(st.relays) == 1
    relay = st.relays[0]
    assert relay.connected is True
    assert relay.embedded is False
    assert nats_url.rsplit(":", 1)[1] in relay.url


# -- publish and read ----------------------------------------------------------------------------
async def test_publish_list_show_raw_record_and_update(node_api: Api) -> None:
    status, payload = await node_api.post("/v1/practices", EXAMPLE)
    assert status == 201, payload
    published = msgspec.convert(payload, api.Published)
    ref = f"{node_api.identity}/welcome-desk"
    assert published.ref == ref
    assert len(published.id) == 64
    assert published.seq >= 2

    status, payload = await node_api.get("/v1/practices")
    assert status == 200
    listing = msgspec.convert(payload, api.PracticeList)
    assert [item.ref for item in listing.items] == [ref]
    item = listing.items[0]
    assert item.title == "Welcome desk for newcomers"
    assert item.city == "Mechelen"
    assert item.country == "BEL"
    assert item.sectors == ["HOUSING"]
    assert item.target_groups == ["REFUGEE"]
    assert item.rating.count == 0
    assert item.replications == 0
    assert listing.next is None

    status, payload = await node_api.get(f"/v1/practices/{ref}")
    assert status == 200, payload
    detail = msgspec.convert(payload, api.PracticeDetail)
    assert detail.ref == ref
    assert detail.author == node_api.identity
    assert detail.addr == "welcome-desk"
    assert detail.seq == published.seq
    assert detail.id == published.id
    assert detail.own is True
    assert detail.practice.title == {"en": "Welcome desk for newcomers"}
    assert detail.practice.description == EXAMPLE["description"]
    assert str(detail.practice.period.start) == "2021-03-01"
    assert [(h.seq, h.id) for h in detail.history] == [(published.seq, published.id)]

    async with node_api.client.get(f"/v1/records/{published.id}", headers=node_api.auth) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/octet-stream"
        raw = await resp.read()
    record = open_envelope(raw, now_ms=int(time.time() * 1000))
    assert record.id.hex() == published.id
    assert record.header.kind == "practice"
    assert record.header.addr == "welcome-desk"
    assert record.header.author == node_api.app[NODE].identity

    # The same addr again is an update: a higher seq, two versions in the history, one item.
    status, payload = await node_api.post(
        "/v1/practices", body(title={"en": "Welcome desk, second edition"})
    )
    assert status == 201, payload
    second = msgspec.convert(payload, api.Published)
    assert second.ref == ref
    assert second.seq > published.seq
    assert second.id != published.id
    status, payload = await node_api.get(f"/v1/practices/{ref}")
    detail = msgspec.convert(payload, api.PracticeDetail)
    assert detail.seq == second.seq
    assert detail.practice.title == {"en": "Welcome desk, second edition"}
    assert [(h.seq, h.id) for h in detail.history] == [
        (second.seq, second.id),
        (published.seq, published.id),
    ]
    status, payload = await node_api.get("/v1/practices")
    listing = msgspec.convert(payload, api.PracticeList)
    assert [(i.ref, i.title) for i in listing.items] == [(ref, "Welcome desk, second edition")]
    # Both versions stay in the log and are served as raw records.
    for rid in (published.id, second.id):
        async with node_api.client.get(f"/v1/records/{rid}", headers=node_api.auth) as resp:
            assert resp.status == 200
            assert open_envelope(await resp.read(), now_ms=int(time.time() * 1000)).id.hex() == rid


# -- search --------------------------------------------------------------------------------------
async def test_list_filters_and_facets(
    node_api: Api, make_home: MakeHome, start_node: StartNode, nats_url: str
) -> None:
    mine = {
        "housing-desk": body(
            addr="housing-desk", title={"en": "Housing desk"}, sectors=["HOUSING"]
        ),
        "school-buddies": body(
            addr="school-buddies",
            title={"en": "School buddies"},
            sectors=["EDUCATION"],
            target_groups=["UAM"],
            status="pilot",
        ),
        "job-match": body(
            addr="job-match",
            title={"en": "Job matching"},
            sectors=["WORK", "HOUSING"],
            target_groups=["MIGRANT_WORKER"],
            status="regular_service",
        ),
    }
    for data in mine.values():
        status, payload = await node_api.post("/v1/practices", data)
        assert status == 201, payload
    lisbon = await start_node(make_home("Lisbon", "PRT", relays=[nats_url]), relays=[nats_url])
    await lisbon.wait_ready()
    await lisbon.publish(practice(1, sector="WORK", title="Lisbon work hub"), addr="work-hub")
    lisbon_id = identity_text(lisbon.identity)

    async def all_four() -> bool:
        status, payload = await node_api.get("/v1/practices")
        return (
            status == 200 and len(payload["items"]) == 4 and "PRT" in payload["facets"]["country"]
        )

    await wait_for(all_four)

    async def addrs(**params: str) -> set[str]:
        status, payload = await node_api.get("/v1/practices", params=params)
        assert status == 200, (params, payload)
        listing = msgspec.convert(payload, api.PracticeList)
        return {item.ref.split("/", 1)[1] for item in listing.items}

    assert await addrs(sector="HOUSING") == {"housing-desk", "job-match"}
    assert await addrs(sector="WORK") == {"job-match", "work-hub"}
    assert await addrs(sector="CRISIS") == set()
    assert await addrs(target_group="UAM") == {"school-buddies"}
    assert await addrs(target_group="MIGRANT_WORKER") == {"job-match"}
    assert await addrs(country="PRT") == {"work-hub"}
    assert await addrs(country="BEL") == {"housing-desk", "school-buddies", "job-match"}
    assert await addrs(status="pilot") == {"school-buddies"}
    assert await addrs(status="active") == {"housing-desk", "work-hub"}
    assert await addrs(q="buddies") == {"school-buddies"}
    assert await addrs(q="Lisbon hub") == {"work-hub"}
    assert await addrs(q="nothing-like-this") == set()
    assert await addrs(q="100%") == set()
    assert await addrs(sector="HOUSING", status="regular_service") == {"job-match"}
    assert await addrs(author=lisbon_id) == {"work-hub"}
    assert await addrs(author=node_api.identity, sector="WORK") == {"job-match"}
    assert await addrs(q="", sector="") == {
        "housing-desk",
        "school-buddies",
        "job-match",
        "work-hub",
    }

    status, payload = await node_api.get("/v1/practices", params={"country": "PRT"})
    (item,) = msgspec.convert(payload, api.PracticeList).items
    assert (item.city, item.country, item.title) == ("Lisbon", "PRT", "Lisbon work hub")

    status, payload = await node_api.get("/v1/practices")
    facets = msgspec.convert(payload, api.PracticeList).facets
    assert facets["sector"] == {"HOUSING": 2, "WORK": 2, "EDUCATION": 1}
    assert facets["target_group"] == {"MIGRANT_WORKER": 1, "REFUGEE": 1, "UAM": 1}
    assert facets["country"] == {"BEL": 3, "PRT": 1}
    assert facets["status"] == {"active": 2, "pilot": 1, "regular_service": 1}
    # A facet counts with its own filter left out, and with every other filter applied.
    status, payload = await node_api.get("/v1/practices", params={"sector": "HOUSING"})
    facets = msgspec.convert(payload, api.PracticeList).facets
    assert facets["sector"] == {"HOUSING": 2, "WORK": 2, "EDUCATION": 1}
    assert facets["status"] == {"active": 1, "regular_service": 1}
    assert facets["country"] == {"BEL": 2}

    # Bad query parameters: 400 naming the parameter.
    bad: list[tuple[dict[str, str], str, str]] = [
        ({"sector": "HOUSNG"}, "unknown_sector", "sector"),
        ({"target_group": "REFUGE"}, "unknown_target_group", "target_group"),
        ({"country": "be"}, "invalid", "country"),
        ({"country": "BE1"}, "invalid", "country"),
        ({"status": "finished"}, "unknown_code", "status"),
        ({"sort": "random"}, "unknown_code", "sort"),
        ({"limit": "0"}, "invalid", "limit"),
        ({"limit": "201"}, "invalid", "limit"),
        ({"limit": "ten"}, "invalid", "limit"),
        ({"author": "cmid1nothing"}, "invalid", "author"),
        ({"q": "x" * 201}, "invalid", "q"),
        ({"colour": "blue"}, "unknown_field", "colour"),
    ]
    for params, code, field in bad:
        status, payload = await node_api.get("/v1/practices", params=params)
        assert_error(status, payload, 400, code)
        assert payload["error"]["field"] == field, (params, payload)
    assert await addrs() == {"housing-desk", "school-buddies", "job-match", "work-hub"}


async def test_pagination_with_cursor(node_api: Api) -> None:
    published = set()
    for i in range(12):
        status, payload = await node_api.post(
            "/v1/practices",
            body(addr=f"practice-{i:02d}", title={"en": f"Practice {i}"}, status="pilot"),
        )
        assert status == 201, payload
        published.add(payload["ref"])

    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    first_next = None
    while True:
        params = {"limit": "5", **({"cursor": cursor} if cursor else {})}
        status, payload = await node_api.get("/v1/practices", params=params)
        assert status == 200, payload
        page = msgspec.convert(payload, api.PracticeList)
        seen += [item.ref for item in page.items]
        sizes.append(len(page.items))
        assert page.facets["status"] == {"pilot": 12}  # facets cover the whole result set
        if page.next is None:
            break
        first_next = first_next or page.next
        cursor = page.next
        assert len(sizes) < 10, "pagination does not end"
    assert sizes == [5, 5, 2]
    assert len(seen) == len(set(seen)) == 12  # no duplicates
    assert set(seen) == published  # no gaps
    # Newest first, like a page of everything at once.
    status, payload = await node_api.get("/v1/practices", params={"limit": "12"})
    assert [item["ref"] for item in payload["items"]] == seen
    assert payload["next"] is None

    assert first_next is not None
    middle = len(first_next) // 2
    flipped = "A" if first_next[middle] != "A" else "B"
    tampered = first_next[:middle] + flipped + first_next[middle + 1 :]
    # Not even cursor-shaped: 400 (the OpenAPI pattern); cursor-shaped but not issued: 422.
    for bad_cursor, want in (
        (tampered, 422),
        (first_next[:-2], 422),
        ("!!!", 400),
        ("x" * 2000, 400),
        ("AAAA", 422),
    ):
        status, payload = await node_api.get(
            "/v1/practices", params={"limit": "5", "cursor": bad_cursor}
        )
        assert_error(status, payload, want)
        assert payload["error"]["field"] == "cursor", (bad_cursor, payload)
    # A cursor only goes with the query that produced it.
    status, payload = await node_api.get(
        "/v1/practices", params={"limit": "5", "cursor": first_next, "sector": "WORK"}
    )
    assert_error(status, payload, 422)
    assert payload["error"]["field"] == "cursor"
    # ... and a different page size is still the same query.
    status, payload = await node_api.get(
        "/v1/practices", params={"limit": "7", "cursor": first_next}
    )
    assert status == 200, payload
    assert [item["ref"] for item in payload["items"]] == seen[5:]


# -- bad input -----------------------------------------------------------------------------------
def _without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    out = json.loads(json.dumps(data))
    target = out
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return out


BAD_BODIES: list[tuple[str, bytes, str, str | None]] = [
    ("not json", b'{"addr": "x", ', "malformed", None),
    ("empty", b"", "malformed", None),
    ("not utf-8", b'{"addr": "\xff\xfe"}', "malformed", None),
    ("array", b"[]", "invalid", None),
    (
        "unknown sector",
        json.dumps(body(sectors=["HOUSNG"])).encode(),
        "unknown_sector",
        "sectors[0]",
    ),
    (
        "second sector unknown",
        json.dumps(body(sectors=["HOUSING", "housing"])).encode(),
        "unknown_sector",
        "sectors[1]",
    ),
    (
        "unknown target group",
        json.dumps(body(target_groups=["REFUGE"])).encode(),
        "unknown_target_group",
        "target_groups[0]",
    ),
    ("missing addr", json.dumps(_without(EXAMPLE, "addr")).encode(), "missing_field", "addr"),
    ("missing title", json.dumps(_without(EXAMPLE, "title")).encode(), "missing_field", "title"),
    (
        "missing mailbox",
        json.dumps(_without(EXAMPLE, "contact", "role_mailbox")).encode(),
        "missing_field",
        "contact.role_mailbox",
    ),
    ("bad slug", json.dumps(body(addr="Welcome Desk")).encode(), "invalid", "addr"),
    ("slug with hyphen end", json.dumps(body(addr="desk-")).encode(), "invalid", "addr"),
    ("slug too long", json.dumps(body(addr="a" * 65)).encode(), "invalid", "addr"),
    ("unknown field", json.dumps(body(colour="blue")).encode(), "unknown_field", "colour"),
    ("sectors not a list", json.dumps(body(sectors="HOUSING")).encode(), "invalid", "sectors"),
    ("no sectors", json.dumps(body(sectors=[])).encode(), "invalid", "sectors"),
    ("bad status", json.dumps(body(status="done")).encode(), "unknown_code", "status"),
    (
        "bad mailbox",
        json.dumps(body(contact={"role_mailbox": "not a mailbox"})).encode(),
        "invalid",
        "contact.role_mailbox",
    ),
    (
        "bad date",
        json.dumps(body(period={"start": "2021-13-01"})).encode(),
        "invalid",
        "period.start",
    ),
    ("bad licence", json.dumps(body(licence="CC BY")).encode(), "invalid", "licence"),
    ("title not an object", json.dumps(body(title="Welcome")).encode(), "invalid", "title"),
    ("deep nesting", b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "", None),
]


async def test_bad_bodies_are_refused_and_nothing_is_stored(node_api: Api) -> None:
    records_before = await node_api.count()
    practices_before = await node_api.count("practices")
    outbox_before = await node_api.count("outbox")
    for name, data, code, field in BAD_BODIES:
        async with await node_api.post_raw(data) as resp:
            assert resp.content_type == "application/json", name
            payload = await resp.json()
            assert_error(resp.status, payload, 400, code or None)
        if field is not None:
            assert payload["error"]["field"] == field, (name, payload)

    # Over-long title: the error names the field and says how long it may be.
    status, payload = await node_api.post("/v1/practices", body(title={"en": "x" * 201}))
    assert_error(status, payload, 400)
    assert payload["error"]["field"].startswith("title"), payload
    assert "200" in payload["error"]["message"], payload
    # Over-long description (40000 characters of Markdown at most).
    status, payload = await node_api.post("/v1/practices", body(description="x" * 40_001))
    assert_error(status, payload, 400)
    assert payload["error"]["field"] == "description", payload

    # Wrong content types: 415.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/msgpack"):
        async with await node_api.post_raw(json.dumps(EXAMPLE).encode(), content_type) as resp:
            payload = await resp.json()
            assert_error(resp.status, payload, 415, "unsupported_media_type")
    async with node_api.client.post("/v1/practices", headers=node_api.auth) as resp:
        assert_error(resp.status, await resp.json(), 415)

    # Nothing was stored, signed or queued; the node is still serving.
    assert await node_api.count() == records_before
    assert await node_api.count("practices") == practices_before
    assert await node_api.count("outbox") == outbox_before
    status, payload = await node_api.post("/v1/practices", EXAMPLE)
    assert status == 201, payload
    assert await node_api.count("practices") == practices_before + 1
    assert await node_api.count() == records_before + 1


async def test_body_over_the_size_limit_is_413(
    nats_url: str, make_home: MakeHome, open_api: OpenApi
) -> None:
    home = make_home("Mechelen", "BEL", relays=[nats_url])
    config = msgspec.structs.replace(home.load_config(), max_body_bytes=2048)
    small: Api = await open_api(home, [nats_url], config)
    await small.wait_ready()
    before = await small.count()
    status, payload = await small.post("/v1/practices", body(description="x" * 4000))
    assert_error(status, payload, 413, "too_large")
    # Not JSON at all, but too large: the size limit comes first, nothing is parsed.
    async with await small.post_raw(b"{" * 10_000) as resp:
        assert_error(resp.status, await resp.json(), 413, "too_large")
    assert await small.count() == before
    status, payload = await small.post("/v1/practices", EXAMPLE)
    assert status == 201, payload
    assert await small.count() == before + 1


async def test_bad_urls(node_api: Api) -> None:
    ident = node_api.identity
    typo = ident[:-1] + ("q" if ident[-1] != "q" else "p")
    cases: list[tuple[str, int, str | None]] = [
        ("/v1/practices/not-an-identity/welcome-desk", 400, "author"),
        # Matches the documented pattern, fails the checksum the format states: 422.
        (f"/v1/practices/{typo}/welcome-desk", 422, "author"),
        (f"/v1/practices/{ident[:12].upper()}{ident[12:]}/welcome-desk", 400, "author"),
        (f"/v1/practices/{ident}/Welcome_Desk", 400, "addr"),
        (f"/v1/practices/{ident}/{'a' * 65}", 400, "addr"),
        (f"/v1/practices/{ident}/-desk", 400, "addr"),
        (f"/v1/practices/{ident}/no-such-practice", 404, None),
        ("/v1/records/xyz", 400, "id"),
        (f"/v1/records/{'AB' * 32}", 400, "id"),
        (f"/v1/records/{'ab' * 31}", 400, "id"),
        (f"/v1/records/{'ab' * 33}", 400, "id"),
        (f"/v1/records/{'ab' * 32}", 404, None),
        ("/v1/no-such-route", 404, None),
    ]
    for path, want, field in cases:
        async with node_api.client.get(path, headers=node_api.auth) as resp:
            assert resp.content_type == "application/json", path
            payload = await resp.json()
        assert_error(resp.status, payload, want)
        assert payload["error"]["code"] == (
            "not_found" if want == 404 else payload["error"]["code"]
        )
        assert payload["error"]["field"] == field, (path, payload)
    # A method the route does not have: 405 with Allow, still JSON.
    async with node_api.client.delete(f"/v1/records/{'ab' * 32}", headers=node_api.auth) as resp:
        assert_error(resp.status, await resp.json(), 405, "method_not_allowed")
        assert "GET" in resp.headers["Allow"]
    # Another city's identity that this node has never heard of: 404, not an error.
    status, payload = await node_api.get(
        f"/v1/practices/{identity_text(bytes(range(20)))}/welcome-desk"
    )
    assert_error(status, payload, 404, "not_found")
    status, payload = await node_api.post("/v1/practices", EXAMPLE)
    assert status == 201, payload


# -- OpenAPI -------------------------------------------------------------------------------------
def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        for v in value.values():
            found += _refs(v)
        return found
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


async def test_openapi_document(node_api: Api) -> None:
    status, doc = await node_api.get("/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    schemas = doc["components"]["schemas"]
    for name in ("PracticeIn", "Published", "PracticeList", "PracticeDetail", "Status", "Event"):
        assert name in schemas, name
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"

    routes = {
        (resource.canonical, route.method.lower())
        for resource in node_api.app.router.resources()
        for route in resource
        if route.method not in ("HEAD", "*") and resource.canonical != "/openapi.json"
    }
    assert ("/v1/practices", "post") in routes
    for path, method in routes:
        assert path in doc["paths"], path
        operation = doc["paths"][path].get(method)
        assert operation is not None, (path, method)
        assert operation["responses"], (path, method)
        for param in operation.get("parameters", []):
            if param["in"] == "path":
                assert "{" + param["name"] + "}" in path
        for placeholder in [p.strip("{}") for p in path.split("/") if p.startswith("{")]:
            assert any(
                p["in"] == "path" and p["name"] == placeholder
                for p in operation.get("parameters", [])
            ), (path, placeholder)
    assert doc["paths"]["/healthz"]["get"]["security"] == []

    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


# -- live events ---------------------------------------------------------------------------------
async def _next_event(resp: Any) -> dict[str, str]:
    fields: dict[str, str] = {}
    while True:
        line = (await resp.content.readline()).decode()
        if line == "":
            raise AssertionError("event stream ended")
        line = line.rstrip("\n")
        if not line:
            if fields:
                return fields
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        fields[name] = value


async def test_events_stream_a_published_practice(node_api: Api) -> None:
    async with node_api.client.get("/v1/events", headers=node_api.auth) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        # The comment line tells that the subscription is in place.
        assert (await asyncio.wait_for(resp.content.readline(), 10)).startswith(b":")
        status, payload = await node_api.post("/v1/practices", EXAMPLE)
        assert status == 201, payload
        published = msgspec.convert(payload, api.Published)

        async def practice_event() -> tuple[dict[str, str], api.Event]:
            while True:
                fields = await _next_event(resp)
                if fields.get("event") != "record":
                    continue
                event = msgspec.json.decode(fields["data"], type=api.Event)
                if event.kind == "practice":
                    return fields, event

        fields, event = await asyncio.wait_for(practice_event(), 15)
    assert fields["id"] == published.id
    assert event.id == published.id
    assert event.ref == published.ref
    assert event.author == node_api.identity
    assert event.seq == published.seq
    assert event.addr == "welcome-desk"
    assert event.network == "citymesh"
    # The node serves on after the listener left.
    status, payload = await node_api.get("/v1/status")
    assert status == 200


async def test_shutdown_ends_open_event_streams(node_api: Api) -> None:
    """An open SSE stream (the TUI keeps one) must not hold up shutdown (aiohttp would wait
    twice its shutdown timeout, 2 x 60 s, for the handler)."""
    async with node_api.client.get("/v1/events", headers=node_api.auth) as resp:
        assert resp.status == 200
        assert (await asyncio.wait_for(resp.content.readline(), 10)).startswith(b":")
        started = time.monotonic()
        await asyncio.wait_for(node_api.client.server.close(), 20)
        assert time.monotonic() - started < 20
        rest = await asyncio.wait_for(resp.content.read(), 10)
    assert b"event:" not in rest  # the stream simply ended
