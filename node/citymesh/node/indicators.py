"""Indicator routes: the catalogue, preview and publication behind disclosure control, browsing.

Rows reach the node only from this city (loopback API, bearer token); what leaves the node is the
protected table, signed. The previous release of a series supplies the suppression pattern to
carry, so differencing two periods reveals nothing.
"""

from __future__ import annotations

import sqlite3

import msgspec
from aiohttp import web

from citymesh.practices.disclosure import Policy, Release, Row, TableError, cell_key, protect
from citymesh.practices.indicators import CATALOGUE, DIMENSIONS, IndicatorDef
from citymesh.practices.tables import check_rows
from citymesh.protocol import api
from citymesh.protocol.errors import InvalidRecordError
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import (
    Cell,
    DisclosureMethod,
    IndicatorsBody,
)

from . import trust_view
from .errors import ApiError
from .keys import CURSOR_KEY, NODE, READER
from .routes import json_response, read_json

_table = msgspec.json.Decoder(IndicatorsBody)


def definitions() -> list[api.IndicatorDefinition]:
    return [
        api.IndicatorDefinition(
            code=d.code,
            name=d.name,
            unit=d.unit,
            description=d.definition,
            dimensions=[
                api.DimensionDefinition(
                    id=dim,
                    name=DIMENSIONS[dim].name,
                    codes=list(DIMENSIONS[dim].codes),
                    labels=DIMENSIONS[dim].labels,
                )
                for dim in d.dimensions
            ],
            measure=d.measure,
            sector=d.sector,  # type: ignore[arg-type]
            frequency=d.frequency,
            source_type=d.source_type,  # type: ignore[arg-type]
            crosswalk=d.crosswalk,
        )
        for d in CATALOGUE.values()
    ]


def _definition(code: str) -> IndicatorDef:
    defn = CATALOGUE.get(code)
    if defn is None:
        raise ApiError(
            422, "unknown_indicator", f"no indicator {code!r} in the catalogue", field="code"
        )
    return defn


def _rows(defn: IndicatorDef, body: api.IndicatorPreviewIn) -> list[Row]:
    rows = [Row(dims=r.dims, count=r.count, value=r.value, base=r.base) for r in body.rows]
    try:
        return check_rows(defn, rows)
    except TableError as err:
        field = "rows" if err.row is None else f"rows[{err.row - 1}]"
        if err.column:
            field += f".{err.column}"
        raise ApiError(422, "not_aggregate", err.message, field=field) from err


def previous_pattern(
    db: sqlite3.Connection, author: bytes, code: str, period: str
) -> frozenset[tuple[tuple[str, str], ...]]:
    """Suppressed cells of this city's latest earlier release of the series."""
    row = db.execute(
        "SELECT body FROM current WHERE author = ? AND kind = 'indicators' AND retracted = 0"
        " AND addr > ? AND addr < ? ORDER BY addr DESC LIMIT 1",
        (author, f"{code}/", f"{code}/{period}"),
    ).fetchone()
    if row is None:
        return frozenset()
    table = _table.decode(row[0])
    return frozenset(cell_key(c.dims) for c in table.cells if c.conf_status != "F")


async def _protect(
    request: web.Request, body: api.IndicatorPreviewIn
) -> tuple[IndicatorDef, Release]:
    node = request.app[NODE]
    defn = _definition(body.code)
    rows = _rows(defn, body)
    # The network's threshold is a floor: a data officer may ask for more, never less.
    floor = await request.app[READER].run(trust_view.min_count_threshold)
    threshold = max(body.threshold or Policy().threshold, floor or 0)
    policy = Policy(threshold=threshold)
    carried = await request.app[READER].run(previous_pattern, node.identity, body.code, body.period)
    release = protect(defn, rows, policy=policy, key=node.home.disclosure_key(), carried=carried)
    return defn, release


def _method(release: Release) -> DisclosureMethod:
    p = release.policy
    return DisclosureMethod(
        threshold=p.threshold,
        rounding_base=p.rounding_base,
        secondary="min-two-per-line",
        min_base=p.min_base,
        notes=release.method,
    )


async def get_definitions(request: web.Request) -> web.Response:
    return json_response(definitions())


async def preview(request: web.Request) -> web.Response:
    body = await read_json(request, api.IndicatorPreviewIn)
    assert isinstance(body, api.IndicatorPreviewIn)
    defn, release = await _protect(request, body)
    cells = [
        api.PreviewCell(
            dims=c.dims,
            value=c.value,
            status="suppressed" if c.suppressed else "published",
            reason=c.reason,
            obs_status=c.obs_status,
            conf_status=c.conf_status,
        )
        for c in release.cells
    ]
    suppressed = sum(c.suppressed for c in release.cells)
    return json_response(
        api.IndicatorPreview(
            code=defn.code,
            period=body.period,
            unit=defn.unit,
            dimensions=list(defn.dimensions),
            cells=cells,
            method=_method(release),
            published=len(cells) - suppressed,
            suppressed=suppressed,
        )
    )


