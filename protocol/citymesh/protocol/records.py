"""Record schemas: the header and one body Struct per kind, with limits on every string and list.

All Structs are frozen and kw_only; on the wire each is a MessagePack map whose keys are the field
names, sorted (see codec.py). Fields a later minor version adds get defaults and go last; unknown
fields are ignored on decode (forward compatible), never dropped from the stored bytes.
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import Annotated, Final, Literal, get_args

import msgspec
from msgspec import Meta, Struct

from .codes import (
    ActorRole,
    ActorType,
    AgeBand,
    BudgetBand,
    ConfStatus,
    EvaluationType,
    FundingType,
    MechelenCommitment,
    MemberRole,
    MembershipStatus,
    ObsStatus,
    PopulationBand,
    PracticeStatus,
    RaterRole,
    Relation,
    ReplicationStatus,
    Scale,
    Sector,
    Sex,
    SourceType,
    TargetGroup,
    Worked,
)
from .identity import IDENTITY_BYTES, Genesis, HashBytes, KeyBytes

MAX_PAYLOAD: Final = 64 * 1024
MAX_FUTURE_MS: Final = 15 * 60 * 1000
MAX_SEQ: Final = 2**53 - 1

# -- scalar aliases -----------------------------------------------------------------------------
# Patterns end in `(?!\n)$`: msgspec matches with `re.search`, whose `$` also matches before a
# final newline (so 'BEL\n' would pass `^[A-Z]{3}$`); the look-ahead keeps the pattern valid
# ECMA-262 for JSON Schema. Digits are `[0-9]`, never `\d` (which takes any Unicode digit).
IdentityBytes = Annotated[bytes, Meta(min_length=IDENTITY_BYTES, max_length=IDENTITY_BYTES)]
RecordId = Annotated[bytes, Meta(min_length=32, max_length=32)]
Signature = Annotated[bytes, Meta(min_length=64, max_length=64)]
Seq = Annotated[int, Meta(ge=1, le=MAX_SEQ)]
TimestampMs = Annotated[int, Meta(ge=0, le=2**53 - 1)]

Lang = Annotated[str, Meta(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?(?!\n)$", max_length=12)]
NetworkName = Annotated[str, Meta(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?(?!\n)$")]
Slug = Annotated[str, Meta(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?!\n)$")]
Country = Annotated[str, Meta(pattern=r"^[A-Z]{3}(?!\n)$")]
# Whitespace spelled out, never `\s`: Python's `\s` also takes \x1c-\x1f and \x85, ECMA-262's
# also takes \ufeff; this class is their union, so both engines refuse the same characters.
_SPACE = r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
Mailbox = Annotated[
    str, Meta(pattern=rf"^[^@{_SPACE}]{{1,64}}@[^@{_SPACE}]{{1,188}}(?!\n)$", max_length=254)
]
Url = Annotated[str, Meta(pattern=rf"^https?://[^{_SPACE}]{{1,490}}(?!\n)$", max_length=500)]
RelayUrl = Annotated[
    str, Meta(pattern=rf"^(nats|tls|wss?)://[^{_SPACE}]{{1,250}}(?!\n)$", max_length=260)
]
Spdx = Annotated[
    str, Meta(pattern=r"^[A-Za-z0-9.+()-]{1,64}( (AND|OR|WITH) [A-Za-z0-9.+()-]{1,64}){0,3}(?!\n)$")
]
Name = Annotated[str, Meta(min_length=1, max_length=120)]
Label = Annotated[str, Meta(max_length=200)]
Short = Annotated[str, Meta(max_length=1000)]
Long = Annotated[str, Meta(max_length=8000)]
Markdown = Annotated[str, Meta(max_length=40000)]
PracticeRefText = Annotated[
    str, Meta(pattern=r"^cmid1[02-9ac-hj-np-z]{38}/[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?!\n)$")
]
IndicatorCode = Annotated[str, Meta(pattern=r"^[A-Z][A-Z0-9_]{1,39}(?!\n)$")]
Period = Annotated[str, Meta(pattern=r"^[0-9]{4}(-(Q[1-4]|S[12]|[0-9]{2}))?(?!\n)$")]
DIM_ID_PATTERN: Final = r"^[A-Z][A-Z0-9_]{0,31}(?!\n)$"
DIM_CODE_PATTERN: Final = r"^[A-Za-z0-9_+.-]{1,32}(?!\n)$"
DimId = Annotated[str, Meta(pattern=DIM_ID_PATTERN)]
DimCode = Annotated[str, Meta(pattern=DIM_CODE_PATTERN)]
CellDims = Annotated[
    dict[
        Annotated[str, Meta(extra_json_schema={"pattern": DIM_ID_PATTERN})],
        Annotated[str, Meta(extra_json_schema={"pattern": DIM_CODE_PATTERN})],
    ],
    Meta(max_length=8),
]
"""A cell's dimension map: the same rules as ``dict[DimId, DimCode]``, checked by `Cell` with a
memo. A table repeats a handful of ids and codes over thousands of cells, and msgspec matches a
pattern through Python's ``re`` on every string (a 34-cell table spent 240 us, three times its
signature check, matching the same few codes)."""
Finite = Annotated[float, Meta(ge=-1e15, le=1e15)]
Score = Annotated[int, Meta(ge=1, le=5)]


TitleTexts = Annotated[
    dict[Lang, Annotated[str, Meta(min_length=1, max_length=200)]],
    Meta(min_length=1, max_length=12),
]
SummaryTexts = Annotated[dict[Lang, Annotated[str, Meta(max_length=2000)]], Meta(max_length=12)]


class Base(Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Common options of every wire Struct."""


