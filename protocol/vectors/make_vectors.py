#!/usr/bin/env python3
"""Generate the citymesh protocol test vectors (PROTOCOL.md §11).

Run by hand: ``python protocol/vectors/make_vectors.py`` (with citymesh installed). It writes
``valid.json``, ``invalid.json``, ``limits.json`` and ``identities.json`` next to this file.
Deterministic: fixed seeds, fixed ``created`` times and one fixed ``now_ms``, so running it twice
writes identical files. ``tests/protocol/test_vectors.py`` regenerates them in memory (through
`build_files`) and fails when the files on disk are stale.

Every envelope vector is opened with `open_envelope` before it is written; the generator stops
if a vector does not give exactly its expected outcome. Invalid vectors whose payload is altered
are signed again with the right key, so that the one thing wrong with them is the one named.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import msgspec
import nacl.bindings
import nacl.exceptions

from citymesh.protocol import codec
from citymesh.protocol.chain import KeyState, check_links, current_versions
from citymesh.protocol.chain import Link as ChainLink
from citymesh.protocol.codes import SECTORS
from citymesh.protocol.envelope import encode_envelope, open_envelope, seal, split_envelope
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import (
    IDENTITY_BYTES,
    IDENTITY_CONTEXT,
    Genesis,
    SecretKey,
    fingerprint,
    identity_of,
    identity_text,
    next_key_commitment,
    public_key_text,
)
from citymesh.protocol.records import (
    MAX_FUTURE_MS,
    MAX_PAYLOAD,
    Actor,
    Attestation,
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
    Record,
    ReplicationBody,
    Resources,
    Result,
    RetractionBody,
    Scores,
    Transferability,
)
from citymesh.protocol.signing import SIGNING_CONTEXT, rotation_message
from citymesh.protocol.subjects import subject_of

HERE = Path(__file__).resolve().parent
FILES = ("valid.json", "invalid.json", "limits.json", "identities.json")

NOW_MS = 1_767_225_600_000
"""The verifier's clock for every vector: 2026-01-01T00:00:00Z."""
T0 = 1_735_689_600_000
"""2025-01-01T00:00:00Z; records are created at T0 plus whole hours."""
HOUR = 3_600_000
NETWORK = "uclg-migration"

L = 2**252 + 27742317777372353535851937790883648493
"""The order of the Ed25519 base point (and of the group of valid public keys)."""
SMALL_ORDER_KEYS = {
    "the identity point (order 1)": bytes.fromhex("01" + "00" * 31),
    "a point of order 8": bytes.fromhex(
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"
    ),
}
KEY_NAMES = (
    "mechelen/signing-1",
    "mechelen/signing-2",
    "mechelen/signing-3",
    "mechelen/recovery",
    "mechelen/nkey",
    "bilbao/signing-1",
    "bilbao/nkey",
    "uclg/steward-1",
    "outsider/signing-1",
)


def secret(name: str) -> SecretKey:
    """A fixed test key: its seed is SHA-256 of a public label. Never use these keys for real."""
    return SecretKey(hashlib.sha256(b"citymesh test vectors/" + name.encode()).digest())


# -- JSON forms ---------------------------------------------------------------------------------


def _hex_bytes(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _hex_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hex_bytes(v) for v in value]
    return value


def record_json(record: Record) -> dict[str, Any]:
    """The decoded record as JSON: the header fields in declaration order, then ``body``.

    Byte strings are lowercase hex, dates ISO 8601 strings (as on the wire), floats JSON numbers;
    fields left out on the wire are shown with their default. Unknown fields (from a newer minor
    version) are kept in the payload bytes but not shown.
    """
    out: dict[str, Any] = msgspec.to_builtins(record.header, builtin_types=(bytes,))
    out["body"] = msgspec.to_builtins(record.body, builtin_types=(bytes,))
    return dict(_hex_bytes(out))


def signature_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether libsodium accepts ``signature`` by ``public_key`` over ``message``."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


def _vector(
    description: str,
    envelope: bytes,
    *,
    payload: bytes,
    signature: bytes,
    public_key: bytes,
    error: str | None,
    now_ms: int = NOW_MS,
) -> dict[str, Any]:
    """One envelope vector, checked against `open_envelope` before it is returned."""
    message = SIGNING_CONTEXT + payload
    record: Record | None = None
    try:
        record = open_envelope(envelope, now_ms=now_ms)
    except ProtocolError as err:
        if err.code != error:
            raise AssertionError(f"{description}: expected {error}, got {err}") from err
    if record is None and error is None:
        raise AssertionError(f"{description}: no error and no record")
    if record is not None and error is not None:
        raise AssertionError(f"{description}: expected {error}, but the envelope opens")
    vector: dict[str, Any] = {
        "description": description,
        "valid": error is None,
        "public_key": public_key_text(public_key),
        "public_key_hex": public_key.hex(),
        "payload_hex": payload.hex(),
        "message_hex": message.hex(),
        "signature_hex": signature.hex(),
        "signature_valid": signature_valid(public_key, message, signature),
        "id_hex": hashlib.sha256(message).hexdigest(),
        "envelope_hex": envelope.hex(),
        "now_ms": now_ms,
    }
    if record is not None:
        if record.id.hex() != vector["id_hex"] or record.payload != payload:
            raise AssertionError(f"{description}: id or payload differ")
        vector["subject"] = subject_of(record)
        vector["record"] = record_json(record)
    else:
        vector["error"] = error
    return vector


def valid(description: str, record: Record) -> dict[str, Any]:
    payload, signature = split_envelope(record.envelope)
    return _vector(
        description,
        record.envelope,
        payload=payload,
        signature=signature,
        public_key=record.header.signer,
        error=None,
    )


# -- hand-built MessagePack ---------------------------------------------------------------------


