"""Keys, identities and their bech32m text forms."""

from __future__ import annotations

import hashlib
import re

import nacl.bindings
import pytest

from citymesh.protocol import textform
from citymesh.protocol.errors import BadIdentityError, BadKeyError
from citymesh.protocol.identity import (
    IDENTITY_BYTES,
    IDENTITY_CONTEXT,
    Genesis,
    SecretKey,
    check_public_key,
    fingerprint,
    identity_of,
    identity_text,
    next_key_commitment,
    parse_identity,
    parse_public_key,
    public_key_text,
)

from .builders import secret_key

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

# -- a little Ed25519 arithmetic, only to check the test vectors themselves ---------------------
P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int]


def _decode_point(data: bytes) -> Point | None:
    """Affine (x, y) of a canonical encoding, or None if it is not a point."""
    y = int.from_bytes(data, "little") & ((1 << 255) - 1)
    sign = data[31] >> 7
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x, y


def _add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P,
        (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P,
    )


def _times(n: int, point: Point) -> Point:
    out: Point = (0, 1)
    for _ in range(n):
        out = _add(out, point)
    return out


# The eight points of order dividing 8 (the torsion subgroup), canonically encoded.
_ORDER8 = "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc"
_ORDER8_NEG_Y = "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03"
SMALL_ORDER_KEYS = [
    bytes.fromhex("01" + "00" * 31),  # the identity point (order 1)
    bytes.fromhex("ec" + "ff" * 30 + "7f"),  # (0, -1), order 2
    bytes(32),  # (sqrt(-1), 0), order 4
    bytes(31) + b"\x80",  # (-sqrt(-1), 0), order 4
    bytes.fromhex(_ORDER8 + "05"),  # order 8
    bytes.fromhex(_ORDER8 + "85"),
    bytes.fromhex(_ORDER8_NEG_Y + "7a"),
    bytes.fromhex(_ORDER8_NEG_Y + "fa"),
]

# y >= p cannot be canonical: the 19 values p .. 2^255 - 1, with either sign bit.
NON_CANONICAL_KEYS = [
    (P + i).to_bytes(32, "little")[:31] + bytes([((P + i) >> 248) | sign])
    for i in range(19)
    for sign in (0, 0x80)
]


def _off_curve_key() -> bytes:
    for y in range(2, 1000):
        data = y.to_bytes(32, "little")
        if _decode_point(data) is None:
            return data
    raise AssertionError("no off-curve y below 1000")


def test_small_order_vectors_are_the_torsion_subgroup() -> None:
    points = [_decode_point(k) for k in SMALL_ORDER_KEYS]
    assert all(p is not None for p in points)
    assert len(set(points)) == 8
    for point in points:
        assert point is not None
        assert _times(8, point) == (0, 1)


# -- public keys --------------------------------------------------------------------------------
def test_real_public_keys_pass(secret: SecretKey) -> None:
    for n in range(20):
        key = secret_key(n).public_key
        assert check_public_key(key) == key


@pytest.mark.parametrize("key", SMALL_ORDER_KEYS, ids=lambda k: k.hex()[:8] + k.hex()[-2:])
def test_small_order_keys_are_refused(key: bytes) -> None:
    with pytest.raises(BadKeyError) as info:
        check_public_key(key)
    assert info.value.code == "bad_key"
    with pytest.raises(BadKeyError):
        parse_public_key(public_key_text(key))
    with pytest.raises(BadKeyError):
        next_key_commitment(key)


@pytest.mark.parametrize("key", NON_CANONICAL_KEYS, ids=lambda k: k.hex()[:4] + k.hex()[-2:])
def test_non_canonical_encodings_are_refused(key: bytes) -> None:
    assert int.from_bytes(key, "little") & ((1 << 255) - 1) >= P
    with pytest.raises(BadKeyError) as info:
        check_public_key(key)
    assert info.value.code == "bad_key"


def test_negative_zero_x_is_refused() -> None:
    # The identity point with the sign bit of x set: x = 0 has no negative.
    with pytest.raises(BadKeyError):
        check_public_key(bytes.fromhex("01" + "00" * 30 + "80"))


