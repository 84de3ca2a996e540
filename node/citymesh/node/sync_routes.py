"""Sync routes for peers: per-author heads, records after a seq (or by id), negentropy rounds,
coded symbols of a rateless IBLT (the sketch).

They serve signed public records and change nothing, so they need no token (middlewares.py lists
them as public): a peer verifies every envelope it receives, exactly as if a relay had sent it.
Held records (beyond a gap, not yet checked against their chain) are not served; evidence of
equivocation is. Schemas: `citymesh.protocol.api_sync`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
from aiohttp import web

from citymesh.protocol import api, api_sync, sketch
from citymesh.protocol.identity import identity_text
from citymesh.protocol.reconcile import ItemSet, check_message, respond

from .errors import ApiError
from .keys import NODE, READER
from .routes import read_json

MSGPACK = "application/msgpack"
SYNC_PATHS = frozenset(
    {"/v1/sync/heads", "/v1/sync/records", "/v1/sync/reconcile", "/v1/sync/sketch"}
)
"""Public (no token): read-only views of signed records."""

_msgpack = msgspec.msgpack.Encoder()
_reconcile_msgpack = msgspec.msgpack.Decoder(api_sync.ReconcileIn)
_sketch_msgpack = msgspec.msgpack.Decoder(api_sync.SketchIn)

Scope = tuple[str | None, int | None, int | None]


@dataclass
class ItemCache:
    """The reconcile item set per scope, rebuilt when the database changed (``data_version``).

    Only the reader thread touches it (one connection, one thread)."""

    version: int = -1
    sets: dict[Scope, ItemSet] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


ITEMS = web.AppKey("sync_items", ItemCache)


@dataclass
class SketchCache:
    """The coded symbols of this node's record ids per scope, kept up to date, not rebuilt.

    Computing symbols over N ids walks each id's index sequence (O(N log m) in Python: seconds
    per 100,000 ids); kept here, an encoder only takes in the ids added or removed since the
    database last changed (``data_version``), so that cost is paid once per scope, not per
    request. The ids are read in the reader thread; the encoders are worked on in a worker
    thread, one request at a time, so that a cold start does not hold up the reader."""

    encoders: dict[Scope, tuple[int, sketch.Encoder]] = field(default_factory=dict)
    """Scope → (the data_version it was last brought up to date at, its encoder)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Requests take turns (each holds a worker thread while it works)."""
    guard: threading.Lock = field(default_factory=threading.Lock)
    """Held by the worker thread: a cancelled request releases ``lock``, not its thread."""


SKETCHES = web.AppKey("sync_sketches", SketchCache)
MAX_SKETCH_SCOPES = 4
"""Encoders kept (least recently used dropped): each holds 32 bytes per id and its symbols."""


# -- queries (reader thread) ---------------------------------------------------------------------
def heads(db: sqlite3.Connection) -> list[api_sync.SyncHead]:
    rows = db.execute(
        "SELECT author, applied_seq, last_id, frozen_seq FROM authors"
        " WHERE applied_seq > 0 OR frozen_seq IS NOT NULL ORDER BY author"
    ).fetchall()
    return [
        api_sync.SyncHead(
            author=identity_text(bytes(a)),
            seq=int(seq),
            id=None if last is None else bytes(last).hex(),
            frozen_seq=None if frozen is None else int(frozen),
        )
        for a, seq, last, frozen in rows
    ]


def records_after(
    db: sqlite3.Connection, author: bytes, after: int, limit: int
) -> api_sync.SyncRecords:
    rows = db.execute(
        "SELECT seq, envelope FROM records WHERE author = ? AND seq > ? AND state != 'held'"
        " ORDER BY seq, id LIMIT ?",
        (author, after, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return api_sync.SyncRecords(
        records=[bytes(e) for _, e in rows],
        more=more,
        last=int(rows[-1][0]) if rows else None,
    )


def records_by_id(db: sqlite3.Connection, ids: list[bytes]) -> api_sync.SyncRecords:
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT envelope FROM records WHERE id IN ({marks}) AND state != 'held'"
        " ORDER BY author, seq, id",
        ids,
    ).fetchall()
    return api_sync.SyncRecords(records=[bytes(e) for (e,) in rows])


def item_set(db: sqlite3.Connection, cache: ItemCache, scope: Scope) -> ItemSet:
    with cache.lock:
        version = int(db.execute("PRAGMA data_version").fetchone()[0])
        if version != cache.version:
            cache.sets.clear()
            cache.version = version
        found = cache.sets.get(scope)
        if found is None:
            found = cache.sets[scope] = ItemSet(_items(db, scope))
            # Keep a few scopes only: each full set costs ~100 bytes per record.
            while len(cache.sets) > 4:
                del cache.sets[next(iter(cache.sets))]
        return found


def changed_ids(
    db: sqlite3.Connection, cache: SketchCache, scope: Scope, force: bool = False
) -> tuple[int, list[bytes] | None]:
    """(data_version, the scope's ids if its encoder was brought up to date at another)."""
    version = int(db.execute("PRAGMA data_version").fetchone()[0])
    seen, _ = cache.encoders.get(scope, (-1, None))
    if seen == version and not force:
        return version, None
    sql, args = _ids_query(scope)
    return version, [bytes(i) for (i,) in db.execute(sql, args)]


def sketch_symbols(
    cache: SketchCache,
    scope: Scope,
    version: int,
    ids: list[bytes] | None,
    chunk: sketch.SketchChunk,
) -> sketch.SketchSymbols | None:
    """Bring the scope's encoder up to date with ``ids`` (if given) and answer (worker thread,
    under the cache's guard); None if it is not at ``version`` and no ids were given."""
    with cache.guard:
        seen, encoder = cache.encoders.pop(scope, (-1, sketch.Encoder()))
        if ids is not None:
            encoder.update(ids)
            seen = version
        cache.encoders[scope] = (seen, encoder)
        if seen != version:
            return None
        while len(cache.encoders) > MAX_SKETCH_SCOPES:
            del cache.encoders[next(iter(cache.encoders))]
        return sketch.respond(encoder, chunk)


def _items(db: sqlite3.Connection, scope: Scope) -> list[tuple[int, bytes]]:
    sql, args = _scoped("SELECT created, id FROM records", scope)
    return [(int(c), bytes(i)) for c, i in db.execute(sql, args)]


def _ids_query(scope: Scope) -> tuple[str, list[object]]:
    return _scoped("SELECT id FROM records", scope)


def _scoped(select: str, scope: Scope) -> tuple[str, list[object]]:
    """``select`` over the records served to peers (not held) in ``scope``."""
    kind, since, until = scope
    where = ["state != 'held'"]
    args: list[object] = []
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if since is not None:
        where.append("created >= ?")
        args.append(since)
    if until is not None:
        where.append("created < ?")
        args.append(until)
    return f"{select} WHERE {' AND '.join(where)}", args


# -- handlers ------------------------------------------------------------------------------------
async def sync_heads(request: web.Request) -> web.Response:
    node = request.app[NODE]
    found = await request.app[READER].run(heads)
    body = api_sync.SyncHeads(network=node.network, heads=found)
    return web.Response(body=msgspec.json.encode(body), content_type="application/json")


async def sync_records(request: web.Request) -> web.Response:
    params = {k: v for k, v in request.query.items() if v != ""}
    query = msgspec.convert(params, api_sync.SyncRecordsQuery, strict=False)
    reader = request.app[READER]
    if query.ids is not None:
        if query.author is not None:
            raise ApiError(422, "invalid", "give either author or ids, not both", field="ids")
        ids = list(dict.fromkeys(bytes.fromhex(h) for h in query.ids.split(",")))
        page = await reader.run(records_by_id, ids)
    elif query.author is not None:
        author = api.identity_from_text(query.author, field="author")
        page = await reader.run(records_after, author, query.after, query.limit)
    else:
        raise ApiError(422, "missing_field", "give author (and after) or ids", field="author")
    return web.Response(body=_msgpack.encode(page), content_type=MSGPACK)


_In = TypeVar("_In", api_sync.ReconcileIn, api_sync.SketchIn)


async def _read_body(
    request: web.Request, msgpack: msgspec.msgpack.Decoder[_In], schema: type[_In]
) -> _In:
    """The body as msgpack or JSON (as the content type says), checked against ``schema``."""
    ctype = request.content_type
    if ctype not in (MSGPACK, "application/json"):
        raise web.HTTPUnsupportedMediaType(reason=f"send the body as {MSGPACK} or JSON")
    data = await request.read()
    try:
        if ctype == MSGPACK:
            return msgpack.decode(data)
        # JSON numbers like 3.0 are integers too (as in every JSON route)
        parsed = await read_json(request, schema)
        assert isinstance(parsed, schema)
        return parsed
    except msgspec.ValidationError:
        raise  # names the field; translated in middlewares.py
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        what = "msgpack" if ctype == MSGPACK else "UTF-8 JSON"
        raise ApiError(400, "malformed", f"body is not {what}: {err}", field="body") from None


def _scope_of(body: api_sync.ReconcileIn | api_sync.SketchIn) -> Scope:
    if body.since is not None and body.until is not None and body.until <= body.since:
        raise ApiError(422, "invalid", "until must be after since", field="until")
    return body.kind, body.since, body.until


def _reply(request: web.Request, reply: api_sync.ReconcileOut | api_sync.SketchOut) -> web.Response:
    """In the request's encoding."""
    if request.content_type == MSGPACK:
        return web.Response(body=_msgpack.encode(reply), content_type=MSGPACK)
    return web.Response(body=msgspec.json.encode(reply), content_type="application/json")


async def sync_reconcile(request: web.Request) -> web.Response:
    body = await _read_body(request, _reconcile_msgpack, api_sync.ReconcileIn)
    check_message(body.message)
    scope = _scope_of(body)
    items = await request.app[READER].run(item_set, request.app[ITEMS], scope)
    return _reply(request, api_sync.ReconcileOut(message=respond(items, body.message)))


async def sync_sketch(request: web.Request) -> web.Response:
    body = await _read_body(request, _sketch_msgpack, api_sync.SketchIn)
    sketch.check_chunk(body.chunk)  # before the work: 422 bad_sketch / too_large
    scope = _scope_of(body)
    cache = request.app[SKETCHES]
    reader = request.app[READER]
    async with cache.lock:
        version, ids = await reader.run(changed_ids, cache, scope)
        symbols = await asyncio.to_thread(sketch_symbols, cache, scope, version, ids, body.chunk)
        if symbols is None:  # its encoder was dropped meanwhile: read the ids after all
            version, ids = await reader.run(changed_ids, cache, scope, True)
            symbols = await asyncio.to_thread(
                sketch_symbols, cache, scope, version, ids, body.chunk
            )
    assert symbols is not None
    return _reply(request, api_sync.SketchOut(symbols=symbols))


def add_sync_routes(app: web.Application) -> None:
    app[ITEMS] = ItemCache()
    app[SKETCHES] = SketchCache()
    app.router.add_get("/v1/sync/heads", sync_heads)
    app.router.add_get("/v1/sync/records", sync_records)
    app.router.add_post("/v1/sync/reconcile", sync_reconcile)
    app.router.add_post("/v1/sync/sketch", sync_sketch)
