"""Search results on a generated catalogue, checked against a plain reading of their definition.

The search takes shortcuts for speed: limited tier queries, filters applied inside SQL before bm25
ranks, full-text match sets kept per query and per word. Here every page (through cursors) and
the facets of broad prefixes ("in" matches nearly every practice), common words, several words,
with and without filters, are compared with what the definition gives when computed the slow way:
every row of every tier ranked, filtered in Python, sorted by (tier, bm25, ref).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from citymesh.node import search as search_module
from citymesh.node.search import BM25, match_expression, search_practices
from citymesh.node.store import Store
from citymesh.protocol import api
from citymesh.protocol.codes import SECTORS
from citymesh.protocol.records import CityBody, Contact, PracticeBody, Record

from .test_search import Author

KEY = b"broad"
HEAD_BM25 = "bm25(practices_head_fts, 10.0, 4.0, 3.0, 2.0)"
FACETS = ("sector", "target_group", "country", "status", "language")
COUNTRIES = ("BEL", "PRT", "POL", "FRA", "ITA", "DEU")


# Words sharing prefixes, the first ones in most practices: "in", "inte", "par", "co" are broad.
def _split(text: str) -> list[str]:
    return text.split()


VOCABULARY = _split(
    "integration intercultural interpreters internship inclusion information participation "
    "partners parents parks community council cooperation counselling housing language school "
    "health work workers mediation volunteers youth women refugees newcomers employment "
    "training"
)
FILLER = _split("the and of to in for with on by a city local new")


def words(rng: random.Random, n: int) -> str:
    weights = [1 / (rank + 1) for rank in range(len(VOCABULARY))]
    picked = rng.choices(VOCABULARY, weights, k=n)
    return " ".join(w if rng.random() < 0.7 else rng.choice(FILLER) for w in picked)


def practice(rng: random.Random, n: int) -> PracticeBody:
    langs = ["en"] if rng.random() < 0.8 else ["en", rng.choice(("fr", "pt"))]
    return PracticeBody(
        # Short titles of few words: many bm25 ties, broken by ref.
        title={lang: words(rng, rng.randint(1, 4)) or "practice" for lang in langs},
        summary={lang: words(rng, rng.randint(0, 12)) for lang in langs},
        description=words(rng, rng.randint(0, 60)),
        status=rng.choice(("pilot", "active", "regular_service", "ended")),
        sectors=rng.sample(SECTORS, rng.randint(1, 2)),  # type: ignore[arg-type]
        keywords=sorted(set(rng.choices(VOCABULARY, k=rng.randint(0, 2)))),
        contact=Contact(role_mailbox=f"desk{n}@city.example.org"),
    )


@dataclass
class Generated:
    store: Store
    authors: list[Author]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    rng = random.Random(7)
    store = Store(tmp_path_factory.mktemp("broad") / "node.db")
    authors = [Author(500 + i, f"Town {i}", COUNTRIES[i % len(COUNTRIES)]) for i in range(8)]
    records: list[Record] = []
    for a in authors:
        records.append(a.seal(CityBody(name=a.name, country=a.country, networks=["citymesh"])))
    for n in range(420):
        a = authors[n % len(authors)]
        records.append(a.seal(practice(rng, n), addr=f"p-{n}"))
    for i in range(0, len(records), 50):
        store.ingest(records[i : i + 50], Counter(), now_ms=records[-1].header.created)
    try:
        yield Generated(store, authors)
    finally:
        store.close()


# -- the definition, computed the slow way --------------------------------------------------------
def oracle(gen: Generated, q: str, **filters: Any) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Every result in relevance order, and the facets."""
    db = gen.store.db
    match = match_expression(q)
    assert match is not None
    rows = db.execute(
        "SELECT docid, ref, author, country, sectors, target_groups, languages, status"
        " FROM practice_search WHERE live"
    ).fetchall()
    codes: dict[int, dict[str, set[str]]] = {}
    ref: dict[int, str] = {}
    author: dict[int, bytes] = {}
    for docid, r, who, country, sectors, groups, langs, status in rows:
        ref[docid], author[docid] = r, bytes(who)
        codes[docid] = {
            "sector": set(sectors.split()),
            "target_group": set(groups.split()),
            "country": {country},
            "status": {status},
            "language": set(langs.split()),
        }
    want_author = api.identity_from_text(filters["author"]) if "author" in filters else None

    def allowed(d: int, skip: str | None = None) -> bool:
        if want_author is not None and author[d] != want_author:
            return False
        return all(filters[f] in codes[d][f] for f in FACETS if f in filters and f != skip)

    def ranked(table: str, expr: str, rank: str) -> list[tuple[int, float]]:
        sql = f"SELECT rowid, {rank} FROM {table} WHERE {table} MATCH ?"
        return [(int(d), float(s)) for d, s in db.execute(sql, (expr,))]

    title = ranked("practices_head_fts", f"{{title}} : ({match})", HEAD_BM25)
    head = ranked("practices_head_fts", f"({match}) NOT {{title}} : ({match})", HEAD_BM25)
    in_head = {d for d, _ in title} | {d for d, _ in head}
    body = [e for e in ranked("practices_fts", match, BM25) if e[0] not in in_head]
    entries = [
        (tier, score, ref[d])
        for tier, found in enumerate((title, head, body))
        for d, score in found
        if d in ref and allowed(d)
    ]
    matched = {d for d, _ in ranked("practices_fts", match, BM25) if d in ref}
    facets: dict[str, dict[str, int]] = {}
    for facet in FACETS:
        counts = Counter(c for d in matched if allowed(d, skip=facet) for c in codes[d][facet])
        facets[facet] = dict(counts)
    return [r for _, _, r in sorted(entries)], facets


