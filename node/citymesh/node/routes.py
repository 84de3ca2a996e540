"""HTTP handlers: typed, happy-path; errors are translated once in middlewares.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from typing import Any

import msgspec
from aiohttp import web

from citymesh.protocol import PROTOCOL_VERSION, api
from citymesh.protocol.identity import fingerprint, identity_text, public_key_text
from citymesh.protocol.records import Record, Slug

from . import queries, trust_view
from .daemon import EMBEDDED, Node
from .errors import ApiError
from .keys import CURSOR_KEY, NODE, READER
from .search import search_practices

VERSION = "0.1.0"
EVENTS_CLOSING = web.AppKey("events_closing", asyncio.Event)
SSE_PING_SECONDS = 15.0


def json_response(value: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(value), content_type="application/json"
    )


async def read_json(request: web.Request, type_: type[msgspec.Struct]) -> object:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="send the body as application/json")
    body = await request.read()
    try:
        try:
            return msgspec.json.decode(body, type=type_)
        except msgspec.ValidationError as err:
            # JSON has one number type: 13.0 is the integer 13 (JSON Schema agrees), but msgspec
            # refuses a float where an int belongs. Retry with integral floats as ints.
            try:
                value, changed = _integral_floats_as_ints(msgspec.json.decode(body))
            except (msgspec.DecodeError, RecursionError):
                raise err from None
            if not changed:
                raise
            return msgspec.convert(value, type_)
    except UnicodeDecodeError as err:  # msgspec raises it (not DecodeError) for bad UTF-8
        raise msgspec.DecodeError(f"body is not UTF-8: {err.reason}") from None


def _integral_floats_as_ints(value: object) -> tuple[object, bool]:
    if isinstance(value, float) and value.is_integer():
        return int(value), True
    if isinstance(value, list):
        items = [_integral_floats_as_ints(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    if isinstance(value, dict):
        pairs = {k: _integral_floats_as_ints(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(c for _, c in pairs.values())
    return value, False


_PATH_TYPES: dict[str, Any] = {
    "author": api.IdentityText,
    "key": api.IdentityText,
    "addr": Slug,
    "id": api.HexId,
}


def path_param(request: web.Request, name: str) -> str:
    """A path parameter checked against the type the OpenAPI document gives it (400 if not);
    rules the document states only in words (checksums) are the parsers' (422)."""
    value = request.match_info[name]
    try:
        return str(msgspec.convert(value, _PATH_TYPES[name]))
    except msgspec.ValidationError as err:
        message = str(err).split(" - at `", 1)[0]
        raise ApiError(400, "invalid", f"{name}: {message}", field=name) from None


async def healthz(request: web.Request) -> web.Response:
    return json_response(api.Health(protocol=PROTOCOL_VERSION, version=VERSION))


async def status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    kinds, rejected = await request.app[READER].run(queries.counts)
    unverified = await request.app[READER].run(trust_view.unverified_records)
    seq, _ = await node.own_head()
    relays = []
    for name, link in node.links.items():
        pending = await node.writer.run(node.writer.store.outbox_size, name)  # type: ignore[union-attr]
        relays.append(
            api.RelayStatus(
                url=link.url if name != EMBEDDED else f"{link.url} (embedded)",
                connected=link.state.connected,
                lag=max(0, link.state.stream_last - link.state.cursor),
                last_error=link.state.last_error,
                cursor=link.state.cursor,
                outbox_pending=pending,
                not_permitted=link.state.not_permitted,
                embedded=name == EMBEDDED,
            )
        )
    ready = await node.ready()
    return json_response(
        api.Status(
            city=node.config.city.name,
            country=node.config.city.country,
            identity=identity_text(node.identity),
            fingerprint=fingerprint(node.identity),
            key=public_key_text(node.key.public_key),
            key_fingerprint=fingerprint(node.key.public_key),
            seq=seq,
            networks=[node.network],
            relays=relays,
            records=kinds,  # type: ignore[arg-type]
            rejected=rejected,
            unverified=unverified,
            ready_to_publish=ready,
            not_ready_reason=None if ready else "waiting for relays to confirm this city's chain",
            version=VERSION,
        )
    )


