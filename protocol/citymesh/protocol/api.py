"""HTTP API schemas (contract v1): request and response bodies shared by the node and the TUI.

The node decodes request bodies with ``msgspec.json.decode(body, type=...)``, encodes responses
with ``msgspec.json.encode`` and builds its OpenAPI 3.1 document from `SCHEMA_TYPES` with
``msgspec.json.schema_components``; the TUI decodes responses into the same Structs.

Conventions:

- Request bodies (``*In``) refuse unknown top-level fields (a typo must not be dropped silently);
  response Structs ignore unknown fields, so a client keeps working when a node adds fields.
- Identities, keys and practice refs appear in their text forms (``cmid1…``, ``cmpk1…``,
  ``cmid1…/<slug>``); record ids as 64 lowercase hex digits.
- Times in responses are ISO 8601 / RFC 3339 strings in UTC with a ``Z`` suffix, at millisecond
  precision (`utc_from_ms`); dates (``period.start``, ``review_by``) are ``YYYY-MM-DD``.
- Errors are ``{"error": {"code", "message", "field"}}`` (`ErrorResponse`); `error_detail` turns
  a msgspec decoding error into one, ``field`` being a path like ``contact.role_mailbox``.
- Pagination cursors are opaque, integrity-protected strings (`encode_cursor`, `decode_cursor`).

Patterns end in a look-ahead refusing a final newline before ``$``, as in records.py.

Pure: no I/O, no clock, no randomness; keys are passed in.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import re
from typing import Annotated, Final, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from .codec import encode as canonical_encode
from .codes import (
    ConfStatus,
    MemberRole,
    MembershipStatus,
    ObsStatus,
    PopulationBand,
    PracticeStatus,
    RaterRole,
    Relation,
    ReplicationStatus,
    Sector,
    SourceType,
    TargetGroup,
)
from .errors import BadIdentityError, InvalidRecordError, ProtocolError
from .identity import identity_text, parse_identity
from .records import (
    Attestation,
    CityBody,
    Country,
    DimCode,
    DimId,
    DisclosureMethod,
    Finite,
    IndicatorCode,
    IndicatorsBody,
    Kind,
    Long,
    Name,
    NetworkName,
    Outcome,
    Period,
    PracticeBody,
    PracticeRefText,
    RatingBody,
    RelayUrl,
    ReplicationBody,
    Scores,
    Seq,
    Short,
    Slug,
)

API_VERSION: Final = 1
"""Major version of this HTTP contract (the ``/v1`` path prefix)."""

# -- scalar aliases -----------------------------------------------------------------------------
_BECH32 = "[02-9ac-hj-np-z]"
IDENTITY_FORMAT: Final = "citymesh-identity"
"""JSON Schema ``format`` of identity text: `parse_identity` accepts it (checksum included)."""
KEY_FORMAT: Final = "citymesh-key"
"""JSON Schema ``format`` of public key text: `parse_public_key` accepts it."""
_SLUG_RE = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"

IdentityText = Annotated[
    str,
    Meta(
        pattern=rf"^cmid1{_BECH32}{{38}}(?!\n)$",
        title="Identity",
        description=(
            "A city's stable identity in text form (bech32m, prefix cmid1). The format says "
            "what the pattern cannot: the bech32m checksum must hold (a typo fails it)."
        ),
        examples=["cmid1qqqsyqcyq5rqwzqfpg9scrgwpugpzysnvk3knq"],
        extra_json_schema={"format": IDENTITY_FORMAT},
    ),
]
KeyText = Annotated[
    str,
    Meta(
        pattern=rf"^cmpk1{_BECH32}{{58}}(?!\n)$",
        title="PublicKey",
        description=(
            "An Ed25519 public key in text form (bech32m, prefix cmpk1). The format says what "
            "the pattern cannot: the checksum must hold and the key be a point of large order."
        ),
        extra_json_schema={"format": KEY_FORMAT},
    ),
]
Fingerprint = Annotated[
    str,
    Meta(
        pattern=rf"^{_BECH32}{{4}}-{_BECH32}{{4}}(?!\n)$",
        description="Short display form of an identity or key; not unique, never for lookups.",
    ),
]
HexId = Annotated[
    str,
    Meta(
        pattern=r"^[0-9a-f]{64}(?!\n)$",
        title="RecordId",
        description="A record id: SHA-256 of the signed message, 64 lowercase hex digits.",
    ),
]
RecordRef = Annotated[
    str,
    Meta(
        max_length=300,
        description=(
            "The address of a record, '<author identity>/<addr>'; for a practice this is its "
            "practice ref, for indicators '<author>/<CODE>/<period>'."
        ),
    ),
]
UtcTime = Annotated[
    datetime.datetime,
    Meta(tz=True, description="UTC time, RFC 3339 with a Z suffix, millisecond precision."),
]
Count = Annotated[int, Meta(ge=0, le=2**53 - 1)]
CursorText = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9_-]{1,1024}(?!\n)$",
        description="Opaque pagination cursor from a previous page's 'next'.",
    ),
]

Freshness = Literal["fresh", "due", "overdue", "unknown"]
"""How current a practice is against its ``review_by`` date (computed by citymesh.practices)."""
EvidenceLevel = Literal["idea", "promising", "demonstrated", "replicated"]
"""How well a practice is backed: evaluation, results, replications (citymesh.practices)."""
PracticeSort = Literal["relevance", "updated", "rating", "replications", "title"]
ScoreKey = Literal["1", "2", "3", "4", "5"]
PreviewStatus = Literal["published", "suppressed"]


class ApiStruct(Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Common options of response bodies: unknown fields are ignored (nodes may add fields)."""


