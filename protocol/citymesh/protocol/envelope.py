"""Envelopes: ``[version, payload, signature]`` as canonical MessagePack, sealed and opened.

Opening (PROTOCOL.md §5) works on the received bytes in this order: size, envelope framing,
signer key, signature over the exact payload bytes, and only then canonical form and the schema.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from . import ENVELOPE_VERSION, PROTOCOL_VERSION
from .codec import check_canonical, encode
from .errors import (
    BadIdentityError,
    FutureError,
    InvalidRecordError,
    MalformedError,
    NonCanonicalError,
    ProtocolError,
    TooLargeError,
    UnknownKindError,
    UnsupportedVersionError,
)
from .identity import Genesis, SecretKey, check_public_key, identity_of, identity_text
from .records import (
    BODY_TYPES,
    KIND_OF_BODY,
    KINDS,
    MAX_FUTURE_MS,
    MAX_PAYLOAD,
    Body,
    HeadBody,
    Header,
    Record,
    WirePayload,
)
from .signing import record_id, signed_message, verify_detached

MAX_ENVELOPE: Final = MAX_PAYLOAD + 80


class _Signer(msgspec.Struct, forbid_unknown_fields=False):
    """Just enough of a payload to find the key to verify with."""

    signer: bytes


class _Kind(msgspec.Struct, forbid_unknown_fields=False):
    v: int
    kind: str


_signer_decoder = msgspec.msgpack.Decoder(_Signer)
_kind_decoder = msgspec.msgpack.Decoder(_Kind)
_payload_decoder = msgspec.msgpack.Decoder(WirePayload)
_body_decoders = {kind: msgspec.msgpack.Decoder(t) for kind, t in BODY_TYPES.items()}

_SLUG = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
_IDENT = r"cmid1[02-9ac-hj-np-z]{38}"
_ADDR_RULES: Final[dict[str, re.Pattern[str]]] = {
    "city": re.compile(r"\A\Z"),
    "practice": re.compile(rf"\A{_SLUG}\Z"),
    "rating": re.compile(rf"\A{_IDENT}/{_SLUG}\Z"),
    "replication": re.compile(rf"\A{_IDENT}/{_SLUG}\Z"),
    "indicators": re.compile(r"\A[A-Z][A-Z0-9_]{1,39}/[0-9]{4}(-(Q[1-4]|S[12]|[0-9]{2}))?\Z"),
    "network": re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?\Z"),
    "membership": re.compile(rf"\A{_IDENT}\Z"),
    "key_rotation": re.compile(r"\A\Z"),
    "retraction": re.compile(r"\A(practice|rating|replication|indicators|membership)/.{0,200}\Z"),
    "head": re.compile(r"\A\Z"),
}


def _bin_header(n: int) -> bytes:
    if n < 256:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 65536:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def encode_envelope(payload: bytes, signature: bytes) -> bytes:
    return (
        b"\x93"
        + ENVELOPE_VERSION.to_bytes(1, "big")
        + _bin_header(len(payload))
        + payload
        + _bin_header(len(signature))
        + signature
    )


def split_envelope(data: bytes) -> tuple[bytes, bytes]:
    """Return (payload, signature) from canonical envelope bytes, or raise naming the problem."""
    if len(data) > MAX_ENVELOPE:
        raise TooLargeError(f"envelope is {len(data)} bytes, over the {MAX_ENVELOPE} byte limit")
    if len(data) < 3 or data[0] != 0x93:
        raise MalformedError("envelope must be a MessagePack array of three elements")
    version = data[1]
    if version != ENVELOPE_VERSION:
        if version <= 0x7F:
            raise UnsupportedVersionError(f"envelope version {version} is not supported")
        raise MalformedError("envelope version must be a positive fixint")
    pos = 2
    tag = data[pos]
    if tag == 0xC4:
        length, pos = data[pos + 1] if pos + 1 < len(data) else -1, pos + 2
    elif tag == 0xC5:
        length, pos = int.from_bytes(data[pos + 1 : pos + 3], "big"), pos + 3
        if pos > len(data):
            raise MalformedError("envelope is truncated")
        if length < 256:
            raise NonCanonicalError("payload length uses a wider header than needed")
    elif tag == 0xC6:
        # A payload of exactly MAX_PAYLOAD (65536) bytes needs the 4-byte length header.
        length, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
        if pos > len(data):
            raise MalformedError("envelope is truncated")
        if length > MAX_PAYLOAD:
            raise TooLargeError(f"payload is {length} bytes, over the {MAX_PAYLOAD} byte limit")
        if length < 65536:
            raise NonCanonicalError("payload length uses a wider header than needed")
    else:
        raise MalformedError("payload must be MessagePack bin")
    if length < 0 or pos + length > len(data):
        raise MalformedError("envelope is truncated")
    payload = data[pos : pos + length]
    pos += length
    if len(payload) > MAX_PAYLOAD:
        raise TooLargeError(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD} byte limit")
    if data[pos : pos + 2] != b"\xc4\x40":
        if pos + 2 > len(data):
            raise MalformedError("envelope is truncated before the signature")
        raise MalformedError("signature must be 64 bytes of MessagePack bin")
    signature = data[pos + 2 : pos + 66]
    if len(signature) != 64:
        raise MalformedError("signature is truncated")
    if pos + 66 != len(data):
        raise NonCanonicalError(f"{len(data) - pos - 66} trailing bytes after the envelope")
    return payload, signature


def _schema_error(err: msgspec.ValidationError, where: str) -> ProtocolError:
    text = str(err)
    field = None
    if " - at `" in text:
        text, _, path = text.partition(" - at `")
        field = path.rstrip("`").replace("$", where, 1)
    cls = TooLargeError if ("length <=" in text or ("<= 1" in text and "length" in text)) else None
    if cls is not None:
        return cls(text, field=field)
    return InvalidRecordError(text, field=field)


def _decode_payload(payload: bytes) -> tuple[Header, Body]:
    try:
        return _decode_typed(payload)
    except ProtocolError:
        # Non-canonical bytes are reported as such before any version, kind or schema problem
        # (PROTOCOL.md §5), as a decoder that checks the form first would; valid records never
        # pay for this second look.
        check_canonical(payload)
        raise


def _decode_typed(payload: bytes) -> tuple[Header, Body]:
    try:
        head = _kind_decoder.decode(payload)
    except msgspec.ValidationError as err:
        raise InvalidRecordError(f"payload header: {err}") from err
    except msgspec.DecodeError as err:
        raise MalformedError(f"payload is not valid MessagePack: {err}") from err
    except (RecursionError, ValueError) as err:  # too deep to skip; invalid UTF-8 in a str
        raise MalformedError(f"payload cannot be decoded: {err}") from err
    if head.v != PROTOCOL_VERSION:
        raise UnsupportedVersionError(f"protocol version {head.v} is not supported")
    if head.kind not in KINDS:
        raise UnknownKindError(f"unknown record kind {head.kind[:40]!r}", field="kind")
    try:
        wire = _payload_decoder.decode(payload)
        raw_body = bytes(wire.body)
        body = _body_decoders[head.kind].decode(raw_body)
    except msgspec.ValidationError as err:
        raise _schema_error(err, "payload") from err
    except msgspec.DecodeError as err:
        raise MalformedError(f"payload is not valid MessagePack: {err}") from err
    except (RecursionError, ValueError) as err:
        raise MalformedError(f"payload cannot be decoded: {err}") from err
    # Fast path: every field known and the typed re-encoding reproduces the bytes exactly.
    if encode(wire) != payload or encode(body) != raw_body:
        check_canonical(payload)
    header = Header(
        v=wire.v,
        kind=wire.kind,
        network=wire.network,
        author=wire.author,
        signer=wire.signer,
        seq=wire.seq,
        prev=wire.prev,
        created=wire.created,
        addr=wire.addr,
        genesis=wire.genesis,
    )
    return header, body  # type: ignore[return-value]


class _GenesisBytes(msgspec.Struct, forbid_unknown_fields=False):
    genesis: msgspec.Raw = msgspec.Raw(b"\xc0")  # MessagePack nil when absent


_genesis_bytes_decoder = msgspec.msgpack.Decoder(_GenesisBytes)


def genesis_bytes(payload: bytes) -> bytes | None:
    """The genesis map of a payload exactly as signed (identity is derived from these bytes)."""
    raw = bytes(_genesis_bytes_decoder.decode(payload).genesis)
    return None if raw == b"\xc0" else raw


def check_header(
    header: Header, body: Body, *, now_ms: int, genesis_raw: bytes | None = None
) -> None:
    """Rules that tie header fields together (PROTOCOL.md §4.2)."""
    if header.created > now_ms + MAX_FUTURE_MS:
        raise FutureError(
            f"created is {(header.created - now_ms) // 1000} s ahead of this clock "
            f"(at most {MAX_FUTURE_MS // 60000} min allowed)",
            field="created",
        )
    if not _ADDR_RULES[header.kind].match(header.addr):
        raise InvalidRecordError(
            f"addr {header.addr[:80]!r} is not valid for kind {header.kind}", field="addr"
        )
    if header.seq == 1:
        if header.prev is not None:
            raise InvalidRecordError("the first record (seq 1) has no prev", field="prev")
        if header.genesis is None:
            raise InvalidRecordError(
                "the first record (seq 1) must carry the genesis", field="genesis"
            )
        if identity_of(genesis_raw if genesis_raw is not None else header.genesis) != header.author:
            raise BadIdentityError(
                "author is not the identity derived from the genesis", field="author"
            )
        if header.genesis.key != header.signer:
            raise BadIdentityError(
                "the first record must be signed by the genesis key", field="signer"
            )
        for key in header.genesis.recovery:
            check_public_key(key)
    else:
        if header.prev is None:
            raise InvalidRecordError("prev is required after seq 1", field="prev")
        if header.genesis is not None:
            raise InvalidRecordError("only the seq-1 record carries a genesis", field="genesis")
    if isinstance(body, HeadBody) and (
        body.latest_seq != header.seq - 1 or body.latest_id != header.prev
    ):
        raise InvalidRecordError("a head must checkpoint the record before it", field="body")


class Signed(msgspec.Struct, frozen=True, kw_only=True):
    """Envelope bytes whose signature verified (`check_signature`), not yet decoded: the payload
    may still break the schema or the header rules. Only `decode_signed` turns it into a
    `Record`.

    The split lets a node check signatures on several threads (libsodium releases the GIL) and
    decode on the thread that stores the records, so decoding, which holds the GIL, does not
    make the writer wait for it between its statements."""

    id: bytes
    envelope: bytes
    payload: bytes


def check_signature(data: bytes) -> Signed:
    """The first half of `open_envelope`: the envelope's form and its signature. Raises a
    `ProtocolError` naming the reason."""
    payload, signature = split_envelope(data)
    try:
        signer = _signer_decoder.decode(payload).signer
    except msgspec.ValidationError as err:
        raise InvalidRecordError(f"payload signer: {err}", field="signer") from err
    except msgspec.DecodeError as err:
        raise MalformedError(f"payload is not valid MessagePack: {err}") from err
    except (RecursionError, ValueError) as err:  # unsigned input: too deep, invalid UTF-8
        raise MalformedError(f"payload cannot be decoded: {err}") from err
    verify_detached(signer, signed_message(payload), signature)
    return Signed(id=record_id(payload), envelope=bytes(data), payload=payload)


def decode_signed(signed: Signed, *, now_ms: int) -> Record:
    """The second half of `open_envelope`: decode the payload and check the header rules.
    Raises a `ProtocolError` naming the reason."""
    payload = signed.payload
    header, body = _decode_payload(payload)
    raw_genesis = genesis_bytes(payload) if header.genesis is not None else None
    check_header(header, body, now_ms=now_ms, genesis_raw=raw_genesis)
    return Record(id=signed.id, envelope=signed.envelope, payload=payload, header=header, body=body)


def open_envelope(data: bytes, *, now_ms: int) -> Record:
    """Verify and decode received envelope bytes. Raises a `ProtocolError` naming the reason."""
    return decode_signed(check_signature(data), now_ms=now_ms)


def decode_stored(data: bytes) -> tuple[Header, Body]:
    """Decode envelope bytes *without* checking the signature or the header rules.

    Only for bytes that passed `open_envelope` when they were stored (a node reading back its own
    log, e.g. a practice's older versions for its history): verifying them again would cost a
    signature check per read and tell nothing new. Never for bytes received from anyone. The
    result is deliberately not a `Record` (which means verified): nothing decoded here can be
    applied, stored or served as verified. Raises a `ProtocolError` on bytes that do not decode.
    """
    payload, _ = split_envelope(data)
    return _decode_payload(payload)


def seal(
    secret: SecretKey,
    *,
    body: Body,
    network: str,
    author: bytes,
    seq: int,
    prev: bytes | None,
    created: int,
    addr: str = "",
    genesis: Genesis | None = None,
) -> Record:
    """Sign a new record. Validates it exactly as a receiver would (with ``now_ms=created``)."""
    kind = KIND_OF_BODY[type(body)]
    wire = WirePayload(
        v=PROTOCOL_VERSION,
        kind=kind,  # type: ignore[arg-type]
        network=network,
        author=author,
        signer=secret.public_key,
        seq=seq,
        prev=prev,
        created=created,
        addr=addr,
        genesis=genesis,
        body=msgspec.Raw(encode(body)),
    )
    payload = encode(wire)
    if len(payload) > MAX_PAYLOAD:
        raise TooLargeError(f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD} byte limit")
    envelope = encode_envelope(payload, secret.sign(signed_message(payload)))
    return open_envelope(envelope, now_ms=created)


def describe(record: Record) -> str:
    """One line for logs: kind, author, seq, addr."""
    h = record.header
    return f"{h.kind} {identity_text(h.author)}#{h.seq} {h.addr!r}"
