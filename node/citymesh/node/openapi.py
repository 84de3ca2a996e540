"""OpenAPI 3.1 document, generated from the msgspec Structs in citymesh.protocol.api."""

from __future__ import annotations

import inspect
from typing import Any, Final

import msgspec
from aiohttp import web

from citymesh.protocol import api, api_sync

from .routes import VERSION, json_response

REF = "#/components/schemas/{name}"


def _ref(t: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": REF.format(name=t.__name__)}


def _json(t: type[msgspec.Struct], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(t)}}}


ERRORS = {
    "400": _json(
        api.ErrorResponse,
        "Input this document refuses (malformed JSON, a type, pattern, range, code list, a "
        "missing or unknown field): the error names the field and the reason.",
    ),
    "401": _json(api.ErrorResponse, "Missing or wrong bearer token."),
    "422": _json(
        api.ErrorResponse,
        "Input this document accepts but a rule it states only in words refuses: an identity "
        "or key whose checksum fails or that is no valid key (bad_identity, bad_key), a cursor "
        "this node did not issue for this query (invalid, field cursor), an indicator not in "
        "the catalogue or rows the disclosure firewall refuses (unknown_indicator, "
        "not_aggregate, attestation), a member city with no profile here and no name "
        "(unknown_city), a record the protocol refuses once encoded (e.g. too_large).",
    ),
}


EMPTY = {"type": "string", "maxLength": 0, "description": "Empty: as if left out."}
LIMITED = _json(
    api.ErrorResponse,
    "Signing now would break the followed network's records-per-hour limit (rate_limited); "
    "retry after the Retry-After seconds.",
)


def _query_params(t: type[msgspec.Struct], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    """Query parameters of a query Struct; an empty value counts as left out (``?q=&sector=``,
    as a form sends them), and the schema says so."""
    props = schemas[t.__name__].get("properties", {})
    return [
        {"name": name, "in": "query", "required": False, "schema": {"anyOf": [schema, EMPTY]}}
        for name, schema in props.items()
    ]


def _path_param(
    name: str, description: str, pattern: str | None = None, fmt: str | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    if fmt:
        schema["format"] = fmt
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _write_about_practice(
    summary: str, body: type[msgspec.Struct], params: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": params,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(body)}},
            },
            "responses": {
                "201": _json(api.Published, "Signed, stored and queued for every relay."),
                "404": _json(api.ErrorResponse, "No such practice here (or retracted)."),
                "409": _json(api.ErrorResponse, "The practice is this city's own (own_practice)."),
                "413": _json(api.ErrorResponse, "Body over the size limit."),
                "415": _json(api.ErrorResponse, "Body is not application/json."),
                "503": _json(api.ErrorResponse, "Not ready to sign yet; retry."),
                "429": LIMITED,
                **ERRORS,
            },
        }
    }


def _signed_write(
    summary: str, body: type[msgspec.Struct], result: type[msgspec.Struct], *, required: bool = True
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": required,
                "content": {"application/json": {"schema": _ref(body)}},
            },
            "responses": {
                "201": _json(result, "Signed, stored and queued for every relay."),
                "413": _json(api.ErrorResponse, "Body over the size limit."),
                "415": _json(api.ErrorResponse, "Body is not application/json."),
                "503": _json(api.ErrorResponse, "Not ready to sign yet; retry."),
                "429": LIMITED,
                **ERRORS,
            },
        }
    }


BASE64: Final = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
"""Standard padded base64, as msgspec writes and reads bytes in JSON."""


def _base64_patterns(node: object) -> None:
    """Bytes travel in JSON as base64 text; ``contentEncoding`` alone constrains nothing in JSON
    Schema, so the alphabet and padding are stated as a pattern too."""
    if isinstance(node, dict):
        if node.get("contentEncoding") == "base64" and node.get("type") == "string":
            node.setdefault("pattern", BASE64)
        for value in node.values():
            _base64_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _base64_patterns(value)


