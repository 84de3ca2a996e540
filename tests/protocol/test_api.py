"""HTTP API schemas: the DESIGN.md example bodies decode, bad input names its field, the OpenAPI
components build, and refs and cursors round-trip and refuse tampering."""

from __future__ import annotations

import base64
import datetime
import inspect
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from citymesh.protocol import api
from citymesh.protocol.codec import encode as canonical_encode
from citymesh.protocol.errors import BadIdentityError, InvalidRecordError
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import (
    DisclosureMethod,
    Outcome,
    PracticeBody,
    PracticeRefText,
    RatingBody,
    ReplicationBody,
)

AUTHOR = bytes(range(20))
AUTHOR_TEXT = identity_text(AUTHOR)
MENTOR = bytes(range(20, 40))
KEY = b"k" * 32

# -- the example bodies of DESIGN.md "JSON shapes" ---------------------------------------------
PRACTICE_JSON: dict[str, Any] = {
    "addr": "welcome-desk",
    "title": {"en": "Welcome desk for newcomers"},
    "summary": {"en": "One desk at city hall for every first question."},
    "description": "markdown",
    "status": "active",
    "sectors": ["HOUSING"],
    "target_groups": ["REFUGEE"],
    "period": {"start": "2021-03-01"},
    "contact": {"role_mailbox": "welcome@city.example"},
    "licence": "CC-BY-4.0",
}
RATING_JSON: dict[str, Any] = {
    "score": 4,
    "scores": {"relevance": 4, "evidence": 3},
    "comment": "Clear, and the lessons section is honest.",
}
REPLICATION_JSON: dict[str, Any] = {
    "relation": "adapted",
    "status": "piloting",
    "adaptations": "Run by a migrant-led NGO instead of city staff.",
    "outcome": {"worked": "partly", "lessons": "Needs a second language at the desk."},
}
PREVIEW_JSON: dict[str, Any] = {
    "code": "RESIDENTS_BY_STATUS",
    "period": "2024",
    "rows": [{"dims": {"SEX": "F", "MIG_STATUS": "REFUGEE"}, "count": 7}],
}


def _json(value: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**value, **changes}).encode()


def _without(value: dict[str, Any], key: str) -> bytes:
    return json.dumps({k: v for k, v in value.items() if k != key}).encode()


def test_practice_example_decodes_with_dates() -> None:
    p = msgspec.json.decode(_json(PRACTICE_JSON), type=api.PracticeIn)
    assert p.addr == "welcome-desk"
    assert p.sectors == ["HOUSING"]
    assert p.period.start == datetime.date(2021, 3, 1)
    assert isinstance(p, PracticeBody)


def test_practice_body_drops_addr_and_matches_the_record_schema() -> None:
    p = msgspec.json.decode(_json(PRACTICE_JSON), type=api.PracticeIn)
    body = api.practice_body(p)
    assert type(body) is PracticeBody
    assert body == msgspec.json.decode(_without(PRACTICE_JSON, "addr"), type=PracticeBody)
    assert b"addr" not in canonical_encode(body)
    assert api.practice_in(body, "welcome-desk") == p


def test_request_types_cannot_drift_from_record_bodies() -> None:
    assert api.PracticeIn.__struct_fields__ == (*PracticeBody.__struct_fields__, "addr")
    assert api.RatingIn.__struct_fields__ == RatingBody.__struct_fields__
    assert set(api.ReplicationIn.__struct_fields__) == set(ReplicationBody.__struct_fields__)


def test_rating_example_decodes() -> None:
    r = msgspec.json.decode(_json(RATING_JSON), type=api.RatingIn)
    body = api.rating_body(r)
    assert type(body) is RatingBody
    assert (body.score, body.scores.evidence, body.role) == (4, 3, "peer")


def test_replication_example_decodes_and_mentor_text_becomes_bytes() -> None:
    r = msgspec.json.decode(
        _json(REPLICATION_JSON, mentor=identity_text(MENTOR), start="2024-09-01"),
        type=api.ReplicationIn,
    )
    body = api.replication_body(r)
    assert type(body) is ReplicationBody
    assert body.mentor == MENTOR
    assert body.start == datetime.date(2024, 9, 1)
    assert body.outcome == Outcome(worked="partly", lessons="Needs a second language at the desk.")


def test_replication_with_a_mistyped_mentor_names_the_field() -> None:
    typo = identity_text(MENTOR)[:-1] + ("q" if identity_text(MENTOR)[-1] != "q" else "p")
    r = msgspec.json.decode(_json(REPLICATION_JSON, mentor=typo), type=api.ReplicationIn)
    with pytest.raises(BadIdentityError) as caught:
        api.replication_body(r)
    assert caught.value.field == "mentor"


