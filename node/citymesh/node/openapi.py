"""OpenAPI 3.1 document, generated from the msgspec Structs in citymesh.protocol.api."""

from __future__ import annotations

import inspect
from typing import Any, Final

import msgspec
from aiohttp import web

from citymesh.protocol import api, api_sync

from .catalogue_routes import MAX_REASON
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


OPERATION_IDS: Final[dict[str, dict[str, str]]] = {
    "/healthz": {"get": "getHealth"},
    "/v1/status": {"get": "getStatus"},
    "/v1/practices": {"get": "listPractices", "post": "publishPractice"},
    "/v1/practices/{author}/{addr}": {"get": "getPractice", "delete": "retractPractice"},
    "/v1/practices/{author}/{addr}/ratings": {"post": "ratePractice"},
    "/v1/practices/{author}/{addr}/replications": {"post": "replicatePractice"},
    "/v1/cities": {"get": "listCities"},
    "/v1/cities/{key}": {"get": "getCity"},
    "/v1/indicators/definitions": {"get": "listIndicatorDefinitions"},
    "/v1/indicators/preview": {"post": "previewIndicators"},
    "/v1/indicators": {"get": "listIndicators", "post": "publishIndicators"},
    "/v1/network": {"post": "publishCharter"},
    "/v1/network/members": {"post": "publishMembership"},
    "/v1/keys/rotate": {"post": "rotateKey"},
    "/v1/keys/recover": {"post": "recoverKey"},
    "/v1/records/{id}": {"get": "getRecord"},
    "/v1/events": {"get": "streamEvents"},
    "/v1/sync/heads": {"get": "syncHeads"},
    "/v1/sync/records": {"get": "syncRecords"},
    "/v1/sync/reconcile": {"post": "syncReconcile"},
    "/v1/sync/sketch": {"post": "syncSketch"},
}
"""Every operation's ``operationId`` (links name their target by it)."""


def _link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    link: dict[str, Any] = {"operationId": operation_id, "description": description}
    if parameters:
        link["parameters"] = parameters
    return link


_BODY = "$response.body#/"
_PATH = {"author": "$request.path.author", "addr": "$request.path.addr"}
_RECORD = _link("getRecord", "The signed record just written.", id=_BODY + "id")
_ITEM = {"author": _BODY + "items/0/author", "addr": _BODY + "items/0/addr"}
_DETAIL = {"author": _BODY + "author", "addr": _BODY + "addr"}
_PUBLISHED = {"author": _BODY + "author", "addr": "$request.body#/addr"}

