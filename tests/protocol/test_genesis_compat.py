"""A genesis written by a newer minor version (an extra field) keeps the identity it was made
with: the identity is derived from the genesis bytes as signed, not from what this version knows."""

from __future__ import annotations

import hashlib

import pytest

from citymesh.protocol.codec import encode
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.errors import BadIdentityError
from citymesh.protocol.identity import IDENTITY_BYTES, IDENTITY_CONTEXT, identity_of

from .builders import make_genesis, payload_dict, records_of_every_kind, resign, secret_key

NOW = 1_800_000_000_000


def _newer_genesis_payload(author_from_known_fields: bool) -> bytes:
    key = secret_key(0)
    city = records_of_every_kind()["city"]
    assert city.header.seq == 1
    value = payload_dict(city)
    genesis = {**value["genesis"], "witnesses": ["a future field"]}
    raw = encode(genesis)
    if author_from_known_fields:
        value["author"] = identity_of(make_genesis(key))
    else:
        value["author"] = hashlib.sha256(IDENTITY_CONTEXT + raw).digest()[:IDENTITY_BYTES]
    value["genesis"] = genesis
    return resign(key, value)


def test_identity_covers_fields_this_version_does_not_know() -> None:
    record = open_envelope(_newer_genesis_payload(False), now_ms=NOW)
    assert record.header.genesis is not None
    assert record.header.author != identity_of(record.header.genesis), (
        "derived from the bytes as signed, including the unknown field"
    )


def test_identity_from_known_fields_only_is_refused() -> None:
    with pytest.raises(BadIdentityError):
        open_envelope(_newer_genesis_payload(True), now_ms=NOW)
