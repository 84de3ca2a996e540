"""A corpus of hostile envelopes, modelled on Nostr relay conformance suites (malformed events,
duplicate keys, bad strings, huge and deep values, wrong versions) and the Ed25519 edge cases of
"Taming the many EdDSAs" (small-order keys, S >= L, non-canonical R and A encodings).

`edge_cases(secret, genuine)` derives every case from one genuine record of the author whose key
is ``secret``: each case is re-signed after its change where the change is inside the payload, so
it reaches the check it is aimed at rather than failing on the signature. `EXPECTED` names the
rejection code each case must be counted under.
"""

from __future__ import annotations

from typing import Any

import msgspec

from citymesh.protocol.envelope import encode_envelope
from citymesh.protocol.identity import SecretKey
from citymesh.protocol.records import Record
from citymesh.protocol.signing import SIGNING_CONTEXT

from ..protocol.builders import build_record, make_genesis, secret_key

L = 2**252 + 27742317777372353535851937790883648493
"""Order of the Ed25519 base point: a canonical S is below it."""
P = 2**255 - 19
SMALL_ORDER = {
    "identity": (1).to_bytes(32, "little"),
    "order-2": (P - 1).to_bytes(32, "little"),
    "zero": bytes(32),
    "order-8": bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    "order-4": bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
}
"""Encodings of points of order 1, 2, 4 and 8 (including y = 0)."""
NON_CANONICAL_KEY = (P + 1).to_bytes(32, "little")
"""y = p + 1: the identity point, encoded with y >= p."""

_sorted = msgspec.msgpack.Encoder(order="sorted")


def _envelope(secret: SecretKey, payload: bytes) -> bytes:
    return encode_envelope(payload, secret.sign(SIGNING_CONTEXT + payload))


def _resign(secret: SecretKey, value: Any) -> bytes:
    return _envelope(secret, _sorted.encode(value))


def _str(text: bytes) -> bytes:
    assert len(text) < 32
    return bytes([0xA0 | len(text)]) + text


def edge_cases(
    secret: SecretKey | None = None, genuine: Record | None = None
) -> list[tuple[str, bytes]]:
    """(name, envelope bytes) for every case, derived from ``genuine`` signed by ``secret``."""
    if secret is None or genuine is None:
        secret = secret_key(7)
        genesis = make_genesis(secret)
        first = build_record("city", secret=secret, genesis=genesis)
        genuine = build_record("practice", secret=secret, genesis=genesis, seq=2, prev=first.id)
    value: dict[str, Any] = msgspec.msgpack.decode(genuine.payload)
    sig = genuine.envelope[-64:]
    r, s = sig[:32], int.from_bytes(sig[32:], "little")
    cases: list[tuple[str, bytes]] = []

    def changed(name: str, **fields: Any) -> None:
        cases.append((name, _resign(secret, {**value, **fields})))

    # -- Ed25519 -------------------------------------------------------------------------------
    for name, point in SMALL_ORDER.items():
        changed(f"small_order_signer_{name}", signer=point)
    changed("non_canonical_signer", signer=NON_CANONICAL_KEY)
    cases.append(("s_plus_l", encode_envelope(genuine.payload, r + (s + L).to_bytes(32, "little"))))
    cases.append(("s_equals_l", encode_envelope(genuine.payload, r + L.to_bytes(32, "little"))))
    cases.append(
        ("r_non_canonical", encode_envelope(genuine.payload, NON_CANONICAL_KEY + sig[32:]))
    )
    cases.append(
        ("r_small_order", encode_envelope(genuine.payload, SMALL_ORDER["identity"] + sig[32:]))
    )
    cases.append(("zero_signature", encode_envelope(genuine.payload, bytes(64))))
    # -- encodings -----------------------------------------------------------------------------
    # The payload map with its first key written twice (the rest as is), re-signed.
    raw = _sorted.encode(value)
    first_key_end = 1 + 1 + raw[1] - 0xA0  # fixmap header, fixstr key
    first_value = _sorted.encode(value[sorted(value)[0]])
    twice = bytes([raw[0] + 1]) + raw[1:first_key_end] + first_value + raw[1:]
    cases.append(("duplicate_first_key", _envelope(secret, twice)))
    title = value["body"]["title"]
    lang = sorted(title)[0]
    surrogate = {**value, "body": {**value["body"], "title": {**title, lang: "LONE"}}}
    encoded = _sorted.encode(surrogate).replace(b"\xa4LONE", b"\xa3\xed\xa0\x80", 1)
    cases.append(("lone_surrogate", _envelope(secret, encoded)))
    deep = _sorted.encode({**value, "body": {**value["body"], "keywords": "DEEP"}})
    nest = b"\x91" * 10_000 + b"\xc0"
    cases.append(("deep_nesting", _envelope(secret, deep.replace(b"\xa4DEEP", nest, 1))))
    changed("huge_string", body={**value["body"], "description": "x" * 66_000})
    changed("huge_array", body={**value["body"], "sectors": ["HOUSING"] * 8_300})
    changed("nan", body={**value["body"], "results": [{"label": "x", "value": float("nan")}]})
    changed("inf", body={**value["body"], "results": [{"label": "x", "value": float("inf")}]})
    changed("negative_seq", seq=-1)
    changed("enormous_seq", seq=2**64 - 1)
    changed("enormous_created", created=2**63)
    changed("negative_created", created=-(2**40))
    # -- the envelope --------------------------------------------------------------------------
    env = genuine.envelope
    cases.append(("version_0", env[:1] + b"\x00" + env[2:]))
    cases.append(("version_2", env[:1] + b"\x02" + env[2:]))
    cases.append(("version_negative", env[:1] + b"\xff" + env[2:]))
    cases.append(("truncated", env[:-1]))
    cases.append(("truncated_header", env[:5]))
    cases.append(("trailing_byte", env + b"\x00"))
    cases.append(("empty", b""))
    return cases


EXPECTED: dict[str, str] = {
    **{f"small_order_signer_{name}": "bad_key" for name in SMALL_ORDER},
    "non_canonical_signer": "bad_key",
    "s_plus_l": "bad_signature",
    "s_equals_l": "bad_signature",
    "r_non_canonical": "bad_signature",
    "r_small_order": "bad_signature",
    "zero_signature": "bad_signature",
    "duplicate_first_key": "non_canonical",
    "lone_surrogate": "malformed",
    "deep_nesting": "malformed",
    "huge_string": "too_large",
    "huge_array": "too_large",
    "nan": "invalid",
    "inf": "invalid",
    "negative_seq": "invalid",
    "enormous_seq": "invalid",
    "enormous_created": "invalid",
    "negative_created": "invalid",
    "version_0": "unsupported_version",
    "version_2": "unsupported_version",
    "version_negative": "malformed",
    "truncated": "malformed",
    "truncated_header": "malformed",
    "trailing_byte": "non_canonical",
    "empty": "malformed",
}
