"""The sample catalogue for the demo network (``citymesh.practices`` / ``samples``).

The three JSON files are data only: city profiles, practices per city, and ratings and
replications between the cities. Every practice must decode through the same request schema
the node's ``POST /v1/practices`` uses, once the loader has dropped the ``_``-prefixed hints.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from importlib.resources import files
from typing import Any, get_args

import msgspec
import pytest

from citymesh.node.config import CityConfig
from citymesh.protocol.codes import SECTORS, TARGET_GROUPS, PracticeStatus
from citymesh.protocol.records import PracticeBody, RatingBody, ReplicationBody

try:
    from citymesh.protocol.api import PracticeIn, RatingIn, ReplicationIn
except ImportError:  # api.py not there yet: fall back to the record bodies
    PracticeIn = None  # type: ignore[assignment,misc]
    RatingIn = None  # type: ignore[assignment,misc]
    ReplicationIn = None  # type: ignore[assignment,misc]

SAMPLES = files("citymesh.practices") / "samples"
CATALOGUE_WRITTEN = datetime.date(2026, 11, 26)
"""When the catalogue was written: some review dates lie before it (overdue), some after."""
ACTIVITY_KEYS = ("kind", "by", "of_city", "of_addr")
ADAPTED_KEYS = ("_adapted_from_city", "_adapted_from_addr", "_adapted_from_title")
SAMPLE_MARK = "Sample data for the citymesh demo"


def _load(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """What the loader decodes: the object without its ``_``-prefixed hints."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _decode_practice(obj: dict[str, Any]) -> PracticeBody:
    data = _public(obj)
    if PracticeIn is not None:
        practice: PracticeBody = msgspec.json.decode(msgspec.json.encode(data), type=PracticeIn)
        assert practice.addr == obj["addr"]
        return practice
    data.pop("addr")
    return msgspec.json.decode(msgspec.json.encode(data), type=PracticeBody)


@pytest.fixture(scope="module")
def cities() -> list[dict[str, Any]]:
    return _load("cities.json")


@pytest.fixture(scope="module")
def practices() -> dict[str, list[dict[str, Any]]]:
    return _load("practices.json")


@pytest.fixture(scope="module")
def activity() -> list[dict[str, Any]]:
    return _load("activity.json")


@pytest.fixture(scope="module")
def decoded(practices: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], PracticeBody]:
    return {
        (city, obj["addr"]): _decode_practice(obj)
        for city, objs in practices.items()
        for obj in objs
    }


def test_samples_is_a_data_folder_not_a_package() -> None:
    assert SAMPLES.is_dir()
    assert not (SAMPLES / "__init__.py").is_file()


def test_cities_decode_into_city_config(cities: list[dict[str, Any]]) -> None:
    assert len(cities) == 5
    configs = [msgspec.json.decode(msgspec.json.encode(c), type=CityConfig) for c in cities]
    names = [c.name for c in configs]
    assert len(set(names)) == len(names)
    assert len({c.country for c in configs}) == len(configs)
    assert any(not name.isascii() for name in names), "search must fold diacritics"
    for config in configs:
        assert config.description.startswith(SAMPLE_MARK), config.name
        assert config.role_mailbox is not None
        assert config.role_mailbox.endswith(".example.org"), config.role_mailbox
        assert config.population_band is not None
        assert config.admin_code
        assert config.languages


def test_practices_per_city(
    cities: list[dict[str, Any]], practices: dict[str, list[dict[str, Any]]]
) -> None:
    assert list(practices) == [c["name"] for c in cities]
    for city, objs in practices.items():
        assert len(objs) == 4, city
        addrs = [obj["addr"] for obj in objs]
        assert len(set(addrs)) == len(addrs), f"duplicate addr in {city}: {addrs}"
    assert sum(len(objs) for objs in practices.values()) == 20


def test_every_practice_decodes_as_a_sample(
    practices: dict[str, list[dict[str, Any]]], decoded: dict[tuple[str, str], PracticeBody]
) -> None:
    for city, objs in practices.items():
        for obj in objs:
            where = f"{city}/{obj['addr']}"
            assert obj.get("sample") is True, where
            assert "adapted_from" not in obj, f"{where}: the demo fills adapted_from at run time"
            assert set(obj) - set(_public(obj)) <= set(ADAPTED_KEYS), where
            practice = decoded[city, obj["addr"]]
            assert practice.sample is True
            assert practice.licence == "CC-BY-4.0"
            assert "en" in practice.title and len(practice.title) >= 2, where
            assert practice.title.keys() <= practice.summary.keys(), where
            assert practice.contact.role_mailbox.endswith(".example.org"), where
            assert practice.contact.languages, where
            assert practice.results and practice.lessons and practice.keywords, where
            assert all(link.url.startswith("https://") for link in practice.links)
            assert all(".example.org/" in link.url for link in practice.links), where
            words = len(practice.description.split())
            assert 150 <= words <= 400, f"{where}: description has {words} words"
            assert practice.description.lstrip("*").startswith(SAMPLE_MARK), where
            assert "\n## " in practice.description, f"{where}: description has no headings"


