"""Practice search (citymesh.node.search) on a generated catalogue in a real SQLite file.

Records are real signed envelopes from several cities, applied through `Store.add_own` and
`Store.ingest`; the expectations come from a plain Python model of the same catalogue.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from citymesh.node import search as search_module
from citymesh.node.app import create_app
from citymesh.node.natsserver import NatsServer
from citymesh.node.search import search_practices
from citymesh.node.store import Store
from citymesh.node.store.apply import apply_records
from citymesh.node.store.db import connect
from citymesh.practices.ratings import DEFAULT_PRIOR_WEIGHT
from citymesh.protocol import api
from citymesh.protocol.envelope import seal
from citymesh.protocol.errors import InvalidRecordError
from citymesh.protocol.identity import Genesis, SecretKey, identity_of, identity_text
from citymesh.protocol.records import (
    Body,
    CityBody,
    Contact,
    PracticeBody,
    RatingBody,
    Record,
    ReplicationBody,
    RetractionBody,
)

from .conftest import MakeHome

NETWORK = "citymesh"
T0 = 1_700_000_000_000
KEY = b"k"
SORTS: tuple[api.PracticeSort, ...] = ("relevance", "updated", "rating", "replications", "title")
_clock = itertools.count(1)


# -- a small catalogue ----------------------------------------------------------------------------
class Author:
    """One city's chain: seals its next record with the right seq, prev and genesis."""

    def __init__(self, n: int, name: str, country: str) -> None:
        self.secret = SecretKey(hashlib.sha256(b"citymesh-search-%d" % n).digest())
        self.genesis = Genesis(key=self.secret.public_key, salt=b"search-%d" % n)
        self.id = identity_of(self.genesis)
        self.text = identity_text(self.id)
        self.name = name
        self.country = country
        self.seq = 0
        self.prev: bytes | None = None

    def seal(self, body: Body, addr: str = "") -> Record:
        self.seq += 1
        rec = seal(
            self.secret,
            body=body,
            network=NETWORK,
            author=self.id,
            seq=self.seq,
            prev=self.prev,
            created=T0 + next(_clock) * 1000,
            addr=addr,
            genesis=self.genesis if self.seq == 1 else None,
        )
        self.prev = rec.id
        return rec

    def city(self) -> Record:
        return self.seal(CityBody(name=self.name, country=self.country, networks=[NETWORK]))

    def ref(self, addr: str) -> str:
        return f"{self.text}/{addr}"


@dataclass
class Expected:
    """What the model knows of one current practice."""

    ref: str
    author: Author
    body: PracticeBody
    created: int
    ratings: dict[str, int] = field(default_factory=dict)
    """Current score by rater (one per city)."""
    replications: int = 0

    @property
    def scores(self) -> list[int]:
        return list(self.ratings.values())

    @property
    def title(self) -> str:
        return self.body.title.get("en") or self.body.title[sorted(self.body.title)[0]]

    def codes(self, facet: str) -> set[str]:
        if facet == "sector":
            return set(self.body.sectors)
        if facet == "target_group":
            return set(self.body.target_groups)
        if facet == "country":
            return {self.author.country}
        if facet == "status":
            return {self.body.status}
        assert facet == "language"
        return {lang.split("-")[0] for lang in (*self.body.title, *self.body.summary)}


def body(
    title: dict[str, str],
    *,
    summary: dict[str, str] | None = None,
    description: str = "",
    status: str = "active",
    sectors: tuple[str, ...] = ("HOUSING",),
    target_groups: tuple[str, ...] = (),
) -> PracticeBody:
    return PracticeBody(
        title=title,
        summary=summary or {},
        description=description,
        status=status,  # type: ignore[arg-type]
        sectors=list(sectors),  # type: ignore[arg-type]
        target_groups=list(target_groups),  # type: ignore[arg-type]
        contact=Contact(role_mailbox="desk@city.example.org"),
    )


