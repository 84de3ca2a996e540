"""Plain helpers that build keys, genesis records and valid records of every kind.

Imported by the conftest (as fixtures) and directly by the property and fuzz tests.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import msgspec

from citymesh.protocol.envelope import encode_envelope, seal
from citymesh.protocol.identity import (
    Genesis,
    SecretKey,
    identity_of,
    identity_text,
    next_key_commitment,
)
from citymesh.protocol.records import (
    KINDS,
    Actor,
    Attestation,
    Body,
    Cell,
    CityBody,
    Contact,
    DisclosureMethod,
    HeadBody,
    IndicatorsBody,
    KeyRotationBody,
    MembershipBody,
    NetworkBody,
    Outcome,
    PracticeBody,
    PracticePeriod,
    RatingBody,
    Record,
    ReplicationBody,
    Result,
    RetractionBody,
    Scores,
)
from citymesh.protocol.signing import SIGNING_CONTEXT, rotation_message

NOW_MS = 1_760_000_000_000
"""A fixed clock (2025-10-09) so every test is deterministic."""
NETWORK = "uclg-test"

# Sorted-key encoder for hand-built payloads (canonical as long as the values are).
sorted_encoder = msgspec.msgpack.Encoder(order="sorted")


def secret_key(n: int = 0) -> SecretKey:
    """A deterministic signing key; different ``n`` give different keys."""
    return SecretKey(hashlib.sha256(b"citymesh-test-key-%d" % n).digest())


def make_genesis(secret: SecretKey, **fields: Any) -> Genesis:
    return Genesis(key=secret.public_key, **fields)


def address_for(kind: str, *, target: bytes | None = None) -> str:
    """A valid address for ``kind`` (``target`` is the identity a rating/replication/membership names)."""
    other = identity_text(
        target if target is not None else identity_of(make_genesis(secret_key(99)))
    )
    return {
        "city": "",
        "practice": "welcome-desk",
        "rating": f"{other}/welcome-desk",
        "replication": f"{other}/welcome-desk",
        "indicators": "NEWCOMERS_HOUSED/2024-Q3",
        "network": "uclg-test",
        "membership": other,
        "key_rotation": "",
        "retraction": "practice/welcome-desk",
        "head": "",
    }[kind]


def practice_body(*, description_chars: int = 600) -> PracticeBody:
    """A realistic practice; the default is about 2-3 KB of payload."""
    text = (
        "The city runs a one-stop welcome desk where newcomers register, get a housing "
        "orientation and are referred to language classes within their first week. "
    )
    return PracticeBody(
        title={"en": "One-stop welcome desk", "nl": "Eén loket voor nieuwkomers"},
        summary={
            "en": "Newcomers register, get housing advice and language-class referrals in one visit.",
            "nl": "Nieuwkomers schrijven zich in en krijgen woonadvies in één bezoek.",
        },
        description=(text * (description_chars // len(text) + 1))[:description_chars],
        status="regular_service",
        period=PracticePeriod(start=datetime.date(2021, 3, 1)),
        sectors=["HOUSING", "EDUCATION", "RIGHTS_INFO"],
        target_groups=["REFUGEE", "NEWCOMER", "ASYLUM_SEEKER"],
        actors=[
            Actor(name="City social services", role="lead", type="city"),
            Actor(name="Refugee council", role="partner", type="ngo"),
        ],
        results=[
            Result(label="Newcomers registered in the first week", value=87.5, unit="%"),
            Result(label="Average days to a language class", value=9.0, baseline=31.0),
        ],
        lessons="Walk-in hours worked better than appointments; the online form did not.",
        contact=Contact(role_mailbox="welcome@city.example", role="Integration coordinator"),
        keywords=["one-stop", "registration", "housing"],
    )


def sample_body(kind: str, *, seq: int = 2, prev: bytes | None = None, author: bytes = b"") -> Body:
    """A valid body of ``kind``. A head checkpoints (seq - 1, prev); a rotation needs ``author``."""
    member = identity_of(make_genesis(secret_key(99)))
    if kind == "city":
        return CityBody(name="Mechelen", country="BEL", languages=["nl", "fr"], networks=[NETWORK])
    if kind == "practice":
        return practice_body()
    if kind == "rating":
        return RatingBody(score=4, scores=Scores(relevance=5, evidence=3), comment="Useful.")
    if kind == "replication":
        return ReplicationBody(
            relation="adapted",
            status="piloting",
            start=datetime.date(2024, 1, 15),
            adaptations="Run by the library instead of the town hall.",
            mentor=member,
            outcome=Outcome(worked="too_early"),
        )
    if kind == "indicators":
        return IndicatorsBody(
            code="NEWCOMERS_HOUSED",
            period="2024-Q3",
            unit="PS",
            dimensions=["SEX"],
            cells=[
                Cell(dims={"SEX": "F"}, value=40.0),
                Cell(dims={"SEX": "M"}, value=None, obs_status="O", conf_status="C"),
            ],
            method=DisclosureMethod(threshold=10),
            source_type="administrative",
            attestation=Attestation(aggregate_only=True, officer_role="Data officer"),
        )
    if kind == "network":
        return NetworkBody(
            title="UCLG test network", stewards=[member], relays=["nats://relay.example:4222"]
        )
    if kind == "membership":
        return MembershipBody(
            network=NETWORK, member=member, city="Ghent", valid_from=NOW_MS - 86_400_000
        )
    if kind == "key_rotation":
        new = secret_key(50)
        return KeyRotationBody(
            new_key=new.public_key,
            counter_signature=new.sign(rotation_message(author, new.public_key)),
            next_key=next_key_commitment(secret_key(51).public_key),
        )
    if kind == "retraction":
        return RetractionBody(reason="Replaced by a new service.")
    if kind == "head":
        return HeadBody(latest_seq=seq - 1, latest_id=prev, counts={"practice": 1})
    raise ValueError(kind)


def build_record(
    kind: str,
    *,
    secret: SecretKey | None = None,
    genesis: Genesis | None = None,
    seq: int = 1,
    prev: bytes | None = None,
    body: Body | None = None,
    addr: str | None = None,
    created: int = NOW_MS,
    network: str = NETWORK,
) -> Record:
    """Seal a valid record of ``kind``. At seq 1 the genesis rides along in the header."""
    secret = secret or secret_key()
    genesis = genesis or make_genesis(secret)
    author = identity_of(genesis)
    if body is None:
        body = sample_body(kind, seq=seq, prev=prev, author=author)
    return seal(
        secret,
        body=body,
        network=network,
        author=author,
        seq=seq,
        prev=prev,
        created=created,
        addr=address_for(kind) if addr is None else addr,
        genesis=genesis if seq == 1 else None,
    )


def records_of_every_kind() -> dict[str, Record]:
    """One valid record per kind, each at seq 2 after a genesis city record (seq 1 for city)."""
    secret = secret_key()
    genesis = make_genesis(secret)
    first = build_record("city", secret=secret, genesis=genesis)
    out = {"city": first}
    for kind in KINDS:
        if kind != "city":
            out[kind] = build_record(kind, secret=secret, genesis=genesis, seq=2, prev=first.id)
    return out


def payload_dict(record: Record) -> dict[str, Any]:
    """The record's payload as plain values (to alter and re-sign)."""
    value: dict[str, Any] = msgspec.msgpack.decode(record.payload)
    return value


def sign_payload(secret: SecretKey, payload: bytes) -> bytes:
    """Envelope bytes around ``payload`` signed by hand with SIGNING_CONTEXT (no validation)."""
    return encode_envelope(payload, secret.sign(SIGNING_CONTEXT + payload))


def resign(secret: SecretKey, value: Any) -> bytes:
    """Encode plain values with sorted keys and sign them by hand."""
    return sign_payload(secret, sorted_encoder.encode(value))