def test_off_curve_and_mixed_order_keys_are_refused() -> None:
    with pytest.raises(BadKeyError):
        check_public_key(_off_curve_key())
    # A real key plus an order-8 point: on the curve, canonical, but not in the prime-order group.
    mixed = nacl.bindings.crypto_core_ed25519_add(secret_key(3).public_key, SMALL_ORDER_KEYS[4])
    assert _decode_point(mixed) is not None
    with pytest.raises(BadKeyError):
        check_public_key(mixed)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_keys_are_refused(length: int) -> None:
    with pytest.raises(BadKeyError):
        check_public_key(bytes(range(length)))


def test_public_key_text_round_trip() -> None:
    for n in range(10):
        key = secret_key(n).public_key
        text = public_key_text(key)
        assert text.startswith("cmpk1")
        assert len(text) == 4 + 1 + 52 + 6
        assert parse_public_key(text) == key
        assert parse_public_key(text.upper()) == key
        assert parse_public_key(f"  {text}\n") == key


# -- text forms ---------------------------------------------------------------------------------
def _texts() -> list[tuple[str, str]]:
    sk = secret_key(7)
    return [
        ("public key", public_key_text(sk.public_key)),
        ("secret key", sk.to_text()),
        ("identity", identity_text(identity_of(Genesis(key=sk.public_key)))),
    ]


def _parse(what: str, text: str) -> bytes:
    if what == "public key":
        return parse_public_key(text)
    if what == "secret key":
        return SecretKey.from_text(text).seed()
    return parse_identity(text)


def _error(what: str) -> type[Exception]:
    return BadIdentityError if what == "identity" else BadKeyError


@pytest.mark.parametrize(("what", "text"), _texts(), ids=lambda v: v[:12])
def test_every_single_character_typo_is_detected(what: str, text: str) -> None:
    assert _parse(what, text)
    sep = text.rfind("1")
    for i in range(len(text)):
        for ch in CHARSET + "1bio":
            if ch == text[i]:
                continue
            typo = text[:i] + ch + text[i + 1 :]
            with pytest.raises(_error(what)):
                _parse(what, typo)
    for i in range(sep + 1, len(text) - 1):  # adjacent transpositions
        if text[i] != text[i + 1]:
            swapped = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
            with pytest.raises(_error(what)):
                _parse(what, swapped)
    for i in range(sep + 1, len(text) + 1):  # one character left out or added
        with pytest.raises(_error(what)):
            _parse(what, text[:i] + "q" + text[i:])
        if i < len(text):
            with pytest.raises(_error(what)):
                _parse(what, text[:i] + text[i + 1 :])


@pytest.mark.parametrize(("what", "text"), _texts(), ids=lambda v: v[:12])
def test_mixed_case_is_refused_and_upper_case_accepted(what: str, text: str) -> None:
    value = _parse(what, text)
    assert _parse(what, text.upper()) == value
    for i, ch in enumerate(text):
        if ch.isalpha():
            with pytest.raises(_error(what), match="mixes upper and lower case"):
                _parse(what, text[:i] + ch.upper() + text[i + 1 :])


def test_wrong_prefix_is_refused() -> None:
    sk = secret_key(1)
    pk_text = public_key_text(sk.public_key)
    with pytest.raises(BadKeyError, match="must start with 'cmsk1'"):
        SecretKey.from_text(pk_text)
    with pytest.raises(BadKeyError, match="must start with 'cmpk1'"):
        parse_public_key(sk.to_text())
    with pytest.raises(BadIdentityError, match="must start with 'cmid1'"):
        parse_identity(pk_text)
    # Same payload bytes, right checksum, wrong prefix.
    with pytest.raises(BadKeyError, match="must start with 'cmpk1'"):
        parse_public_key(textform.encode("cmpx", sk.public_key))
    with pytest.raises(BadKeyError):
        parse_public_key("1" + pk_text)
    with pytest.raises(BadKeyError):
        parse_public_key("")


def test_wrong_payload_length_and_garbage_are_refused() -> None:
    with pytest.raises(BadKeyError, match="must be 32 bytes"):
        parse_public_key(textform.encode("cmpk", bytes(31)))
    with pytest.raises(BadIdentityError, match="must be 20 bytes"):
        parse_identity(textform.encode("cmid", bytes(32)))
    with pytest.raises(BadKeyError, match="too long"):
        parse_public_key("cmpk1" + "q" * 200)
    with pytest.raises(BadKeyError, match="too short"):
        parse_public_key("cmpk1qqq")
    with pytest.raises(BadIdentityError):
        identity_text(bytes(19))


