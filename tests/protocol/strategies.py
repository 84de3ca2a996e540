"""Hypothesis strategies for valid bodies of every record kind.

Hand-written from the `Meta` constraints in ``citymesh.protocol.records``; sizes are kept modest
so a few hundred examples run in seconds. Every value drawn here must open cleanly.
"""

from __future__ import annotations

import string
from typing import Any, get_args

from hypothesis import strategies as st

from citymesh.protocol import codes
from citymesh.protocol.identity import IDENTITY_BYTES, identity_text
from citymesh.protocol.records import (
    BODY_TYPES,
    KINDS,
    MAX_SEQ,
    Actor,
    Attestation,
    Body,
    Cell,
    CityBody,
    Contact,
    DisclosureMethod,
    Evaluation,
    Focus,
    Frameworks,
    HeadBody,
    IndicatorsBody,
    KeyRotationBody,
    Link,
    MembershipBody,
    NetworkBody,
    Outcome,
    Policies,
    PracticeBody,
    PracticePeriod,
    RatingBody,
    ReplicationBody,
    Resources,
    Result,
    RetractionBody,
    Scores,
    Transferability,
)

LOWER_DIGITS = string.ascii_lowercase + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits

# Free text: ASCII plus a few multi-byte characters (accents, CJK, emoji, RTL), no surrogates.
_ALPHABET = st.one_of(
    st.sampled_from(string.ascii_letters + string.digits + " .,;:-_'\"!?()/\n\t"),
    st.sampled_from("éèçñøłżœßĳ中文العربيةΩ€🙂"),
)