async def publish_practice(request: web.Request) -> web.Response:
    node = request.app[NODE]
    practice = await read_json(request, api.PracticeIn)
    assert isinstance(practice, api.PracticeIn)
    record = await node.publish(api.practice_body(practice), addr=practice.addr)
    return json_response(
        api.Published(
            ref=api.format_ref(node.identity, practice.addr),
            id=record.id.hex(),
            seq=record.seq,
            author=identity_text(node.identity),
        ),
        status=201,
    )


async def list_practices(request: web.Request) -> web.Response:
    params = {k: v for k, v in request.query.items() if v != ""}
    query = msgspec.convert(params, api.PracticeQuery, strict=False)
    result = await request.app[READER].run(search_practices, query, key=request.app[CURSOR_KEY])
    return json_response(result)


async def practice_detail(request: web.Request) -> web.Response:
    node = request.app[NODE]
    author_text, addr = path_param(request, "author"), path_param(request, "addr")
    author = api.identity_from_text(author_text)
    today = datetime.datetime.now(datetime.UTC).date()
    detail = await request.app[READER].run(
        queries.practice_detail, author, addr, own=node.identity, today=today
    )
    if detail is None:
        raise web.HTTPNotFound(reason=f"no practice {request.match_info['author']}/{addr} here")
    return json_response(detail)


async def raw_record(request: web.Request) -> web.Response:
    record_id = api.parse_record_id(path_param(request, "id"))
    envelope = await request.app[READER].run(queries.raw_record, record_id)
    if envelope is None:
        raise web.HTTPNotFound(reason="no such record here")
    return web.Response(body=envelope, content_type="application/octet-stream")


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``data:`` line (an `api.Event`) per record applied."""
    node: Node = request.app[NODE]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    closing = request.app[EVENTS_CLOSING]
    await response.prepare(request)
    await response.write(b": citymesh events\n\n")
    async with node.events() as queue:
        while not closing.is_set():
            rec = await _next_record(queue, closing)
            if rec is None:
                if not closing.is_set():
                    await response.write(b": ping\n\n")
                continue
            h = rec.header
            ref = None
            if h.kind == "practice":
                ref = api.format_ref(h.author, h.addr)
            elif h.kind in ("rating", "replication"):
                ref = h.addr
            event = api.Event(
                id=rec.id.hex(),
                kind=h.kind,
                author=identity_text(h.author),
                seq=h.seq,
                addr=h.addr,
                network=h.network,
                ref=ref,
            )
            with contextlib.suppress(ConnectionResetError):
                await response.write(
                    b"event: record\nid: "
                    + rec.id.hex().encode()
                    + b"\ndata: "
                    + msgspec.json.encode(event)
                    + b"\n\n"
                )
    return response


async def _next_record(queue: asyncio.Queue[Record], closing: asyncio.Event) -> Record | None:
    """The next applied record; None after SSE_PING_SECONDS or once the app shuts down."""
    get = asyncio.ensure_future(queue.get())
    stop = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait(
            {get, stop}, timeout=SSE_PING_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stop.cancel()
        if not get.done():
            get.cancel()
    return get.result() if get.done() and not get.cancelled() else None


async def _end_event_streams(app: web.Application) -> None:
    """On shutdown, end open SSE responses, or shutdown waits for them (2 x shutdown_timeout)."""
    app[EVENTS_CLOSING].set()


def add_routes(app: web.Application) -> None:
    app[EVENTS_CLOSING] = asyncio.Event()
    app.on_shutdown.append(_end_event_streams)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/practices", publish_practice)
    app.router.add_get("/v1/practices", list_practices)
    app.router.add_get("/v1/practices/{author}/{addr}", practice_detail)
    app.router.add_get("/v1/records/{id}", raw_record)
    app.router.add_get("/v1/events", events)
