"""`decode_stored`: reading back envelopes that were verified when stored, without verifying again."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from citymesh.protocol.envelope import decode_stored, encode_envelope, open_envelope
from citymesh.protocol.errors import (
    BadSignatureError,
    MalformedError,
    NonCanonicalError,
    ProtocolError,
)
from citymesh.protocol.records import KINDS, Record

from .builders import NOW_MS

MakeRecord = Callable[..., Record]


@pytest.mark.parametrize("kind", KINDS)
def test_decodes_what_open_envelope_decodes(kind: str, every_kind: dict[str, Record]) -> None:
    record = every_kind[kind]
    header, body = decode_stored(bytes(record.envelope))
    opened = open_envelope(bytes(record.envelope), now_ms=NOW_MS)
    assert (header, body) == (opened.header, opened.body)


def test_does_not_check_the_signature(make_record: MakeRecord) -> None:
    """It is for bytes verified before: a bad signature is not its to find (open_envelope does)."""
    record = make_record("practice")
    forged = encode_envelope(record.payload, bytes(64))
    with pytest.raises(BadSignatureError):
        open_envelope(forged, now_ms=NOW_MS)
    assert decode_stored(forged) == (record.header, record.body)


def test_returns_no_record(make_record: MakeRecord) -> None:
    """Nothing it decodes can pass for a verified `Record`."""
    decoded = decode_stored(bytes(make_record("rating").envelope))
    assert not isinstance(decoded, Record)
    assert all(not isinstance(part, Record) for part in decoded)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", MalformedError),
        (b"\x93\x01\xc4\x01\x80", MalformedError),
        (b"\x92\x01\xc4\x00", MalformedError),
    ],
)
def test_bytes_that_do_not_decode_raise_a_protocol_error(
    data: bytes, error: type[ProtocolError]
) -> None:
    with pytest.raises(error):
        decode_stored(data)


def test_trailing_bytes_raise(make_record: MakeRecord) -> None:
    with pytest.raises(NonCanonicalError):
        decode_stored(bytes(make_record("practice").envelope) + b"\x00")
