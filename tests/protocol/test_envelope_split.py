"""`open_envelope` in two halves, as relay ingest uses it: `check_signature` (verify threads) and
`decode_signed` (the writer's thread). Together they accept and refuse exactly what
`open_envelope` does, and a refusal comes from the half that owns it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from citymesh.protocol.envelope import (
    Signed,
    check_signature,
    decode_signed,
    encode_envelope,
    open_envelope,
)
from citymesh.protocol.errors import (
    BadSignatureError,
    FutureError,
    InvalidRecordError,
    MalformedError,
    ProtocolError,
    UnknownKindError,
)
from citymesh.protocol.identity import SecretKey
from citymesh.protocol.records import KINDS, Record

from .builders import NOW_MS, payload_dict, resign

MakeRecord = Callable[..., Record]


@pytest.mark.parametrize("kind", KINDS)
def test_the_halves_give_what_open_envelope_gives(kind: str, every_kind: dict[str, Record]) -> None:
    data = bytes(every_kind[kind].envelope)
    signed = check_signature(data)
    assert isinstance(signed, Signed) and not isinstance(signed, Record)
    assert decode_signed(signed, now_ms=NOW_MS) == open_envelope(data, now_ms=NOW_MS)
    assert signed.id == every_kind[kind].id


def test_a_bad_signature_is_refused_by_the_first_half(make_record: MakeRecord) -> None:
    record = make_record("practice")
    forged = encode_envelope(record.payload, bytes(64))
    with pytest.raises(BadSignatureError):
        check_signature(forged)


@pytest.mark.parametrize("data", [b"", b"\x93\x01\xc4\x01\x80", b"\x92\x01\xc4\x00"])
def test_bytes_that_are_no_envelope_are_refused_by_the_first_half(data: bytes) -> None:
    with pytest.raises(MalformedError):
        check_signature(data)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda p: p | {"kind": "gossip"}, UnknownKindError),
        (lambda p: p | {"addr": "not a valid addr!"}, InvalidRecordError),
        (lambda p: p | {"created": NOW_MS + 3 * 3_600_000}, FutureError),
        (lambda p: p | {"body": {"score": 11}}, InvalidRecordError),
    ],
)
def test_a_signed_payload_that_breaks_the_rules_is_refused_by_the_second_half(
    change: Callable[[dict[str, Any]], dict[str, Any]],
    error: type[ProtocolError],
    make_record: MakeRecord,
    secret: SecretKey,
) -> None:
    """Validly signed by the author's key: only decoding can tell it is no record."""
    record = make_record("rating")
    data = resign(secret, change(payload_dict(record)))
    signed = check_signature(data)
    with pytest.raises(error):
        decode_signed(signed, now_ms=NOW_MS)
    with pytest.raises(error):
        open_envelope(data, now_ms=NOW_MS)