# -- city ---------------------------------------------------------------------------------------
class CityBody(Base, frozen=True, kw_only=True):
    name: Name
    country: Country
    admin_code: Annotated[str, Meta(max_length=32)] = ""
    """LAU, NUTS or humanitarian p-code of the municipality."""
    population_band: PopulationBand | None = None
    languages: Annotated[list[Lang], Meta(max_length=12)] = []
    role_mailbox: Mailbox | None = None
    networks: Annotated[list[NetworkName], Meta(max_length=16)] = []
    description: Long = ""
    website: Url | None = None
    transport_key: KeyBytes | None = None
    """Public nkey the node logs in to relays with (never the record-signing key)."""


# -- practice -----------------------------------------------------------------------------------
class PracticePeriod(Base, frozen=True, kw_only=True):
    start: datetime.date | None = None
    end: datetime.date | None = None


class Focus(Base, frozen=True, kw_only=True):
    """Intersecting attributes the practice addresses in particular."""

    sex: Annotated[list[Sex], Meta(max_length=3)] = []
    age_bands: Annotated[list[AgeBand], Meta(max_length=8)] = []
    disability: bool = False


class Frameworks(Base, frozen=True, kw_only=True):
    mechelen: Annotated[list[MechelenCommitment], Meta(max_length=6)] = []
    sdg_targets: Annotated[
        list[Annotated[str, Meta(pattern=r"^[0-9]{1,2}\.[0-9a-z]{1,2}(?!\n)$")]],
        Meta(max_length=20),
    ] = []
    gcm_objectives: Annotated[list[Annotated[int, Meta(ge=1, le=23)]], Meta(max_length=23)] = []


class Actor(Base, frozen=True, kw_only=True):
    name: Name
    role: ActorRole
    type: ActorType


class Resources(Base, frozen=True, kw_only=True):
    budget_band: BudgetBand | None = None
    funding: Annotated[list[FundingType], Meta(max_length=8)] = []
    staff_fte: Annotated[float, Meta(ge=0, le=100000)] | None = None
    volunteers: bool = False
    notes: Short = ""


class Result(Base, frozen=True, kw_only=True):
    label: Annotated[str, Meta(min_length=1, max_length=200)]
    value: Finite | None = None
    unit: Annotated[str, Meta(max_length=40)] = ""
    baseline: Finite | None = None
    method: Short = ""
    period: Annotated[str, Meta(max_length=40)] = ""


class Evaluation(Base, frozen=True, kw_only=True):
    type: EvaluationType = "none"
    summary: Long = ""
    link: Url | None = None


class Transferability(Base, frozen=True, kw_only=True):
    preconditions: Annotated[list[Short], Meta(max_length=20)] = []
    adaptable_elements: Annotated[list[Short], Meta(max_length=20)] = []
    key_success_factors: Annotated[list[Short], Meta(max_length=20)] = []
    scale: Scale | None = None


class Contact(Base, frozen=True, kw_only=True):
    role_mailbox: Mailbox
    role: Label = ""
    """A function, not a person's name (e.g. 'Integration coordinator')."""
    languages: Annotated[list[Lang], Meta(max_length=12)] = []


class Link(Base, frozen=True, kw_only=True):
    label: Label
    url: Url


