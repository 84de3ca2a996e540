"""Bech32m (BIP-350) text encoding: prefixed, checksummed, lowercase base32, copy-paste safe.

The checksum detects any error in up to four characters, so a mistyped key or identity is
refused instead of silently naming somebody else.
"""

from __future__ import annotations

from .errors import BadKeyError

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(_CHARSET)}
_BECH32M_CONST = 0x2BC830A3
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
MAX_TEXT_LENGTH = 128


def _generators_of(top: int) -> int:
    """XOR of the generators selected by the five bits shifted out at one step."""
    out = 0
    for i in range(5):
        if (top >> i) & 1:
            out ^= _GEN[i]
    return out


_GEN_OF_TOP = tuple(_generators_of(top) for top in range(32))
"""One lookup per character instead of five conditional XORs (identity texts are made for
every author a node lists: 58 -> 10 us each)."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        chk = ((chk & 0x1FFFFFF) << 5 ^ value) ^ _GEN_OF_TOP[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise ValueError("non-zero padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under the human-readable prefix ``hrp`` (lowercase ASCII)."""
    values = _convert_bits(data, 8, 5, pad=True)
    checksum_input = _hrp_expand(hrp) + values + [0] * 6
    polymod = _polymod(checksum_input) ^ _BECH32M_CONST
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def decode(hrp: str, text: str, *, length: int, what: str) -> bytes:
    """Decode a bech32m string that must carry prefix ``hrp`` and exactly ``length`` bytes.

    Raises `BadKeyError` naming what is wrong. Surrounding whitespace is ignored; mixed case is
    refused (BIP-350), a wholly uppercase string is accepted.
    """
    text = text.strip()
    if len(text) > MAX_TEXT_LENGTH:
        raise BadKeyError(f"{what} text is too long ({len(text)} characters)")
    if text.lower() != text and text.upper() != text:
        raise BadKeyError(f"{what} text mixes upper and lower case")
    text = text.lower()
    sep = text.rfind("1")
    if sep < 1 or text[:sep] != hrp:
        raise BadKeyError(f"{what} text must start with '{hrp}1'")
    values: list[int] = []
    for ch in text[sep + 1 :]:
        v = _CHARSET_REV.get(ch)
        if v is None:
            raise BadKeyError(f"{what} text contains {ch!r}, which is not in the bech32 alphabet")
        values.append(v)
    if len(values) < 6:
        raise BadKeyError(f"{what} text is too short")
    if _polymod(_hrp_expand(hrp) + values) != _BECH32M_CONST:
        raise BadKeyError(f"{what} text has a bad checksum (a typo?)")
    try:
        data = bytes(_convert_bits(values[:-6], 5, 8, pad=False))
    except ValueError as err:
        raise BadKeyError(f"{what} text has invalid padding") from err
    if len(data) != length:
        raise BadKeyError(f"{what} must be {length} bytes, got {len(data)}")
    return data
