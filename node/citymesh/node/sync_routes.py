"""Sync routes for peers: per-author heads, records after a seq (or by id), negentropy rounds.

They serve signed public records and change nothing, so they need no token (middlewares.py lists
them as public): a peer verifies every envelope it receives, exactly as if a relay had sent it.
Held records (beyond a gap, not yet checked against their chain) are not served; evidence of
equivocation is. Schemas: `citymesh.protocol.api_sync`.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field

import msgspec
from aiohttp import web

from citymesh.protocol import api, api_sync
from citymesh.protocol.identity import identity_text
from citymesh.protocol.reconcile import ItemSet, check_message, respond

from .errors import ApiError
from .keys import NODE, READER
from .routes import read_json

MSGPACK = "application/msgpack"
SYNC_PATHS = frozenset({"/v1/sync/heads", "/v1/sync/records", "/v1/sync/reconcile"})
"""Public (no token): read-only views of signed records."""

_msgpack = msgspec.msgpack.Encoder()
_reconcile_msgpack = msgspec.msgpack.Decoder(api_sync.ReconcileIn)

Scope = tuple[str | None, int | None, int | None]


@dataclass
class ItemCache:
    """The reconcile item set per scope, rebuilt when the database changed (``data_version``).

    Only the reader thread touches it (one connection, one thread)."""

    version: int = -1
    sets: dict[Scope, ItemSet] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


ITEMS = web.AppKey("sync_items", ItemCache)


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


def _items(db: sqlite3.Connection, scope: Scope) -> list[tuple[int, bytes]]:
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
    sql = f"SELECT created, id FROM records WHERE {' AND '.join(where)}"
    return [(int(c), bytes(i)) for c, i in db.execute(sql, args)]


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


async def sync_reconcile(request: web.Request) -> web.Response:
    ctype = request.content_type
    if ctype not in (MSGPACK, "application/json"):
        raise web.HTTPUnsupportedMediaType(reason=f"send the body as {MSGPACK} or JSON")
    data = await request.read()
    body: api_sync.ReconcileIn
    try:
        if ctype == MSGPACK:
            body = _reconcile_msgpack.decode(data)
        else:  # JSON numbers like 3.0 are integers too (as in every JSON route)
            parsed = await read_json(request, api_sync.ReconcileIn)
            assert isinstance(parsed, api_sync.ReconcileIn)
            body = parsed
    except msgspec.ValidationError:
        raise  # names the field; translated in middlewares.py
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        what = "msgpack" if ctype == MSGPACK else "UTF-8 JSON"
        raise ApiError(400, "malformed", f"body is not {what}: {err}", field="body") from None
    check_message(body.message)
    if body.since is not None and body.until is not None and body.until <= body.since:
        raise ApiError(422, "invalid", "until must be after since", field="until")
    scope: Scope = (body.kind, body.since, body.until)
    items = await request.app[READER].run(item_set, request.app[ITEMS], scope)
    reply = api_sync.ReconcileOut(message=respond(items, body.message))
    if ctype == MSGPACK:
        return web.Response(body=_msgpack.encode(reply), content_type=MSGPACK)
    return web.Response(body=msgspec.json.encode(reply), content_type="application/json")


def add_sync_routes(app: web.Application) -> None:
    app[ITEMS] = ItemCache()
    app.router.add_get("/v1/sync/heads", sync_heads)
    app.router.add_get("/v1/sync/records", sync_records)
    app.router.add_post("/v1/sync/reconcile", sync_reconcile)
