"""Practice search benchmark: GET /v1/practices over HTTP against the same queries run directly.

    python bench/search.py [--practices N] [--authors A] [--rounds R] [--home DIR] [--json-only]

1. builds a node home (``init_home``) and generates N practices from A cities (default 100,000
   from 500) with realistic text lengths: titles of 5-12 words, summaries of 30-60 words,
   Markdown descriptions of 150-400 words, drawn Zipf-like from a vocabulary of migration and
   integration terms in several languages (accented words included); all 15 sectors, target
   groups, statuses, city profiles in ~40 countries, ratings on ~15% and replications on ~5% of
   the practices, a few new versions and retractions. Signing runs in a process pool;
2. loads the records straight into the node's SQLite through ``Store.ingest`` in batches
   (timed apart from the signing);
3. starts the node's HTTP API (``create_app``, relays = a throwaway nats-server) on 127.0.0.1
   and runs a fixed mix of typical searches through HTTP with aiohttp, one request at a time
   after a warm-up pass: text queries of 1-3 words, prefixes, filters, every sort, second pages
   through cursors, the facet-heavy unfiltered listing;
4. runs the same queries directly against SQLite with ``search_practices`` on a read-only
   connection in the same process: the limit the HTTP figures are compared with;
5. prints one JSON object: p50/p95/p99 in ms for HTTP and direct, overall and per query kind,
   ``ratio`` = p95 HTTP / p95 direct (goal <= 2), ``goal_p95_http_ms`` (25), the load time and
   the database size.

``--home DIR`` keeps the node home in DIR and, when DIR already holds a loaded node, reuses it
(generation and load are skipped; the schema is migrated if the code added migrations).
Never part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import itertools
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from citymesh.node import search as search_module
from citymesh.node.app import create_app
from citymesh.node.config import CityConfig, Home, NodeConfig
from citymesh.node.natsserver import NatsServer, ServerConfig
from citymesh.node.search import match_expression, search_practices
from citymesh.node.setup import init_home
from citymesh.node.store import Store
from citymesh.node.store.db import connect
from citymesh.protocol import api
from citymesh.protocol.codes import SECTORS, TARGET_GROUPS
from citymesh.protocol.envelope import seal
from citymesh.protocol.identity import Genesis, SecretKey, identity_of, identity_text
from citymesh.protocol.records import (
    Body,
    CityBody,
    Contact,
    Outcome,
    PracticeBody,
    PracticePeriod,
    RatingBody,
    Record,
    ReplicationBody,
    RetractionBody,
)

NETWORK = "benchnet"
GOAL_P95_HTTP_MS = 25.0
GOAL_RATIO = 2.0
BATCH = 5000
DAY_MS = 86_400_000


def _split(text: str) -> list[str]:
    return text.split()


# -- vocabulary -----------------------------------------------------------------------------------
# Ordered roughly by how common a word is in practice descriptions (Zipf weights by rank).
TERMS = _split("""
city integration migrants refugees newcomers support services local community programme housing
language access information social employment education health project municipality partners
families children women youth training volunteers participation rights registration counselling
school network inclusion staff council orientation welcome mentoring work advice reception
asylum seekers coordination neighbourhood legal documents interpreters mediation cooperation
outreach evaluation results funding budget pilot cohesion dialogue learning skills jobs
employers citizenship naturalisation permits residence shelter emergency accommodation food
water sanitation safety protection violence trauma psychosocial mental wellbeing clinic doctors
vaccination enrolment classes teachers kindergarten unaccompanied minors guardians returnees
stateless displaced internally workers seasonal domestic trafficking exploitation inspections
complaints ombudsperson discrimination racism antiracism equality diversity intercultural
religious associations diaspora sports culture library museum festival theatre music cooking
gardens market entrepreneurship microcredit startups apprenticeship recognition diplomas
qualifications vocational internship placement coaching digital literacy helpline app website
hotline translation multilingual plain forms mailbox office desk onestop hub centre points
stakeholders ngos civil society universities researchers data indicators survey census
disaggregated monitoring baseline targets impact outcomes lessons failures scaling replication
transfer adaptation conditions costs sustainability governance strategy plan policy declaration
mechelen commitments sdg compact objectives firewall privacy consent anonymous aggregates
""")
FOREIGN = _split("""
intégration accueil société café bienvenue nouveaux arrivants logement réfugiés éducation santé
médiation citoyenneté égalité quartier associations emploi formation enfants écoles
integración acogida sociedad bienvenida recién llegados vivienda refugiados educación salud
mediación ciudadanía igualdad barrio asociaciones empleo formación niños escuelas
integração acolhimento sociedade habitação refugiados educação saúde mediação cidadania
igualdade bairro associações emprego formação crianças escolas são joão
integrazione accoglienza società alloggio rifugiati istruzione salute mediazione cittadinanza
uguaglianza quartiere associazioni lavoro formazione bambini scuole città
integration willkommen gesellschaft wohnen geflüchtete bildung gesundheit vermittlung
einbürgerung gleichstellung nachbarschaft vereine arbeit ausbildung kinder schulen
ausländerbehörde öffentlichkeit beratung sprachkurse
""")
FILLER = _split("""
the and of to in for with on by from a an is are was were be been this that these those it its
their they we our as at or not but all each every more most other new first also one two three
year years month weeks through between after before during about into over under within across
""")
SECTION_TITLES = (
    "Background",
    "What we did",
    "How it works",
    "Who takes part",
    "Results",
    "What did not work",
    "Costs and funding",
    "Transferability",
    "Partners",
    "Next steps",
)
COUNTRIES = _split(
    "BEL DEU ESP ITA NLD FRA GRC SWE POL PRT AUT CHE DNK NOR FIN IRL CZE HUN ROU BGR HRV SVN SVK "
    "LTU LVA EST TUR MAR TUN EGY KEN UGA ETH NGA GHA ZAF COL BRA MEX ARG CHL USA CAN"
)
SYLLABLES = _split(
    "ma li sa to ber gen ka ri no vel sã ão é ü ö ñ ç ł ń ś ź ta ko mi ra de lo va ne pu si bo "
    "la ge ti ru do fa le mo ni ca ve zo"
)
SUFFIXES = ("", "", "", "burg", "polis", "ville", "grad", "dorf", "ia", "ow", "sk", "haven")
LANGS = ("fr", "es", "de", "pt", "it")


def _pseudo_words(n: int) -> list[str]:
    """A long tail of made-up words (names, places, rare terms), some with accents."""
    rng = random.Random(12345)
    plain = "ba be bi bo bu da de di do ka ke ki ko la le li lo lu ma me mi mo na ne ni no pa pe"
    plain += " po ra re ri ro sa se si so ta te ti to va ve vi vo za zi tra pro gen ber ster lin"
    accented = "ção ñe é è ü ö ä ł ś ż ğ ø å"
    syllables = plain.split()
    marks = accented.split()
    known = set(TERMS) | set(FOREIGN) | set(FILLER)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if rng.random() < 0.12:
            word += rng.choice(marks)
        if word not in seen and word not in known:
            seen.add(word)
            out.append(word)
    return out


def _ranked_vocabulary(size: int = 30_000) -> list[str]:
    """Content words by rank: domain terms among the common words, foreign terms further down,
    a synthetic long tail around and after them."""
    tail = iter(_pseudo_words(size))
    slots: dict[int, str] = {10 + i * 4: term for i, term in enumerate(TERMS)}
    foreign = [t for t in dict.fromkeys(FOREIGN) if t not in set(TERMS)]
    slots.update({1000 + j * 13: term for j, term in enumerate(foreign)})
    return [slots.get(rank) or next(tail) for rank in range(size)]


def _zipf(n: int, total: float) -> list[float]:
    h = sum(1 / (k + 1) for k in range(n))
    return [total / (r + 1) / h for r in range(n)]


_CONTENT = _ranked_vocabulary()
_WORDS = FILLER + _CONTENT
_CUM = list(itertools.accumulate(_zipf(len(FILLER), 0.33) + _zipf(len(_CONTENT), 0.67)))


def words(rng: random.Random, n: int) -> list[str]:
    """``n`` words, Zipf-distributed: a third function words, the rest content words."""
    return rng.choices(_WORDS, cum_weights=_CUM, k=n)


def sentence(rng: random.Random, n: int) -> str:
    text = " ".join(words(rng, n))
    return text[:1].upper() + text[1:]


def markdown(rng: random.Random, total: int) -> str:
    """A description of about ``total`` words: sections, paragraphs, a list, some emphasis."""
    parts: list[str] = []
    left = total
    while left > 0:
        parts.append(f"## {rng.choice(SECTION_TITLES)}\n")
        n = min(left, rng.randint(40, 90))
        para = words(rng, n)
        if n > 10 and rng.random() < 0.4:
            i = rng.randrange(n - 2)
            para[i] = f"**{para[i]}**"
        parts.append(" ".join(para).capitalize() + ".\n")
        left -= n
        if left > 0 and rng.random() < 0.35:
            items = rng.randint(2, 5)
            for _ in range(items):
                k = rng.randint(3, 8)
                parts.append(f"- {' '.join(words(rng, k))}")
            parts.append("")
            left -= items * 5
    return "\n".join(parts)


def city_name(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        name = (name + rng.choice(SUFFIXES)).capitalize()
        if rng.random() < 0.15:
            name = rng.choice(("São ", "Santa ", "Nova ", "Bad ", "Saint-", "Nowy ")) + name
        if name not in taken:
            taken.add(name)
            return name


# -- generation (worker processes) ----------------------------------------------------------------
@dataclass
class AuthorJob:
    index: int
    seed: bytes
    salt: bytes
    name: str
    country: str
    practices: int
    ratings: list[tuple[str, int]] = field(default_factory=list)
    """(practice ref, score) this city rates."""
    replications: list[str] = field(default_factory=list)
    start_ms: int = 0
    end_ms: int = 0


def practice_body(rng: random.Random, n: int) -> PracticeBody:
    roll = rng.random()
    if roll < 0.8:
        langs = ["en"]
    elif roll < 0.9:
        langs = ["en", rng.choice(LANGS)]
    else:
        langs = [rng.choice(LANGS)]
    return PracticeBody(
        title={lang: sentence(rng, rng.randint(5, 12))[:200] for lang in langs},
        summary={lang: sentence(rng, rng.randint(30, 60))[:2000] + "." for lang in langs},
        description=markdown(rng, rng.randint(150, 400)),
        status=rng.choices(("pilot", "active", "regular_service", "ended"), (2, 5, 3, 2))[0],
        period=PracticePeriod(
            start=datetime.date(2012, 1, 1) + datetime.timedelta(rng.randint(0, 4500))
        ),
        sectors=rng.sample(SECTORS, rng.choices((1, 2, 3), (5, 3, 2))[0]),  # type: ignore[arg-type]
        target_groups=rng.sample(TARGET_GROUPS, rng.randint(0, 4)),  # type: ignore[arg-type]
        keywords=sorted(set(rng.choices(TERMS, k=rng.randint(0, 5)))),
        lessons=sentence(rng, rng.randint(10, 40)),
        contact=Contact(role_mailbox=f"integration{n}@city.example.org", role="Coordinator"),
    )


def sign_author(job: AuthorJob) -> list[Record]:
    """One city's whole chain, in seq order."""
    rng = random.Random(job.index)
    secret = SecretKey(job.seed)
    genesis = Genesis(key=secret.public_key, salt=job.salt)
    author = identity_of(genesis)
    actions: list[tuple[str, Any]] = [("practice", k) for k in range(job.practices)]
    actions += [("rating", r) for r in job.ratings]
    actions += [("replication", r) for r in job.replications]
    rng.shuffle(actions)
    # A few new versions and retractions of the city's own practices, late in the chain.
    extra = [("update", k) for k in range(job.practices) if rng.random() < 0.03]
    extra += [("retract", k) for k in range(job.practices) if rng.random() < 0.005]
    actions += extra
    # practices must come before their updates: move each practice before the first mention
    seen: set[int] = set()
    ordered: list[tuple[str, Any]] = []
    for kind, arg in actions:
        if kind in ("update", "retract") and arg not in seen:
            continue
        if kind == "practice":
            seen.add(arg)
        ordered.append((kind, arg))
    step = max(1, (job.end_ms - job.start_ms) // (len(ordered) + 2))
    created = job.start_ms
    out: list[Record] = []
    prev: bytes | None = None
    bodies: dict[int, PracticeBody] = {}
    retracted: set[int] = set()

    def add(body: Body, addr: str = "") -> None:
        nonlocal prev, created
        created += rng.randint(step // 2, step)
        rec = seal(
            secret,
            body=body,
            network=NETWORK,
            author=author,
            seq=len(out) + 1,
            prev=prev,
            created=created,
            addr=addr,
            genesis=genesis if not out else None,
        )
        prev = rec.id
        out.append(rec)

    add(
        CityBody(
            name=job.name,
            country=job.country,
            languages=["en"],
            networks=[NETWORK],
            role_mailbox=f"desk{job.index}@city.example.org",
            description=sentence(rng, rng.randint(20, 60)),
        )
    )
    for kind, arg in ordered:
        if kind == "practice":
            bodies[arg] = practice_body(rng, arg)
            add(bodies[arg], f"practice-{arg}")
        elif kind == "update" and arg not in retracted:
            old = bodies[arg]
            new_title = {k: sentence(rng, rng.randint(5, 12))[:200] for k in old.title}
            bodies[arg] = msgspec.structs.replace(old, title=new_title, status="regular_service")
            add(bodies[arg], f"practice-{arg}")
        elif kind == "retract" and arg not in retracted:
            retracted.add(arg)
            add(RetractionBody(reason="ended"), f"practice/practice-{arg}")
        elif kind == "rating":
            ref, score = arg
            add(RatingBody(score=score, comment=sentence(rng, rng.randint(5, 40))), ref)
        elif kind == "replication":
            worked = rng.choice((None, "yes", "partly", "no", "too_early"))
            add(
                ReplicationBody(
                    relation=rng.choice(("inspired_by", "adapted", "replicated", "scaled")),
                    status=rng.choice(("planned", "piloting", "running", "ended")),
                    adaptations=sentence(rng, rng.randint(10, 60)),
                    outcome=None if worked is None else Outcome(worked=worked),  # type: ignore[arg-type]
                ),
                arg,
            )
    return out


def plan(practices: int, authors: int, seed: int) -> list[AuthorJob]:
    rng = random.Random(seed)
    taken: set[str] = set()
    jobs: list[AuthorJob] = []
    per, extra = divmod(practices, authors)
    now = int(time.time() * 1000)
    for i in range(authors):
        s = hashlib.sha256(b"bench-search-%d-%d" % (seed, i)).digest()
        jobs.append(
            AuthorJob(
                index=i,
                seed=s,
                salt=s[:16],
                name=city_name(rng, taken),
                country=rng.choice(COUNTRIES[: 12 + i % len(COUNTRIES)]),
                practices=per + (1 if i < extra else 0),
                start_ms=now - 5 * 365 * DAY_MS + rng.randint(0, 365 * DAY_MS),
                end_ms=now - DAY_MS,
            )
        )
    idents = [
        identity_text(identity_of(Genesis(key=SecretKey(j.seed).public_key, salt=j.salt)))
        for j in jobs
    ]
    for i, job in enumerate(jobs):
        for k in range(job.practices):
            ref = f"{idents[i]}/practice-{k}"
            if rng.random() < 0.15:
                quality = rng.gauss(3.6, 0.7)
                for r in rng.sample(range(authors), min(authors, rng.randint(1, 10))):
                    if r != i:
                        score = min(5, max(1, round(rng.gauss(quality, 0.8))))
                        jobs[r].ratings.append((ref, score))
            if rng.random() < 0.05:
                for r in rng.sample(range(authors), min(authors, rng.randint(1, 4))):
                    if r != i:
                        jobs[r].replications.append(ref)
    return jobs


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# -- building and loading -------------------------------------------------------------------------
def build(home: Home, practices: int, authors: int, quiet: bool) -> dict[str, Any]:
    init_home(
        home,
        NodeConfig(
            city=CityConfig(name="Bench Home", country="BEL"),
            network=NETWORK,
            listen="127.0.0.1:0",
        ),
    )
    jobs = plan(practices, authors, seed=1)
    procs = max(1, os.cpu_count() or 1)
    log(f"signing {practices} practices from {authors} cities on {procs} processes", quiet)
    t = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        chains = pool.map(sign_author, jobs, chunksize=4)
    sign_seconds = time.perf_counter() - t
    records = sum(len(c) for c in chains)
    log(f"signed {records} records in {sign_seconds:.1f} s; loading", quiet)
    store = Store(home.db_path)
    try:
        t = time.perf_counter()
        batch: list[Record] = []
        loaded = 0
        now_ms = int(time.time() * 1000)
        for chain in chains:
            batch.extend(chain)
            if len(batch) >= BATCH:
                store.ingest(batch, Counter(), now_ms=now_ms)
                loaded += len(batch)
                batch = []
                log(f"  loaded {loaded}/{records}", quiet)
        if batch:
            store.ingest(batch, Counter(), now_ms=now_ms)
        load_seconds = time.perf_counter() - t
    finally:
        store.close()
    log(f"loaded in {load_seconds:.1f} s", quiet)
    return {
        "records": records,
        "sign_seconds": round(sign_seconds, 1),
        "load_seconds": round(load_seconds, 1),
        "load_records_per_s": round(records / load_seconds),
    }


def db_stats(home: Home) -> dict[str, Any]:
    db = connect(home.db_path, readonly=True)
    try:
        practices = db.execute("SELECT count(*) FROM practices").fetchone()[0]
        ratings = db.execute("SELECT count(*) FROM ratings").fetchone()[0]
        replications = db.execute("SELECT count(*) FROM replications").fetchone()[0]
        cities = db.execute("SELECT count(*) FROM cities").fetchone()[0]
    finally:
        db.close()
    size = sum(p.stat().st_size for p in home.root.glob("node.db*") if p.name != "node.db-shm")
    return {
        "practices": practices,
        "ratings": ratings,
        "replications": replications,
        "cities": cities,
        "db_mb": round(size / 2**20, 1),
    }


# -- the query mix --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    kind: str
    params: dict[str, str]
    second_page: bool = False


def query_mix(seed: int) -> list[Case]:
    """The same kinds and counts for every seed; the words, codes and pages vary by seed."""
    rng = random.Random(seed)
    # Words users type: domain terms; the very commonest ("city", "integration", …) left out.
    common = TERMS[10:40]
    medium = TERMS[40:140]
    rare = TERMS[140:] + FOREIGN
    cases: list[Case] = []

    def add(kind: str, n: int, make: Any, second: bool = False) -> None:
        for _ in range(n):
            cases.append(Case(kind, {k: str(v) for k, v in make().items()}, second))

    add("text_1_word", 8, lambda: {"q": rng.choice(common + medium + rare)})
    add("text_2_words", 8, lambda: {"q": f"{rng.choice(common)} {rng.choice(medium)}"})
    add(
        "text_3_words",
        6,
        lambda: {"q": f"{rng.choice(common)} {rng.choice(medium)} {rng.choice(medium + rare)}"},
    )
    add("text_prefix", 4, lambda: {"q": rng.choice(medium + rare)[:4]})
    add("text_accents", 4, lambda: {"q": rng.choice(("integracao", "educacion", "societe", "sao"))})
    add(
        "text_filtered",
        6,
        lambda: {"q": rng.choice(common + medium), "sector": rng.choice(SECTORS)},
    )
    add(
        "filter",
        8,
        lambda: rng.choice(
            (
                {"sector": rng.choice(SECTORS)},
                {"target_group": rng.choice(TARGET_GROUPS)},
                {"country": rng.choice(COUNTRIES[:20])},
                {"status": "pilot", "sector": rng.choice(SECTORS)},
                {"sector": rng.choice(SECTORS), "target_group": rng.choice(TARGET_GROUPS)},
                {"language": rng.choice(LANGS)},
                {"has_replications": "true"},
                {"min_rating": "3.5"},
            )
        ),
    )
    add("sort_updated", 3, lambda: {"sort": "updated"})
    add("sort_rating", 3, lambda: {"sort": "rating", **rng.choice(({}, {"sector": "HOUSING"}))})
    add(
        "sort_replications",
        3,
        lambda: {"sort": "replications", **rng.choice(({}, {"sector": "WORK"}))},
    )
    add("sort_title", 3, lambda: {"sort": "title", **rng.choice(({}, {"status": "active"}))})
    add(
        "second_page",
        8,
        lambda: rng.choice(
            (
                {"q": rng.choice(common)},
                {"sort": "updated"},
                {"sort": "rating"},
                {"sort": "title"},
                {"sector": rng.choice(SECTORS), "sort": "replications"},
            )
        ),
        second=True,
    )
    add("listing_unfiltered", 4, lambda: {})
    return cases


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    qs = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {
        "n": len(values),
        "p50": round(qs[49], 2),
        "p95": round(qs[94], 2),
        "p99": round(qs[98], 2),
        "max": round(max(values), 2),
    }


def _query(params: dict[str, str], cursor: str | None = None) -> api.PracticeQuery:
    if cursor is not None:
        params = {**params, "cursor": cursor}
    return msgspec.convert(params, api.PracticeQuery, strict=False)


WARMUP_SEED = 1000


def rounds_of(rounds: int) -> list[list[Case]]:
    """Round 0 (warm-up) and the timed rounds: the same kinds, other words in each round."""
    return [query_mix(WARMUP_SEED + r) for r in range(rounds + 1)]


Timings = dict[str, list[float]]


def run_direct(home: Home, mixes: list[list[Case]]) -> tuple[Timings, float]:
    """The limit: search_practices on a read-only connection, as the node's reader runs it."""
    search_module.reset_caches()
    db = connect(home.db_path, readonly=True)
    key = b"bench-direct-key"
    timings: Timings = defaultdict(list)
    t = time.perf_counter()
    search_practices(db, api.PracticeQuery(), key=key)
    first_ms = (time.perf_counter() - t) * 1000
    try:
        for r, cases in enumerate(mixes):
            for case in cases:
                query = _query(case.params)
                if case.second_page:
                    first = search_practices(db, query, key=key)
                    if first.next is None:
                        continue
                    query = _query(case.params, first.next)
                t = time.perf_counter()
                search_practices(db, query, key=key)
                ms = (time.perf_counter() - t) * 1000
                if r:
                    timings[case.kind].append(ms)
    finally:
        db.close()
    return timings, first_ms


async def run_http(url: str, token: str, mixes: list[list[Case]]) -> tuple[Timings, float]:
    timings: Timings = defaultdict(list)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(url, headers=headers) as session:

        async def get(params: dict[str, str]) -> api.PracticeList:
            async with session.get("/v1/practices", params=params) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"GET /v1/practices {params}: {resp.status} {body[:300]!r}")
                return msgspec.json.decode(body, type=api.PracticeList)

        t = time.perf_counter()
        await get({})
        first_ms = (time.perf_counter() - t) * 1000
        for r, cases in enumerate(mixes):
            for case in cases:
                params = case.params
                if case.second_page:
                    first = await get(params)
                    if first.next is None:
                        continue
                    params = {**params, "cursor": first.next}
                t = time.perf_counter()
                await get(params)
                ms = (time.perf_counter() - t) * 1000
                if r:
                    timings[case.kind].append(ms)
    return timings, first_ms


def text_matches(home: Home, mixes: list[list[Case]]) -> dict[str, int]:
    """Median number of practices the text of each kind's queries matches (selectivity)."""
    db = connect(home.db_path, readonly=True)
    counts: dict[str, list[int]] = defaultdict(list)
    try:
        for cases in mixes[1:]:
            for case in cases:
                match = match_expression(case.params.get("q", ""))
                if match:
                    (n,) = db.execute(
                        "SELECT count(*) FROM practices_fts WHERE practices_fts MATCH ?", (match,)
                    ).fetchone()
                    counts[case.kind].append(int(n))
    finally:
        db.close()
    return {kind: int(statistics.median(ns)) for kind, ns in counts.items()}


@contextmanager
def relay(tmp: Path) -> Iterator[NatsServer]:
    server = NatsServer(ServerConfig(store_dir=tmp / "relay", server_name="bench-search-relay"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def serve_and_measure(
    home: Home, relay_url: str, mixes: list[list[Case]]
) -> tuple[Timings, float]:
    search_module.reset_caches()
    app = create_app(home, home.load_config(), relays=[relay_url])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        return await run_http(f"http://{host}:{port}", home.load_token(), mixes)
    finally:
        await runner.cleanup()


def summarize(http: Timings, direct: Timings, matches: dict[str, int]) -> dict[str, Any]:
    all_http = [v for vs in http.values() for v in vs]
    all_direct = [v for vs in direct.values() for v in vs]
    ph, pd = percentiles(all_http), percentiles(all_direct)
    kinds: dict[str, Any] = {}
    for kind in dict.fromkeys([*direct, *http]):
        kinds[kind] = {
            "http": percentiles(http.get(kind, [])),
            "direct": percentiles(direct.get(kind, [])),
        }
        if kind in matches:
            kinds[kind]["median_text_matches"] = matches[kind]
    return {
        "http_ms": ph,
        "direct_ms": pd,
        "ratio_p95_http_direct": round(ph["p95"] / pd["p95"], 2) if pd.get("p95") else None,
        "goal_ratio": GOAL_RATIO,
        "goal_p95_http_ms": GOAL_P95_HTTP_MS,
        "goal_met": bool(
            ph
            and ph["p95"] < GOAL_P95_HTTP_MS
            and pd.get("p95")
            and ph["p95"] / pd["p95"] <= GOAL_RATIO
        ),
        "by_kind": kinds,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet = args.json_only
    with tempfile.TemporaryDirectory(prefix="citymesh-bench-search-") as tmp_name:
        tmp = Path(tmp_name)
        home = Home(Path(args.home) if args.home else tmp / "home")
        load: dict[str, Any] = {"reused": True}
        if not home.db_path.exists():
            load = build(home, args.practices, args.authors, quiet)
        else:
            t = time.perf_counter()
            Store(home.db_path).close()  # migrate, as the node would on start
            log(f"reusing {home.root} (opened in {time.perf_counter() - t:.1f} s)", quiet)
        stats = db_stats(home)
        if args.load_only:
            return {"bench": "search", **stats, **load}
        mixes = rounds_of(args.rounds)
        n = sum(len(m) for m in mixes[1:])
        log(f"{stats['practices']} practices; {n} timed queries after a warm-up round", quiet)
        load_before = os.getloadavg()
        t = time.perf_counter()
        direct, direct_first = run_direct(home, mixes)
        log(f"direct done in {time.perf_counter() - t:.1f} s", quiet)
        t = time.perf_counter()
        with relay(tmp) as server:
            http, http_first = asyncio.run(serve_and_measure(home, server.client_url, mixes))
        log(f"http done in {time.perf_counter() - t:.1f} s", quiet)
        load_after = os.getloadavg()
        return {
            "bench": "search",
            **stats,
            **load,
            "queries_timed": n,
            "rounds": args.rounds,
            "first_query_ms": {"direct": round(direct_first, 1), "http": round(http_first, 1)},
            "cpus": os.cpu_count(),
            "load_average_1m": [round(load_before[0], 2), round(load_after[0], 2)],
            **summarize(http, direct, text_matches(home, mixes)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--practices", type=int, default=100_000)
    parser.add_argument("--authors", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over the query mix")
    parser.add_argument("--home", help="keep (or reuse) the node home in this directory")
    parser.add_argument("--load-only", action="store_true", help="build and load, no queries")
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.practices < 1 or args.authors < 2:
        parser.error("need at least 1 practice and 2 cities")
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