def text(max_size: int, *, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(_ALPHABET, min_size=min_size, max_size=max_size)


def _literal(lit: Any) -> st.SearchStrategy[str]:
    return st.sampled_from(get_args(lit))


def _code_list(lit: Any, max_size: int, *, min_size: int = 0) -> st.SearchStrategy[list[str]]:
    return st.lists(_literal(lit), min_size=min_size, max_size=max_size)


def _joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


def _chars(alphabet: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(alphabet), min_size=min_size, max_size=max_size)


# -- constrained scalars ------------------------------------------------------------------------
def slug(max_inner: int = 12) -> st.SearchStrategy[str]:
    """``^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$`` (inner part kept short)."""
    ends = st.sampled_from(LOWER_DIGITS)
    longer = _joined(ends, _chars(LOWER_DIGITS + "-", 0, max_inner), ends)
    return st.one_of(ends, longer)


network_names = st.one_of(
    st.sampled_from(LOWER_DIGITS),
    _joined(
        st.sampled_from(LOWER_DIGITS),
        _chars(LOWER_DIGITS + "-", 0, 30),
        st.sampled_from(LOWER_DIGITS),
    ),
)
langs = _joined(
    _chars(string.ascii_lowercase, 2, 3),
    st.one_of(
        st.just(""), _joined(st.just("-"), _chars(string.ascii_letters + string.digits, 2, 8))
    ),
)
countries = _chars(string.ascii_uppercase, 3, 3)
_local = "".join(c for c in string.printable if c not in "@" and not c.isspace())
mailboxes = _joined(_chars(_local, 1, 20), st.just("@"), _chars(LOWER_DIGITS + ".-", 1, 30))
urls = _joined(st.sampled_from(["http://", "https://"]), _chars(_local + "@", 1, 40))
relay_urls = _joined(
    st.sampled_from(["nats://", "tls://", "ws://", "wss://"]), _chars(_local, 1, 40)
)
_spdx_id = _chars(string.ascii_letters + string.digits + ".+()-", 1, 12)
spdx = st.one_of(
    st.sampled_from(["CC-BY-4.0", "CC0-1.0", "MIT", "CC-BY-SA-4.0 OR CC-BY-4.0"]),
    _joined(
        _spdx_id,
        st.one_of(st.just(""), _joined(st.sampled_from([" AND ", " OR ", " WITH "]), _spdx_id)),
    ),
)
identities = st.binary(min_size=IDENTITY_BYTES, max_size=IDENTITY_BYTES)
keys32 = st.binary(min_size=32, max_size=32)
practice_refs = _joined(identities.map(identity_text), st.just("/"), slug())
indicator_codes = _joined(
    st.sampled_from(string.ascii_uppercase), _chars(UPPER_DIGITS + "_", 1, 39)
)
periods = _joined(
    _chars(string.digits, 4, 4),
    st.one_of(
        st.just(""),
        st.sampled_from(["-Q1", "-Q2", "-Q3", "-Q4", "-S1", "-S2"]),
        _joined(st.just("-"), _chars(string.digits, 2, 2)),
    ),
)
dim_ids = _joined(st.sampled_from(string.ascii_uppercase), _chars(UPPER_DIGITS + "_", 0, 31))
dim_codes = _chars(string.ascii_letters + string.digits + "_+.-", 1, 32)
unit_codes = dim_ids
finite = st.floats(min_value=-1e15, max_value=1e15, allow_nan=False)
scores = st.integers(1, 5)
dates = st.dates()
timestamps = st.integers(0, 2**53 - 1)
names = text(120, min_size=1)
labels = text(200)
short = text(200)  # Short allows 1000; kept small for speed
long = text(400)  # Long allows 8000


# -- bodies -------------------------------------------------------------------------------------
cities = st.builds(
    CityBody,
    name=names,
    country=countries,
    admin_code=text(32),
    population_band=st.none() | _literal(codes.PopulationBand),
    languages=st.lists(langs, max_size=12),
    role_mailbox=st.none() | mailboxes,
    networks=st.lists(network_names, max_size=4),
    description=long,
    website=st.none() | urls,
    transport_key=st.none() | keys32,
)

results = st.builds(
    Result,
    label=text(200, min_size=1),
    value=st.none() | finite,
    unit=text(40),
    baseline=st.none() | finite,
    method=short,
    period=text(40),
)

practices = st.builds(
    PracticeBody,
    title=st.dictionaries(langs, text(200, min_size=1), min_size=1, max_size=3),
    summary=st.dictionaries(langs, text(300), max_size=3),
    description=text(2000),
    status=_literal(codes.PracticeStatus),
    period=st.builds(PracticePeriod, start=st.none() | dates, end=st.none() | dates),
    sectors=_code_list(codes.Sector, 8, min_size=1),
    target_groups=_code_list(codes.TargetGroup, 15),
    focus=st.builds(
        Focus,
        sex=_code_list(codes.Sex, 3),
        age_bands=_code_list(codes.AgeBand, 8),
        disability=st.booleans(),
    ),
    frameworks=st.builds(
        Frameworks,
        mechelen=_code_list(codes.MechelenCommitment, 6),
        sdg_targets=st.lists(
            _joined(_chars(string.digits, 1, 2), st.just("."), _chars(LOWER_DIGITS, 1, 2)),
            max_size=5,
        ),
        gcm_objectives=st.lists(st.integers(1, 23), max_size=5),
    ),
    actors=st.lists(
        st.builds(
            Actor, name=names, role=_literal(codes.ActorRole), type=_literal(codes.ActorType)
        ),
        max_size=4,
    ),
    resources=st.builds(
        Resources,
        budget_band=st.none() | _literal(codes.BudgetBand),
        funding=_code_list(codes.FundingType, 8),
        staff_fte=st.none() | st.floats(0, 100000, allow_nan=False),
        volunteers=st.booleans(),
        notes=short,
    ),
    results=st.lists(results, max_size=4),
    evaluation=st.builds(
        Evaluation,
        type=_literal(codes.EvaluationType),
        summary=long,
        link=st.none() | urls,
    ),
    lessons=long,
    transferability=st.builds(
        Transferability,
        preconditions=st.lists(short, max_size=3),
        adaptable_elements=st.lists(short, max_size=3),
        key_success_factors=st.lists(short, max_size=3),
        scale=st.none() | _literal(codes.Scale),
    ),
    contact=st.builds(
        Contact, role_mailbox=mailboxes, role=labels, languages=st.lists(langs, max_size=3)
    ),
    licence=spdx,
    review_by=st.none() | dates,
    adapted_from=st.none() | practice_refs,
    languages=st.lists(langs, max_size=4),
    keywords=st.lists(text(60), max_size=5),
    links=st.lists(st.builds(Link, label=labels, url=urls), max_size=3),
    sample=st.booleans(),
)

ratings = st.builds(
    RatingBody,
    score=scores,
    scores=st.builds(
        Scores,
        relevance=st.none() | scores,
        evidence=st.none() | scores,
        transferability=st.none() | scores,
        clarity=st.none() | scores,
    ),
    comment=text(500),
    role=_literal(codes.RaterRole),
    conflict_of_interest=st.booleans(),
)

replications = st.builds(
    ReplicationBody,
    relation=_literal(codes.Relation),
    status=_literal(codes.ReplicationStatus),
    start=st.none() | dates,
    adaptations=long,
    mentor=st.none() | identities,
    outcome=st.none()
    | st.builds(
        Outcome,
        worked=_literal(codes.Worked),
        results=st.lists(results, max_size=3),
        lessons=long,
    ),
)

cells = st.builds(
    Cell,
    dims=st.dictionaries(dim_ids, dim_codes, max_size=4),
    value=st.none() | finite,
    obs_status=_literal(codes.ObsStatus),
    conf_status=_literal(codes.ConfStatus),
)

indicator_tables = st.builds(
    IndicatorsBody,
    code=indicator_codes,
    period=periods,
    unit=unit_codes,
    dimensions=st.lists(dim_ids, max_size=8),
    cells=st.lists(cells, max_size=20),
    method=st.builds(
        DisclosureMethod,
        threshold=st.integers(0, 1000),
        rounding_base=st.integers(1, 1000),
        secondary=text(60),
        min_base=st.integers(0, 1000),
        notes=short,
    ),
    source_type=_literal(codes.SourceType),
    attestation=st.builds(
        Attestation, aggregate_only=st.booleans(), officer_role=labels, statement=short
    ),
    notes=short,
)

networks = st.builds(
    NetworkBody,
    title=names,
    description=long,
    stewards=st.lists(identities, min_size=1, max_size=4),
    admission_threshold=st.integers(1, 16),
    relays=st.lists(relay_urls, max_size=4),
    policies=st.builds(
        Policies,
        min_count_threshold=st.integers(10, 1000),
        rating_min_count=st.integers(1, 100),
        max_records_per_hour=st.integers(1, 1_000_000),
    ),
)

memberships = st.builds(
    MembershipBody,
    network=network_names,
    member=identities,
    city=names,
    role=_literal(codes.MemberRole),
    status=_literal(codes.MembershipStatus),
    transport_key=st.none() | keys32,
    valid_from=timestamps,
    valid_until=st.none() | timestamps,
    reason=short,
    replaces=st.none() | identities,
)

# The chain checks the counter-signature and key validity, not the decoder: any bytes do here.
key_rotations = st.builds(
    KeyRotationBody,
    new_key=keys32,
    counter_signature=st.binary(min_size=64, max_size=64),
    next_key=st.none() | keys32,
    by_recovery=st.booleans(),
)

retractions = st.builds(RetractionBody, reason=short)


def heads(seq: int, prev: bytes | None) -> st.SearchStrategy[HeadBody]:
    """A head must checkpoint the record before it, so it depends on the header."""
    return st.builds(
        HeadBody,
        latest_seq=st.just(seq - 1),
        latest_id=st.just(prev),
        counts=st.dictionaries(text(20), st.integers(-(2**63), 2**64 - 1), max_size=5),
    )


BODIES: dict[str, st.SearchStrategy[Any]] = {
    "city": cities,
    "practice": practices,
    "rating": ratings,
    "replication": replications,
    "indicators": indicator_tables,
    "network": networks,
    "membership": memberships,
    "key_rotation": key_rotations,
    "retraction": retractions,
}
"""Body strategies by kind, except ``head`` (see `heads`)."""

# A valid address per kind, drawn independently of the body (the schema does not tie them).
ADDRESSES: dict[str, st.SearchStrategy[str]] = {
    "city": st.just(""),
    "practice": slug(),
    "rating": practice_refs,
    "replication": practice_refs,
    "indicators": _joined(indicator_codes, st.just("/"), periods),
    "network": network_names,
    "membership": identities.map(identity_text),
    "key_rotation": st.just(""),
    "retraction": _joined(
        st.sampled_from(["practice/", "rating/", "replication/", "indicators/", "membership/"]),
        _chars(LOWER_DIGITS + "/-_", 0, 60),
    ),
    "head": st.just(""),
}

seqs = st.integers(1, MAX_SEQ)
record_ids = st.binary(min_size=32, max_size=32)


@st.composite
def headers_and_bodies(draw: st.DrawFn, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Keyword arguments for `build_record` (minus the key): kind, seq, prev, body, addr, ..."""
    kind = draw(st.sampled_from(kinds))
    seq = draw(st.one_of(st.just(1), st.just(2), seqs))
    prev = None if seq == 1 else draw(record_ids)
    body: Body = draw(heads(seq, prev)) if kind == "head" else draw(BODIES[kind])
    return {
        "kind": kind,
        "seq": seq,
        "prev": prev,
        "body": body,
        "addr": draw(ADDRESSES[kind]),
        "created": draw(timestamps),
        "network": draw(network_names),
    }


assert set(BODIES) | {"head"} == set(BODY_TYPES)