def _raw_map(items: list[tuple[Any, bytes]]) -> bytes:
    """A map from keys and already encoded values, in the order given (duplicates allowed)."""
    n = len(items)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(codec.encode(k) + v for k, v in items)


def _items(value: dict[str, Any]) -> list[tuple[Any, bytes]]:
    """The entries of a map, sorted, each value encoded canonically."""
    return [(k, codec.encode(v)) for k, v in sorted(value.items())]


def _replace(items: list[tuple[Any, bytes]], key: str, raw: bytes) -> list[tuple[Any, bytes]]:
    if not any(k == key for k, _ in items):
        raise KeyError(key)
    return [(k, raw if k == key else v) for k, v in items]


def fields(record: Record) -> dict[str, Any]:
    """The payload of a record as plain MessagePack values (a fresh copy to alter)."""
    value: dict[str, Any] = codec.decode_generic(record.payload)
    return value


_DELETE = object()
"""Marks a field to remove in `invalid_vectors`' ``altered``."""


def identity_over(genesis_bytes: bytes) -> bytes:
    """The identity derived from genesis bytes as written (§3.3), computed here independently."""
    return hashlib.sha256(IDENTITY_CONTEXT + genesis_bytes).digest()[:IDENTITY_BYTES]


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def _nested(levels: int) -> Any:
    """``levels`` arrays nested in each other, the innermost holding 0."""
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


# -- the test network: three authors and their chains -------------------------------------------


