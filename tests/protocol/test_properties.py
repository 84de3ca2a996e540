"""Properties over every record kind (Hypothesis): round trips, tamper evidence, determinism."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citymesh.protocol.codec import check_canonical, encode
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.records import BODY_TYPES, KINDS, WirePayload

from .builders import build_record, make_genesis, secret_key
from .strategies import headers_and_bodies

SECRET = secret_key(0)
GENESIS = make_genesis(SECRET)

PROPERTY = settings(
    max_examples=40,
    deadline=None,  # signing large bodies on a slow machine is not a failure
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _seal(args: dict[str, Any]) -> Any:
    return build_record(secret=SECRET, genesis=GENESIS, **args)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(data=st.data())
def test_round_trip_every_kind(kind: str, data: st.DataObject) -> None:
    args = data.draw(headers_and_bodies((kind,)))
    record = _seal(args)
    wire = bytes(record.envelope)
    opened = open_envelope(wire, now_ms=args["created"])
    assert opened.header == record.header
    assert opened.body == args["body"]
    assert opened.id == record.id
    assert opened.envelope == wire
    assert opened.header.kind == kind
    assert opened.header.seq == args["seq"]
    assert opened.header.prev == args["prev"]
    assert opened.header.addr == args["addr"]
    assert opened.header.network == args["network"]
    assert (opened.header.genesis is not None) == (args["seq"] == 1)


@PROPERTY
@given(args=headers_and_bodies(), data=st.data())
def test_any_single_byte_change_is_refused(args: dict[str, Any], data: st.DataObject) -> None:
    record = _seal(args)
    wire = bytearray(record.envelope)
    index = data.draw(st.integers(0, len(wire) - 1), label="index")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != wire[index]), label="value")
    wire[index] = value
    with pytest.raises(ProtocolError):
        open_envelope(bytes(wire), now_ms=args["created"])


@settings(PROPERTY, max_examples=10)
@given(args=headers_and_bodies())
def test_every_single_bit_flip_is_refused(args: dict[str, Any]) -> None:
    record = _seal(args)
    wire = bytes(record.envelope)
    now = args["created"]
    step = max(1, len(wire) // 200)  # about 1600 flips per example, spread over the envelope
    for index in range(0, len(wire), step):
        for bit in range(8):
            flipped = bytearray(wire)
            flipped[index] ^= 1 << bit
            with pytest.raises(ProtocolError):
                open_envelope(bytes(flipped), now_ms=now)


@PROPERTY
@given(args=headers_and_bodies())
def test_encoding_is_deterministic(args: dict[str, Any]) -> None:
    first = _seal(args)
    second = _seal(args)
    assert first.envelope == second.envelope  # Ed25519 is deterministic too
    assert first.id == second.id
    body = args["body"]
    raw = encode(body)
    assert encode(body) == raw
    kind = args["kind"]
    assert encode(msgspec.msgpack.decode(raw, type=BODY_TYPES[kind])) == raw
    # The payload is canonical and exactly the typed re-encoding: one byte string per record.
    value = check_canonical(first.payload)
    assert encode(value) == first.payload
    assert encode(msgspec.msgpack.decode(first.payload, type=WirePayload)) == first.payload
    # A record built from the decoded body signs to the same bytes.
    again = _seal({**args, "body": first.body})
    assert again.envelope == first.envelope