def test_preview_example_decodes() -> None:
    p = msgspec.json.decode(_json(PREVIEW_JSON), type=api.IndicatorPreviewIn)
    assert p.rows[0].dims == {"SEX": "F", "MIG_STATUS": "REFUGEE"}
    assert (p.rows[0].count, p.rows[0].value, p.threshold) == (7, None, None)


@pytest.mark.parametrize(
    ("data", "type_", "path"),
    [
        (_json(PRACTICE_JSON, sectors=["HOUSING", "SPACE"]), api.PracticeIn, "`$.sectors[1]`"),
        (_json(PRACTICE_JSON, target_groups=["ALIENS"]), api.PracticeIn, "`$.target_groups[0]`"),
        (_without(PRACTICE_JSON, "addr"), api.PracticeIn, "field `addr`"),
        (_json(PRACTICE_JSON, addr="Welcome Desk"), api.PracticeIn, "`$.addr`"),
        (_json(PRACTICE_JSON, addr="-desk"), api.PracticeIn, "`$.addr`"),
        (_json(PRACTICE_JSON, addr="d" * 65), api.PracticeIn, "`$.addr`"),
        (_json(PRACTICE_JSON, addr="desk\n"), api.PracticeIn, "`$.addr`"),
        (_json(PRACTICE_JSON, sector=["HOUSING"]), api.PracticeIn, "field `sector`"),
        (_json(PRACTICE_JSON, period={"start": "01/03/2021"}), api.PracticeIn, "`$.period.start`"),
        (_json(PRACTICE_JSON, contact={}), api.PracticeIn, "`$.contact`"),
        (_json(RATING_JSON, score=6), api.RatingIn, "`$.score`"),
        (_json(RATING_JSON, score=0), api.RatingIn, "`$.score`"),
        (_json(RATING_JSON, scores={"clarity": 6}), api.RatingIn, "`$.scores.clarity`"),
        (_json(RATING_JSON, comment="x" * 2001), api.RatingIn, "`$.comment`"),
        (_json(RATING_JSON, role="boss"), api.RatingIn, "`$.role`"),
        (_json(REPLICATION_JSON, relation="copied"), api.ReplicationIn, "`$.relation`"),
        (_json(REPLICATION_JSON, mentor="alice"), api.ReplicationIn, "`$.mentor`"),
        (
            _json(REPLICATION_JSON, mentor=identity_text(MENTOR) + "\n"),
            api.ReplicationIn,
            "`$.mentor`",
        ),
        (_json(PREVIEW_JSON, period="2024-13x"), api.IndicatorPreviewIn, "`$.period`"),
        (_json(PREVIEW_JSON, rows=[]), api.IndicatorPreviewIn, "`$.rows`"),
        (
            _json(PREVIEW_JSON, rows=[{"dims": {}, "count": 1}] * 4001),
            api.IndicatorPreviewIn,
            "`$.rows`",
        ),
        (_json(PREVIEW_JSON, rows=[{"dims": {"SEX": "F"}}]), api.IndicatorPreviewIn, "`$.rows[0]`"),
        (
            _json(PREVIEW_JSON, rows=[{"dims": {"SEX": "F"}, "count": -1}]),
            api.IndicatorPreviewIn,
            "`$.rows[0].count`",
        ),
    ],
)
def test_bad_input_names_the_field(data: bytes, type_: type[Any], path: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(data, type=type_)
    assert path in str(caught.value)


@pytest.mark.parametrize(
    ("data", "type_", "code", "field"),
    [
        (_json(PRACTICE_JSON, sectors=["SPACE"]), api.PracticeIn, "unknown_sector", "sectors[0]"),
        (
            _json(PRACTICE_JSON, target_groups=["HOST", "X"]),
            api.PracticeIn,
            "unknown_target_group",
            "target_groups[1]",
        ),
        (_json(PRACTICE_JSON, status="done"), api.PracticeIn, "unknown_code", "status"),
        (_without(PRACTICE_JSON, "addr"), api.PracticeIn, "missing_field", "addr"),
        (
            _json(PRACTICE_JSON, contact={}),
            api.PracticeIn,
            "missing_field",
            "contact.role_mailbox",
        ),
        (_json(PRACTICE_JSON, colour="red"), api.PracticeIn, "unknown_field", "colour"),
        (_json(RATING_JSON, score=6), api.RatingIn, "invalid", "score"),
        (b'{"score": 4', api.RatingIn, "malformed", None),
        (b"[]", api.RatingIn, "invalid", None),
    ],
)
def test_error_detail_gives_code_and_field(
    data: bytes, type_: type[Any], code: str, field: str | None
) -> None:
    with pytest.raises(msgspec.DecodeError) as caught:
        msgspec.json.decode(data, type=type_)
    detail = api.error_detail(caught.value)
    assert (detail.code, detail.field) == (code, field)
    assert detail.message
    body = msgspec.json.encode(api.ErrorResponse(error=detail))
    assert msgspec.json.decode(body, type=api.ErrorResponse).error == detail


def test_error_detail_keeps_a_protocol_error() -> None:
    err = InvalidRecordError("bad ref", field="ref")
    assert api.error_detail(err) == api.ErrorDetail(code="invalid", message="bad ref", field="ref")


def _module_structs() -> list[type[msgspec.Struct]]:
    return [
        obj
        for obj in vars(api).values()
        if inspect.isclass(obj)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == api.__name__
    ]


def test_schema_components_cover_every_api_type() -> None:
    types: list[Any] = [*api.SCHEMA_TYPES, *_module_structs(), api.IndicatorDefinitions]
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    assert len(schemas) == len(types)
    for t in api.SCHEMA_TYPES:
        assert components[t.__name__]["type"] == "object"
        assert components[t.__name__]["description"]
    assert schemas[-1] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/IndicatorDefinition"},
    }
    practice_in = components["PracticeIn"]
    assert "addr" in practice_in["required"]
    assert set(practice_in["properties"]) == {*PracticeBody.__struct_fields__, "addr"}
    json.dumps(components)  # the OpenAPI document is plain JSON