async def publish(request: web.Request) -> web.Response:
    body = await read_json(request, api.IndicatorPublishIn)
    assert isinstance(body, api.IndicatorPublishIn)
    if not body.attestation.aggregate_only:
        raise ApiError(
            422,
            "attestation",
            "attest that the table holds aggregates only",
            field="attestation.aggregate_only",
        )
    defn, release = await _protect(request, body)
    table = IndicatorsBody(
        code=defn.code,
        period=body.period,
        unit=defn.unit,
        dimensions=list(defn.dimensions),
        cells=[
            Cell(
                dims=c.dims,
                value=c.value,
                obs_status=c.obs_status,
                conf_status=c.conf_status,
            )
            for c in release.cells
        ],
        method=_method(release),
        source_type=body.source_type,
        attestation=body.attestation,
        notes=body.notes,
    )
    node = request.app[NODE]
    addr = f"{defn.code}/{body.period}"
    record = await node.publish(table, addr=addr)
    return json_response(
        api.Published(
            ref=f"{identity_text(node.identity)}/{addr}",
            id=record.id.hex(),
            seq=record.seq,
            kind="indicators",
            author=identity_text(node.identity),
        ),
        status=201,
    )


def list_tables(
    db: sqlite3.Connection, query: api.IndicatorQuery, *, key: bytes
) -> api.IndicatorList:
    """Tables in (code/period, author) order, a page at a time (keyset cursor)."""
    clauses = ["c.kind = 'indicators'", "c.retracted = 0"]
    args: list[object] = []
    scope = api.query_scope(query)
    if query.cursor:
        cursor = api.decode_cursor(query.cursor, key=key)
        after = cursor.after
        if cursor.scope != scope or cursor.sort != "tables":
            raise InvalidRecordError("cursor belongs to another query", field="cursor")
        if len(after) != 2 or not all(isinstance(v, str) for v in after):
            raise InvalidRecordError("cursor is malformed", field="cursor")
        clauses.append("(c.addr, hex(c.author)) > (?, ?)")
        args += after
    if query.city:
        clauses.append("c.author = ?")
        args.append(api.identity_from_text(query.city, field="city"))
    if query.code and query.period:
        clauses.append("c.addr = ?")
        args.append(f"{query.code}/{query.period}")
    elif query.code:
        clauses.append("c.addr > ? AND c.addr < ?")
        args += [f"{query.code}/", f"{query.code}0"]
    elif query.period:
        clauses.append("c.addr LIKE ?")
        args.append(f"%/{query.period}")
    rows = db.execute(
        "SELECT c.author, c.addr, c.seq, c.id, c.created, c.body, ci.name, ci.country"
        " FROM current c LEFT JOIN cities ci ON ci.author = c.author WHERE "
        + " AND ".join(clauses)
        + " ORDER BY c.addr, hex(c.author) LIMIT ?",
        [*args, query.limit + 1],
    ).fetchall()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    flags = trust_view.marks(db, (bytes(r[0]) for r in rows))
    items = [
        api.IndicatorTable(
            ref=f"{identity_text(bytes(a))}/{addr}",
            author=identity_text(bytes(a)),
            city=name,
            country=country,
            seq=int(seq),
            id=bytes(rid).hex(),
            updated=api.utc_from_ms(int(created)),
            table=_table.decode(body),
            unverified=flags[bytes(a)].unverified,
            revoked=flags[bytes(a)].revoked,
        )
        for a, addr, seq, rid, created, body, name, country in rows
    ]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = api.encode_cursor(
            api.Cursor(
                sort="tables", after=[str(last[1]), bytes(last[0]).hex().upper()], scope=scope
            ),
            key=key,
        )
    return api.IndicatorList(items=items, next=next_cursor)


async def get_tables(request: web.Request) -> web.Response:
    params = {k: v for k, v in request.query.items() if v != ""}
    query = msgspec.convert(params, api.IndicatorQuery, strict=False)
    tables = await request.app[READER].run(list_tables, query, key=request.app[CURSOR_KEY])
    return json_response(tables)


def add_indicator_routes(app: web.Application) -> None:
    app.router.add_get("/v1/indicators/definitions", get_definitions)
    app.router.add_post("/v1/indicators/preview", preview)
    app.router.add_post("/v1/indicators", publish)
    app.router.add_get("/v1/indicators", get_tables)
