"""Canonical MessagePack: exactly one valid byte string per value.

Rules (PROTOCOL.md §2): map keys are strings, unique and sorted by their UTF-8 bytes; integers,
lengths and string headers use the shortest form; floats are float64; no extension types; nothing
trails the value. The check is "decode, re-encode canonically, compare": it holds at the level of
MessagePack values, so fields a newer minor version adds pass it unchanged.
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec

from .errors import MalformedError, NonCanonicalError

MAX_DEPTH = 32
"""Deepest nesting of arrays and maps accepted anywhere in a payload."""

_encoder = msgspec.msgpack.Encoder(order="sorted")
_generic_decoder = msgspec.msgpack.Decoder()

encode = _encoder.encode
"""Encode a value (Structs included) canonically. Struct fields are written sorted by name."""


def _depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item.values())
            if any(not isinstance(k, str) for k in item):
                raise NonCanonicalError("map keys must be strings")
        elif isinstance(item, list):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, msgspec.msgpack.Ext | datetime.datetime):
            raise NonCanonicalError("extension types are not allowed")
    return True


def decode_generic(data: bytes, *, what: str = "payload") -> Any:
    """Decode MessagePack into plain values, refusing malformed input and excessive nesting."""
    try:
        value = _generic_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, ValueError) as err:
        raise MalformedError(f"{what} is not valid MessagePack: {err}") from err
    if not _depth_ok(value, MAX_DEPTH):
        raise MalformedError(f"{what} nests deeper than {MAX_DEPTH} levels")
    return value


def check_canonical(data: bytes, *, what: str = "payload") -> Any:
    """Return the plain value of ``data`` if it is the canonical encoding; raise otherwise."""
    value = decode_generic(data, what=what)
    try:
        again = _encoder.encode(value)
    except (TypeError, msgspec.EncodeError) as err:
        raise NonCanonicalError(f"{what} cannot be re-encoded canonically: {err}") from err
    if again != data:
        raise NonCanonicalError(
            f"{what} is not in canonical form (key order, duplicate keys, integer or length "
            "width, float width or a timestamp differs from the canonical encoding)"
        )
    return value