def test_every_module_struct_is_frozen_and_kw_only() -> None:
    for t in _module_structs():
        assert t.__struct_config__.frozen, t
        kinds = {p.kind for p in inspect.signature(t).parameters.values()}
        assert kinds <= {inspect.Parameter.KEYWORD_ONLY}, t


def test_responses_round_trip_with_utc_times() -> None:
    updated = api.utc_from_ms(1_760_000_000_123)
    rating = api.RatingSummary(
        count=3, mean=4.0, bayes=3.8, distribution={"3": 1, "4": 1, "5": 1}, min_count=3
    )
    body = msgspec.json.decode(_without(PRACTICE_JSON, "addr"), type=PracticeBody)
    detail = api.PracticeDetail(
        ref=api.format_ref(AUTHOR, "welcome-desk"),
        author=AUTHOR_TEXT,
        addr="welcome-desk",
        seq=7,
        id="ab" * 32,
        updated=updated,
        city="Mechelen",
        country="BEL",
        practice=body,
        rating=rating,
        replications=[
            api.ReplicationItem(
                city=None,
                author=identity_text(MENTOR),
                relation="adapted",
                status="running",
                outcome=Outcome(worked="yes"),
                updated=updated,
            )
        ],
        history=[api.HistoryItem(seq=7, id="cd" * 32, created=updated, changed=["summary"])],
        freshness="fresh",
        evidence_level="promising",
    )
    encoded = msgspec.json.encode(detail)
    assert b'"updated":"2025-10-09T08:53:20.123000Z"' in encoded
    assert b'"start":"2021-03-01"' in encoded
    assert msgspec.json.decode(encoded, type=api.PracticeDetail) == detail

    preview = api.IndicatorPreview(
        code="RESIDENTS_BY_STATUS",
        period="2024",
        cells=[
            api.PreviewCell(
                dims={"SEX": "F"},
                value=None,
                status="suppressed",
                reason="primary",
                obs_status="O",
                conf_status="C",
            )
        ],
        method=DisclosureMethod(threshold=10),
        suppressed=1,
    )
    assert msgspec.json.decode(msgspec.json.encode(preview), type=api.IndicatorPreview) == preview


def test_responses_tolerate_fields_a_newer_node_adds() -> None:
    data = b'{"ref": "a/b", "id": "' + b"0" * 64 + b'", "seq": 7, "new_field": true}'
    assert msgspec.json.decode(data, type=api.Published).seq == 7


def test_query_parameters_convert_from_strings() -> None:
    q = msgspec.convert(
        {"sector": "HOUSING", "limit": "20", "author": AUTHOR_TEXT}, api.PracticeQuery, strict=False
    )
    assert (q.sector, q.limit, q.sort) == ("HOUSING", 20, "relevance")
    with pytest.raises(msgspec.ValidationError, match=r"\$\.limit"):
        msgspec.convert({"limit": "1000"}, api.PracticeQuery, strict=False)


# -- practice refs ------------------------------------------------------------------------------
def test_ref_round_trip() -> None:
    ref = api.format_ref(AUTHOR, "welcome-desk")
    assert ref == f"{AUTHOR_TEXT}/welcome-desk"
    assert api.parse_ref(ref) == (AUTHOR, "welcome-desk")
    assert api.parse_ref(f"  {ref}\n") == (AUTHOR, "welcome-desk")
    assert msgspec.convert(ref, PracticeRefText) == ref