def build_document() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(api.SCHEMA_TYPES, ref_template=REF)
    for schema in schemas.values():
        if "description" in schema:
            schema["description"] = inspect.cleandoc(schema["description"])
    for name, rules in api.SCHEMA_RULES.items():
        schemas[name].update(rules)
    author = _path_param(
        "author",
        "Author identity (cmid1…)",
        r"^cmid1[02-9ac-hj-np-z]{38}$",
        api.IDENTITY_FORMAT,
    )
    addr = _path_param("addr", "Practice slug", r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness (no authentication)",
                "security": [],
                "responses": {"200": _json(api.Health, "The node is up.")},
            }
        },
        "/v1/status": {
            "get": {
                "summary": "This city, its key, networks, relays with lag, record counts",
                "responses": {"200": _json(api.Status, "Node status."), "401": ERRORS["401"]},
            }
        },
        "/v1/practices": {
            "get": {
                "summary": "Search practices",
                "parameters": _query_params(api.PracticeQuery, schemas),
                "responses": {"200": _json(api.PracticeList, "One page of results."), **ERRORS},
            },
            "post": {
                "summary": "Publish or update one of this city's practices",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(api.PracticeIn)}},
                },
                "responses": {
                    "201": _json(api.Published, "Signed, stored and queued for every relay."),
                    "413": _json(api.ErrorResponse, "Body over the size limit."),
                    "415": _json(api.ErrorResponse, "Body is not application/json."),
                    "503": _json(api.ErrorResponse, "Not ready to sign yet; retry."),
                    "429": LIMITED,
                    **ERRORS,
                },
            },
        },
        "/v1/practices/{author}/{addr}": {
            "get": {
                "summary": "One practice with ratings, replications and history",
                "parameters": [author, addr],
                "responses": {
                    "200": _json(api.PracticeDetail, "The current version."),
                    "404": _json(api.ErrorResponse, "Not held here (or retracted)."),
                    **ERRORS,
                },
            },
            "delete": {
                "summary": "Retract one of this city's own practices",
                "parameters": [
                    author,
                    addr,
                    {
                        "name": "reason",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 1000},
                    },
                ],
                "responses": {
                    "200": _json(api.Published, "Retraction signed, stored and queued."),
                    "403": _json(api.ErrorResponse, "Not this city's practice."),
                    "404": _json(api.ErrorResponse, "Not held here (or retracted)."),
                    "503": _json(api.ErrorResponse, "Not ready to sign yet; retry."),
                    "429": LIMITED,
                    **ERRORS,
                },
            },
        },
        "/v1/practices/{author}/{addr}/ratings": _write_about_practice(
            "Rate another city's practice (one current rating per city)",
            api.RatingIn,
            [author, addr],
        ),
        "/v1/practices/{author}/{addr}/replications": _write_about_practice(
            "Start or update this city's replication of another city's practice",
            api.ReplicationIn,
            [author, addr],
        ),
        "/v1/cities": {
            "get": {
                "summary": "Cities whose records this node holds, with membership state",
                "responses": {"200": _json(api.CityList, "Known cities."), "401": ERRORS["401"]},
            }
        },
        "/v1/cities/{key}": {
            "get": {
                "summary": "One city: profile, memberships, record counts, practices",
                "parameters": [
                    _path_param(
                        "key",
                        "City identity (cmid1…)",
                        r"^cmid1[02-9ac-hj-np-z]{38}$",
                        api.IDENTITY_FORMAT,
                    )
                ],
                "responses": {
                    "200": _json(api.CityDetail, "The city."),
                    "404": _json(api.ErrorResponse, "No records of that city here."),
                    **ERRORS,
                },
            }
        },
        "/v1/indicators/definitions": {
            "get": {
                "summary": "The indicator catalogue: codes, units, dimensions and code lists",
                "responses": {
                    "200": {
                        "description": "Every indicator definition.",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": _ref(api.IndicatorDefinition)}
                            }
                        },
                    },
                    "401": ERRORS["401"],
                },
            }
        },
        "/v1/indicators/preview": {
            "post": {
                "summary": "Apply disclosure control to an aggregate table and show each cell's fate",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(api.IndicatorPreviewIn)}},
                },
                "responses": {
                    "200": _json(api.IndicatorPreview, "The table as it would be published."),
                    "413": _json(api.ErrorResponse, "Body over the size limit."),
                    "415": _json(api.ErrorResponse, "Body is not application/json."),
                    **ERRORS,
                },
            }
        },
        "/v1/indicators": {
            "get": {
                "summary": "Published aggregate tables, by city, code and period",
                "parameters": _query_params(api.IndicatorQuery, schemas),
                "responses": {"200": _json(api.IndicatorList, "Tables."), **ERRORS},
            },
            "post": {
                "summary": "Apply disclosure control, sign and publish an aggregate table",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(api.IndicatorPublishIn)}},
                },
                "responses": {
                    "201": _json(api.Published, "Signed, stored and queued for every relay."),
                    "413": _json(api.ErrorResponse, "Body over the size limit."),
                    "415": _json(api.ErrorResponse, "Body is not application/json."),
                    "503": _json(api.ErrorResponse, "Not ready to sign yet; retry."),
                    "429": LIMITED,
                    **ERRORS,
                },
            },
        },
        "/v1/network": _signed_write(
            "Publish the network charter (this city as a steward)", api.NetworkIn, api.Published
        ),
        "/v1/network/members": _signed_write(
            "Admit, update or revoke a member city (stewards)", api.MemberIn, api.Published
        ),
        "/v1/keys/rotate": _signed_write(
            "Rotate this city's signing key (body: {} or none)",
            api.KeyRotateIn,
            api.KeyRotated,
            required=False,
        ),
        "/v1/keys/recover": _signed_write(
            "Take the identity back with an offline recovery key (after a theft)",
            api.KeyRecoverIn,
            api.KeyRotated,
        ),
        "/v1/records/{id}": {
            "get": {
                "summary": "A raw signed record (envelope bytes exactly as received)",
                "parameters": [_path_param("id", "Record id, 64 hex digits", r"^[0-9a-f]{64}$")],
                "responses": {
                    "200": {
                        "description": "The envelope (see PROTOCOL.md).",
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                    "404": _json(api.ErrorResponse, "No such record here."),
                    **ERRORS,
                },
            }
        },
        "/v1/events": {
            "get": {
                "summary": "Server-sent events: one `record` event (data: Event JSON) per record",
                "responses": {
                    "200": {
                        "description": "text/event-stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": ERRORS["401"],
                },
            }
        },
    }
    # -- sync routes for peers: public, read-only (schemas: citymesh.protocol.api_sync) --------
    _, sync_schemas = msgspec.json.schema_components(api_sync.SCHEMA_TYPES, ref_template=REF)
    _base64_patterns(sync_schemas)
    schemas.update(sync_schemas)

    def _msgpack(t: type[msgspec.Struct], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/msgpack": {"schema": _ref(t)}}}

    bad_input = {"400": ERRORS["400"], "422": ERRORS["422"]}
    paths["/v1/sync/heads"] = {
        "get": {
            "summary": "Per-author heads applied here: seq and id (for anti-entropy; no token)",
            "security": [],
            "responses": {"200": _json(api_sync.SyncHeads, "Every author's applied head.")},
        }
    }
    paths["/v1/sync/records"] = {
        "get": {
            "summary": "Raw signed envelopes of one author after a seq, or by id (msgpack)",
            "description": "Give `author` (and `after`, `limit`) or `ids`. The body is msgpack:"
            " `{records: [bin, ...], more, last}`, envelopes exactly as stored, in chain order;"
            " held records (beyond a gap) are not served. Verify every envelope.",
            "security": [],
            "parameters": _query_params(api_sync.SyncRecordsQuery, schemas),
            "responses": {
                "200": _msgpack(api_sync.SyncRecords, "One page of envelopes."),
                **bad_input,
            },
        }
    }
    paths["/v1/sync/reconcile"] = {
        "post": {
            "summary": "One negentropy (NIP-77 style) round over this node's record ids",
            "description": "Items are (created, id) of the records stored here, optionally one"
            " kind and a created range. Send msgpack (or JSON, bytes as base64); the reply uses"
            " the request's encoding. See protocol/citymesh/protocol/reconcile.py. Rules the"
            " schema cannot state give 422 `bad_reconcile` naming the range: range bounds"
            " increase and nothing follows the infinite bound (which takes no id prefix); a skip"
            " carries no payload, a fingerprint is 16 bytes, an id list a multiple of 32 bytes"
            " (at most 8,192 ids); an id prefix is at most 32 bytes.",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/msgpack": {"schema": _ref(api_sync.ReconcileIn)},
                    "application/json": {"schema": _ref(api_sync.ReconcileIn)},
                },
            },
            "responses": {
                "200": {
                    "description": "The responder's message, in the request's encoding.",
                    "content": {
                        "application/msgpack": {"schema": _ref(api_sync.ReconcileOut)},
                        "application/json": {"schema": _ref(api_sync.ReconcileOut)},
                    },
                },
                "413": _json(api.ErrorResponse, "Body over the size limit."),
                "415": _json(api.ErrorResponse, "Body is neither msgpack nor JSON."),
                **bad_input,
            },
        }
    }
    paths["/v1/sync/sketch"] = {
        "post": {
            "operationId": "syncSketch",
            "summary": "Coded symbols [start, end) of a rateless IBLT over this node's record ids",
            "description": "The same ids and scope as `/v1/sync/reconcile`; each symbol is 42"
            " bytes (id XOR, checksum XOR, count mod 2^16). Ask for more until the difference"
            " decodes; see protocol/citymesh/protocol/sketch.py. Send msgpack (or JSON, bytes"
            " as base64); the reply uses the request's encoding. Rules the schema cannot state:"
            " `end` after `start` (422 `bad_sketch`), at most 4,096 symbols a chunk (422"
            " `too_large`).",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/msgpack": {"schema": _ref(api_sync.SketchIn)},
                    "application/json": {"schema": _ref(api_sync.SketchIn)},
                },
            },
            "responses": {
                "200": {
                    "description": "The symbols, in the request's encoding.",
                    "content": {
                        "application/msgpack": {"schema": _ref(api_sync.SketchOut)},
                        "application/json": {"schema": _ref(api_sync.SketchOut)},
                    },
                },
                "413": _json(api.ErrorResponse, "Body over the size limit."),
                "415": _json(api.ErrorResponse, "Body is neither msgpack nor JSON."),
                **bad_input,
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "citymesh node API", "version": VERSION},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def add_openapi(app: web.Application) -> None:
    document = build_document()

    async def openapi(request: web.Request) -> web.Response:
        return json_response(document)

    app.router.add_get("/openapi.json", openapi)
