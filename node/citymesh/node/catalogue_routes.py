"""Catalogue write routes (ratings, replications, retraction) and city routes."""

from __future__ import annotations

from aiohttp import web

from citymesh.protocol import api
from citymesh.protocol.records import Kind, Record, RetractionBody

from .cities import city_detail, list_cities
from .errors import ApiError
from .idtext import identity_text
from .keys import CURSOR_KEY, NODE, READER
from .routes import json_response, path_param, read_json

MAX_REASON = 1000
"""Longest retraction reason (the ``reason`` query parameter's maxLength in the document)."""


def _published(
    request: web.Request, ref: str, record: Record, kind: Kind, *, status: int = 201
) -> web.Response:
    """The answer to a write about a practice: what was signed, by this city."""
    return json_response(
        api.Published(
            ref=ref,
            id=record.id.hex(),
            seq=record.seq,
            kind=kind,
            author=identity_text(request.app[NODE].identity),
        ),
        status=status,
    )


def _practice_ref(request: web.Request) -> tuple[bytes, str, str]:
    author_text = path_param(request, "author")
    author, addr = api.parse_ref(f"{author_text}/{path_param(request, 'addr')}")
    return author, addr, api.format_ref(author, addr)


async def _require_practice(request: web.Request, author: bytes, addr: str, ref: str) -> None:
    node = request.app[NODE]
    assert node.writer.store is not None
    body = await node.writer.run(node.writer.store.current_body, author, "practice", addr)
    if body is None:
        raise ApiError(
            404, "unknown_practice", f"no practice {ref} here (unknown or retracted)", field="ref"
        )


def _refuse_own(request: web.Request, author: bytes, what: str) -> None:
    if author == request.app[NODE].identity:
        raise ApiError(409, "own_practice", f"a city cannot {what} its own practice", field="ref")


async def rate(request: web.Request) -> web.Response:
    author, addr, ref = _practice_ref(request)
    rating = await read_json(request, api.RatingIn)
    assert isinstance(rating, api.RatingIn)
    _refuse_own(request, author, "rate")
    await _require_practice(request, author, addr, ref)
    record = await request.app[NODE].publish(api.rating_body(rating), addr=ref)
    return _published(request, ref, record, "rating")


async def replicate(request: web.Request) -> web.Response:
    author, addr, ref = _practice_ref(request)
    replication = await read_json(request, api.ReplicationIn)
    assert isinstance(replication, api.ReplicationIn)
    body = api.replication_body(replication)
    _refuse_own(request, author, "replicate")
    await _require_practice(request, author, addr, ref)
    record = await request.app[NODE].publish(body, addr=ref)
    return _published(request, ref, record, "replication")


async def retract(request: web.Request) -> web.Response:
    author, addr, ref = _practice_ref(request)
    reason = request.query.get("reason", "")
    if len(reason) > MAX_REASON:  # refused as the document says, never cut short
        raise ApiError(400, "invalid", f"reason: at most {MAX_REASON} characters", field="reason")
    if author != request.app[NODE].identity:
        raise ApiError(
            403, "not_own", "only the city that published a practice can retract it", field="ref"
        )
    await _require_practice(request, author, addr, ref)
    record = await request.app[NODE].publish(RetractionBody(reason=reason), addr=f"practice/{addr}")
    return _published(request, ref, record, "retraction", status=200)


async def cities(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return json_response(await request.app[READER].run(list_cities, own=node.identity))


async def city(request: web.Request) -> web.Response:
    node = request.app[NODE]
    author = api.identity_from_text(path_param(request, "key"), field="key")
    detail = await request.app[READER].run(
        city_detail, author, own=node.identity, cursor_key=request.app[CURSOR_KEY]
    )
    if detail is None:
        raise ApiError(404, "unknown_city", "no records of that city here", field="key")
    return json_response(detail)


def add_catalogue_routes(app: web.Application) -> None:
    app.router.add_post("/v1/practices/{author}/{addr}/ratings", rate)
    app.router.add_post("/v1/practices/{author}/{addr}/replications", replicate)
    app.router.add_delete("/v1/practices/{author}/{addr}", retract)
    app.router.add_get("/v1/cities", cities)
    app.router.add_get("/v1/cities/{key}", city)