class Author:
    """One city (or steward) publishing a chain of records in the test network."""

    def __init__(self, name: str, genesis: Genesis, key: SecretKey) -> None:
        self.name = name
        self.genesis = genesis
        self.key = key
        self.identity = identity_of(genesis)
        self.records: list[Record] = []

    @property
    def text(self) -> str:
        return identity_text(self.identity)

    @property
    def tip(self) -> Record:
        return self.records[-1]

    def publish(self, body: Any, *, hours: int, addr: str = "") -> Record:
        """Seal the next record of the chain with the library."""
        prev = self.records[-1] if self.records else None
        record = seal(
            self.key,
            body=body,
            network=NETWORK,
            author=self.identity,
            seq=len(self.records) + 1,
            prev=prev.id if prev else None,
            created=T0 + hours * HOUR,
            addr=addr,
            genesis=None if prev else self.genesis,
        )
        self.records.append(record)
        return record

    def extend(self, values: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
        """Sign plain payload values (seq and prev filled in) as the chain's next record.

        Returns (envelope, payload, signature); the record joins the chain.
        """
        values = dict(values, seq=self.tip.seq + 1, prev=self.tip.id)
        values.pop("genesis", None)
        payload = codec.encode(values)
        envelope, signature = self.sign(payload)
        self.records.append(open_envelope(envelope, now_ms=NOW_MS))
        return envelope, payload, signature

    def sign(self, payload: bytes, key: SecretKey | None = None) -> tuple[bytes, bytes]:
        """(envelope, signature) for a payload, altered or not, signed with the current key."""
        signature = (key or self.key).sign(SIGNING_CONTEXT + payload)
        return encode_envelope(payload, signature), signature


def _authors() -> dict[str, Author]:
    mechelen_key = secret("mechelen/signing-1")
    mechelen = Author(
        "mechelen",
        Genesis(
            key=mechelen_key.public_key,
            recovery=[secret("mechelen/recovery").public_key],
            next_key=next_key_commitment(secret("mechelen/signing-2").public_key),
            salt=hashlib.sha256(b"citymesh test vectors/mechelen/salt").digest()[:16],
        ),
        mechelen_key,
    )
    bilbao_key = secret("bilbao/signing-1")
    bilbao = Author("bilbao", Genesis(key=bilbao_key.public_key, salt=b"bilbao"), bilbao_key)
    steward_key = secret("uclg/steward-1")
    steward = Author("steward", Genesis(key=steward_key.public_key), steward_key)
    return {"mechelen": mechelen, "bilbao": bilbao, "steward": steward}


def _welcome_desk() -> PracticeBody:
    return PracticeBody(
        title={"en": "One-stop welcome desk for newcomers", "nl": "Onthaalbalie voor nieuwkomers"},
        summary={
            "en": "A single desk in the city hall where newcomers register, get a buddy and an "
            "orientation course in their own language.",
            "nl": "Eén loket in het stadhuis voor inschrijving, een buddy en oriëntatie.",
        },
        description="## What\n\nNewcomers meet *one* coordinator who books the other "
        "appointments.\n\n## Why\n\nFewer missed appointments; faster access to housing.\n",
        status="regular_service",
        period=PracticePeriod(start=datetime.date(2019, 9, 1)),
        sectors=["ID_REGULARISATION", "HOUSING", "RIGHTS_INFO"],
        target_groups=["NEWCOMER", "REFUGEE", "ASYLUM_SEEKER", "UAM"],
        focus=Focus(sex=["F", "M", "X"], age_bands=["Y15-17", "Y18-24"], disability=True),
        frameworks=Frameworks(
            mechelen=["ACCESS_SERVICES", "CITY_TO_CITY", "FIREWALL"],
            sdg_targets=["10.7", "16.9"],
            gcm_objectives=[4, 7, 15, 16],
        ),
        actors=[
            Actor(name="City of Mechelen, Integration department", role="lead", type="city"),
            Actor(name="Refugee Council Flanders", role="partner", type="ngo"),
            Actor(name="Newcomers' association", role="implementer", type="migrant_led"),
        ],
        resources=Resources(
            budget_band="250k_1m",
            funding=["municipal", "eu"],
            staff_fte=6.5,
            volunteers=True,
            notes="Two of the staff are former newcomers.",
        ),
        results=[
            Result(
                label="Newcomers registered within two weeks",
                value=87.5,
                unit="%",
                baseline=41.0,
                method="Municipal register, arrival to registration date",
                period="2023",
            ),
            Result(label="Buddy pairs", value=312.0, unit="pairs", period="2023"),
        ],
        evaluation=Evaluation(
            type="external",
            summary="Evaluated by a university in 2022: large effect on registration time, "
            "none on employment.",
            link="https://example.org/evaluations/welcome-desk-2022.pdf",
        ),
        lessons="Opening hours after 17:00 mattered more than the extra languages. A separate "
        "desk for asylum seekers failed: people were sent back and forth.",
        transferability=Transferability(
            preconditions=["The municipal register accepts documents in several languages"],
            adaptable_elements=["Languages offered", "Who runs the buddy programme"],
            key_success_factors=["One coordinator per person", "Evening hours"],
            scale="city",
        ),
        contact=Contact(
            role_mailbox="welcome@example.org",
            role="Integration coordinator",
            languages=["nl", "en", "fr", "ar"],
        ),
        licence="CC-BY-4.0",
        review_by=datetime.date(2026, 6, 30),
        adapted_from=None,
        languages=["nl", "en", "fr", "ar", "ti", "prs"],
        keywords=["one-stop shop", "buddy", "orientation"],
        links=[Link(label="Programme page", url="https://example.org/welcome")],
        sample=True,
    )


def _indicators() -> IndicatorsBody:
    return IndicatorsBody(
        code="NEWCOMERS_REGISTERED",
        period="2024-Q4",
        unit="PS",
        dimensions=["SEX", "AGE"],
        cells=[
            Cell(dims={"AGE": "Y18-24", "SEX": "F"}, value=40.0),
            Cell(dims={"AGE": "Y18-24", "SEX": "M"}, value=None, obs_status="O", conf_status="C"),
            Cell(dims={"AGE": "Y25-34", "SEX": "F"}, value=None, obs_status="O", conf_status="D"),
            Cell(dims={"AGE": "Y25-34", "SEX": "M"}, value=55.0),
            Cell(dims={"AGE": "_T", "SEX": "_T"}, value=120.0),
        ],
        method=DisclosureMethod(
            threshold=10, rounding_base=5, secondary="min-two-per-line", min_base=0
        ),
        source_type="register",
        attestation=Attestation(
            aggregate_only=True,
            officer_role="Data protection officer",
            statement="Counts only; no person-level data.",
        ),
        notes="Rounded to multiples of 5.",
    )


def build_network() -> tuple[dict[str, Author], dict[str, Record]]:
    """Three authors' chains sealed by the library, and their records by a short label."""
    authors = _authors()
    mechelen, bilbao, steward = authors["mechelen"], authors["bilbao"], authors["steward"]
    rec: dict[str, Record] = {}
    rec["mechelen-city"] = mechelen.publish(
        CityBody(
            name="Mechelen",
            country="BEL",
            admin_code="12025",
            population_band="50k_100k",
            languages=["nl"],
            role_mailbox="integration@example.org",
            networks=[NETWORK],
            description="A city of 180 nationalities between Brussels and Antwerp.",
            website="https://example.org/mechelen",
            transport_key=secret("mechelen/nkey").public_key,
        ),
        hours=0,
    )
    rec["steward-network"] = steward.publish(
        NetworkBody(
            title="UCLG migration practices (test)",
            description="Peer exchange of good practices on migration and inclusion.",
            stewards=[steward.identity],
            admission_threshold=1,
            relays=["nats://relay.example.org:4222", "wss://relay.example.org/nats"],
            policies=Policies(min_count_threshold=10, rating_min_count=3, max_records_per_hour=600),
        ),
        addr=NETWORK,
        hours=1,
    )
    rec["bilbao-city"] = bilbao.publish(
        CityBody(name="Bilbao", country="ESP", languages=["es", "eu"]), hours=2
    )
    for city, hours in ((mechelen, 3), (bilbao, 4)):
        rec[f"steward-membership-{city.name}"] = steward.publish(
            MembershipBody(
                network=NETWORK,
                member=city.identity,
                city=city.name.capitalize(),
                role="member",
                status="active",
                transport_key=secret(f"{city.name}/nkey").public_key,
                valid_from=T0 + hours * HOUR,
                valid_until=None,
            ),
            addr=city.text,
            hours=hours,
        )
    rec["mechelen-practice"] = mechelen.publish(_welcome_desk(), addr="welcome-desk", hours=5)
    ref = f"{mechelen.text}/welcome-desk"
    rec["bilbao-rating"] = bilbao.publish(
        RatingBody(
            score=4,
            scores=Scores(relevance=5, evidence=4, transferability=3, clarity=4),
            comment="Convincing evidence on registration times; the evening hours are key.",
            role="adopter",
            conflict_of_interest=False,
        ),
        addr=ref,
        hours=6,
    )
    rec["bilbao-replication"] = bilbao.publish(
        ReplicationBody(
            relation="adapted",
            status="running",
            start=datetime.date(2025, 3, 1),
            adaptations="Run by a migrant-led association instead of the city hall.",
            mentor=mechelen.identity,
            outcome=Outcome(
                worked="partly",
                results=[Result(label="Registered within two weeks", value=64.0, unit="%")],
                lessons="Needs a municipal coordinator after all.",
            ),
        ),
        addr=ref,
        hours=7,
    )
    rec["mechelen-indicators"] = mechelen.publish(
        _indicators(), addr="NEWCOMERS_REGISTERED/2024-Q4", hours=8
    )
    new_key = secret("mechelen/signing-2")
    rec["mechelen-rotation"] = mechelen.publish(
        KeyRotationBody(
            new_key=new_key.public_key,
            counter_signature=new_key.sign(rotation_message(mechelen.identity, new_key.public_key)),
            next_key=next_key_commitment(secret("mechelen/signing-3").public_key),
            by_recovery=False,
        ),
        hours=9,
    )
    mechelen.key = new_key
    rec["mechelen-retraction"] = mechelen.publish(
        RetractionBody(reason="Counts were revised; a corrected table follows."),
        addr="indicators/NEWCOMERS_REGISTERED/2024-Q4",
        hours=10,
    )
    rec["mechelen-head"] = mechelen.publish(
        HeadBody(
            latest_seq=mechelen.tip.seq,
            latest_id=mechelen.tip.id,
            counts={"city": 1, "indicators": 1, "key_rotation": 1, "practice": 1, "retraction": 1},
        ),
        hours=11,
    )
    return authors, rec


def check_chains(authors: dict[str, Author]) -> None:
    """The sample chains must be whole (PROTOCOL.md §6): linked, no gaps, the right keys."""
    for author in authors.values():
        report = check_links(ChainLink(r.seq, r.id, r.header.prev) for r in author.records)
        if not report.contiguous_seq == report.head_seq == len(author.records):
            raise AssertionError(f"{author.name}: {report}")
        state = KeyState(author.genesis)
        for record in author.records:
            state.apply(record)
    if ("indicators", "NEWCOMERS_REGISTERED/2024-Q4") in current_versions(
        authors["mechelen"].records
    ):
        raise AssertionError("the retraction must hide the indicators table")


# -- valid vectors ------------------------------------------------------------------------------


def valid_vectors(authors: dict[str, Author], rec: dict[str, Record]) -> list[dict[str, Any]]:
    mechelen, bilbao, steward = authors["mechelen"], authors["bilbao"], authors["steward"]
    out = [
        valid(
            "city: Mechelen's seq-1 record, with a genesis naming a recovery key and a "
            "next-key commitment",
            rec["mechelen-city"],
        ),
        valid("network: the charter, as the steward's seq-1 record", rec["steward-network"]),
        valid(
            "city: Bilbao's seq-1 record, minimal genesis (no recovery key, no commitment)",
            rec["bilbao-city"],
        ),
        valid("membership: the steward admits Mechelen", rec["steward-membership-mechelen"]),
        valid("membership: the steward admits Bilbao", rec["steward-membership-bilbao"]),
        valid("practice: every body field set", rec["mechelen-practice"]),
        valid("rating: addr is the rated practice's ref", rec["bilbao-rating"]),
        valid("replication: an adaptation with its outcome", rec["bilbao-replication"]),
        valid(
            "indicators: suppressed cells are nil with OBS_STATUS O and CONF_STATUS C or D",
            rec["mechelen-indicators"],
        ),
        valid(
            "key_rotation: signed by the genesis key, counter-signed by the committed new key",
            rec["mechelen-rotation"],
        ),
        valid(
            "retraction: signed by the rotated key; withdraws the indicators table",
            rec["mechelen-retraction"],
        ),
        valid("head: checkpoints the record before it", rec["mechelen-head"]),
    ]

    def extended(description: str, author: Author, values: dict[str, Any]) -> None:
        envelope, payload, signature = author.extend(values)
        out.append(
            _vector(
                description,
                envelope,
                payload=payload,
                signature=signature,
                public_key=author.key.public_key,
                error=None,
            )
        )

    # Forward compatibility: unknown header and body fields are tolerated and kept in the bytes.
    head = fields(rec["mechelen-head"])
    head.update(created=T0 + 12 * HOUR, x_relay_hint="nats://relay.example.org:4222")
    head["body"].update(
        latest_seq=mechelen.tip.seq,
        latest_id=mechelen.tip.id,
        x_digest={"algorithm": "sha256", "levels": [1, 2, 3]},
    )
    extended(
        "head: unknown header and body fields (from a newer minor version) are tolerated",
        mechelen,
        head,
    )
    deep = fields(rec["mechelen-head"])
    deep.update(created=T0 + 13 * HOUR, x_nested=_nested(31))
    deep["body"].update(latest_seq=mechelen.tip.seq, latest_id=mechelen.tip.id)
    extended(
        "head: an unknown field nesting arrays to level 32, the limit (the payload map is level 1)",
        mechelen,
        deep,
    )
    # Defaults may be absent on the wire.
    minimal = fields(rec["bilbao-rating"])
    minimal.update(created=T0 + 15 * HOUR, body={"score": 5})
    del minimal["genesis"]
    extended(
        "rating: fields with defaults left out (genesis in the header; all but score in the body)",
        bilbao,
        minimal,
    )

    # The identity is derived from the genesis bytes as signed, whatever fields they hold.
    def standalone(description: str, values: dict[str, Any], key: SecretKey) -> None:
        values["author"] = identity_over(codec.encode(values["genesis"]))
        payload = codec.encode(values)
        signature = key.sign(SIGNING_CONTEXT + payload)
        out.append(
            _vector(
                description,
                encode_envelope(payload, signature),
                payload=payload,
                signature=signature,
                public_key=key.public_key,
                error=None,
            )
        )

    newer = fields(rec["bilbao-city"])
    newer["genesis"]["witnesses"] = ["a genesis field from a newer minor version"]
    standalone(
        "city: a seq-1 record whose genesis has an unknown field; the identity covers it",
        newer,
        bilbao.key,
    )
    short = fields(rec["steward-network"])
    short["genesis"] = {"key": steward.key.public_key}
    standalone(
        "network: a seq-1 record whose genesis leaves out its defaulted fields; the identity "
        "is over the bytes as written",
        short,
        steward.key,
    )
    # Clock: created may be up to 15 minutes ahead of the verifier's clock.
    ahead = fields(rec["mechelen-head"])
    ahead.update(
        author=steward.identity,
        signer=steward.key.public_key,
        created=NOW_MS + MAX_FUTURE_MS,
        body={
            "counts": {"membership": 2, "network": 1},
            "latest_id": steward.tip.id,
            "latest_seq": steward.tip.seq,
        },
    )
    extended("head: created exactly 15 minutes ahead of now_ms (the limit)", steward, ahead)
    return out


# -- invalid vectors ----------------------------------------------------------------------------


def invalid_vectors(authors: dict[str, Author], rec: dict[str, Record]) -> list[dict[str, Any]]:
    mechelen, bilbao = authors["mechelen"], authors["bilbao"]
    rating = rec["bilbao-rating"]
    rating_payload, rating_sig = split_envelope(rating.envelope)
    out: list[dict[str, Any]] = []

    def add(
        description: str,
        error: str,
        envelope: bytes,
        *,
        payload: bytes = rating_payload,
        signature: bytes = rating_sig,
        public_key: bytes = rating.header.signer,
    ) -> None:
        out.append(
            _vector(
                description,
                envelope,
                payload=payload,
                signature=signature,
                public_key=public_key,
                error=error,
            )
        )

    def resigned(
        description: str,
        error: str,
        payload: bytes,
        author: Author = bilbao,
        key: SecretKey | None = None,
    ) -> None:
        """An altered payload, signed again with the right key."""
        envelope, signature = author.sign(payload, key)
        add(
            description,
            error,
            envelope,
            payload=payload,
            signature=signature,
            public_key=(key or author.key).public_key,
        )

    # -- size and framing (§5 steps 1-2) --------------------------------------------------------
    add("envelope: empty", "malformed", b"", payload=b"", signature=b"")
    add(
        "envelope: a MessagePack map instead of an array",
        "malformed",
        b"\x83" + rating.envelope[1:],
    )
    add(
        "envelope: version 2 (this library speaks 1)",
        "unsupported_version",
        b"\x93\x02" + rating.envelope[2:],
    )
    add(
        "envelope: cut one byte short (truncated signature)",
        "malformed",
        rating.envelope[:-1],
        signature=rating_sig[:63],
    )
    add(
        "envelope: the signature is a 63-byte bin",
        "malformed",
        rating.envelope[:-66] + b"\xc4\x3f" + rating_sig[:63],
        signature=rating_sig[:63],
    )
    add(
        "envelope: one byte (nil) after the signature",
        "non_canonical",
        rating.envelope + b"\xc0",
    )
    wide = b"\x93\x01\xc6" + len(rating_payload).to_bytes(4, "big") + rating_payload
    add(
        "envelope: the payload length written as bin32 where bin16 fits",
        "non_canonical",
        wide + b"\xc4\x40" + rating_sig,
    )
    resigned("payload: one byte (nil) after the payload map", "malformed", rating_payload + b"\xc0")
    resigned(
        "payload: an array instead of a map (no signer field to read)",
        "invalid",
        codec.encode(list(fields(rating).values())),
    )
    no_signer = fields(rating)
    del no_signer["signer"]
    resigned("payload: the signer field is missing", "invalid", codec.encode(no_signer))

    # -- signer key (§5 step 3) -----------------------------------------------------------------
    signer_at = rating_payload.index(rating.header.signer)
    flips = [(i, b) for i in range(32) for b in range(8)]
    good = next(f for f in flips if _is_point(_flip(rating.header.signer, f[0], 1 << f[1])))
    bad = next(f for f in flips if not _is_point(_flip(rating.header.signer, f[0], 1 << f[1])))
    for (index, bit), error, what in (
        (good, "bad_signature", "another valid key"),
        (bad, "bad_key", "not a valid point"),
    ):
        payload = _flip(rating_payload, signer_at + index, 1 << bit)
        key = payload[signer_at : signer_at + 32]
        add(
            f"signer: bit {bit} of byte {index} flipped in the payload ({what})",
            error,
            encode_envelope(payload, rating_sig),
            payload=payload,
            public_key=key,
        )
    for what, key in SMALL_ORDER_KEYS.items():
        payload = rating_payload.replace(rating.header.signer, key)
        add(
            f"signer: {what} substituted (small order; no signature can be checked)",
            "bad_key",
            encode_envelope(payload, rating_sig),
            payload=payload,
            public_key=key,
        )

    # -- signature (§5 step 4) ------------------------------------------------------------------
    for index, part in ((0, "R"), (32, "S")):
        signature = _flip(rating_sig, index)
        add(
            f"signature: lowest bit of the first byte of {part} flipped",
            "bad_signature",
            encode_envelope(rating_payload, signature),
            signature=signature,
        )
    s = int.from_bytes(rating_sig[32:], "little") + L
    signature = rating_sig[:32] + s.to_bytes(32, "little")
    add(
        "signature: S replaced by S + L (the same signature, non-canonical S >= L)",
        "bad_signature",
        encode_envelope(rating_payload, signature),
        signature=signature,
    )
    comment_at = rating_payload.index(b"Convincing")
    payload = _flip(rating_payload, comment_at)
    add(
        "signature: one payload bit flipped after signing ('Convincing' -> 'Bonvincing')",
        "bad_signature",
        encode_envelope(payload, rating_sig),
        payload=payload,
    )
    signature = secret("outsider/signing-1").sign(SIGNING_CONTEXT + rating_payload)
    add(
        "signature: valid, but made by another key than the signer named",
        "bad_signature",
        encode_envelope(rating_payload, signature),
        signature=signature,
    )

    # -- canonical form (§2, §5 step 5); each re-signed ---------------------------------------
    items = _items(fields(rating))
    at = next(i for i, (k, _) in enumerate(items) if k == "addr")
    resigned(
        "canonical: the key addr appears twice (same value)",
        "non_canonical",
        _raw_map([*items[: at + 1], items[at], *items[at + 1 :]]),
    )
    resigned(
        "canonical: keys not sorted (v first)",
        "non_canonical",
        _raw_map([items[-1], *items[:-1]]),
    )
    resigned(
        "canonical: seq 2 written as uint16 (cd 00 02) instead of a positive fixint",
        "non_canonical",
        _raw_map(_replace(items, "seq", b"\xcd\x00\x02")),
    )
    resigned(
        "canonical: created written as int64 (d3) instead of uint64 (cf)",
        "non_canonical",
        _raw_map(_replace(items, "created", b"\xd3" + rating.header.created.to_bytes(8, "big"))),
    )
    resigned(
        "canonical: network written as str8 (d9 0e) instead of a fixstr",
        "non_canonical",
        _raw_map(_replace(items, "network", b"\xd9\x0e" + NETWORK.encode())),
    )
    body = fields(rating)["body"]
    resigned(
        "canonical: body score 4 written as int8 (d0 04) instead of a positive fixint",
        "non_canonical",
        _raw_map(_replace(items, "body", _raw_map(_replace(_items(body), "score", b"\xd0\x04")))),
    )
    replication = rec["bilbao-replication"]
    r_items = _items(fields(replication))
    r_body = fields(replication)["body"]
    result = r_body["outcome"]["results"][0]
    result_raw = _raw_map(_replace(_items(result), "value", b"\xca" + struct.pack(">f", 64.0)))
    outcome_raw = _raw_map(_replace(_items(r_body["outcome"]), "results", b"\x91" + result_raw))
    resigned(
        "canonical: a float written as float32 (ca) instead of float64 (cb)",
        "non_canonical",
        _raw_map(
            _replace(r_items, "body", _raw_map(_replace(_items(r_body), "outcome", outcome_raw)))
        ),
    )
    for description, raw in (
        ("an extension type (fixext1, type 1)", b"\xd4\x01\x00"),
        ("a timestamp (ext type -1)", b"\xd6\xff" + (1_735_689_600).to_bytes(4, "big")),
        ("a map with an integer key", b"\x81\x01\xa1a"),
    ):
        resigned(
            f"canonical: an unknown field holding {description}",
            "non_canonical",
            _raw_map(sorted([*items, ("x_future", raw)])),
        )
    too_deep = fields(rating)
    too_deep["x_nested"] = _nested(32)
    resigned(
        "payload: an unknown field nesting arrays to level 33, one over the limit",
        "malformed",
        codec.encode(too_deep),
    )
    bad_utf8 = rating_payload.replace(b"Convincing", b"Convinc\xff\xfeg")
    resigned("payload: a string that is not valid UTF-8", "malformed", bad_utf8)

    # -- version, kind and schema (§4, §5 steps 6-8) -----------------------------------------
    def altered(record: Record, **changes: Any) -> bytes:
        values = fields(record)
        for path, value in changes.items():
            target = values
            *parents, name = path.split("__")
            for parent in parents:
                target = target[parent]
            if value is _DELETE:
                del target[name]
            else:
                target[name] = value
        return codec.encode(values)

    resigned("version: payload v 2", "unsupported_version", altered(rating, v=2))
    resigned("kind: 'poll' is not a v1 kind", "unknown_kind", altered(rating, kind="poll"))
    resigned("schema: seq 0", "invalid", altered(rating, seq=0))
    resigned("schema: seq as a string", "invalid", altered(rating, seq="2"))
    resigned(
        "schema: the required header field created is missing",
        "invalid",
        altered(rating, created=_DELETE),
    )
    resigned("schema: prev of 31 bytes", "invalid", altered(rating, prev=rating.id[:31]))
    resigned("schema: rating score 6", "invalid", altered(rating, body__score=6))
    resigned(
        "schema: rating role not in its code list",
        "invalid",
        altered(rating, body__role="friend"),
    )
    resigned(
        "schema: network name with a trailing newline",
        "invalid",
        altered(rating, network=NETWORK + "\n"),
    )
    resigned(
        "schema: rating comment of 2001 characters (limit 2000)",
        "too_large",
        altered(rating, body__comment="x" * 2001),
    )
    practice = rec["mechelen-practice"]
    resigned(
        "schema: practice sector not in the code list",
        "invalid",
        altered(practice, body__sectors=["HOUSING", "TRANSPORT"]),
        mechelen,
        secret("mechelen/signing-1"),
    )
    resigned(
        "schema: practice with 9 sectors (limit 8)",
        "too_large",
        altered(
            practice,
            body__sectors=list(SECTORS[:9]),
        ),
        mechelen,
        secret("mechelen/signing-1"),
    )
    resigned(
        "schema: practice with no sectors (at least 1)",
        "invalid",
        altered(practice, body__sectors=[]),
        mechelen,
        secret("mechelen/signing-1"),
    )
    resigned(
        "schema: indicators period in Arabic-Indic digits",
        "invalid",
        altered(rec["mechelen-indicators"], body__period="٢٠٢٤"),
        mechelen,
        secret("mechelen/signing-1"),
    )
    resigned(
        "schema: city country with a trailing newline",
        "invalid",
        altered(rec["bilbao-city"], body__country="ESP\n"),
    )

    # -- precedence: the first failing step of §5.3 names the error ----------------------------
    poll = fields(rating)
    poll["kind"] = "poll"
    poll_items = _items(poll)
    resigned(
        "order: keys not sorted and an unknown kind: form is checked before the kind",
        "non_canonical",
        _raw_map([poll_items[-1], *poll_items[:-1]]),
    )
    resigned(
        "order: seq 0 written as uint16: form is checked before the schema",
        "non_canonical",
        _raw_map(_replace(items, "seq", b"\xcd\x00\x00")),
    )
    payload = codec.encode(poll)
    add(
        "order: an unknown kind under a signature over other bytes: the signature comes first",
        "bad_signature",
        encode_envelope(payload, rating_sig),
        payload=payload,
    )
    resigned(
        "order: created too far ahead and an addr that is not a ref: the clock comes first",
        "future",
        altered(rating, created=NOW_MS + MAX_FUTURE_MS + 1, addr="welcome-desk"),
    )

    # -- header rules (§4.2) -------------------------------------------------------------------
    resigned(
        "header: created 15 minutes and 1 ms ahead of now_ms",
        "future",
        altered(rating, created=NOW_MS + MAX_FUTURE_MS + 1),
    )
    resigned(
        "header: practice addr not a slug",
        "invalid",
        altered(practice, addr="Welcome Desk"),
        mechelen,
        secret("mechelen/signing-1"),
    )
    resigned(
        "header: rating addr is not a practice ref",
        "invalid",
        altered(rating, addr="welcome-desk"),
    )
    resigned(
        "header: city addr must be empty",
        "invalid",
        altered(rec["bilbao-city"], addr="bilbao"),
    )
    resigned("header: seq 2 without prev", "invalid", altered(rating, prev=None))
    resigned(
        "header: seq 2 carrying a genesis",
        "invalid",
        altered(rating, genesis=fields(rec["bilbao-city"])["genesis"]),
    )
    city = rec["bilbao-city"]
    resigned(
        "header: seq 1 with a prev",
        "invalid",
        altered(city, prev=hashlib.sha256(b"x").digest()),
    )
    resigned("header: seq 1 without a genesis", "invalid", altered(city, genesis=None))
    resigned(
        "header: author is not the identity derived from the genesis",
        "bad_identity",
        altered(city, author=mechelen.identity),
    )
    newer = fields(city)
    newer["genesis"]["witnesses"] = ["a genesis field from a newer minor version"]
    newer["author"] = identity_of(bilbao.genesis)
    resigned(
        "header: genesis with an unknown field, author derived from the known fields only",
        "bad_identity",
        codec.encode(newer),
    )
    short = fields(city)
    short["genesis"] = {"key": bilbao.key.public_key, "salt": bilbao.genesis.salt}
    resigned(
        "header: genesis leaving out defaulted fields, author derived from all four fields",
        "bad_identity",
        codec.encode(short),
    )
    outsider = secret("outsider/signing-1")
    resigned(
        "header: seq 1 signed by a key other than the genesis key",
        "bad_identity",
        altered(city, signer=outsider.public_key),
        bilbao,
        outsider,
    )
    weak = Genesis(key=bilbao.key.public_key, recovery=[SMALL_ORDER_KEYS["a point of order 8"]])
    resigned(
        "header: genesis names a small-order recovery key",
        "bad_key",
        altered(
            city,
            genesis=msgspec.to_builtins(weak, builtin_types=(bytes,)),
            author=identity_of(weak),
        ),
    )
    head = rec["mechelen-head"]
    resigned(
        "header: head does not checkpoint the record before it (latest_seq off by one)",
        "invalid",
        altered(head, body__latest_seq=head.seq - 2),
        mechelen,
    )
    return out


def _is_point(key: bytes) -> bool:
    return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(key))