PRACTICES: dict[str, tuple[str, PracticeBody]] = {
    # name: (author, body)
    "welcome": (
        "sp",
        body(
            {"en": "Welcome desk for newcomers"},
            summary={"en": "One door for registration and language classes."},
            description="The city desk opened in 2019 and serves everyone who arrives.",
            sectors=("HOUSING", "RIGHTS_INFO"),
            target_groups=("NEWCOMER", "REFUGEE"),
        ),
    ),
    "cafe_langues": (
        "sp",
        body(
            {"fr": "Café des langues", "pt": "Café de línguas"},
            summary={"fr": "Rencontres hebdomadaires entre voisins."},
            description="Weekly city meetings between neighbours.",
            status="pilot",
            sectors=("EDUCATION",),
            target_groups=("NEWCOMER",),
        ),
    ),
    "housing_first": (
        "me",
        body(
            {"en": "Housing first for refugee families"},
            summary={"en": "Flats before everything else."},
            description="The city rents flats on the private market.",
            status="regular_service",
            sectors=("HOUSING",),
            target_groups=("REFUGEE",),
        ),
    ),
    "mentoring": (
        "me",
        body(
            {"en": "Mentoring programme"},
            summary={"en": "Volunteers accompany newcomers for a year."},
            description=(
                "Mentors help with many things in the city: school enrolment, doctors, "
                "forms, and sometimes housing applications; they meet every week."
            ),
            sectors=("WORK", "COHESION"),
            target_groups=("NEWCOMER",),
        ),
    ),
    "language_cafe": (
        "gd",
        body(
            {"en": "Language cafe for parents"},
            summary={"en": "Parents practise together while children play."},
            description="Held in the city library.",
            sectors=("EDUCATION",),
            target_groups=("FOREIGN_BORN",),
        ),
    ),
    "language_support": (
        "gd",
        body(
            {"en": "Language support"},
            summary={"en": "Extra lessons after school hours."},
            description="Mothers meet in a café after class; the city pays the teachers.",
            status="ended",
            sectors=("EDUCATION",),
            target_groups=("FOREIGN_BORN",),
        ),
    ),
    "job_fair": (
        "li",
        body(
            {"en": "Job fair with employers"},
            summary={"en": "Twice a year in the city hall."},
            sectors=("WORK",),
            target_groups=("EMPLOYERS", "MIGRANT_WORKER"),
        ),
    ),
    "legal_aid": (
        "li",
        body(
            {"en": "Legal aid clinic"},
            summary={"en": "Free advice on asylum procedures."},
            status="pilot",
            sectors=("JUSTICE",),
            target_groups=("ASYLUM_SEEKER",),
        ),
    ),
    "mediators": (
        "li",
        body(
            {"en": "Health mediators"},
            summary={"en": "Mediators accompany patients to city clinics."},
            sectors=("HEALTH",),
            target_groups=("REFUGEE",),
        ),
    ),
    "shelter": (
        "ne",
        body(
            {"en": "Night shelter"},
            summary={"en": "Beds and a warm meal."},
            sectors=("HOUSING", "CRISIS"),
            target_groups=("IRREGULAR",),
        ),
    ),
}
ADDR = {name: name.replace("_", "-") for name in PRACTICES}
RATINGS = {
    # name: scores by raters r0, r1, …
    "housing_first": [5] * 10 + [4] * 10,  # twenty ratings, mean 4.5
    "legal_aid": [5],  # one 5
    "job_fair": [2] * 20,
    "welcome": [4, 4, 3],
}
REPLICATIONS = {"welcome": 3, "housing_first": 1, "language_cafe": 1}


@dataclass
class Catalogue:
    store: Store
    authors: dict[str, Author]
    practices: dict[str, Expected]
    orphans: list[int] = field(default_factory=list)
    """Scores of retracted practices: still current ratings, so still in the prior."""

    def ref(self, name: str) -> str:
        return self.practices[name].ref

    def prior(self) -> float:
        scores = [s for p in self.practices.values() for s in p.scores] + self.orphans
        return sum(scores) / len(scores) if scores else 3.0

    def bayes(self, p: Expected) -> float:
        prior = self.prior()
        return (DEFAULT_PRIOR_WEIGHT * prior + sum(p.scores)) / (
            DEFAULT_PRIOR_WEIGHT + len(p.scores)
        )

    def select(self, *, skip: str | None = None, **filters: Any) -> list[Expected]:
        """The model's result set for ``filters`` (leaving out the ``skip`` facet's filter)."""
        out = []
        for p in self.practices.values():
            ok = True
            for facet in ("sector", "target_group", "country", "status", "language"):
                value = filters.get(facet)
                if value and facet != skip and value not in p.codes(facet):
                    ok = False
            if filters.get("author") and p.author.text != filters["author"]:
                ok = False
            if filters.get("has_replications") and not p.replications:
                ok = False
            if filters.get("min_rating") is not None and self.bayes(p) < filters["min_rating"]:
                ok = False
            if ok:
                out.append(p)
        return out

    def facets(self, **filters: Any) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for facet in ("sector", "target_group", "country", "status", "language"):
            counts = Counter(
                code for p in self.select(skip=facet, **filters) for code in p.codes(facet)
            )
            out[facet] = dict(counts)
        return out

    def retract(self, name: str) -> None:
        p = self.practices.pop(name)
        self.orphans += p.scores
        rec = p.author.seal(RetractionBody(reason="ended"), addr=f"practice/{ADDR[name]}")
        self.store.ingest([rec], Counter(), now_ms=T0)

    def rate(self, rater: str, name: str, score: int) -> None:
        p = self.practices[name]
        rec = self.authors[rater].seal(RatingBody(score=score), addr=p.ref)
        self.store.ingest([rec], Counter(), now_ms=T0)
        p.ratings[rater] = score  # one current rating per city

    def replicate(self, who: str, name: str) -> None:
        p = self.practices[name]
        rec = self.authors[who].seal(ReplicationBody(relation="adapted", status="running"), p.ref)
        self.store.ingest([rec], Counter(), now_ms=T0)
        p.replications += 1

    def add(self, name: str, who: str, new: PracticeBody) -> None:
        author = self.authors[who]
        rec = author.seal(new, addr=name)
        self.store.ingest([rec], Counter(), now_ms=T0)
        self.practices[name] = Expected(author.ref(name), author, new, rec.header.created)

    def update(self, name: str, new: PracticeBody) -> None:
        p = self.practices[name]
        rec = p.author.seal(new, addr=ADDR[name])
        self.store.ingest([rec], Counter(), now_ms=T0)
        p.body = new
        p.created = rec.header.created