class PracticeBody(Base, frozen=True, kw_only=True):
    title: TitleTexts
    summary: SummaryTexts = {}
    description: Markdown = ""
    status: PracticeStatus
    period: PracticePeriod = PracticePeriod()
    sectors: Annotated[list[Sector], Meta(min_length=1, max_length=8)]
    target_groups: Annotated[list[TargetGroup], Meta(max_length=15)] = []
    focus: Focus = Focus()
    frameworks: Frameworks = Frameworks()
    actors: Annotated[list[Actor], Meta(max_length=40)] = []
    resources: Resources = Resources()
    results: Annotated[list[Result], Meta(max_length=40)] = []
    evaluation: Evaluation = Evaluation()
    lessons: Long = ""
    """What worked, and what failed."""
    transferability: Transferability = Transferability()
    contact: Contact
    licence: Spdx = "CC-BY-4.0"
    review_by: datetime.date | None = None
    adapted_from: PracticeRefText | None = None
    languages: Annotated[list[Lang], Meta(max_length=20)] = []
    """Languages the service itself is offered in."""
    keywords: Annotated[list[Annotated[str, Meta(max_length=60)]], Meta(max_length=20)] = []
    links: Annotated[list[Link], Meta(max_length=20)] = []
    sample: bool = False
    """True for illustrative sample data (the demo), never for a real practice."""


# -- rating -------------------------------------------------------------------------------------
class Scores(Base, frozen=True, kw_only=True):
    relevance: Score | None = None
    evidence: Score | None = None
    transferability: Score | None = None
    clarity: Score | None = None


class RatingBody(Base, frozen=True, kw_only=True):
    score: Score
    """Overall score, 1-5."""
    scores: Scores = Scores()
    comment: Annotated[str, Meta(max_length=2000)] = ""
    role: RaterRole = "peer"
    conflict_of_interest: bool = False


# -- replication --------------------------------------------------------------------------------
class Outcome(Base, frozen=True, kw_only=True):
    worked: Worked
    results: Annotated[list[Result], Meta(max_length=40)] = []
    lessons: Long = ""


class ReplicationBody(Base, frozen=True, kw_only=True):
    relation: Relation
    status: ReplicationStatus
    start: datetime.date | None = None
    adaptations: Long = ""
    mentor: IdentityBytes | None = None
    outcome: Outcome | None = None


# -- indicators ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _dim_problem(key: str, code: str) -> str | None:
    if _DIM_ID.match(key) is None:
        return (
            f"Expected `str` matching regex {DIM_ID_PATTERN!r} as a dimension id, got {key[:40]!r}"
        )
    if _DIM_CODE.match(code) is None:
        return f"Expected `str` matching regex {DIM_CODE_PATTERN!r} as a code of {key}, got {code[:40]!r}"
    return None


_DIM_ID: Final = re.compile(DIM_ID_PATTERN)
_DIM_CODE: Final = re.compile(DIM_CODE_PATTERN)


class Cell(Base, frozen=True, kw_only=True):
    dims: CellDims
    value: Finite | None
    """None when suppressed or missing; never 0 in place of a suppressed value."""
    obs_status: ObsStatus = "A"
    conf_status: ConfStatus = "F"

    def __post_init__(self) -> None:
        for key, code in self.dims.items():
            problem = _dim_problem(key, code)
            if problem is not None:
                raise ValueError(problem)  # msgspec reports it with the cell's path


class DisclosureMethod(Base, frozen=True, kw_only=True):
    threshold: Annotated[int, Meta(ge=0, le=1000)]
    rounding_base: Annotated[int, Meta(ge=1, le=1000)] = 1
    secondary: Annotated[str, Meta(max_length=60)] = "none"
    """Secondary suppression method name (e.g. 'min-two-per-line')."""
    min_base: Annotated[int, Meta(ge=0, le=1000)] = 0
    """Averages and rates are published only where based on at least this many."""
    notes: Short = ""


class Attestation(Base, frozen=True, kw_only=True):
    aggregate_only: bool
    """The publisher attests that no person-level data is contained."""
    officer_role: Label = ""
    statement: Short = ""


class IndicatorsBody(Base, frozen=True, kw_only=True):
    code: IndicatorCode
    period: Period
    unit: Annotated[str, Meta(pattern=r"^[A-Z][A-Z0-9_]{0,31}(?!\n)$")]
    """SDMX-style UNIT_MEASURE code (e.g. PS persons, PC percent, DAYS)."""
    dimensions: Annotated[list[DimId], Meta(max_length=8)]
    cells: Annotated[list[Cell], Meta(max_length=4000)]
    method: DisclosureMethod
    source_type: SourceType
    attestation: Attestation
    notes: Short = ""