def test_catalogue_covers_the_code_lists(decoded: dict[tuple[str, str], PracticeBody]) -> None:
    bodies = list(decoded.values())
    sectors = {s for p in bodies for s in p.sectors}
    assert sectors == set(SECTORS), f"sectors not covered: {set(SECTORS) - sectors}"
    groups = {g for p in bodies for g in p.target_groups}
    assert len(groups) >= len(TARGET_GROUPS) - 2, (
        f"target groups missing: {set(TARGET_GROUPS) - groups}"
    )
    assert {p.status for p in bodies} == set(get_args(PracticeStatus))
    assert len({p.resources.budget_band for p in bodies}) == 5
    assert len({f for p in bodies for f in p.resources.funding}) >= 6
    assert {p.evaluation.type for p in bodies} >= {"monitoring", "internal", "external", "academic"}
    assert all(p.frameworks.mechelen and p.frameworks.sdg_targets for p in bodies)
    assert all(p.frameworks.gcm_objectives for p in bodies)
    roles = {a.role for p in bodies for a in p.actors}
    assert {"lead", "partner", "funder", "implementer", "evaluator", "mentor"} <= roles
    review = [p.review_by for p in bodies if p.review_by is not None]
    assert any(d < CATALOGUE_WRITTEN for d in review), "no practice is overdue for review"
    assert any(d > CATALOGUE_WRITTEN for d in review), "no practice has a future review date"


def test_adaptations_point_to_another_citys_practice(
    practices: dict[str, list[dict[str, Any]]], decoded: dict[tuple[str, str], PracticeBody]
) -> None:
    adapted = 0
    for city, objs in practices.items():
        for obj in objs:
            hints = [k for k in ADAPTED_KEYS if k in obj]
            if not hints:
                continue
            adapted += 1
            assert hints == list(ADAPTED_KEYS), f"{city}/{obj['addr']}: give all of {ADAPTED_KEYS}"
            source = (obj["_adapted_from_city"], obj["_adapted_from_addr"])
            assert source[0] != city
            assert source in decoded, f"{city}/{obj['addr']} adapts unknown {source}"
            assert decoded[source].title["en"] == obj["_adapted_from_title"]
    assert adapted >= 2


def test_activity_refers_to_existing_practices(
    cities: list[dict[str, Any]],
    decoded: dict[tuple[str, str], PracticeBody],
    activity: list[dict[str, Any]],
) -> None:
    names = {c["name"] for c in cities}
    kinds = Counter(item["kind"] for item in activity)
    assert set(kinds) == {"rating", "replication"}
    assert 20 <= kinds["rating"] <= 30
    assert 6 <= kinds["replication"] <= 10
    seen: set[tuple[str, str, str, str]] = set()
    for item in activity:
        where = f"{item['kind']} by {item['by']} of {item['of_city']}/{item['of_addr']}"
        assert item["by"] in names, where
        assert (item["of_city"], item["of_addr"]) in decoded, where
        assert item["by"] != item["of_city"], f"{where}: a city never rates its own practice"
        key = (item["kind"], item["by"], item["of_city"], item["of_addr"])
        assert key not in seen, f"{where}: one current record per city and practice"
        seen.add(key)


def test_activity_bodies_decode(activity: list[dict[str, Any]]) -> None:
    rating_type = RatingIn or RatingBody
    replication_type = ReplicationIn or ReplicationBody
    worked: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for item in activity:
        body = {k: v for k, v in item.items() if k not in ACTIVITY_KEYS}
        raw = msgspec.json.encode(body)
        if item["kind"] == "rating":
            rating = msgspec.json.decode(raw, type=rating_type)
            scores = msgspec.structs.asdict(rating.scores)
            assert None not in scores.values(), item
            assert rating.comment
        else:
            replication = msgspec.json.decode(raw, type=replication_type)
            assert replication.start is not None and replication.adaptations
            statuses[replication.status] += 1
            if replication.outcome is not None:
                worked[replication.outcome.worked] += 1
    assert {"yes", "partly", "no", "too_early"} <= set(worked), worked
    assert statuses["abandoned"] >= 1, "include failures as well as successes"