def build(store: Store) -> Catalogue:
    """Cities, practices, ratings and replications, applied as a node would apply them."""
    authors = {
        "sp": Author(1, "São Paulo", "BRA"),
        "me": Author(2, "Mechelen", "BEL"),
        "gd": Author(3, "Gdańsk", "POL"),
        "li": Author(4, "Lisbon", "PRT"),
        "ne": Author(5, "Nantes", "FRA"),
    }
    countries = ("DEU", "ESP", "ITA", "NLD")
    raters = [Author(100 + i, f"Rater City {i}", countries[i % 4]) for i in range(20)]
    own = authors["sp"]
    now = T0 + 10**9
    # The node's own city publishes through add_own; everyone else arrives through ingest.
    store.add_own(own.city(), relays=[], now_ms=now)
    received: list[Record] = [a.city() for key, a in authors.items() if key != "sp"]
    received += [r.city() for r in raters]
    practices: dict[str, Expected] = {}
    for name, (who, practice) in PRACTICES.items():
        author = authors[who]
        rec = author.seal(practice, addr=ADDR[name])
        if author is own:
            store.add_own(rec, relays=[], now_ms=now)
        else:
            received.append(rec)
        practices[name] = Expected(author.ref(ADDR[name]), author, practice, rec.header.created)
    for name, scores in RATINGS.items():
        for rater, score in zip(raters, scores, strict=False):
            received.append(rater.seal(RatingBody(score=score), addr=practices[name].ref))
        practices[name].ratings = {f"r{i}": score for i, score in enumerate(scores)}
    replicators = [authors["sp"], *raters]
    for name, n in REPLICATIONS.items():
        others = [a for a in replicators if a is not practices[name].author][:n]
        for replicator in others:
            rec = replicator.seal(
                ReplicationBody(relation="adapted", status="running"), practices[name].ref
            )
            if replicator is own:
                store.add_own(rec, relays=[], now_ms=now)
            else:
                received.append(rec)
        practices[name].replications = n
    # Interleaved batches, as a catch-up would deliver them (chains stay in order per author).
    for i in range(0, len(received), 17):
        store.ingest(received[i : i + 17], Counter(), now_ms=now)
    authors.update({f"r{i}": r for i, r in enumerate(raters)})
    return Catalogue(store, authors, practices)


@pytest.fixture
def catalogue(tmp_path: Path) -> Iterator[Catalogue]:
    store = Store(tmp_path / "node.db")
    try:
        yield build(store)
    finally:
        store.close()


def search(cat: Catalogue, **fields: Any) -> api.PracticeList:
    return search_practices(cat.store.db, api.PracticeQuery(**fields), key=KEY)


def refs(result: api.PracticeList) -> list[str]:
    return [item.ref for item in result.items]


def names(cat: Catalogue, result: api.PracticeList) -> list[str]:
    by_ref = {p.ref: name for name, p in cat.practices.items()}
    return [by_ref[item.ref] for item in result.items]


def all_pages(cat: Catalogue, limit: int, **fields: Any) -> list[str]:
    out: list[str] = []
    cursor = None
    for _ in range(100):
        page = search(cat, limit=limit, cursor=cursor, **fields)
        assert len(page.items) <= limit
        out += refs(page)
        cursor = page.next
        if cursor is None:
            return out
    raise AssertionError("pagination does not end")


# -- full text ------------------------------------------------------------------------------------
def test_title_match_outranks_body_only_match(catalogue: Catalogue) -> None:
    # "housing": in the title of housing_first, in the description of mentoring only.
    assert names(catalogue, search(catalogue, q="housing")) == ["housing_first", "mentoring"]


def test_more_specific_match_first(catalogue: Catalogue) -> None:
    # Both words in the title beats one in the title and one in the description.
    found = names(catalogue, search(catalogue, q="language cafe"))
    assert found == ["language_cafe", "language_support"]
    # Every word must occur: a practice matching only one of them is not a result.
    assert "welcome" not in names(catalogue, search(catalogue, q="language cafe"))
    assert "welcome" in names(catalogue, search(catalogue, q="language"))


def test_prefix_matching(catalogue: Catalogue) -> None:
    assert names(catalogue, search(catalogue, q="welc")) == ["welcome"]
    assert names(catalogue, search(catalogue, q="Mentor")) == ["mentoring"]
    assert set(names(catalogue, search(catalogue, q="medi"))) == {"mediators"}