LINKS: Final[dict[tuple[str, str, str], dict[str, dict[str, Any]]]] = {
    ("/v1/practices", "post", "201"): {
        "GetPractice": _link("getPractice", "The practice just published.", **_PUBLISHED),
        "RatePractice": _link(
            "ratePractice", "Rating it: 409 own_practice, a city rates others'.", **_PUBLISHED
        ),
        "ReplicatePractice": _link(
            "replicatePractice", "Replicating it: 409 own_practice.", **_PUBLISHED
        ),
        "RetractPractice": _link("retractPractice", "Retract it again.", **_PUBLISHED),
        "ListOwnPractices": _link(
            "listPractices", "This city's practices.", author=_BODY + "author"
        ),
        "GetCity": _link("getCity", "This city.", key=_BODY + "author"),
        "GetRecord": _RECORD,
    },
    ("/v1/practices", "get", "200"): {
        "GetPractice": _link("getPractice", "The first result in full.", **_ITEM),
        "RatePractice": _link("ratePractice", "Rate the first result.", **_ITEM),
        "ReplicatePractice": _link("replicatePractice", "Replicate the first result.", **_ITEM),
        "GetCity": _link("getCity", "The first result's city.", key=_BODY + "items/0/author"),
        "NextPage": _link(
            "listPractices",
            "The next page of the same query.",
            cursor=_BODY + "next",
            **{
                name: f"$request.query.{name}"
                for name in api.PracticeQuery.__struct_fields__
                if name != "cursor"
            },
        ),
    },
    ("/v1/practices/{author}/{addr}", "get", "200"): {
        "RatePractice": _link("ratePractice", "Rate it (409 if it is this city's).", **_DETAIL),
        "ReplicatePractice": _link("replicatePractice", "Replicate it.", **_DETAIL),
        "RetractPractice": _link(
            "retractPractice", "Retract it (403 if not this city's).", **_DETAIL
        ),
        "GetCity": _link("getCity", "The author city.", key=_BODY + "author"),
        "GetRecord": _link("getRecord", "The current version's signed record.", id=_BODY + "id"),
    },
    ("/v1/practices/{author}/{addr}", "delete", "200"): {
        "GetPractice": _link("getPractice", "Gone: 404 once retracted.", **_PATH),
        "GetRecord": _link("getRecord", "The retraction record.", id=_BODY + "id"),
    },
    ("/v1/practices/{author}/{addr}/ratings", "post", "201"): {
        "GetPractice": _link("getPractice", "The practice, with this rating.", **_PATH),
        "GetRecord": _RECORD,
    },
    ("/v1/practices/{author}/{addr}/replications", "post", "201"): {
        "GetPractice": _link("getPractice", "The practice, with this replication.", **_PATH),
        "GetRecord": _RECORD,
    },
    ("/v1/cities", "get", "200"): {
        "GetCity": _link("getCity", "The first city.", key=_BODY + "items/0/identity"),
        "ListPractices": _link(
            "listPractices", "The first city's practices.", author=_BODY + "items/0/identity"
        ),
        "ListIndicators": _link(
            "listIndicators", "The first city's tables.", city=_BODY + "items/0/identity"
        ),
    },
    ("/v1/cities/{key}", "get", "200"): {
        "GetPractice": _link(
            "getPractice",
            "The city's first practice.",
            author=_BODY + "identity",
            addr=_BODY + "practices/0/addr",
        ),
        "ListPractices": _link("listPractices", "The city's practices.", author=_BODY + "identity"),
        "ListIndicators": _link("listIndicators", "The city's tables.", city=_BODY + "identity"),
    },
    ("/v1/status", "get", "200"): {
        "GetCity": _link("getCity", "This city.", key=_BODY + "identity"),
        "ListPractices": _link(
            "listPractices", "This city's practices.", author=_BODY + "identity"
        ),
    },
    ("/v1/indicators", "get", "200"): {
        "GetRecord": _link("getRecord", "The first table's record.", id=_BODY + "items/0/id"),
        "GetCity": _link("getCity", "The first table's city.", key=_BODY + "items/0/author"),
    },
    ("/v1/indicators", "post", "201"): {
        "ListIndicators": _link(
            "listIndicators",
            "The table just published.",
            city=_BODY + "author",
            code="$request.body#/code",
            period="$request.body#/period",
        ),
        "GetRecord": _RECORD,
    },
    ("/v1/network", "post", "201"): {
        "GetStatus": _link("getStatus", "This node under the new charter."),
        "GetCity": _link("getCity", "This city.", key=_BODY + "author"),
        "GetRecord": _RECORD,
    },
    ("/v1/network/members", "post", "201"): {
        "GetMember": _link("getCity", "The member city.", key="$request.body#/member"),
        "ListCities": _link("listCities", "Cities with their membership state."),
        "GetRecord": _RECORD,
    },
    ("/v1/keys/rotate", "post", "201"): {
        "GetStatus": _link("getStatus", "Status names the new key."),
        "GetRecord": _link("getRecord", "The rotation record.", id=_BODY + "id"),
    },
    ("/v1/keys/recover", "post", "201"): {
        "GetStatus": _link("getStatus", "Status names the new key."),
        "GetRecord": _link("getRecord", "The rotation record.", id=_BODY + "id"),
    },
    ("/v1/sync/heads", "get", "200"): {
        "SyncRecords": _link(
            "syncRecords", "The first author's records.", author=_BODY + "heads/0/author"
        ),
        "GetCity": _link("getCity", "The first author.", key=_BODY + "heads/0/author"),
    },
}
"""OpenAPI links: how a response's values feed the next request (e.g. a published practice's
author and slug → the practice, its ratings, its record). Clients and schemathesis' stateful
phase follow them."""


def _add_links(paths: dict[str, Any]) -> None:
    for path, operations in OPERATION_IDS.items():
        for method, operation_id in operations.items():
            paths[path][method]["operationId"] = operation_id
    for (path, method, status), links in LINKS.items():
        responses = paths[path][method]["responses"]
        responses[status] = {**responses[status], "links": links}


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
                        "schema": {"type": "string", "maxLength": MAX_REASON},
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
    _add_links(paths)
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
