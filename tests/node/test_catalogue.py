"""The catalogue across three nodes and a relay: a practice from A, rated by B and C, replicated
by C with a reported outcome, shows the same summary, distribution and lineage everywhere."""

from __future__ import annotations

from typing import Any

from .conftest import MakeCity, wait_for

PRACTICE: dict[str, Any] = {
    "addr": "welcome-desk",
    "title": {"en": "Welcome desk for newcomers"},
    "summary": {"en": "One door for housing, language classes and registration."},
    "status": "active",
    "sectors": ["HOUSING"],
    "target_groups": ["REFUGEE"],
    "contact": {"role_mailbox": "welcome@mechelen.example.org"},
    "review_by": "2020-01-01",
}


async def test_rated_and_replicated_practice_agrees_on_three_nodes(make_city: MakeCity) -> None:
    a = await make_city("Mechelen", "BEL")
    b = await make_city("Lisbon", "PRT")
    c = await make_city("Gdańsk", "POL")
    status, published = await a.call("POST", "/v1/practices", PRACTICE)
    assert status == 201, published
    ref = published["ref"]

    async def everyone_has_it() -> bool:
        for city in (b, c):
            if (await city.call("GET", f"/v1/practices/{ref}"))[0] != 200:
                return False
        return True

    await wait_for(everyone_has_it)
    rating_b = {"score": 4, "scores": {"relevance": 5, "evidence": 3}, "comment": "Clear and cheap"}
    assert (await b.call("POST", f"/v1/practices/{ref}/ratings", rating_b))[0] == 201
    assert (await c.call("POST", f"/v1/practices/{ref}/ratings", {"score": 2}))[0] == 201
    # C changes its mind: one current rating per city.
    assert (await c.call("POST", f"/v1/practices/{ref}/ratings", {"score": 5}))[0] == 201
    replication = {
        "relation": "adapted",
        "status": "running",
        "start": "2024-02-01",
        "adaptations": "Run by an NGO instead of city staff",
        "mentor": a.identity,
        "outcome": {"worked": "yes", "lessons": "Needs a full-time coordinator"},
    }
    status, rep = await c.call("POST", f"/v1/practices/{ref}/replications", replication)
    assert status == 201, rep

    async def converged() -> bool:
        for city in (a, b, c):
            _, detail = await city.call("GET", f"/v1/practices/{ref}")
            if detail["rating"]["count"] != 2 or len(detail["replications"]) != 1:
                return False
        return True

    await wait_for(converged)
    details = [(await city.call("GET", f"/v1/practices/{ref}"))[1] for city in (a, b, c)]
    for detail in details:
        assert detail["rating"]["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1}
        assert detail["rating"]["mean"] is None  # hidden below the minimum count (3)
        assert detail["rating"]["bayes"] is not None
        (lineage,) = detail["replications"]
        assert lineage["city"] == "Gdańsk"
        assert lineage["status"] == "running"
        assert lineage["outcome"]["worked"] == "yes"
        assert lineage["mentor"] == a.identity
        assert detail["evidence_level"] == "replicated"
        assert detail["freshness"] == "overdue"
        assert {r["city"] for r in detail["ratings"]} == {"Lisbon", "Gdańsk"}
    assert details[1]["own_rating"]["score"] == 4
    assert details[0]["own"] is True

    # The list shows the replication count; search folds diacritics ("Gdansk" finds "Gdańsk").
    _, listing = await a.call("GET", "/v1/practices?has_replications=true")
    assert [item["replications"] for item in listing["items"]] == [1]
    _, cities = await a.call("GET", "/v1/cities")
    assert {item["name"] for item in cities["items"]} == {"Mechelen", "Lisbon", "Gdańsk"}


async def test_bad_ratings_and_own_practice(make_city: MakeCity) -> None:
    a = await make_city("Mechelen", "BEL")
    b = await make_city("Lisbon", "PRT")
    _, published = await a.call("POST", "/v1/practices", PRACTICE)
    ref = published["ref"]
    status, err = await a.call("POST", f"/v1/practices/{ref}/ratings", {"score": 5})
    assert (status, err["error"]["code"]) == (409, "own_practice")
    unknown = f"{b.identity}/no-such-practice"
    status, err = await a.call("POST", f"/v1/practices/{unknown}/ratings", {"score": 3})
    assert (status, err["error"]["code"], err["error"]["field"]) == (404, "unknown_practice", "ref")

    async def b_has_it() -> bool:
        return (await b.call("GET", f"/v1/practices/{ref}"))[0] == 200

    await wait_for(b_has_it)
    for bad, field in (
        ({"score": 6}, "score"),
        ({"score": 0}, "score"),
        ({"score": 3, "comment": "x" * 2001}, "comment"),
        ({"score": 3, "scores": {"relevance": 9}}, "scores.relevance"),
        ({"score": 3, "role": "boss"}, "role"),
    ):
        status, err = await b.call("POST", f"/v1/practices/{ref}/ratings", bad)
        assert status == 400, (bad, err)
        assert err["error"]["field"] == field, err
    status, err = await b.call("POST", "/v1/practices/not-a-ref/x/ratings", {"score": 3})
    assert status == 400
    status, err = await b.call("DELETE", f"/v1/practices/{ref}")
    assert (status, err["error"]["code"]) == (403, "not_own")
    # Retraction by the author hides it from search everywhere; history stays retrievable.
    status, _ = await a.call("DELETE", f"/v1/practices/{ref}")
    assert status == 200

    async def gone_from_b() -> bool:
        return (await b.call("GET", f"/v1/practices/{ref}"))[0] == 404

    await wait_for(gone_from_b)
    _, listing = await b.call("GET", "/v1/practices")
    assert ref not in [item["ref"] for item in listing["items"]]