def test_diacritics_folded_both_ways(catalogue: Catalogue) -> None:
    # The city name is searchable: "Sao Paulo" finds the practices of São Paulo.
    assert set(names(catalogue, search(catalogue, q="Sao Paulo"))) == {"welcome", "cafe_langues"}
    assert set(names(catalogue, search(catalogue, q="SÃO PAULO"))) == {"welcome", "cafe_langues"}
    assert set(names(catalogue, search(catalogue, q="gdansk"))) == {
        "language_cafe",
        "language_support",
    }
    # "cafe" finds "café" and "café" finds "cafe".
    with_cafe = {"cafe_langues", "language_cafe", "language_support"}
    assert set(names(catalogue, search(catalogue, q="cafe"))) == with_cafe
    assert set(names(catalogue, search(catalogue, q="café"))) == with_cafe
    assert names(catalogue, search(catalogue, q="linguas")) == ["cafe_langues"]


def test_country_code_is_searchable(catalogue: Catalogue) -> None:
    assert set(names(catalogue, search(catalogue, q="bra"))) == {"welcome", "cafe_langues"}


@pytest.mark.parametrize(
    "q",
    [
        '"',
        '""',
        '"housing',
        "housing*",
        "*",
        "**housing",
        "NEAR(housing refugee)",
        "NEAR(housing refugee, 2)",
        "NEAR",
        "-housing",
        "housing -refugee",
        "housing NOT refugee",
        "(housing",
        "housing)",
        "(housing OR refugee) AND",
        "housing OR refugee",
        "OR",
        "AND",
        "NOT",
        "title:housing",
        "{title summary}: housing",
        "^housing",
        "housing + refugee",
        "'",
        "\\",
        "%",
        "_",
        "__init__",
        ":",
        "日本語",
        "straße",
        "🏠 housing",
        "a" * 200,
        " ".join(["housing"] * 40),
        "x\x00y",
        "\u0301",
    ],
)
def test_fts_syntax_in_the_query_never_raises(catalogue: Catalogue, q: str) -> None:
    for sort in SORTS:
        result = search(catalogue, q=q, sort=sort, limit=3)
        assert len(result.items) <= 3
    if "housing" in q and "refugee" not in q and "NOT" not in q:
        # Operators are plain words: "housing OR x" does not widen the result.
        assert set(refs(search(catalogue, q=q))) <= set(refs(search(catalogue, q="housing")))


def test_fts_operators_are_words_not_syntax(catalogue: Catalogue) -> None:
    # "-refugee" does not exclude: the word is required like any other.
    assert names(catalogue, search(catalogue, q="housing -refugee")) == ["housing_first"]
    # "OR" is a word too (and matches nothing here but as a prefix of other words).
    assert search(catalogue, q="housing OR nonexistentword").items == []


# -- filters --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "filters",
    [
        {"sector": "EDUCATION"},
        {"sector": "HOUSING"},
        {"target_group": "REFUGEE"},
        {"target_group": "NEWCOMER"},
        {"country": "BRA"},
        {"country": "POL"},
        {"status": "pilot"},
        {"status": "ended"},
        {"language": "fr"},
        {"language": "pt"},
        {"language": "en"},
        {"has_replications": True},
        {"min_rating": 3.5},
        {"min_rating": 4.0},
        {"sector": "EDUCATION", "status": "active"},
        {"sector": "HOUSING", "target_group": "REFUGEE", "country": "BEL"},
        {"sector": "WORK", "min_rating": 1.0, "has_replications": False},
    ],
)
def test_filters(catalogue: Catalogue, filters: dict[str, Any]) -> None:
    result = search(catalogue, sort="updated", **filters)
    expected = catalogue.select(**filters)
    assert expected, "the case should select something"
    assert set(refs(result)) == {p.ref for p in expected}
    assert result.facets == catalogue.facets(**filters)


def test_author_filter(catalogue: Catalogue) -> None:
    me = catalogue.authors["me"].text
    assert set(names(catalogue, search(catalogue, author=me))) == {"housing_first", "mentoring"}
    assert names(catalogue, search(catalogue, author=me, q="housing")) == [
        "housing_first",
        "mentoring",
    ]
    rater = Author(100, "Rater City 0", "DEU")
    assert search(catalogue, author=rater.text).items == []


def test_filters_with_text(catalogue: Catalogue) -> None:
    result = search(catalogue, q="city", sector="EDUCATION", status="pilot")
    assert names(catalogue, result) == ["cafe_langues"]


def test_no_result(catalogue: Catalogue) -> None:
    result = search(catalogue, q="nonexistentword")
    assert result.items == [] and result.next is None
    assert all(counts == {} for counts in result.facets.values())


