"""The OpenAPI document's links resolve: every link names an operation that exists, parameters
that operation takes (all of its path parameters), and runtime expressions that point at
something the source operation has (a response property, a request body property, a parameter).

Fast: the document is built in-process; nothing is served.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis

from citymesh.node.openapi import build_document

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
EXPRESSION = re.compile(
    r"^\$(?:response\.body#(?P<response>/.*)|request\.body#(?P<request>/.*)"
    r"|request\.(?P<location>path|query|header)\.(?P<name>[A-Za-z0-9_.-]+))$"
)

Operation = tuple[str, str, dict[str, Any]]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


def _operations(doc: dict[str, Any]) -> Iterator[Operation]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _parameters(doc: dict[str, Any], path: str, operation: dict[str, Any]) -> dict[str, str]:
    """name -> location, path-level parameters included."""
    params = [*doc["paths"][path].get("parameters", []), *operation.get("parameters", [])]
    return {p["name"]: p["in"] for p in params}


def _links(doc: dict[str, Any]) -> Iterator[tuple[str, Operation, str, dict[str, Any], str]]:
    for path, method, operation in _operations(doc):
        for status, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                yield name, (path, method, operation), status, link, f"{method} {path} {status}"


def _deref(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _resolves(doc: dict[str, Any], schema: dict[str, Any], pointer: str) -> bool:
    """Whether a JSON pointer can name a value of a document valid against ``schema``."""
    schema = _deref(doc, schema)
    if pointer in ("", "/"):
        return True
    head, _, rest = pointer.removeprefix("/").partition("/")
    rest = "/" + rest if rest else ""
    head = head.replace("~1", "/").replace("~0", "~")
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema and any(_resolves(doc, sub, pointer) for sub in schema[key]):
            return True
    if head in schema.get("properties", {}):
        return _resolves(doc, schema["properties"][head], rest)
    if head.isdigit() and "items" in schema:
        return _resolves(doc, schema["items"], rest)
    return False


def _json_schema(content: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


def test_every_operation_has_a_unique_id(document: dict[str, Any]) -> None:
    missing = [
        f"{method} {path}" for path, method, op in _operations(document) if "operationId" not in op
    ]
    assert not missing, f"no operationId (add it to openapi.OPERATION_IDS): {missing}"
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids)), ids


def test_there_are_links(document: dict[str, Any]) -> None:
    links = list(_links(document))
    assert len(links) >= 40, len(links)
    sources = {where for *_, where in links}
    for write in ("post /v1/practices 201", "post /v1/practices/{author}/{addr}/ratings 201"):
        assert write in sources, sources


def test_every_link_resolves(document: dict[str, Any]) -> None:
    by_id = {
        op["operationId"]: (path, op)
        for path, _, op in _operations(document)
        if "operationId" in op
    }
    problems: list[str] = []
    for name, (path, method, operation), status, link, where in _links(document):
        at = f"{where} {name}"
        assert "operationRef" not in link, at
        if link["operationId"] not in by_id:
            problems.append(f"{at}: no operation {link['operationId']}")
            continue
        target_path, target = by_id[link["operationId"]]
        target_params = _parameters(document, target_path, target)
        given = link.get("parameters", {})
        for qualified, expression in given.items():
            location, _, param = qualified.rpartition(".")
            if param not in target_params or (location and target_params[param] != location):
                problems.append(f"{at}: {link['operationId']} takes no parameter {qualified}")
            problems += [
                f"{at}: {p}"
                for p in _check_expression(document, path, method, operation, status, expression)
            ]
        for param, location in target_params.items():
            if location == "path" and param not in given:
                problems.append(f"{at}: path parameter {param} of {link['operationId']} not given")
        if "requestBody" in link:
            problems += [
                f"{at}: {p}"
                for p in _check_expression(
                    document, path, method, operation, status, link["requestBody"]
                )
            ]
    assert not problems, "\n".join(problems)


def _check_expression(
    doc: dict[str, Any],
    path: str,
    method: str,
    operation: dict[str, Any],
    status: str,
    expression: object,
) -> list[str]:
    if not isinstance(expression, str) or not expression.startswith("$"):
        return []  # a constant
    match = EXPRESSION.match(expression)
    if match is None:
        return [f"{expression}: not a runtime expression this test knows"]
    if match["response"] is not None:
        response = operation["responses"][status]
        schema = _json_schema(response["content"])
        if not _resolves(doc, schema, match["response"]):
            return [f"{expression}: not in the {status} response's schema"]
    elif match["request"] is not None:
        schema = _json_schema(operation["requestBody"]["content"])
        if not _resolves(doc, schema, match["request"]):
            return [f"{expression}: not in the {method} {path} request body's schema"]
    elif _parameters(doc, path, operation).get(match["name"]) != match["location"]:
        return [
            f"{expression}: {method} {path} has no {match['location']} parameter {match['name']}"
        ]
    return []


def test_schemathesis_builds_the_state_machine(document: dict[str, Any]) -> None:
    """Schemathesis reads the same links (an invalid one fails the whole stateful phase)."""
    schema = schemathesis.openapi.from_dict(document)
    machine = schema.as_state_machine()
    transitions = machine._transitions.operations  # type: ignore[attr-defined]
    explicit = {
        link.full_name
        for entry in transitions.values()
        for link in entry.outgoing
        if not link.is_inferred
    }
    assert len(explicit) == len(list(_links(document))), sorted(explicit)