@given(
    st.binary(min_size=20, max_size=20), st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
)
def test_ref_round_trip_property(author: bytes, addr: str) -> None:
    assert api.parse_ref(api.format_ref(author, addr)) == (author, addr)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("welcome-desk", "<author identity>/<slug>"),
        (f"{AUTHOR_TEXT}", "<author identity>/<slug>"),
        (f"{AUTHOR_TEXT[:-1]}x/welcome-desk", "checksum"),
        (f"cmpk1{AUTHOR_TEXT[5:]}/welcome-desk", "cmid1"),
        (f"{AUTHOR_TEXT}/Welcome-Desk", "not a slug"),
        (f"{AUTHOR_TEXT}/welcome desk", "not a slug"),
        (f"{AUTHOR_TEXT}/", "not a slug"),
        (f"{AUTHOR_TEXT}/a/b", "not a slug"),
        (f"{AUTHOR_TEXT}/{'a' * 300}", "too long"),
        ("", "<author identity>/<slug>"),
    ],
)
def test_malformed_refs_are_refused_clearly(text: str, says: str) -> None:
    with pytest.raises((InvalidRecordError, BadIdentityError)) as caught:
        api.parse_ref(text)
    assert caught.value.field == "ref"
    # The identity part failing (checksum, prefix) is bad_identity; the rest is invalid.
    assert caught.value.code == ("bad_identity" if says in ("checksum", "cmid1") else "invalid")
    assert says in caught.value.message


def test_format_ref_refuses_bad_parts() -> None:
    with pytest.raises(InvalidRecordError) as caught:
        api.format_ref(AUTHOR, "Not A Slug")
    assert caught.value.field == "addr"
    with pytest.raises(InvalidRecordError) as caught:
        api.format_ref(b"short", "ok")
    assert caught.value.field == "author"


def test_record_ids_parse_from_hex() -> None:
    assert api.parse_record_id("ab" * 32) == b"\xab" * 32
    for bad in ("AB" * 32, "ab" * 31, "zz" * 32, ""):
        with pytest.raises(InvalidRecordError) as caught:
            api.parse_record_id(bad)
        assert caught.value.field == "id"


# -- cursors ------------------------------------------------------------------------------------
CURSOR = api.Cursor(sort="updated", after=[1_760_000_000_000, "welcome-desk", 3.5, None])


def test_cursor_round_trip() -> None:
    text = api.encode_cursor(CURSOR, key=KEY)
    assert msgspec.convert(text, api.CursorText) == text
    assert api.decode_cursor(text, key=KEY) == CURSOR


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.integers(min_value=-(2**63), max_value=2**64 - 1),
            st.floats(allow_nan=False),
            st.text(max_size=50),
        ),
        max_size=4,
    ),
    st.binary(max_size=8),
)
def test_cursor_round_trip_property(after: list[Any], scope: bytes) -> None:
    cursor = api.Cursor(sort="rating", after=after, scope=scope)
    assert api.decode_cursor(api.encode_cursor(cursor, key=KEY), key=KEY) == cursor


def _flip(text: str, i: int) -> str:
    return text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]


def test_tampered_cursors_are_refused() -> None:
    text = api.encode_cursor(CURSOR, key=KEY)
    forged = api.Cursor(sort="updated", after=[0, "", 0.0, None])
    forged_payload = canonical_encode(forged)
    bad = [
        *(_flip(text, i) for i in range(len(text))),
        text[:-1],
        text + "A",
        text[:10],
        "",
        "not a cursor",
        "x" * 2000,
        api.encode_cursor(CURSOR, key=b"another node"),
        # a well-formed payload with a made-up tag
        api.encode_cursor(forged, key=KEY)[:-22] + "A" * 22,
        # the payload alone, no tag
        base64.urlsafe_b64encode(forged_payload).rstrip(b"=").decode(),
    ]
    for candidate in bad:
        with pytest.raises(InvalidRecordError) as caught:
            api.decode_cursor(candidate, key=KEY)
        assert caught.value.field == "cursor", candidate


def test_cursor_key_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="key"):
        api.encode_cursor(CURSOR, key=b"")


def test_query_scope_ignores_paging_only() -> None:
    base = api.PracticeQuery(sector="HOUSING")
    assert api.query_scope(base) == api.query_scope(
        api.PracticeQuery(sector="HOUSING", limit=10, cursor="abc")
    )
    assert api.query_scope(base) != api.query_scope(api.PracticeQuery(sector="WORK"))
    assert api.query_scope(base) != api.query_scope(api.IndicatorQuery())


def test_utc_from_ms() -> None:
    t = api.utc_from_ms(0)
    assert t == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert api.utc_from_ms(1_500).microsecond == 500_000