# -- items ----------------------------------------------------------------------------------------
def test_item_fields(catalogue: Catalogue) -> None:
    (item,) = search(catalogue, q="welcome desk").items
    p = catalogue.practices["welcome"]
    assert item.ref == p.ref
    assert item.title == "Welcome desk for newcomers"
    assert item.summary == "One door for registration and language classes."
    assert (item.city, item.country) == ("São Paulo", "BRA")
    assert item.sectors == ["HOUSING", "RIGHTS_INFO"]
    assert item.target_groups == ["NEWCOMER", "REFUGEE"]
    assert item.status == "active"
    assert item.replications == 3
    assert item.rating.count == 3
    assert item.rating.mean == round(11 / 3, 2)
    assert item.rating.bayes == round(catalogue.bayes(p), 3)
    assert item.updated == api.utc_from_ms(p.created)
    (cafe,) = search(catalogue, q="langues").items
    assert cafe.title == "Café des langues"  # no English title: the first language
    assert cafe.rating.count == 0 and cafe.rating.mean is None and cafe.rating.bayes is None
    (legal,) = search(catalogue, q="legal").items
    assert legal.rating.count == 1 and legal.rating.mean is None  # below the minimum count


# -- sorting --------------------------------------------------------------------------------------
def expected_order(cat: Catalogue, sort: str) -> list[str]:
    def key(p: Expected) -> tuple[Any, str]:
        if sort == "updated":
            return (-p.created, p.ref)
        if sort == "rating":
            return (-cat.bayes(p), p.ref)
        if sort == "replications":
            return (-p.replications, p.ref)
        assert sort == "title"
        return (_ascii_lower(p.title), p.ref)

    return [p.ref for p in sorted(cat.practices.values(), key=key)]


def _ascii_lower(text: str) -> str:
    """SQLite's lower(): ASCII letters only."""
    return "".join(c.lower() if c.isascii() else c for c in text)


@pytest.mark.parametrize("sort", ["updated", "rating", "replications", "title"])
def test_sorts(catalogue: Catalogue, sort: str) -> None:
    assert refs(search(catalogue, sort=sort)) == expected_order(catalogue, sort)


def test_relevance_without_text_sorts_by_updated(catalogue: Catalogue) -> None:
    assert refs(search(catalogue)) == expected_order(catalogue, "updated")


def test_rating_sort_uses_the_shrunk_mean(catalogue: Catalogue) -> None:
    order = names(catalogue, search(catalogue, sort="rating"))
    # One 5 does not outrank twenty ratings averaging 4.5; twenty 2s come last.
    assert order.index("housing_first") < order.index("legal_aid")
    assert order[0] == "housing_first"
    assert order[-1] == "job_fair"
    # Unrated practices sit at the prior, between the rated ones.
    assert order.index("legal_aid") < order.index("mentoring") < order.index("job_fair")


def test_replications_sort(catalogue: Catalogue) -> None:
    order = names(catalogue, search(catalogue, sort="replications"))
    assert order[0] == "welcome"
    assert set(order[1:3]) == {"housing_first", "language_cafe"}


def test_sort_with_text(catalogue: Catalogue) -> None:
    result = search(catalogue, q="city", sort="title")
    titles = [item.title for item in result.items]
    assert titles == sorted(titles, key=_ascii_lower)
    assert len(titles) >= 6


# -- pagination -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_cursor_pagination_has_no_duplicates_or_gaps(
    catalogue: Catalogue, sort: str, limit: int
) -> None:
    for fields in (
        {},
        {"q": "city"},
        {"sector": "HOUSING"},
        {"q": "language"},
        {"q": "city language"},
        {"q": "language cafe"},
        {"q": "city", "status": "active"},
    ):
        whole = refs(search(catalogue, sort=sort, limit=200, **fields))
        paged = all_pages(catalogue, limit, sort=sort, **fields)
        assert paged == whole, (sort, fields)
        assert len(set(paged)) == len(paged)
    assert set(all_pages(catalogue, 2, sort=sort)) == {p.ref for p in catalogue.practices.values()}


def test_last_page_has_no_cursor(catalogue: Catalogue) -> None:
    n = len(catalogue.practices)
    assert search(catalogue, limit=n).next is None
    assert search(catalogue, limit=n - 1).next is not None