class RequestStruct(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Common options of request bodies and query parameters: unknown fields are refused."""


# -- errors -------------------------------------------------------------------------------------
class ErrorDetail(ApiStruct, frozen=True, kw_only=True):
    """What went wrong, machine-readable (``code``) and for people (``message``)."""

    code: Annotated[
        str,
        Meta(
            pattern=r"^[a-z][a-z0-9_]{0,63}(?!\n)$",
            description="Stable code, e.g. invalid, missing_field, unknown_sector, not_found.",
        ),
    ]
    message: Annotated[str, Meta(max_length=2000)]
    field: (
        Annotated[
            str,
            Meta(
                max_length=300,
                description="Path of the bad input, e.g. 'sectors[0]', 'contact.role_mailbox'.",
            ),
        ]
        | None
    ) = None


class ErrorResponse(ApiStruct, frozen=True, kw_only=True):
    """Body of every 4xx/5xx response."""

    error: ErrorDetail


# -- health and status --------------------------------------------------------------------------
class Health(ApiStruct, frozen=True, kw_only=True):
    """GET /healthz: the node process is alive (no authentication)."""

    status: Literal["ok"] = "ok"
    protocol: Annotated[int, Meta(ge=1, description="Major protocol version spoken.")]
    version: Annotated[str, Meta(max_length=64, description="Software version.")] = ""


RevokedFlag = Annotated[
    bool, Meta(description="The author's membership was revoked after this record.")
]


class RelayStatus(ApiStruct, frozen=True, kw_only=True):
    """One relay the node is connected to (or trying to be)."""

    url: Annotated[str, Meta(max_length=500, description="Relay URL, credentials removed.")]
    connected: bool
    lag: Annotated[Count, Meta(description="Records on the relay not yet ingested.")]
    last_error: Annotated[str, Meta(max_length=2000)] | None = None
    cursor: Annotated[Count, Meta(description="Last stream sequence committed locally.")]
    outbox_pending: Annotated[Count, Meta(description="Own records not yet acknowledged.")]
    not_permitted: Annotated[
        Count,
        Meta(description="Other cities' records this relay would not take from this node."),
    ] = 0
    embedded: bool = False
    """True for the private nats-server the node started itself."""


class Status(ApiStruct, frozen=True, kw_only=True):
    """GET /v1/status: who this node is and how its relays are doing."""

    city: Name
    country: Country | None = None
    identity: IdentityText
    fingerprint: Annotated[Fingerprint, Meta(description="Fingerprint of the identity.")]
    key: Annotated[KeyText, Meta(description="Current record-signing public key.")]
    key_fingerprint: Fingerprint
    seq: Annotated[Count, Meta(description="Latest seq of this city's own chain (0: none).")] = 0
    networks: list[NetworkName]
    relays: list[RelayStatus]
    records: Annotated[dict[Kind, Count], Meta(description="Stored valid records by kind.")]
    rejected: Annotated[
        dict[Annotated[str, Meta(max_length=64)], Count],
        Meta(description="Rejected records by reason code (errors.ERROR_CODES and policy codes)."),
    ]
    unverified: Annotated[Count, Meta(description="Records from non-member authors.")] = 0
    ready_to_publish: Annotated[
        bool,
        Meta(description="False until the node has checked every relay for newer own records."),
    ]
    not_ready_reason: Annotated[str, Meta(max_length=500)] | None = None
    version: Annotated[str, Meta(max_length=64)] = ""


# -- practices ----------------------------------------------------------------------------------
class PracticeIn(PracticeBody, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/practices: every field of the practice record body, plus its ``addr``.

    A subclass of `PracticeBody`, so it cannot drift from the record schema. Sign
    ``practice_body(p)``, never ``p`` itself (that would carry ``addr`` into the body).
    """

    addr: Annotated[
        Slug,
        Meta(description="The practice's slug, unique within the author; same slug = update."),
    ]


class Published(ApiStruct, frozen=True, kw_only=True):
    """201 response of every write (practice, rating, replication, indicators, retraction)."""

    ref: RecordRef
    id: HexId
    seq: Seq
    kind: Kind = "practice"
    author: Annotated[
        IdentityText | None,
        Meta(description="The city that signed it: this node's city (null: an older node)."),
    ] = None


class RatingSummary(ApiStruct, frozen=True, kw_only=True):
    """Aggregate of the current ratings of a practice by member cities (one per city).

    In list items only ``count``, ``mean`` and ``bayes`` are filled; ``distribution`` is empty.
    """

    count: Count
    mean: (
        Annotated[
            float,
            Meta(ge=1, le=5, description="Mean score; null below min_count ratings."),
        ]
        | None
    ) = None
    bayes: (
        Annotated[
            float,
            Meta(ge=1, le=5, description="Bayesian average shrunk to the network-wide mean."),
        ]
        | None
    ) = None
    distribution: Annotated[
        dict[ScoreKey, Count], Meta(description="Ratings per overall score '1'..'5'.")
    ] = {}
    min_count: Annotated[Count, Meta(description="Fewest ratings for which the mean is shown.")] = 0


class PracticeItem(ApiStruct, frozen=True, kw_only=True):
    """One search result of GET /v1/practices."""

    ref: PracticeRefText
    author: Annotated[
        IdentityText | None,
        Meta(description="The author of `ref`, as GET /v1/practices/{author}/{addr} takes it."),
    ] = None
    addr: Annotated[
        Slug | None,
        Meta(description="The slug of `ref`, as GET /v1/practices/{author}/{addr} takes it."),
    ] = None
    title: Annotated[str, Meta(max_length=200, description="Title in the best language.")]
    summary: Annotated[str, Meta(max_length=2000, description="Summary, best language.")] = ""
    city: Annotated[Name | None, Meta(description="Author's city name (null: no profile).")]
    country: Country | None
    sectors: list[Sector]
    target_groups: list[TargetGroup] = []
    status: PracticeStatus
    rating: RatingSummary
    replications: Annotated[Count, Meta(description="Replications reported by other cities.")]
    updated: Annotated[UtcTime, Meta(description="Created time of the current version.")]
    unverified: Annotated[
        bool, Meta(description="The author is not a member of any network this node follows.")
    ] = False
    revoked: RevokedFlag = False


class PracticeQuery(RequestStruct, frozen=True, kw_only=True):
    """Query parameters of GET /v1/practices (decode with ``msgspec.convert(..., strict=False)``;
    leave out empty parameters)."""

    q: Annotated[str, Meta(max_length=200, description="Full-text search.")] | None = None
    sector: Sector | None = None
    target_group: TargetGroup | None = None
    country: Country | None = None
    author: IdentityText | None = None
    status: PracticeStatus | None = None
    sort: PracticeSort = "relevance"
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    cursor: CursorText | None = None
    language: (
        Annotated[str, Meta(pattern=r"^[a-z]{2,3}(?!\n)$", description="Language of the text.")]
        | None
    ) = None
    has_replications: (
        Annotated[bool, Meta(description="Only practices that other cities replicated.")] | None
    ) = None
    min_rating: (
        Annotated[
            float, Meta(ge=1, le=5, description="Only practices whose shrunk mean is at least.")
        ]
        | None
    ) = None


class PracticeList(ApiStruct, frozen=True, kw_only=True):
    """GET /v1/practices: one page of results, the next cursor and facet counts."""

    items: list[PracticeItem]
    next: Annotated[CursorText | None, Meta(description="Cursor of the next page; null: last.")]
    facets: Annotated[
        dict[str, dict[str, Count]],
        Meta(
            description=(
                "Counts over the whole result set by facet ('sector', 'target_group', 'country', "
                "'status') and code."
            )
        ),
    ] = {}


class RatingItem(ApiStruct, frozen=True, kw_only=True):
    """One city's current rating of a practice."""

    city: Name | None
    author: IdentityText
    score: Annotated[int, Meta(ge=1, le=5)]
    scores: Scores = Scores()
    comment: Annotated[str, Meta(max_length=2000)] = ""
    role: RaterRole = "peer"
    conflict_of_interest: bool = False
    updated: UtcTime
    unverified: bool = False
    revoked: RevokedFlag = False


class ReplicationItem(ApiStruct, frozen=True, kw_only=True):
    """One city's current replication report of a practice."""

    city: Name | None
    author: IdentityText
    relation: Relation
    status: ReplicationStatus
    start: datetime.date | None = None
    adaptations: Long = ""
    mentor: IdentityText | None = None
    outcome: Outcome | None = None
    updated: UtcTime
    unverified: bool = False
    revoked: RevokedFlag = False


class HistoryItem(ApiStruct, frozen=True, kw_only=True):
    """One version of a practice, newest first in `PracticeDetail.history`."""

    seq: Seq
    id: HexId
    created: UtcTime
    changed: Annotated[
        list[Annotated[str, Meta(max_length=64)]],
        Meta(
            max_length=64,
            description="Top-level body fields that differ from the previous version.",
        ),
    ] = []


class PracticeDetail(ApiStruct, frozen=True, kw_only=True):
    """GET /v1/practices/{author}/{addr}: the current version with ratings, replications and
    history."""

    ref: PracticeRefText
    author: IdentityText
    addr: Slug
    seq: Seq
    id: HexId
    updated: UtcTime
    city: Name | None
    country: Country | None
    practice: PracticeBody
    rating: RatingSummary
    ratings: list[RatingItem] = []
    replications: list[ReplicationItem] = []
    history: list[HistoryItem] = []
    adapted_from: PracticeRefText | None = None
    adapted_into: Annotated[
        list[PracticeRefText], Meta(description="Known practices adapted from this one.")
    ] = []
    freshness: Freshness = "unknown"
    evidence_level: EvidenceLevel = "idea"
    own: Annotated[bool, Meta(description="Published by this node's city.")] = False
    own_rating: Annotated[
        RatingItem | None, Meta(description="This city's current rating of it.")
    ] = None
    own_replication: Annotated[
        ReplicationItem | None, Meta(description="This city's current replication of it.")
    ] = None
    unverified: bool = False
    revoked: RevokedFlag = False


# -- ratings and replications -------------------------------------------------------------------
class RatingIn(RatingBody, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/practices/{author}/{addr}/ratings: exactly the rating record body."""


class ReplicationIn(RequestStruct, frozen=True, kw_only=True):
    """POST /v1/practices/{author}/{addr}/replications: the replication record body, with the
    mentor city as identity text (the record holds its bytes; see `replication_body`)."""

    relation: Relation
    status: ReplicationStatus
    start: datetime.date | None = None
    adaptations: Long = ""
    mentor: IdentityText | None = None
    outcome: Outcome | None = None


# -- cities -------------------------------------------------------------------------------------
class MembershipInfo(ApiStruct, frozen=True, kw_only=True):
    """A city's current membership in one network, as signed by a steward."""

    network: NetworkName
    role: MemberRole
    status: MembershipStatus
    valid_from: UtcTime
    valid_until: UtcTime | None = None
    issuer: Annotated[IdentityText, Meta(description="The steward that signed it.")]


class CityItem(ApiStruct, frozen=True, kw_only=True):
    """One city of GET /v1/cities."""

    identity: IdentityText
    fingerprint: Fingerprint
    name: Name | None
    country: Country | None
    population_band: PopulationBand | None = None
    networks: list[NetworkName] = []
    memberships: list[MembershipInfo] = []
    practices: Count = 0
    updated: UtcTime | None = None
    continues: Annotated[
        IdentityText | None,
        Meta(description="The identity this city had before a steward re-admitted it."),
    ] = None
    continued_by: Annotated[
        IdentityText | None, Meta(description="The identity this city was re-admitted under.")
    ] = None
    own: bool = False
    unverified: bool = False
    revoked: RevokedFlag = False


class CityList(ApiStruct, frozen=True, kw_only=True):
    """GET /v1/cities."""

    items: list[CityItem]
    next: CursorText | None = None


class CityDetail(ApiStruct, frozen=True, kw_only=True):
    """GET /v1/cities/{key}: the city's profile record and what this node holds of it."""

    identity: IdentityText
    fingerprint: Fingerprint
    key: Annotated[KeyText | None, Meta(description="Current signing key, if known.")] = None
    profile: Annotated[
        CityBody | None, Meta(description="The current city record body; null if none.")
    ]
    memberships: list[MembershipInfo] = []
    seq: Annotated[Count, Meta(description="Latest seq of the city's chain held here.")] = 0
    records: Annotated[dict[Kind, Count], Meta(description="Records held, by kind.")] = {}
    practices: list[PracticeItem] = []
    updated: UtcTime | None = None
    continues: Annotated[
        IdentityText | None,
        Meta(description="The identity this city had before a steward re-admitted it."),
    ] = None
    continued_by: Annotated[
        IdentityText | None, Meta(description="The identity this city was re-admitted under.")
    ] = None
    own: bool = False
    unverified: bool = False
    revoked: RevokedFlag = False
    equivocated: Annotated[
        bool, Meta(description="Two records with one seq seen: nothing past the fork counts.")
    ] = False


# -- indicators ---------------------------------------------------------------------------------
Dims = Annotated[dict[DimId, DimCode], Meta(max_length=8)]


class IndicatorRowIn(RequestStruct, frozen=True, kw_only=True):
    """One aggregate row: a count, or a value with the count it is based on."""

    dims: Dims
    count: Annotated[int, Meta(ge=0, le=2**53 - 1)] | None = None
    value: Finite | None = None
    base: (
        Annotated[
            int,
            Meta(ge=0, le=2**53 - 1, description="People or cases a value is computed from."),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if self.count is None and self.value is None:
            raise ValueError("a row needs a count or a value")


class IndicatorPreviewIn(RequestStruct, frozen=True, kw_only=True):
    """POST /v1/indicators/preview: rows to put through disclosure control."""

    code: IndicatorCode
    period: Period
    rows: Annotated[list[IndicatorRowIn], Meta(min_length=1, max_length=4000)]
    threshold: (
        Annotated[
            int,
            Meta(
                ge=1,
                le=1000,
                description="Primary suppression threshold; never below the network's minimum.",
            ),
        ]
        | None
    ) = None


class IndicatorPublishIn(IndicatorPreviewIn, frozen=True, kw_only=True):
    """POST /v1/indicators: the preview input plus what the signed table states about itself."""

    source_type: SourceType
    attestation: Attestation
    notes: Short = ""


class PreviewCell(ApiStruct, frozen=True, kw_only=True):
    """One cell after disclosure control."""

    dims: Dims
    value: Finite | None
    status: PreviewStatus
    reason: (
        Annotated[
            str,
            Meta(max_length=200, description="Why suppressed: 'primary', 'secondary', 'min_base'."),
        ]
        | None
    ) = None
    obs_status: ObsStatus = "A"
    conf_status: ConfStatus = "F"


class IndicatorPreview(ApiStruct, frozen=True, kw_only=True):
    """Response of POST /v1/indicators/preview: the table as it would be published."""

    code: IndicatorCode
    period: Period
    unit: Annotated[str, Meta(max_length=32)] = ""
    dimensions: list[DimId] = []
    cells: list[PreviewCell]
    method: DisclosureMethod
    published: Count = 0
    suppressed: Count = 0


class DimensionDefinition(ApiStruct, frozen=True, kw_only=True):
    """A dimension of an indicator and its code list."""

    id: DimId
    name: Annotated[str, Meta(max_length=200)] = ""
    codes: list[DimCode]
    labels: dict[DimCode, Annotated[str, Meta(max_length=200)]] = {}


class IndicatorDefinition(ApiStruct, frozen=True, kw_only=True):
    """One entry of the indicator catalogue (GET /v1/indicators/definitions returns a list)."""

    code: IndicatorCode
    name: Annotated[str, Meta(max_length=200)]
    unit: Annotated[str, Meta(max_length=32)]
    description: Annotated[str, Meta(max_length=2000)] = ""
    dimensions: list[DimensionDefinition]
    measure: Literal["count", "mean", "median", "rate", "share"] = "count"
    sector: Sector | None = None
    frequency: Annotated[str, Meta(max_length=1)] = "A"
    source_type: SourceType | None = None
    crosswalk: Annotated[
        dict[Annotated[str, Meta(max_length=20)], Annotated[str, Meta(max_length=60)]],
        Meta(description="Upstream series, e.g. {'SDG': 'SG_REG_BRTH'}."),
    ] = {}


IndicatorDefinitions = list[IndicatorDefinition]
"""Response of GET /v1/indicators/definitions (a bare JSON array)."""


class IndicatorQuery(RequestStruct, frozen=True, kw_only=True):
    """Query parameters of GET /v1/indicators."""

    city: Annotated[IdentityText | None, Meta(description="Author identity.")] = None
    code: IndicatorCode | None = None
    period: Period | None = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    cursor: CursorText | None = None


class IndicatorTable(ApiStruct, frozen=True, kw_only=True):
    """One published aggregate table with who published it."""

    ref: RecordRef
    author: IdentityText
    city: Name | None
    country: Country | None = None
    seq: Seq
    id: HexId
    updated: UtcTime
    table: IndicatorsBody
    unverified: bool = False
    revoked: RevokedFlag = False


class IndicatorList(ApiStruct, frozen=True, kw_only=True):
    """GET /v1/indicators."""

    items: list[IndicatorTable]
    next: CursorText | None = None


# -- trust: networks, memberships, keys ---------------------------------------------------------
class NetworkIn(RequestStruct, frozen=True, kw_only=True):
    """POST /v1/network: sign this node's network charter (meaningful from a trusted steward)."""

    title: Name
    description: Long = ""
    stewards: Annotated[list[IdentityText], Meta(min_length=1, max_length=16)]
    admission_threshold: Annotated[int, Meta(ge=1, le=16)] = 1
    relays: Annotated[list[RelayUrl], Meta(max_length=16)] = []
    max_records_per_hour: Annotated[
        int,
        Meta(
            ge=1,
            le=1_000_000,
            description="Records one city may sign per hour; nodes refuse the rest.",
        ),
    ] = 600
    min_count_threshold: Annotated[
        int,
        Meta(
            ge=10,
            le=1000,
            description="Smallest count a member's published indicator table may show.",
        ),
    ] = 10


class MemberIn(RequestStruct, frozen=True, kw_only=True):
    """POST /v1/network/members: admit or revoke a city (signed by this node as a steward)."""

    member: IdentityText
    city: Annotated[Name | None, Meta(description="Default: the city's own profile name.")] = None
    role: MemberRole = "member"
    status: MembershipStatus = "active"
    transport_key: Annotated[
        KeyText | None, Meta(description="Default: the key the city's profile names.")
    ] = None
    reason: Short = ""
    until_seq: Annotated[
        Annotated[int, Meta(ge=0, le=2**53 - 1)] | None,
        Meta(description="With status revoked: default the member's latest seq held here."),
    ] = None
    replaces: Annotated[
        IdentityText | None,
        Meta(
            description="Re-admitting a city that lost its key: the identity it had before "
            "(nodes show the two as one city's)."
        ),
    ] = None


class KeyRecoverIn(RequestStruct, frozen=True, kw_only=True):
    """POST /v1/keys/recover: take the identity back with an offline recovery key.

    The seed is used once, to sign the rotation, and never stored by the node."""

    recovery_key: Annotated[
        str,
        Meta(
            pattern=r"^cmsk1[02-9ac-hj-np-z]{50,60}$",
            description="A recovery key's secret text (cmsk1…), as `init --recovery-keys` wrote.",
        ),
    ]


class KeyRotateIn(RequestStruct, frozen=True, kw_only=True):
    """POST /v1/keys/rotate: no fields; send ``{}`` (or no body at all)."""


class KeyRotated(ApiStruct, frozen=True, kw_only=True):
    """POST /v1/keys/rotate: the new signing key and the rotation record."""

    key: KeyText
    fingerprint: Fingerprint
    seq: Seq
    id: HexId


# -- records and events -------------------------------------------------------------------------
class RawRecord(ApiStruct, frozen=True, kw_only=True):
    """GET /v1/records/{id} as JSON: the envelope exactly as received, base64 encoded."""

    id: HexId
    kind: Kind
    author: IdentityText
    seq: Seq
    envelope: Annotated[bytes, Meta(max_length=70000, description="The signed envelope bytes.")]


class Event(ApiStruct, frozen=True, kw_only=True):
    """One ``data:`` line of the SSE stream GET /v1/events: a record was accepted."""

    id: HexId
    kind: Kind
    author: IdentityText
    seq: Seq
    addr: Annotated[str, Meta(max_length=200)]
    network: NetworkName
    ref: Annotated[
        PracticeRefText | None,
        Meta(description="The practice concerned (practice, rating, replication records)."),
    ] = None
    unverified: bool = False
    revoked: RevokedFlag = False


REQUEST_TYPES: Final[tuple[type[Struct], ...]] = (
    NetworkIn,
    MemberIn,
    KeyRotateIn,
    KeyRecoverIn,
    PracticeIn,
    PracticeQuery,
    RatingIn,
    ReplicationIn,
    IndicatorPreviewIn,
    IndicatorPublishIn,
    IndicatorQuery,
)
RESPONSE_TYPES: Final[tuple[type[Struct], ...]] = (
    KeyRotated,
    ErrorResponse,
    Health,
    Status,
    Published,
    PracticeList,
    PracticeDetail,
    CityList,
    CityDetail,
    IndicatorPreview,
    IndicatorDefinition,
    IndicatorList,
    RawRecord,
    Event,
)
SCHEMA_TYPES: Final[tuple[type[Struct], ...]] = REQUEST_TYPES + RESPONSE_TYPES
"""Every top-level body type; pass to ``msgspec.json.schema_components`` for OpenAPI."""

SCHEMA_RULES: Final[dict[str, dict[str, object]]] = {
    # IndicatorRowIn.__post_init__: a row needs a count or a value.
    "IndicatorRowIn": {
        "anyOf": [
            {"required": [name], "properties": {name: {"type": kind}}}
            for name, kind in (("count", "integer"), ("value", "number"))
        ]
    },
    # NetworkIn: admission_threshold <= len(stewards), as "for some k: threshold <= k <= len".
    "NetworkIn": {
        "anyOf": [
            {
                "properties": {
                    "admission_threshold": {"maximum": k},
                    "stewards": {"minItems": k},
                }
            }
            for k in range(1, 17)
        ]
    },
}
"""Cross-field rules the Structs check and a field annotation cannot carry, as JSON Schema
keywords merged into the named component schemas (the OpenAPI document is then exact)."""


# -- conversions --------------------------------------------------------------------------------
_S = TypeVar("_S", bound=Struct)


def _project(value: Struct, target: type[_S], *, drop: tuple[str, ...] = ()) -> _S:
    fields = msgspec.structs.asdict(value)
    for name in drop:
        del fields[name]
    return target(**fields)


def practice_body(p: PracticeIn) -> PracticeBody:
    """The record body to sign: ``p`` without ``addr``, as a plain `PracticeBody`."""
    return _project(p, PracticeBody, drop=("addr",))


def practice_in(body: PracticeBody, addr: str) -> PracticeIn:
    """A request body that republishes ``body`` at ``addr`` (e.g. to edit a practice)."""
    return PracticeIn(**msgspec.structs.asdict(body), addr=addr)


def rating_body(r: RatingIn) -> RatingBody:
    """The record body to sign for a rating request."""
    return _project(r, RatingBody)


def replication_body(r: ReplicationIn) -> ReplicationBody:
    """The record body to sign; the mentor's identity text becomes its bytes.

    Raises `BadIdentityError` (field ``mentor``) if the identity text is not valid.
    """
    fields = msgspec.structs.asdict(r)
    if r.mentor is not None:
        fields["mentor"] = identity_from_text(r.mentor, field="mentor")
    return ReplicationBody(**fields)


def utc_from_ms(ms: int) -> datetime.datetime:
    """A record's ``created`` (UTC milliseconds) as the aware datetime the API shows."""
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(milliseconds=ms)


# -- identities, refs and ids as text -----------------------------------------------------------
_SLUG = re.compile(rf"\A{_SLUG_RE}\Z")
_HEX_ID = re.compile(r"\A[0-9a-f]{64}\Z")
MAX_REF_TEXT: Final = 200


def identity_from_text(text: str, *, field: str = "author") -> bytes:
    """Parse identity text from a request; raise `BadIdentityError` naming ``field``."""
    try:
        return parse_identity(text)
    except ProtocolError as err:
        raise BadIdentityError(f"{field}: {err.message}", field=field) from err


def format_ref(author: bytes, addr: str) -> str:
    """The practice ref ``<identity text>/<slug>``."""
    if not _SLUG.match(addr):
        raise InvalidRecordError(
            f"practice address {addr[:80]!r} is not a slug (lowercase letters, digits, inner "
            "hyphens, at most 64 characters)",
            field="addr",
        )
    try:
        return f"{identity_text(author)}/{addr}"
    except ProtocolError as err:
        raise InvalidRecordError(err.message, field="author") from err


def parse_ref(text: str) -> tuple[bytes, str]:
    """Split a practice ref ``<identity text>/<slug>`` into identity bytes and slug.

    Raises `InvalidRecordError` with ``field="ref"`` and a message saying what is wrong.
    """
    if len(text) > MAX_REF_TEXT:
        raise InvalidRecordError(
            f"practice ref is too long ({len(text)} characters, at most {MAX_REF_TEXT})",
            field="ref",
        )
    author_text, sep, addr = text.strip().partition("/")
    if not sep:
        raise InvalidRecordError(
            "practice ref must be '<author identity>/<slug>', e.g. 'cmid1…/welcome-desk'",
            field="ref",
        )
    try:
        author = parse_identity(author_text)
    except ProtocolError as err:
        raise BadIdentityError(f"practice ref: {err.message}", field="ref") from err
    if not _SLUG.match(addr):
        raise InvalidRecordError(
            f"practice ref: {addr[:80]!r} is not a slug (lowercase letters, digits, inner "
            "hyphens, at most 64 characters)",
            field="ref",
        )
    return author, addr


def parse_record_id(text: str) -> bytes:
    """A record id from its 64-digit lowercase hex text; `InvalidRecordError` (field ``id``)."""
    if not _HEX_ID.match(text):
        raise InvalidRecordError("record id must be 64 lowercase hex digits", field="id")
    return bytes.fromhex(text)


# -- pagination cursors -------------------------------------------------------------------------
class Cursor(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the next page starts (keyset pagination): the sort key values of the last item,
    with a digest of the query so a cursor is not reused with other filters."""

    sort: Annotated[str, Meta(max_length=32)]
    after: Annotated[
        list[Annotated[str, Meta(max_length=400)] | int | float | None], Meta(max_length=4)
    ]
    scope: Annotated[bytes, Meta(max_length=32)] = b""


CURSOR_CONTEXT: Final = b"citymesh/cursor/v1\x00"
CURSOR_TAG_BYTES: Final = 16
MAX_CURSOR_TEXT: Final = 1024
_CURSOR_TEXT = re.compile(r"\A[A-Za-z0-9_-]+\Z")
_cursor_decoder = msgspec.msgpack.Decoder(Cursor)


def _cursor_tag(key: bytes, payload: bytes) -> bytes:
    if not key:
        raise ValueError("cursor key must not be empty")
    return hmac.new(key, CURSOR_CONTEXT + payload, hashlib.sha256).digest()[:CURSOR_TAG_BYTES]


def encode_cursor(cursor: Cursor, *, key: bytes) -> str:
    """Opaque text: base64url (unpadded) of the canonical msgpack of ``cursor`` followed by a
    16-byte HMAC-SHA256 tag under ``key`` (the node's secret; it need not survive restarts)."""
    payload = canonical_encode(cursor)
    raw = payload + _cursor_tag(key, payload)
    text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if len(text) > MAX_CURSOR_TEXT:
        raise ValueError(f"cursor is too large ({len(text)} characters)")
    return text


def decode_cursor(text: str, *, key: bytes) -> Cursor:
    """The `Cursor` encoded by `encode_cursor` under the same key.

    A malformed, tampered or foreign cursor raises `InvalidRecordError` with ``field="cursor"``.
    """
    if len(text) > MAX_CURSOR_TEXT or not _CURSOR_TEXT.match(text):
        raise InvalidRecordError("cursor is not one this node issued", field="cursor")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise InvalidRecordError("cursor is not valid base64url", field="cursor") from err
    payload, tag = raw[:-CURSOR_TAG_BYTES], raw[-CURSOR_TAG_BYTES:]
    if len(raw) <= CURSOR_TAG_BYTES or not hmac.compare_digest(tag, _cursor_tag(key, payload)):
        raise InvalidRecordError(
            "cursor is not one this node issued (altered, or the node restarted)", field="cursor"
        )
    try:
        return _cursor_decoder.decode(payload)
    except msgspec.DecodeError as err:
        raise InvalidRecordError(f"cursor does not decode: {err}", field="cursor") from err


def query_scope(query: Struct) -> bytes:
    """An 8-byte digest of a query's filters (all fields but ``cursor`` and ``limit``), for
    `Cursor.scope`: a cursor is only honoured with the query that produced it."""
    fields = {
        k: v for k, v in msgspec.structs.asdict(query).items() if k not in {"cursor", "limit"}
    }
    return hashlib.sha256(
        type(query).__name__.encode() + b"\x00" + canonical_encode(fields)
    ).digest()[:8]


# -- errors as JSON -----------------------------------------------------------------------------
_AT = re.compile(r" - at `(?:key` in `)?\$(?P<path>[^`]*)`\Z")
_FIELD_IN_MESSAGE = re.compile(
    r"\AObject (?P<what>missing required|contains unknown) field `(?P<name>[^`]+)`"
)
_UNKNOWN_CODE_BY_FIELD: Final = {
    "sectors": "unknown_sector",
    "sector": "unknown_sector",
    "target_groups": "unknown_target_group",
    "target_group": "unknown_target_group",
}


def error_detail(err: msgspec.DecodeError | ProtocolError) -> ErrorDetail:
    """The JSON error for a request body or parameter that failed to decode.

    msgspec's path ``$.contact.role_mailbox`` becomes ``field="contact.role_mailbox"``; codes are
    ``malformed`` (not JSON), ``missing_field``, ``unknown_field``, ``unknown_sector`` /
    ``unknown_target_group`` / ``unknown_code`` (a value outside a code list) and ``invalid``.
    A `ProtocolError` keeps its own code and field.
    """
    if isinstance(err, ProtocolError):
        return ErrorDetail(code=err.code, message=err.message, field=err.field)
    text = str(err)
    if not isinstance(err, msgspec.ValidationError):
        return ErrorDetail(code="malformed", message=f"body is not valid JSON: {text}")
    path = ""
    at = _AT.search(text)
    if at:
        path = at["path"].removeprefix(".")
        text = text[: at.start()]
    code = "invalid"
    named = _FIELD_IN_MESSAGE.match(text)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
        code = "missing_field" if named["what"] == "missing required" else "unknown_field"
    elif text.startswith("Invalid enum value"):
        root = re.match(r"[A-Za-z0-9_]*", path)
        code = _UNKNOWN_CODE_BY_FIELD.get(root[0] if root else "", "unknown_code")
    return ErrorDetail(code=code, message=text[:2000], field=path[:300] or None)