# -- network and membership ---------------------------------------------------------------------
class Policies(Base, frozen=True, kw_only=True):
    min_count_threshold: Annotated[int, Meta(ge=10, le=1000)] = 10
    rating_min_count: Annotated[int, Meta(ge=1, le=100)] = 3
    max_records_per_hour: Annotated[int, Meta(ge=1, le=1_000_000)] = 600


class NetworkBody(Base, frozen=True, kw_only=True):
    title: Name
    description: Long = ""
    stewards: Annotated[list[IdentityBytes], Meta(min_length=1, max_length=16)]
    admission_threshold: Annotated[int, Meta(ge=1, le=16)] = 1
    relays: Annotated[list[RelayUrl], Meta(max_length=16)] = []
    policies: Policies = Policies()


class MembershipBody(Base, frozen=True, kw_only=True):
    network: NetworkName
    member: IdentityBytes
    city: Name
    role: MemberRole = "member"
    status: MembershipStatus = "active"
    transport_key: KeyBytes | None = None
    valid_from: TimestampMs
    valid_until: TimestampMs | None = None
    reason: Short = ""
    replaces: IdentityBytes | None = None
    """Set when a steward re-admits a city that lost its key: the identity this one continues."""
    until_seq: Annotated[int, Meta(ge=0, le=MAX_SEQ)] | None = None
    """With status revoked: the member's records up to this seq still count, later ones do not."""


# -- key rotation, retraction, head -------------------------------------------------------------
class KeyRotationBody(Base, frozen=True, kw_only=True):
    new_key: KeyBytes
    counter_signature: Signature
    """The new key's signature over ROTATION_CONTEXT + author + new_key (proves possession)."""
    next_key: HashBytes | None = None
    by_recovery: bool = False
    """True when a recovery key (named in the genesis) signed this rotation."""


class RetractionBody(Base, frozen=True, kw_only=True):
    reason: Short = ""


class HeadBody(Base, frozen=True, kw_only=True):
    latest_seq: Annotated[int, Meta(ge=0, le=MAX_SEQ)]
    latest_id: RecordId | None
    counts: Annotated[dict[Annotated[str, Meta(max_length=20)], int], Meta(max_length=16)] = {}


Body = (
    CityBody
    | PracticeBody
    | RatingBody
    | ReplicationBody
    | IndicatorsBody
    | NetworkBody
    | MembershipBody
    | KeyRotationBody
    | RetractionBody
    | HeadBody
)

Kind = Literal[
    "city",
    "practice",
    "rating",
    "replication",
    "indicators",
    "network",
    "membership",
    "key_rotation",
    "retraction",
    "head",
]
KINDS: tuple[str, ...] = get_args(Kind)

BODY_TYPES: Final[dict[str, type[Base]]] = {
    "city": CityBody,
    "practice": PracticeBody,
    "rating": RatingBody,
    "replication": ReplicationBody,
    "indicators": IndicatorsBody,
    "network": NetworkBody,
    "membership": MembershipBody,
    "key_rotation": KeyRotationBody,
    "retraction": RetractionBody,
    "head": HeadBody,
}
KIND_OF_BODY: Final[dict[type[Base], str]] = {v: k for k, v in BODY_TYPES.items()}


class Header(Base, frozen=True, kw_only=True):
    """The signed header. On the wire it is one map together with ``body`` (PROTOCOL.md §4)."""

    v: int
    kind: Kind
    network: NetworkName
    author: IdentityBytes
    signer: KeyBytes
    seq: Seq
    prev: RecordId | None
    created: TimestampMs
    addr: Annotated[str, Meta(max_length=200)]
    genesis: Genesis | None = None


class WirePayload(Header, frozen=True, kw_only=True):
    """Header plus the body still as raw bytes; decoded once the kind is known."""

    body: msgspec.Raw


class Record(Struct, frozen=True, kw_only=True):
    """A verified, decoded record with the exact bytes it arrived as."""

    id: bytes
    envelope: bytes
    payload: bytes
    header: Header
    body: Body

    @property
    def kind(self) -> str:
        return self.header.kind

    @property
    def author(self) -> bytes:
        return self.header.author

    @property
    def seq(self) -> int:
        return self.header.seq

    @property
    def addr(self) -> str:
        return self.header.addr