def test_secret_key_text_round_trip_and_seed_length() -> None:
    sk = secret_key(2)
    again = SecretKey.from_text(sk.to_text())
    assert again.seed() == sk.seed()
    assert again.public_key == sk.public_key
    assert sk.to_text().startswith("cmsk1")
    for length in (0, 31, 33, 64):
        with pytest.raises(BadKeyError):
            SecretKey(bytes(length))


def test_secret_key_repr_and_str_never_show_the_seed() -> None:
    sk = secret_key(4)
    seed = sk.seed()
    for shown in (repr(sk), str(sk), f"{sk}", f"{sk!r}", repr([sk]), repr({"k": sk})):
        assert seed.hex() not in shown.lower()
        assert repr(seed)[2:-1] not in shown
        assert sk.to_text() not in shown
        assert sk.to_text()[5:25] not in shown
        assert public_key_text(sk.public_key) in shown
    assert not hasattr(sk, "__dict__")


def test_signatures_are_deterministic_ed25519() -> None:
    sk = secret_key(5)
    sig = sk.sign(b"message")
    assert len(sig) == 64
    assert sig == sk.sign(b"message")
    assert nacl.bindings.crypto_sign_open(sig + b"message", sk.public_key) == b"message"


# -- fingerprints and identities ----------------------------------------------------------------
def test_fingerprint_format() -> None:
    pattern = re.compile(rf"\A[{CHARSET}]{{4}}-[{CHARSET}]{{4}}\Z")
    seen = set()
    for n in range(50):
        fp = fingerprint(secret_key(n).public_key)
        assert pattern.match(fp), fp
        assert fp == fingerprint(secret_key(n).public_key)
        seen.add(fp)
    assert len(seen) == 50
    assert pattern.match(fingerprint(b""))


def test_identity_derivation_is_stable() -> None:
    key = secret_key(0).public_key
    # The canonical encoding of Genesis(key=key), built by hand: a map of four sorted fields.
    by_hand = (
        b"\x84"
        + b"\xa3key\xc4\x20" + key
        + b"\xa8next_key\xc0"
        + b"\xa8recovery\x90"
        + b"\xa4salt\xc4\x00"
    )  # fmt: skip
    expected = hashlib.sha256(IDENTITY_CONTEXT + by_hand).digest()[:IDENTITY_BYTES]
    genesis = Genesis(key=key)
    assert identity_of(genesis) == expected
    assert identity_of(Genesis(key=key)) == identity_of(genesis)
    # A pinned vector: changing the derivation changes every city's identity.
    assert identity_text(expected) == "cmid1ha2svr6qmltpl2g37ufg4wtjlwg68lh0cccz3z"
    assert parse_identity(identity_text(expected)) == expected


def test_identity_depends_on_every_genesis_field() -> None:
    key, other, rec1, rec2 = (secret_key(n).public_key for n in range(4))
    base = Genesis(key=key, recovery=[rec1], next_key=next_key_commitment(other), salt=b"s")
    variants = [
        Genesis(key=other, recovery=[rec1], next_key=base.next_key, salt=b"s"),
        Genesis(key=key, recovery=[], next_key=base.next_key, salt=b"s"),
        Genesis(key=key, recovery=[rec2], next_key=base.next_key, salt=b"s"),
        Genesis(key=key, recovery=[rec1, rec2], next_key=base.next_key, salt=b"s"),
        Genesis(key=key, recovery=[rec1], next_key=None, salt=b"s"),
        Genesis(key=key, recovery=[rec1], next_key=next_key_commitment(rec2), salt=b"s"),
        Genesis(key=key, recovery=[rec1], next_key=base.next_key, salt=b""),
        Genesis(key=key, recovery=[rec1], next_key=base.next_key, salt=b"t"),
    ]
    ids = {identity_of(g) for g in variants}
    assert identity_of(base) not in ids
    assert len(ids) == len(variants)
    assert all(len(i) == IDENTITY_BYTES for i in ids)
    assert set(Genesis.__struct_fields__) == {"key", "recovery", "next_key", "salt"}


def test_next_key_commitment_binds_the_key() -> None:
    a, b = secret_key(1).public_key, secret_key(2).public_key
    assert next_key_commitment(a) == next_key_commitment(a)
    assert next_key_commitment(a) != next_key_commitment(b)
    assert len(next_key_commitment(a)) == 32
