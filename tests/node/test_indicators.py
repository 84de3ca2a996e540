"""Indicators between two nodes: one publishes a quarter's table behind disclosure control, the
other shows it, compares it with its own, and exports SDMX-CSV a plain CSV reader parses."""

from __future__ import annotations

import csv
import io
import itertools
from typing import Any

import msgspec

from citymesh.practices.exports import Published, export
from citymesh.protocol import api

from .conftest import MakeCity, wait_for

COMBOS = list(itertools.product(("F", "M"), ("Y18-24", "Y25-34"), ("REFUGEE", "HOST")))


def rows(counts: list[int]) -> list[dict[str, Any]]:
    return [
        {"dims": {"SEX": s, "AGE": a, "MIG_STATUS": m}, "count": n}
        for (s, a, m), n in zip(COMBOS, counts, strict=True)
    ]


def preview_body(counts: list[int], period: str = "2026-Q3") -> dict[str, Any]:
    return {"code": "SHELTER_USERS", "period": period, "rows": rows(counts)}


def publish_body(counts: list[int], period: str = "2026-Q3") -> dict[str, Any]:
    return {
        "code": "SHELTER_USERS",
        "period": period,
        "rows": rows(counts),
        "source_type": "service_data",
        "attestation": {"aggregate_only": True, "officer_role": "Data officer"},
    }


async def test_publish_compare_and_export(make_city: MakeCity) -> None:
    a = await make_city("Mechelen", "BEL")
    b = await make_city("Lisbon", "PRT")
    status, definitions = await a.call("GET", "/v1/indicators/definitions")
    assert status == 200 and len(definitions) >= 20
    assert {"code", "name", "unit", "dimensions"} <= set(definitions[0])

    counts = [3, 120, 45, 260, 7, 95, 30, 410]
    status, preview = await a.call("POST", "/v1/indicators/preview", preview_body(counts))
    assert status == 200, preview
    fates = {(c["status"], c["reason"]) for c in preview["cells"]}
    assert ("suppressed", "primary") in fates and ("suppressed", "secondary") in fates
    for cell in preview["cells"]:
        if cell["status"] == "published":
            assert cell["value"] % 5 == 0 and not 1 <= cell["value"] <= 9
        else:
            assert cell["value"] is None and cell["obs_status"] == "O"
    # Nothing was published by the preview.
    assert (await b.call("GET", "/v1/indicators"))[1]["items"] == []

    status, published = await a.call("POST", "/v1/indicators", publish_body(counts))
    assert status == 201, published
    status, own = await b.call(
        "POST", "/v1/indicators", publish_body([40, 80, 15, 90, 22, 60, 11, 130])
    )
    assert status == 201, own

    async def b_has_both() -> bool:
        _, tables = await b.call("GET", "/v1/indicators?code=SHELTER_USERS&period=2026-Q3")
        return len(tables["items"]) == 2

    await wait_for(b_has_both)
    _, tables = await b.call("GET", "/v1/indicators?code=SHELTER_USERS&period=2026-Q3")
    parsed = msgspec_tables(tables)
    by_city = {t.city: t for t in parsed}
    assert set(by_city) == {"Mechelen", "Lisbon"}
    mechelen = by_city["Mechelen"].table
    preview_values = [c["value"] for c in preview["cells"]]
    assert [c.value for c in mechelen.cells] == preview_values, "published exactly as previewed"
    assert mechelen.attestation.aggregate_only

    text = export(
        [Published(t.author, t.city or "", t.country or "", t.table) for t in parsed], "sdmx"
    )
    records = list(csv.DictReader(io.StringIO(text)))
    assert {r["REF_AREA"] for r in records} == {t.author for t in parsed}
    hidden = [r for r in records if r["CONF_STATUS"] in ("C", "D")]
    assert hidden and all(r["OBS_VALUE"] == "" and r["OBS_STATUS"] == "O" for r in hidden)
    assert all(r["OBS_VALUE"] == "" or int(r["OBS_VALUE"]) % 5 == 0 for r in records)


def msgspec_tables(payload: dict[str, Any]) -> list[api.IndicatorTable]:
    return msgspec.convert(payload, api.IndicatorList).items


async def test_person_level_and_bad_tables_are_refused(make_city: MakeCity) -> None:
    a = await make_city("Mechelen", "BEL")
    person = preview_body([1] * 8)
    status, err = await a.call("POST", "/v1/indicators/preview", person)
    assert (status, err["error"]["code"]) == (422, "not_aggregate")
    assert "person" in err["error"]["message"]
    extra = preview_body([20] * 8)
    extra["rows"][0]["dims"]["NAME"] = "Ana"
    status, err = await a.call("POST", "/v1/indicators/preview", extra)
    assert status == 422 and "personal data" in err["error"]["message"]
    unknown = {**preview_body([20] * 8), "code": "NO_SUCH"}
    status, err = await a.call("POST", "/v1/indicators/preview", unknown)
    assert (status, err["error"]["code"], err["error"]["field"]) == (
        422,
        "unknown_indicator",
        "code",
    )
    no_attest = publish_body([20] * 8)
    no_attest["attestation"]["aggregate_only"] = False
    status, err = await a.call("POST", "/v1/indicators", no_attest)
    assert (status, err["error"]["code"]) == (422, "attestation")
    _, tables = await a.call("GET", "/v1/indicators")
    assert tables["items"] == [], "nothing was published"


async def test_suppression_pattern_is_carried_to_the_next_quarter(make_city: MakeCity) -> None:
    a = await make_city("Mechelen", "BEL")
    q3 = [3, 120, 45, 260, 7, 95, 30, 410]
    assert (await a.call("POST", "/v1/indicators", publish_body(q3)))[0] == 201
    q4 = [12, 120, 45, 260, 14, 95, 30, 410]  # the small cells grew past the threshold
    _, preview = await a.call("POST", "/v1/indicators/preview", preview_body(q4, "2026-Q4"))
    carried = [c for c in preview["cells"] if c["reason"] == "carried"]
    assert carried, "cells suppressed in Q3 stay suppressed in Q4"
