"""Signed records from many simulated cities, for the benchmarks at scale (not a script).

    from citygen import Mix, generate, load_or_generate

Each city signs one chain: its genesis ``city`` record at seq 1, then practices (1-3 KB of
Markdown, some new versions later), ratings and replications of other cities' practices, and
indicator tables (the catalogue's definitions, every combination of their dimensions' codes,
small counts suppressed as disclosure control would), shuffled, in seq order, with created
times spread over the last years. Text comes from ``search.py``'s Zipf vocabulary, so sizes and
words look like real catalogues.

Signing runs in a process pool; the result is cached under ``$CITYMESH_BENCH_CACHE`` (else
``<tmp>/citymesh-bench-cache``) in one file per (mix, cities, seed, generator version), as
length-prefixed msgpack chunks of ``(subject, id hex, envelope)``, so a second run starts at once.
Deterministic for a seed (keys, salts, texts and created times; created times are relative to
the first generation, which lies in the past by then).
"""

from __future__ import annotations

import datetime
import hashlib
import multiprocessing
import os
import random
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from search import COUNTRIES, city_name, practice_body, sentence

from citymesh.practices.indicators import CATALOGUE, DIMENSIONS
from citymesh.protocol.envelope import seal
from citymesh.protocol.identity import Genesis, SecretKey, identity_of, identity_text
from citymesh.protocol.records import (
    Attestation,
    Body,
    Cell,
    CityBody,
    DisclosureMethod,
    IndicatorsBody,
    Outcome,
    RatingBody,
    Record,
    ReplicationBody,
    Scores,
)
from citymesh.protocol.subjects import subject

NETWORK = "benchnet"
GENERATOR_VERSION = 1
"""Bump when the records change, so caches of the old shape are not reused."""
DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS

Message = tuple[str, str, bytes]
"""(subject, record id hex, envelope)."""


@dataclass(frozen=True)
class Mix:
    """Records of each kind over all cities (plus one genesis city record per city)."""

    practices: int
    ratings: int
    replications: int
    indicators: int
    versions: bool = True
    """A fifth of each city's practice records are new versions of earlier ones."""

    @classmethod
    def typical(cls, records: int, cities: int) -> Mix:
        """``records`` in all, genesis records included: 15% practices (a fifth of them new
        versions), 55% ratings, 10% replications, 20% indicator tables."""
        rest = max(0, records - cities)
        practices = rest * 15 // 100
        ratings = rest * 55 // 100
        replications = rest * 10 // 100
        return cls(practices, ratings, replications, rest - practices - ratings - replications)

    @property
    def total_without_genesis(self) -> int:
        return self.practices + self.ratings + self.replications + self.indicators


@dataclass
class CityJob:
    index: int
    seed: bytes
    salt: bytes
    name: str
    country: str
    start_ms: int
    end_ms: int
    practices: int = 0
    ratings: int = 0
    replications: int = 0
    indicators: int = 0
    idents: list[str] = field(default_factory=list)
    """Identities of all cities (targets of ratings and replications)."""
    practices_of: list[int] = field(default_factory=list)
    """New practices of each city, by index (so refs point at practices that exist)."""


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """``total`` over ``parts`` cities, uneven (a few big cities publish much more)."""
    weights = [rng.paretovariate(2.5) for _ in range(parts)]
    scale = total / sum(weights)
    out = [int(w * scale) for w in weights]
    for i in rng.sample(range(parts), total - sum(out)) if total > sum(out) else []:
        out[i] += 1
    return out


