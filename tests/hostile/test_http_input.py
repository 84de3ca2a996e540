"""The hostile corpus in its JSON form, through the HTTP API of a served node: lone surrogates,
deep nesting, huge strings and arrays, NaN/Infinity, negative and enormous integers, truncated
and trailing bytes, in bodies, query strings and paths. Each is a 4xx JSON error naming what is
wrong; nothing is stored; the node keeps serving. (tests/node/test_http.py covers malformed
JSON, wrong types, unknown fields and content types; this adds the hostile values.)"""

from __future__ import annotations

import json

import pytest

from .conftest import Served

PRACTICE = json.dumps(
    {
        "addr": "welcome-desk",
        "title": {"en": "Welcome desk"},
        "summary": {"en": "One door."},
        "status": "active",
        "sectors": ["HOUSING"],
        "contact": {"role_mailbox": "welcome@mechelen.example.org"},
    }
)


def _with(field: str, raw: str) -> bytes:
    """The practice body with ``field``'s JSON value replaced by ``raw`` (written as is)."""
    value = json.loads(PRACTICE)
    value[field] = "@@"
    return json.dumps(value).replace('"@@"', raw).encode()


BODIES: dict[str, bytes] = {
    "lone_surrogate": _with("title", '{"en": "\\ud800"}'),
    "lone_low_surrogate": _with("title", '{"en": "a\\udc00b"}'),
    "raw_surrogate_bytes": _with("title", '{"en": "SURR"}').replace(b"SURR", b"\xed\xa0\x80"),
    "deep_nesting": _with("keywords", "[" * 100_000 + "]" * 100_000)[:15_000],
    "deep_nesting_closed": _with("keywords", "[" * 5_000 + "]" * 5_000),
    "huge_string_field": _with("title", json.dumps({"en": "x" * 15_000})),
    "huge_array": _with("sectors", json.dumps(["HOUSING"] * 1_500)),
    "nan": _with("review_by", "NaN"),
    "infinity": _with("keywords", "[Infinity]"),
    "number_out_of_range": _with("results", '[{"label": "x", "value": 1e999}]'),
    "negative_int": _with("resources", '{"staff_fte": -1}'),
    "enormous_int": _with("resources", '{"staff_fte": 1' + "0" * 400 + "}"),
    "truncated": PRACTICE.encode()[:-3],
    "trailing_bytes": PRACTICE.encode() + b" {}",
    "nul_bytes": PRACTICE.encode() + b"\x00",
    "not_utf8": PRACTICE.encode().replace(b"One door.", b"One \xff door."),
    "bom": b"\xef\xbb\xbf" + PRACTICE.encode(),
    "array_not_object": b"[" + PRACTICE.encode() + b"]",
}


@pytest.mark.parametrize("case", list(BODIES))
async def test_hostile_json_bodies_are_4xx_and_store_nothing(served: Served, case: str) -> None:
    before = served.practices()
    status, payload = await served.request(
        "POST",
        "/v1/practices",
        data=BODIES[case],
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= status < 500, (status, payload)
    assert isinstance(payload, dict) and payload["error"]["code"], payload
    assert served.practices() == before
    status, _ = await served.request("GET", "/healthz")
    assert status == 200


async def test_hostile_query_strings_and_paths_are_never_5xx(served: Served) -> None:
    queries = [
        "q=%ED%A0%80",
        "q=%FF%FE",
        "q=" + "a" * 5000,
        "q=%00",
        "limit=1e999",
        "limit=-99999999999999999999999",
        "limit=NaN",
        "min_rating=NaN",
        "min_rating=Infinity",
        "cursor=" + "A" * 1024,
        "author=cmid1%ED%A0%80",
        "sector=HOUSING&sector=FOOD",
    ]
    for query in queries:
        status, payload = await served.request("GET", f"/v1/practices?{query}")
        assert status in (200, 400, 422), (query, status, payload)
    paths = [
        "/v1/practices/%ED%A0%80/x",
        "/v1/practices/cmid1" + "q" * 5000 + "/x",
        "/v1/cities/%00",
        "/v1/records/" + "0" * 10_000,
    ]
    for path in paths:
        status, payload = await served.request("GET", path)
        assert 400 <= status < 500, (path, status, payload)
    status, _ = await served.request("GET", "/healthz")
    assert status == 200
