"""GET /v1/indicators a page at a time: keyset cursors, complete and without repeats."""

from __future__ import annotations

from .conftest import MakeCity
from .test_indicators import publish_body


async def test_tables_page_through_with_a_cursor(make_city: MakeCity) -> None:
    a = await make_city("Mechelen", "BEL")
    counts = [30, 120, 45, 260, 70, 95, 60, 410]
    periods = ["2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4", "2026-Q1"]
    for period in periods:
        status, published = await a.call("POST", "/v1/indicators", publish_body(counts, period))
        assert status == 201, published
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        path = "/v1/indicators?code=SHELTER_USERS&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await a.call("GET", path)
        assert status == 200, page
        seen += [t["table"]["period"] for t in page["items"]]
        pages += 1
        cursor = page.get("next")
        if not cursor:
            break
    assert seen == periods and pages == 3

    # a cursor belongs to its query and to this node; a changed one is refused
    _, first = await a.call("GET", "/v1/indicators?code=SHELTER_USERS&limit=2")
    status, err = await a.call("GET", f"/v1/indicators?limit=2&cursor={first['next']}")
    assert (status, err["error"]["field"]) == (422, "cursor")
    tampered = first["next"][:-2] + ("AA" if first["next"][-2:] != "AA" else "BB")
    status, err = await a.call("GET", f"/v1/indicators?code=SHELTER_USERS&cursor={tampered}")
    assert status in (400, 422) and err["error"]["field"] == "cursor"