def plan(mix: Mix, cities: int, seed: int) -> list[CityJob]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    taken: set[str] = set()
    jobs: list[CityJob] = []
    for i in range(cities):
        s = hashlib.sha256(b"citymesh-bench-citygen-%d-%d" % (seed, i)).digest()
        jobs.append(
            CityJob(
                index=i,
                seed=s,
                salt=s[:16],
                name=city_name(rng, taken),
                country=rng.choice(COUNTRIES),
                start_ms=now - 6 * YEAR_MS + rng.randint(0, YEAR_MS),
                end_ms=now - DAY_MS,
            )
        )
    for kind in ("practices", "ratings", "replications", "indicators"):
        for job, n in zip(jobs, _split(getattr(mix, kind), cities, rng), strict=True):
            setattr(job, kind, n)
    idents = [
        identity_text(identity_of(Genesis(key=SecretKey(j.seed).public_key, salt=j.salt)))
        for j in jobs
    ]
    # a fifth of a city's practice records are new versions of earlier ones
    practices_of = [
        max(1, j.practices - (j.practices // 5 if mix.versions else 0)) if j.practices else 0
        for j in jobs
    ]
    for job in jobs:
        job.idents = idents
        job.practices_of = practices_of
    return jobs


_INDICATORS = sorted(CATALOGUE)
_PERIODS = [str(y) for y in range(2015, 2026)] + [
    f"{y}-Q{q}" for y in range(2018, 2026) for q in range(1, 5)
]


def indicator_table(rng: random.Random, code: str, period: str) -> IndicatorsBody:
    """Every combination of the definition's dimension codes; counts under 10 suppressed."""
    defn = CATALOGUE[code]
    dims = list(defn.dimensions)
    combos: list[dict[str, str]] = [{}]
    for dim in dims:
        combos = [{**c, dim: v} for c in combos for v in DIMENSIONS[dim].codes]
    cells: list[Cell] = []
    counts = defn.measure == "count"
    for combo in combos[:4000]:
        if counts:
            n = int(rng.lognormvariate(3.5, 1.4))
            if n < 10:
                cells.append(Cell(dims=combo, value=None, obs_status="A", conf_status="C"))
            else:
                cells.append(Cell(dims=combo, value=float(n - n % 5)))
        else:
            cells.append(Cell(dims=combo, value=round(rng.uniform(1, 100), 1)))
    return IndicatorsBody(
        code=code,
        period=period,
        unit=defn.unit,
        dimensions=dims,
        cells=cells,
        method=DisclosureMethod(threshold=10 if counts else 0, rounding_base=5 if counts else 1),
        source_type=defn.source_type,  # type: ignore[arg-type]
        attestation=Attestation(aggregate_only=True, officer_role="Data officer"),
    )


def sign_city(job: CityJob) -> list[Message]:
    """One city's whole chain, in seq order, as (subject, id hex, envelope)."""
    return [
        (subject(NETWORK, rec.header.author, rec.header.kind), rec.id.hex(), rec.envelope)
        for rec in sign_city_records(job)
    ]


def sign_city_records(job: CityJob) -> list[Record]:
    """One city's whole chain, in seq order."""
    rng = random.Random(job.index * 7919 + 17)
    secret = SecretKey(job.seed)
    genesis = Genesis(key=secret.public_key, salt=job.salt)
    author = identity_of(genesis)
    actions = ["practice"] * job.practices + ["rating"] * job.ratings
    actions += ["replication"] * job.replications + ["indicators"] * job.indicators
    rng.shuffle(actions)
    steps = len(actions) + 2
    step = max(2, (job.end_ms - job.start_ms) // steps)
    created = job.start_ms
    out: list[Record] = []
    prev: bytes | None = None
    new_practices = 0
    own_new = job.practices_of[job.index]
    tables: list[tuple[str, str]] = []

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

    rated: set[str] = set()

    def other_practice(unique: bool = False) -> str:
        """Another city's practice; with ``unique``, one this city has not rated yet (one
        current rating per city and practice; falls back to any after a few tries)."""
        for attempt in range(50):
            target = rng.randrange(len(job.idents))
            n = job.practices_of[target]
            if target != job.index and n:
                ref = f"{job.idents[target]}/practice-{rng.randrange(n)}"
                if not unique or ref not in rated or attempt > 40:
                    rated.add(ref)
                    return ref
        raise ValueError("no other city has practices to refer to")

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
    for kind in actions:
        if kind == "practice":
            if new_practices < own_new:
                n = new_practices
                new_practices += 1
            else:
                n = rng.randrange(max(1, new_practices))
            add(practice_body(rng, n), f"practice-{n}")
        elif kind == "rating":
            quality = rng.gauss(3.6, 0.7)
            add(
                RatingBody(
                    score=min(5, max(1, round(rng.gauss(quality, 0.8)))),
                    scores=Scores(relevance=rng.randint(1, 5), evidence=rng.randint(1, 5)),
                    comment=sentence(rng, rng.randint(5, 60)),
                    role=rng.choice(("peer", "peer", "expert", "adopter")),
                ),
                other_practice(unique=True),
            )
        elif kind == "replication":
            worked = rng.choice((None, "yes", "partly", "no", "too_early"))
            add(
                ReplicationBody(
                    relation=rng.choice(("inspired_by", "adapted", "replicated", "scaled")),
                    status=rng.choice(("planned", "piloting", "running", "ended")),
                    start=datetime.date(2019, 1, 1) + datetime.timedelta(rng.randint(0, 2000)),
                    adaptations=sentence(rng, rng.randint(20, 120)),
                    outcome=None
                    if worked is None
                    else Outcome(worked=worked, lessons=sentence(rng, rng.randint(10, 50))),  # type: ignore[arg-type]
                ),
                other_practice(),
            )
        else:
            if tables and rng.random() < 0.1:
                code, period = rng.choice(tables)  # a corrected table: a new version
            else:
                code = rng.choice(_INDICATORS)
                freq = CATALOGUE[code].frequency
                periods = [p for p in _PERIODS if ("-Q" in p) == (freq == "Q")] or _PERIODS
                period = rng.choice(periods)
                tables.append((code, period))
            add(indicator_table(rng, code, period), f"{code}/{period}")
    return out


# -- the cache ------------------------------------------------------------------------------------
_LEN = struct.Struct("<I")
_chunk_encoder = msgspec.msgpack.Encoder()
_chunk_decoder = msgspec.msgpack.Decoder(list[tuple[str, str, bytes]])


def cache_dir() -> Path:
    base = os.environ.get("CITYMESH_BENCH_CACHE")
    path = Path(base) if base else Path(tempfile.gettempdir()) / "citymesh-bench-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_path(mix: Mix, cities: int, seed: int) -> Path:
    name = (
        f"citygen-v{GENERATOR_VERSION}-p{mix.practices}-r{mix.ratings}-x{mix.replications}"
        f"-i{mix.indicators}{'' if mix.versions else '-nv'}-c{cities}-s{seed}.msgpack"
    )
    return cache_dir() / name


def read_chains(path: Path) -> Iterator[list[Message]]:
    """The cached chains, one city at a time, in generation order."""
    with path.open("rb") as f:
        while header := f.read(_LEN.size):
            (size,) = _LEN.unpack(header)
            yield _chunk_decoder.decode(f.read(size))


def generate(
    mix: Mix, cities: int, seed: int, *, quiet: bool = False, procs: int | None = None
) -> tuple[Path, float]:
    """Sign the chains (process pool) into the cache file; (path, seconds spent signing).
    An existing cache file is reused (0 seconds)."""
    path = cache_path(mix, cities, seed)
    if path.exists():
        _log(f"reusing {path}", quiet)
        return path, 0.0
    jobs = plan(mix, cities, seed)
    procs = procs or max(1, os.cpu_count() or 1)
    total = mix.total_without_genesis + cities
    _log(f"signing {total:,} records from {cities} cities on {procs} processes -> {path}", quiet)
    t = time.perf_counter()
    partial = path.with_suffix(".partial")
    done = 0
    with (
        partial.open("wb") as f,
        multiprocessing.get_context("fork").Pool(procs) as pool,
    ):
        for i, chain in enumerate(pool.imap(sign_city, jobs, chunksize=2)):
            data = _chunk_encoder.encode(chain)
            f.write(_LEN.pack(len(data)))
            f.write(data)
            done += len(chain)
            if i % 100 == 99:
                rate = done / (time.perf_counter() - t)
                _log(f"  {done:,}/{total:,} signed ({rate:,.0f}/s)", quiet)
    partial.rename(path)
    return path, time.perf_counter() - t


def interleave(chains: list[list[Message]]) -> list[Message]:
    """Round-robin over cities by seq, as a relay receives live traffic: every chain in order."""
    out: list[Message] = []
    longest = max(len(c) for c in chains)
    for i in range(longest):
        out.extend(c[i] for c in chains if i < len(c))
    return out


def load_messages(path: Path) -> list[Message]:
    return interleave(list(read_chains(path)))


def kind_counts(messages: list[Message]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for subj, _, _ in messages:
        kind = subj.rsplit(".", 1)[1]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def size_stats(messages: list[Message]) -> dict[str, Any]:
    by_kind: dict[str, list[int]] = {}
    for subj, _, env in messages:
        by_kind.setdefault(subj.rsplit(".", 1)[1], []).append(len(env))
    return {
        kind: {"count": len(s), "mean_bytes": round(sum(s) / len(s)), "max_bytes": max(s)}
        for kind, s in sorted(by_kind.items())
    }


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)