def pages(gen: Generated, limit: int, **fields: Any) -> tuple[list[str], api.PracticeList]:
    out: list[str] = []
    cursor = None
    first: api.PracticeList | None = None
    for _ in range(1000):
        page = search_practices(
            gen.store.db, api.PracticeQuery(limit=limit, cursor=cursor, **fields), key=KEY
        )
        first = first or page
        assert len(page.items) <= limit
        out += [item.ref for item in page.items]
        cursor = page.next
        if cursor is None:
            return out, first
    raise AssertionError("pagination does not end")


def filter_sets(gen: Generated) -> list[dict[str, Any]]:
    return [
        {},
        {"sector": "HOUSING"},
        {"country": "PRT"},
        {"sector": "EDUCATION", "status": "active"},
        {"language": "fr"},
        {"author": gen.authors[3].text},
    ]


QUERIES = ("in", "inte", "par", "co", "integration", "inte par", "wor co in", "youth", "zzz")


def test_generated_catalogue_has_broad_prefixes(generated: Generated) -> None:
    db = generated.store.db
    assert db.execute("SELECT count(*) FROM practice_search WHERE live").fetchone() == (420,)
    assert len(oracle(generated, "in")[0]) > 400  # nearly all of them
    assert 100 < len(oracle(generated, "par")[0]) < 400


@pytest.mark.parametrize("q", QUERIES)
def test_relevance_pages_and_facets_follow_the_definition(generated: Generated, q: str) -> None:
    search_module.reset_caches()
    for filters in filter_sets(generated):
        expected, facets = oracle(generated, q, **filters)
        for limit in (50, 7):
            found, first = pages(generated, limit, q=q, **filters)
            assert found == expected, (q, filters, limit)
            assert first.facets == facets, (q, filters)


def test_kept_match_sets_give_the_same_results(generated: Generated) -> None:
    """Words met in earlier queries (kept match sets, per word and per query) change nothing:
    every query gives the same results whatever ran before it, in either order."""
    queries = ["inte", "par", "inte par", "par inte", "co", "wor co in", "co in", "in"]
    cold: dict[str, api.PracticeList] = {}
    for q in queries:
        search_module.reset_caches()
        cold[q] = search_practices(generated.store.db, api.PracticeQuery(q=q), key=KEY)
    search_module.reset_caches()
    for q in [*queries, *reversed(queries)]:
        variants: tuple[dict[str, Any], ...] = ({}, {"sector": "HOUSING"}, {"sort": "updated"})
        for fields in variants:
            got = search_practices(generated.store.db, api.PracticeQuery(q=q, **fields), key=KEY)
            if not fields:
                assert got == cold[q], q
            expected, _ = oracle(generated, q, **{k: v for k, v in fields.items() if k != "sort"})
            assert {item.ref for item in got.items} <= set(expected)


def test_text_with_other_sorts_follows_the_definition(generated: Generated) -> None:
    db = generated.store.db
    created = dict(db.execute("SELECT ref, created FROM practice_search WHERE live").fetchall())
    search_module.reset_caches()
    for q in ("in", "par co", "inte"):
        for filters in filter_sets(generated):
            expected, _ = oracle(generated, q, **filters)
            found, _ = pages(generated, 11, q=q, sort="updated", **filters)
            assert found == sorted(expected, key=lambda r: (-created[r], r)), (q, filters)


def test_a_kept_word_follows_new_text(tmp_path: Path) -> None:
    """A word's kept match set is dropped when the full text changes: a practice published
    after a search for "alpha" is found by "alpha" and by "alpha beta"."""
    store = Store(tmp_path / "node.db")
    try:
        a = Author(900, "Alphaville", "BEL")
        store.ingest([a.city(), a.seal(practice_named("alpha one"), "p1")], Counter(), now_ms=0)
        db = store.db

        def refs(q: str) -> list[str]:
            return [i.ref for i in search_practices(db, api.PracticeQuery(q=q), key=KEY).items]

        assert refs("alpha") == [a.ref("p1")]
        assert refs("alpha beta") == []
        store.ingest([a.seal(practice_named("alpha beta"), "p2")], Counter(), now_ms=0)
        assert refs("alpha beta") == [a.ref("p2")]
        assert sorted(refs("alpha")) == sorted([a.ref("p1"), a.ref("p2")])
    finally:
        store.close()


def practice_named(title: str) -> PracticeBody:
    return PracticeBody(
        title={"en": title},
        summary={},
        description="",
        status="active",
        sectors=["HOUSING"],
        contact=Contact(role_mailbox="desk@city.example.org"),
    )