def test_tampered_or_foreign_cursor(catalogue: Catalogue) -> None:
    page = search(catalogue, sector="HOUSING", sort="title", limit=1)
    assert page.next is not None
    cursor = page.next
    # Tampered: one character changed anywhere.
    for i in (0, len(cursor) // 2, len(cursor) - 1):
        changed = cursor[:i] + ("A" if cursor[i] != "A" else "B") + cursor[i + 1 :]
        with pytest.raises(InvalidRecordError) as err:
            search(catalogue, sector="HOUSING", sort="title", limit=1, cursor=changed)
        assert err.value.field == "cursor"
    # Foreign: other filters, other text, other sort, another node's key, garbage.
    for fields in (
        {"sector": "WORK", "sort": "title"},
        {"sort": "title"},
        {"sector": "HOUSING", "sort": "title", "q": "housing"},
        {"sector": "HOUSING", "sort": "updated"},
        {"sector": "HOUSING", "sort": "title", "min_rating": 2.0},
    ):
        with pytest.raises(InvalidRecordError) as err:
            search(catalogue, cursor=cursor, **fields)
        assert err.value.field == "cursor"
    with pytest.raises(InvalidRecordError) as err:
        search_practices(
            catalogue.store.db,
            api.PracticeQuery(sector="HOUSING", sort="title", cursor=cursor),
            key=b"another node",
        )
    assert err.value.field == "cursor"
    for garbage in ("x", "A" * 40, "____"):
        with pytest.raises(InvalidRecordError) as err:
            search(catalogue, sector="HOUSING", sort="title", cursor=garbage)
        assert err.value.field == "cursor"
    # The limit may change between pages.
    assert search(catalogue, sector="HOUSING", sort="title", limit=5, cursor=cursor).items


def test_forged_cursor_with_a_wrong_shape_is_refused(catalogue: Catalogue) -> None:
    scope = api.query_scope(api.PracticeQuery(sort="title"))
    shapes: list[list[str | int | float | None]] = [
        [],
        ["x"],
        [None, "ref"],
        ["a", 3],
        ["a", "b", "c"],
    ]
    for after in shapes:
        forged = api.encode_cursor(api.Cursor(sort="title", after=after, scope=scope), key=KEY)
        with pytest.raises(InvalidRecordError) as err:
            search(catalogue, sort="title", cursor=forged)
        assert err.value.field == "cursor"


# -- facets ---------------------------------------------------------------------------------------
def test_facets_unfiltered(catalogue: Catalogue) -> None:
    facets = search(catalogue, limit=1).facets
    assert facets == catalogue.facets()
    assert facets["sector"]["HOUSING"] == 3
    assert facets["sector"]["EDUCATION"] == 3
    assert facets["country"] == {"BRA": 2, "BEL": 2, "POL": 2, "PRT": 3, "FRA": 1}
    assert facets["language"] == {"en": 9, "fr": 1, "pt": 1}
    # Codes in descending count order.
    counts = list(facets["country"].values())
    assert counts == sorted(counts, reverse=True)


def test_each_facet_leaves_out_its_own_filter(catalogue: Catalogue) -> None:
    facets = search(catalogue, sector="EDUCATION", country="POL").facets
    # sector counts: every sector among the POL practices (the sector filter left out)
    assert facets["sector"] == {"EDUCATION": 2}
    # country counts: every country among EDUCATION practices (the country filter left out)
    assert facets["country"] == {"BRA": 1, "POL": 2}
    # the other facets: within both filters
    assert facets["status"] == {"active": 1, "ended": 1}
    assert facets == catalogue.facets(sector="EDUCATION", country="POL")


def test_facets_follow_the_text_query(catalogue: Catalogue) -> None:
    facets = search(catalogue, q="language").facets
    assert facets["country"] == {"BRA": 1, "POL": 2}
    assert facets["sector"] == {"EDUCATION": 2, "HOUSING": 1, "RIGHTS_INFO": 1}


# -- changes ----------------------------------------------------------------------------------------
def test_retracted_practice_disappears(catalogue: Catalogue) -> None:
    ref = catalogue.ref("shelter")
    assert ref in refs(search(catalogue, q="shelter"))
    assert search(catalogue).facets["country"]["FRA"] == 1
    catalogue.retract("shelter")
    assert search(catalogue, q="shelter").items == []
    assert ref not in refs(search(catalogue, limit=200))
    for sort in SORTS:
        assert ref not in all_pages(catalogue, 2, sort=sort)
    facets = search(catalogue).facets
    assert "FRA" not in facets["country"]
    assert "CRISIS" not in facets["sector"]
    assert facets == catalogue.facets()


def test_retracted_rated_practice_disappears_from_rating_filters(catalogue: Catalogue) -> None:
    catalogue.retract("housing_first")
    assert catalogue.ref("welcome") in refs(search(catalogue, has_replications=True))
    assert set(refs(search(catalogue, has_replications=True))) == {
        p.ref for p in catalogue.select(has_replications=True)
    }
    assert refs(search(catalogue, sort="rating"))[0] != "housing_first"


def test_updated_practice_appears_once_with_its_new_title(catalogue: Catalogue) -> None:
    ref = catalogue.ref("housing_first")
    new = body(
        {"en": "Homes first for families"},
        summary={"en": "Flats before everything else."},
        status="active",
        sectors=("HOUSING", "WORK"),
        target_groups=("NEWCOMER",),
    )
    catalogue.update("housing_first", new)
    found = search(catalogue, q="homes")
    assert [(i.ref, i.title) for i in found.items] == [(ref, "Homes first for families")]
    assert ref not in refs(search(catalogue, q="refugee"))  # the old title's word
    everything = refs(search(catalogue, limit=200))
    assert everything.count(ref) == 1
    assert everything[0] == ref  # the newest version is the most recently updated
    for sort in SORTS:
        assert all_pages(catalogue, 3, sort=sort).count(ref) == 1
    assert ref in refs(search(catalogue, sector="WORK"))
    assert ref not in refs(search(catalogue, target_group="REFUGEE"))
    assert search(catalogue).facets == catalogue.facets()
    # Ratings stay with the practice across versions.
    (item,) = search(catalogue, q="homes").items
    assert item.rating.count == 20


def test_city_profile_change_reindexes_its_practices(catalogue: Catalogue) -> None:
    li = catalogue.authors["li"]
    li.name = "Lisboa"
    catalogue.store.ingest([li.city()], Counter(), now_ms=T0)
    assert set(names(catalogue, search(catalogue, q="lisboa"))) == {
        "job_fair",
        "legal_aid",
        "mediators",
    }
    assert search(catalogue, q="lisbon").items == []
    (item,) = search(catalogue, q="legal").items
    assert item.city == "Lisboa"


def test_search_on_a_read_only_connection(catalogue: Catalogue, tmp_path: Path) -> None:
    reader = connect(tmp_path / "node.db", readonly=True)
    try:
        result = search_practices(reader, api.PracticeQuery(q="housing"), key=KEY)
        assert names(catalogue, result) == ["housing_first", "mentoring"]
    finally:
        reader.close()


def test_empty_catalogue(tmp_path: Path) -> None:
    store = Store(tmp_path / "empty.db")
    try:
        for sort in SORTS:
            result = search_practices(store.db, api.PracticeQuery(sort=sort), key=KEY)
            assert result.items == [] and result.next is None
        result = search_practices(store.db, api.PracticeQuery(q="x", min_rating=3), key=KEY)
        assert result.items == []
    finally:
        store.close()


# -- over HTTP --------------------------------------------------------------------------------------
async def test_http_search_matches_direct_search(
    make_home: MakeHome, nats_server: NatsServer
) -> None:
    home = make_home("Mechelen", "BEL", relays=[nats_server.client_url])
    store = Store(home.db_path)
    try:
        build_foreign(store)
    finally:
        store.close()
    client = TestClient(TestServer(create_app(home, home.load_config())))
    await client.start_server()
    headers = {"Authorization": f"Bearer {home.load_token()}"}
    db = connect(home.db_path, readonly=True)
    try:
        cases: list[dict[str, Any]] = [
            {"q": "language", "limit": 2},
            {"q": "city", "sort": "title", "limit": 3},
            {"sector": "EDUCATION", "sort": "updated"},
            {"target_group": "REFUGEE", "sort": "rating"},
            {"has_replications": True, "sort": "replications"},
            {"q": "Sao Paulo"},
            {"country": "PRT", "status": "active", "sort": "title"},
            {"min_rating": 3.5, "sort": "rating"},
            {"limit": 4, "sort": "rating"},
        ]
        for case in cases:
            params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in case.items()}
            direct = search_practices(db, api.PracticeQuery(**case), key=KEY)
            async with client.get("/v1/practices", params=params, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                page = msgspec.json.decode(await resp.read(), type=api.PracticeList)
            assert refs(page) == refs(direct), case
            assert page.items == direct.items
            assert page.facets == direct.facets
            assert (page.next is None) == (direct.next is None)
            if page.next is not None:
                # The second page through the node's cursor is the direct second page.
                nxt = await client.get(
                    "/v1/practices", params={**params, "cursor": page.next}, headers=headers
                )
                second = msgspec.json.decode(await nxt.read(), type=api.PracticeList)
                direct2 = search_practices(
                    db, api.PracticeQuery(**case, cursor=direct.next), key=KEY
                )
                assert refs(second) == refs(direct2), case
                assert not set(refs(second)) & set(refs(page))
        # A cursor the node did not issue is a 422 naming the field.
        bad = await client.get(
            "/v1/practices", params={"sort": "title", "cursor": "AAAA"}, headers=headers
        )
        assert bad.status == 422
        assert (await bad.json())["error"]["field"] == "cursor"
    finally:
        db.close()
        await client.close()


def build_foreign(store: Store) -> None:
    """The catalogue with every record arriving from elsewhere (the node's own city is apart)."""
    cat = build_records()
    for i in range(0, len(cat), 11):
        store.ingest(cat[i : i + 11], Counter(), now_ms=T0 + 10**9)


def build_records() -> list[Record]:
    """The records `build` applies, in order, without a store."""
    out: list[Record] = []

    class Collect:
        def add_own(self, rec: Record, *, relays: list[str], now_ms: int) -> None:
            out.append(rec)

        def ingest(self, records: list[Record], rejected: Counter[str], *, now_ms: int) -> None:
            out.extend(records)

    build(Collect())  # type: ignore[arg-type]
    return out


def test_build_is_order_independent(tmp_path: Path) -> None:
    """Applying the same records in another batching gives the same search results."""
    a = Store(tmp_path / "a.db")
    b = Store(tmp_path / "b.db")
    try:
        build(a)
        build_foreign(b)
        for sort in SORTS:
            qa = search_practices(a.db, api.PracticeQuery(sort=sort, q="city"), key=KEY)
            qb = search_practices(b.db, api.PracticeQuery(sort=sort, q="city"), key=KEY)
            assert [(i.ref, i.title) for i in qa.items] == [(i.ref, i.title) for i in qb.items]
            assert qa.facets == qb.facets
    finally:
        a.close()
        b.close()


# -- the in-memory index: patched as the store changes, shared by connections ----------------------
INDEX_QUERIES: list[dict[str, Any]] = [
    *({"sort": sort} for sort in SORTS),
    {"q": "city"},
    {"q": "city", "sort": "rating"},
    {"q": "language"},
    {"q": "city language"},
    {"q": "ca"},
    {"sector": "HOUSING"},
    {"sector": "EDUCATION", "sort": "title"},
    {"min_rating": 3.0},
    {"min_rating": 3.5, "sort": "rating"},
    {"has_replications": True, "sort": "replications"},
    {"country": "PRT", "q": "city"},
    {"language": "en", "status": "active"},
]


def everything(cat: Catalogue, limit: int = 200) -> list[api.PracticeList]:
    return [search(cat, limit=limit, **q) for q in INDEX_QUERIES]


def change_everything(cat: Catalogue) -> Iterator[str]:
    """Changes of every kind, one at a time (yields a label after each)."""
    cat.rate("r3", "legal_aid", 2)
    yield "a second rating"
    cat.rate("r0", "legal_aid", 1)
    yield "a changed rating"
    cat.replicate("r5", "mediators")
    yield "a replication"
    cat.update("welcome", body({"en": "Welcome centre"}, sectors=("WORK",), status="ended"))
    yield "a new version"
    cat.retract("job_fair")
    yield "a retraction (of a rated practice)"
    cat.add("night-cafe", "ne", body({"de": "Nachtcafé"}, summary={"en": "Open at night"}))
    yield "a new practice"
    li = cat.authors["li"]
    li.name, li.country = "Porto", "ESP"
    cat.store.ingest([li.city()], Counter(), now_ms=T0)
    yield "a city profile"
    for i in range(6, 16):
        cat.rate(f"r{i}", "night-cafe", 5)
    yield "many ratings at once"


@pytest.mark.parametrize("patch", [True, False], ids=["patched", "rebuilt"])
def test_index_follows_every_change(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch, patch: bool
) -> None:
    everything(catalogue)  # builds the index
    if not patch:
        monkeypatch.setattr(search_module, "_patch_limit", lambda size: -1)
    for label in change_everything(catalogue):
        kept = everything(catalogue)
        search_module.reset_caches()
        fresh = everything(catalogue)
        assert kept == fresh, label
        for q, result in zip(INDEX_QUERIES, kept, strict=True):
            if "q" not in q:
                assert set(refs(result)) == {p.ref for p in catalogue.select(**q)}, (label, q)
                assert result.facets == catalogue.facets(**q), (label, q)
        assert refs(kept[SORTS.index("updated")]) == expected_order(catalogue, "updated")
        assert refs(kept[SORTS.index("rating")]) == expected_order(catalogue, "rating"), label


def test_pages_of_a_patched_index(catalogue: Catalogue) -> None:
    everything(catalogue)
    for _ in change_everything(catalogue):
        pass
    for q in INDEX_QUERIES:
        whole = refs(search(catalogue, limit=200, **q))
        assert all_pages(catalogue, 2, **q) == whole, q


def test_reader_connection_sees_later_writes(catalogue: Catalogue, tmp_path: Path) -> None:
    reader = connect(tmp_path / "node.db", readonly=True)
    try:

        def read(**fields: Any) -> list[str]:
            return refs(search_practices(reader, api.PracticeQuery(**fields), key=KEY))

        assert read(q="shelter") == [catalogue.ref("shelter")]
        catalogue.retract("shelter")
        assert read(q="shelter") == []
        catalogue.rate("r1", "legal_aid", 1)
        assert read(sort="rating") == expected_order(catalogue, "rating")
        catalogue.update("mentoring", body({"en": "Buddy programme"}, sectors=("CRISIS",)))
        assert read(q="buddy") == [catalogue.ref("mentoring")]
        assert read(sector="CRISIS") == [catalogue.ref("mentoring")]
    finally:
        reader.close()


def test_search_inside_a_transaction_sees_its_own_writes_only_there(catalogue: Catalogue) -> None:
    search(catalogue)  # the shared index exists
    ne = catalogue.authors["ne"]
    rec = ne.seal(body({"en": "Uncommitted practice"}), addr="uncommitted")
    with pytest.raises(RuntimeError), catalogue.store.transaction() as db:
        apply_records(db, [rec], now_ms=T0)
        inside = search_practices(db, api.PracticeQuery(q="uncommitted"), key=KEY)
        assert [i.title for i in inside.items] == ["Uncommitted practice"]
        raise RuntimeError("roll back")
    assert search(catalogue, q="uncommitted").items == []
    assert search(catalogue).facets == catalogue.facets()