# -- limits -------------------------------------------------------------------------------------


def limit_vectors(authors: dict[str, Author]) -> list[dict[str, Any]]:
    """A payload of exactly 64 KiB (accepted) and one a byte longer (too_large)."""
    bilbao = authors["bilbao"]

    def table(cells: int, notes: str) -> dict[str, Any]:
        body = IndicatorsBody(
            code="RESIDENTS_BY_SECTOR",
            period="2024",
            unit="PS",
            dimensions=["STAT_SECTOR"],
            cells=[
                Cell(dims={"STAT_SECTOR": f"S{i:05d}"}, value=float(10 + (i * 37) % 400))
                if i % 10 != 3
                else Cell(
                    dims={"STAT_SECTOR": f"S{i:05d}"}, value=None, obs_status="O", conf_status="C"
                )
                for i in range(cells)
            ],
            method=DisclosureMethod(threshold=10),
            source_type="register",
            attestation=Attestation(aggregate_only=True),
            notes=notes,
        )
        values = fields(bilbao.tip)
        values.update(
            kind="indicators",
            addr="RESIDENTS_BY_SECTOR/2024",
            created=T0 + 16 * HOUR,
            seq=bilbao.tip.seq + 1,
            prev=bilbao.tip.id,
            body=msgspec.to_builtins(body, builtin_types=(bytes,)),
        )
        values.pop("genesis", None)
        return values

    def size(cells: int, notes: str) -> int:
        return len(codec.encode(table(cells, notes)))

    # The most cells that leave room for notes of 256-1000 characters (a 3-byte str16 header
    # instead of the 1-byte empty string), then the notes length that makes 65536 bytes.
    # Every block of ten cells has the same size (one suppressed, nine with a value).
    per_ten = size(1010, "") - size(1000, "")
    cells = 1000 + 10 * ((MAX_PAYLOAD - 2 - 256 - size(1000, "")) // per_ten)
    while MAX_PAYLOAD - size(cells, "") - 2 < 256:
        cells -= 1
    notes = "n" * (MAX_PAYLOAD - size(cells, "") - 2)
    if size(cells, notes) != MAX_PAYLOAD or len(notes) > 1000:
        raise AssertionError("could not fill the payload to exactly 64 KiB")
    out = []
    for extra, error, description in (
        (
            "",
            None,
            "indicators: a payload of exactly 65536 bytes (64 KiB, the limit; bin32 header)",
        ),
        ("n", "too_large", "indicators: a payload of 65537 bytes, one over the limit"),
    ):
        payload = codec.encode(table(cells, notes + extra))
        envelope, signature = bilbao.sign(payload)
        if error is None:
            bilbao.records.append(open_envelope(envelope, now_ms=NOW_MS))
        out.append(
            _vector(
                description,
                envelope,
                payload=payload,
                signature=signature,
                public_key=bilbao.key.public_key,
                error=error,
            )
        )
    return out


# -- keys, identities, text forms ---------------------------------------------------------------

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32(hrp: str, data: bytes, *, const: int = 0x2BC830A3, pad_bits: int = 0) -> str:
    """Independent bech32/bech32m encoder (BIP-173/350), for the text-form vectors."""
    acc, bits, values = 0, 0, []
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            values.append((acc >> bits) & 31)
    if bits:
        values.append(((acc << (5 - bits)) & 31) | pad_bits)

    def polymod(vals: list[int]) -> int:
        chk = 1
        for v in vals:
            top = chk >> 25
            chk = (chk & 0x1FFFFFF) << 5 ^ v
            for i, g in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
                chk ^= g if (top >> i) & 1 else 0
        return chk

    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    pm = polymod([*expanded, *values, 0, 0, 0, 0, 0, 0]) ^ const
    checksum = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def case(
    description: str,
    what: str,
    text: str,
    *,
    value_hex: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A text-form vector: parsing ``text`` as ``what`` gives ``value_hex`` or ``error``."""
    out = {"description": description, "what": what, "text": text}
    if value_hex is not None:
        out["hex"] = value_hex
    if error is not None:
        out["error"] = error
    return out


def identity_vectors(authors: dict[str, Author]) -> dict[str, Any]:
    keys = []
    for name in KEY_NAMES:
        key = secret(name)
        keys.append(
            {
                "name": name,
                "seed_hex": key.seed().hex(),
                "secret_key": key.to_text(),
                "public_key_hex": key.public_key.hex(),
                "public_key": public_key_text(key.public_key),
                "fingerprint": fingerprint(key.public_key),
                "next_key_commitment_hex": next_key_commitment(key.public_key).hex(),
            }
        )
        if _bech32("cmpk", key.public_key) != keys[-1]["public_key"]:
            raise AssertionError("bech32m encoders disagree")
    identities = [
        {
            "name": author.name,
            "genesis": _hex_bytes(msgspec.to_builtins(author.genesis, builtin_types=(bytes,))),
            "genesis_hex": codec.encode(author.genesis).hex(),
            "identity_hex": author.identity.hex(),
            "identity": author.text,
            "fingerprint": fingerprint(author.identity),
        }
        for author in authors.values()
    ]
    mechelen = authors["mechelen"]
    new_key = secret("mechelen/signing-2")
    message = rotation_message(mechelen.identity, new_key.public_key)
    rotations = [
        {
            "description": "Mechelen's first rotation, to mechelen/signing-2",
            "author_hex": mechelen.identity.hex(),
            "new_key_hex": new_key.public_key.hex(),
            "message_hex": message.hex(),
            "counter_signature_hex": new_key.sign(message).hex(),
        }
    ]
    pk = secret("bilbao/signing-1").public_key
    pk_text = public_key_text(pk)
    wrong = "q" if pk_text[-1] != "q" else "p"
    text_cases = [
        case("uppercase is accepted", "public_key", pk_text.upper(), value_hex=pk.hex()),
        case(
            "surrounding whitespace is ignored", "public_key", f"  {pk_text}\n", value_hex=pk.hex()
        ),
        case("mixed case", "public_key", pk_text[:10] + pk_text[10:].upper(), error="bad_key"),
        case(
            "last character changed (checksum)", "public_key", pk_text[:-1] + wrong, error="bad_key"
        ),
        case(
            "bech32 (BIP-173) checksum instead of bech32m",
            "public_key",
            _bech32("cmpk", pk, const=1),
            error="bad_key",
        ),
        case("identity prefix on a key", "public_key", _bech32("cmid", pk), error="bad_key"),
        case("31 bytes", "public_key", _bech32("cmpk", pk[:31]), error="bad_key"),
        case(
            "non-zero padding bits", "public_key", _bech32("cmpk", pk, pad_bits=1), error="bad_key"
        ),
        case(
            "character outside the bech32 alphabet",
            "public_key",
            pk_text[:8] + "b" + pk_text[9:],
            error="bad_key",
        ),
        case(
            "a small-order point, correctly encoded",
            "public_key",
            _bech32("cmpk", SMALL_ORDER_KEYS["the identity point (order 1)"]),
            error="bad_key",
        ),
        case("Mechelen's identity", "identity", mechelen.text, value_hex=mechelen.identity.hex()),
        case(
            "identity with a changed character",
            "identity",
            mechelen.text[:-2] + ("q" if mechelen.text[-2] != "q" else "p") + mechelen.text[-1],
            error="bad_identity",
        ),
        case("a key where an identity is expected", "identity", pk_text, error="bad_identity"),
        case(
            "secret key text",
            "secret_key",
            secret("bilbao/signing-1").to_text(),
            value_hex=secret("bilbao/signing-1").seed().hex(),
        ),
        case("public key where a secret key is expected", "secret_key", pk_text, error="bad_key"),
    ]
    return {
        "description": "Keys, identities and text forms (PROTOCOL.md §3). Test keys only: each "
        "seed is SHA-256('citymesh test vectors/' + name).",
        "keys": keys,
        "identities": identities,
        "rotations": rotations,
        "practice_refs": [
            {
                "author_hex": mechelen.identity.hex(),
                "addr": "welcome-desk",
                "ref": f"{mechelen.text}/welcome-desk",
            }
        ],
        "text_cases": text_cases,
    }


# -- files --------------------------------------------------------------------------------------


def render(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def build_files() -> dict[str, str]:
    """Every vector file's text, by file name."""
    authors, rec = build_network()
    valid_list = valid_vectors(authors, rec)
    limits = limit_vectors(authors)
    check_chains(authors)
    invalid_list = invalid_vectors(authors, rec)
    return {
        "valid.json": render(valid_list),
        "invalid.json": render(invalid_list),
        "limits.json": render(limits),
        "identities.json": render(identity_vectors(authors)),
    }


def main() -> None:
    for name, text in build_files().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
