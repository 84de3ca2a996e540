"""NATS nkey text for raw Ed25519 keys (pure: no I/O).

A node logs in to a relay with its *transport key* (``<home>/transport.key``, never the
record-signing key); NATS names such a key in its own text form, an *nkey*:

- public key: base32 (RFC 4648, no padding) of ``prefix byte + 32-byte key + CRC-16``;
  a user key starts with ``U`` (prefix ``20 << 3``);
- seed: base32 of ``two prefix bytes + 32-byte seed + CRC-16``, where the two bytes carry the seed
  marker ``18 << 3`` (``S``) and the key type; a user seed starts with ``SU``.

CRC-16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), appended little-endian, over
everything before it. This matches the nkeys specification and the ``nkeys`` package that
nats-py signs the login challenge with.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import PUBLIC_KEY_HRP, check_public_key, parse_public_key

PREFIX_SEED: Final = 18 << 3
PREFIX_USER: Final = 20 << 3
PREFIX_OPERATOR: Final = 14 << 3
PREFIX_ACCOUNT: Final = 0
PREFIX_SERVER: Final = 13 << 3
PREFIX_CLUSTER: Final = 2 << 3
_PUBLIC_PREFIXES: Final = frozenset(
    {PREFIX_USER, PREFIX_OPERATOR, PREFIX_ACCOUNT, PREFIX_SERVER, PREFIX_CLUSTER}
)
KEY_BYTES: Final = 32


class NkeyError(ValueError):
    """Text that is not an nkey of the expected kind (wrong prefix, length or checksum)."""


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM, as nkeys uses."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _encode(raw: bytes) -> str:
    data = raw + crc16(raw).to_bytes(2, "little")
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _decode(text: str, what: str) -> bytes:
    value = text.strip()
    if not value or not value.isascii() or not value.isalnum() or value.upper() != value:
        raise NkeyError(f"{what} must be base32 text (A-Z, 2-7), e.g. U… or SU…")
    try:
        data = base64.b32decode(value + "=" * (-len(value) % 8))
    except binascii.Error as err:
        raise NkeyError(f"{what} is not valid base32") from err
    if len(data) < 3:
        raise NkeyError(f"{what} is too short")
    raw, check = data[:-2], int.from_bytes(data[-2:], "little")
    if crc16(raw) != check:
        raise NkeyError(f"{what} has a bad checksum (a typo?)")
    return raw


def _check_key(key: bytes, what: str) -> bytes:
    if len(key) != KEY_BYTES:
        raise NkeyError(f"{what} must be {KEY_BYTES} bytes, got {len(key)}")
    return bytes(key)


def encode_public(public_key: bytes, prefix: int = PREFIX_USER) -> str:
    """``U…`` (for ``prefix=PREFIX_USER``) text of a raw 32-byte Ed25519 public key."""
    if prefix not in _PUBLIC_PREFIXES:
        raise NkeyError(f"prefix byte {prefix} is not a public nkey type")
    return _encode(bytes([prefix]) + _check_key(public_key, "public key"))


def decode_public(text: str, prefix: int = PREFIX_USER) -> bytes:
    """The raw 32-byte public key of an nkey of type ``prefix`` (a user key by default)."""
    raw = _decode(text, "nkey")
    if raw[0] != prefix:
        raise NkeyError(f"nkey {text.strip()[:4]}… is not a {_kind(prefix)} public key")
    return _check_key(raw[1:], "nkey public key")


def encode_seed(seed: bytes, prefix: int = PREFIX_USER) -> str:
    """``SU…`` (for ``prefix=PREFIX_USER``) text of a raw 32-byte Ed25519 seed."""
    if prefix not in _PUBLIC_PREFIXES:
        raise NkeyError(f"prefix byte {prefix} is not a public nkey type")
    head = bytes([PREFIX_SEED | (prefix >> 5), (prefix & 0x1F) << 3])
    return _encode(head + _check_key(seed, "seed"))


def decode_seed(text: str, prefix: int = PREFIX_USER) -> bytes:
    """The raw 32-byte seed of an nkey seed of type ``prefix`` (a user seed by default)."""
    raw = _decode(text, "nkey seed")
    if len(raw) < 2 or raw[0] & 0xF8 != PREFIX_SEED:
        raise NkeyError("nkey seed must start with S")
    kind = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
    if kind != prefix:
        raise NkeyError(f"nkey seed is not a {_kind(prefix)} seed")
    return _check_key(raw[2:], "nkey seed")


def _kind(prefix: int) -> str:
    return {
        PREFIX_USER: "user",
        PREFIX_OPERATOR: "operator",
        PREFIX_ACCOUNT: "account",
        PREFIX_SERVER: "server",
        PREFIX_CLUSTER: "cluster",
    }.get(prefix, f"type-{prefix}")


def parse_user_key(text: str) -> bytes:
    """A transport public key as people copy it: an nkey ``U…`` or a citymesh ``cmpk1…`` key.
    NkeyError (a ValueError) naming what is wrong."""
    value = text.strip()
    if value.lower().startswith(PUBLIC_KEY_HRP + "1"):
        try:
            return parse_public_key(value)
        except ProtocolError as err:
            raise NkeyError(f"{value[:12]}…: {err.message}") from err
    if not value.startswith("U"):
        raise NkeyError(f"{value[:12]!r} is not a user nkey (U…) or a citymesh key (cmpk1…)")
    key = decode_public(value)
    try:
        return check_public_key(key)
    except ProtocolError as err:
        raise NkeyError(f"{value[:12]}…: {err.message}") from err
