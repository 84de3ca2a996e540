"""Canonical MessagePack: exactly one accepted byte string per value. All bytes built by hand."""

from __future__ import annotations

from typing import Any

import pytest

from citymesh.protocol.codec import MAX_DEPTH, check_canonical, decode_generic, encode
from citymesh.protocol.errors import MalformedError, NonCanonicalError, ProtocolError


def fixstr(s: str) -> bytes:
    raw = s.encode()
    assert len(raw) < 32
    return bytes([0xA0 | len(raw)]) + raw


CANONICAL: list[tuple[bytes, Any]] = [
    (b"\xc0", None),
    (b"\xc2", False),
    (b"\xc3", True),
    (b"\x00", 0),
    (b"\x7f", 127),
    (b"\xcc\x80", 128),
    (b"\xcc\xff", 255),
    (b"\xcd\x01\x00", 256),
    (b"\xcd\xff\xff", 65535),
    (b"\xce\x00\x01\x00\x00", 65536),
    (b"\xce\xff\xff\xff\xff", 2**32 - 1),
    (b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00", 2**32),
    (b"\xcf" + b"\xff" * 8, 2**64 - 1),
    (b"\xff", -1),
    (b"\xe0", -32),
    (b"\xd0\xdf", -33),
    (b"\xd0\x80", -128),
    (b"\xd1\xff\x7f", -129),
    (b"\xd1\x80\x00", -32768),
    (b"\xd2\xff\xff\x7f\xff", -32769),
    (b"\xd2\x80\x00\x00\x00", -(2**31)),
    (b"\xd3\xff\xff\xff\xff\x7f\xff\xff\xff", -(2**31) - 1),
    (b"\xd3\x80" + b"\x00" * 7, -(2**63)),
    (b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", 1.0),
    (b"\xcb\xc0\x09\x21\xfb\x54\x44\x2d\x18", -3.141592653589793),
    (b"\xa0", ""),
    (fixstr("abc"), "abc"),
    (b"\xbf" + b"x" * 31, "x" * 31),
    (b"\xd9\x20" + b"x" * 32, "x" * 32),
    (b"\xd9\xff" + b"x" * 255, "x" * 255),
    (b"\xda\x01\x00" + b"x" * 256, "x" * 256),
    (b"\xa2\xc3\xa9", "é"),
    (b"\xc4\x00", b""),
    (b"\xc4\x03abc", b"abc"),
    (b"\xc5\x01\x00" + bytes(256), bytes(256)),
    (b"\x90", []),
    (b"\x9f" + b"\x00" * 15, [0] * 15),
    (b"\xdc\x00\x10" + b"\x00" * 16, [0] * 16),
    (b"\x80", {}),
    (b"\x82" + fixstr("a") + b"\x01" + fixstr("b") + b"\x92\x01\x02", {"a": 1, "b": [1, 2]}),
    # Keys sorted by their UTF-8 bytes: "Z" < "a" < "é" < "中".
    (
        b"\x84" + fixstr("Z") + b"\x00" + fixstr("a") + b"\x00" + fixstr("é") + b"\x00"
        + fixstr("中") + b"\x00",
        {"中": 0, "é": 0, "a": 0, "Z": 0},
    ),
    # Prefix sorts first: "a" < "aa" < "b".
    (b"\x83" + fixstr("a") + b"\xc0" + fixstr("aa") + b"\xc0" + fixstr("b") + b"\xc0", {"b": None, "aa": None, "a": None}),
    (b"\xde\x00\x10" + b"".join(fixstr(f"k{i:02}") + b"\x00" for i in range(16)), {f"k{i:02}": 0 for i in range(16)}),
]  # fmt: skip


@pytest.mark.parametrize(("data", "value"), CANONICAL, ids=lambda v: repr(v)[:30])
def test_canonical_bytes_are_accepted_and_are_what_encode_writes(data: bytes, value: Any) -> None:
    assert check_canonical(data) == value
    assert encode(value) == data
    assert decode_generic(data) == value


def _err(data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        check_canonical(data)
    return info.value


NON_CANONICAL: dict[str, bytes] = {
    "duplicate key": b"\x82" + fixstr("a") + b"\x01" + fixstr("a") + b"\x02",
    "duplicate key same value": b"\x82" + fixstr("a") + b"\x01" + fixstr("a") + b"\x01",
    "unsorted keys": b"\x82" + fixstr("b") + b"\x01" + fixstr("a") + b"\x02",
    "unsorted nested keys": b"\x81" + fixstr("x") + b"\x82" + fixstr("b") + b"\x01" + fixstr("a") + b"\x02",
    "longer key before its prefix": b"\x82" + fixstr("aa") + b"\x01" + fixstr("a") + b"\x02",
    "uint8 for a fixint": b"\xcc\x05",
    "uint16 for a fixint": b"\xcd\x00\x05",
    "uint32 for a fixint": b"\xce\x00\x00\x00\x05",
    "uint64 for a fixint": b"\xcf\x00\x00\x00\x00\x00\x00\x00\x05",
    "uint16 for a uint8": b"\xcd\x00\xff",
    "uint32 for a uint16": b"\xce\x00\x00\xff\xff",
    "uint64 for a uint32": b"\xcf\x00\x00\x00\x00\xff\xff\xff\xff",
    "int8 for a positive fixint": b"\xd0\x05",
    "int16 for a positive uint8": b"\xd1\x00\xc8",
    "int64 for a positive value": b"\xd3\x00\x00\x00\x00\x00\x00\x01\x00",
    "int8 for a negative fixint": b"\xd0\xff",
    "int16 for an int8": b"\xd1\xff\x80",
    "int32 for an int16": b"\xd2\xff\xff\x80\x00",
    "int64 for an int32": b"\xd3\xff\xff\xff\xff\x80\x00\x00\x00",
    "str8 for a fixstr": b"\xd9\x03abc",
    "str16 for a fixstr": b"\xda\x00\x03abc",
    "str32 for a fixstr": b"\xdb\x00\x00\x00\x03abc",
    "str16 for a str8": b"\xda\x00\x20" + b"x" * 32,
    "bin16 for a bin8": b"\xc5\x00\x03abc",
    "bin32 for a bin8": b"\xc6\x00\x00\x00\x03abc",
    "array16 for a fixarray": b"\xdc\x00\x01\x01",
    "array32 for a fixarray": b"\xdd\x00\x00\x00\x01\x01",
    "array16 for 15 items": b"\xdc\x00\x0f" + b"\x00" * 15,
    "map16 for a fixmap": b"\xde\x00\x01" + fixstr("a") + b"\x01",
    "map32 for a fixmap": b"\xdf\x00\x00\x00\x01" + fixstr("a") + b"\x01",
    "float32": b"\xca\x3f\x80\x00\x00",
    "float32 nested": b"\x81" + fixstr("v") + b"\xca\x3f\x80\x00\x00",
    "fixext1": b"\xd4\x01\x00",
    "fixext4 nested in array": b"\x91\xd6\x05\x00\x00\x00\x00",
    "ext8": b"\xc7\x01\x05\x00",
    "ext16": b"\xc8\x00\x01\x05\x00",
    "timestamp32": b"\xd6\xff\x00\x00\x00\x00",
    "timestamp64": b"\xd7\xff" + b"\x00" * 8,
    "timestamp96": b"\xc7\x0c\xff" + b"\x00" * 12,
    "timestamp in a map": b"\x81" + fixstr("t") + b"\xd6\xff\x5f\x00\x00\x00",
    "int map key": b"\x81\x01\x01",
    "bin map key": b"\x81\xc4\x01a\x01",
    "nil map key": b"\x81\xc0\x01",
    "array map key": b"\x81\x90\x01",
}  # fmt: skip


@pytest.mark.parametrize("data", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
def test_non_canonical_encodings_are_refused(data: bytes) -> None:
    err = _err(data)
    assert isinstance(err, NonCanonicalError)
    assert err.code == "non_canonical"


MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "trailing byte": b"\x80\x00",
    "trailing value": b"\x01\x02",
    "two maps": b"\x80\x80",
    "truncated str": b"\xa5ab",
    "truncated map": b"\x82" + fixstr("a") + b"\x01",
    "truncated uint32": b"\xce\x00\x00",
    "truncated float64": b"\xcb\x3f\xf0",
    "never-used byte 0xc1": b"\xc1",
    "invalid UTF-8": b"\xa2\xc3\x28",
    "surrogate in UTF-8": b"\xa3\xed\xa0\x80",
    "unhashable map key": b"\x81\x80\x01",
    "bad timestamp nanoseconds": b"\xd7\xff\xff\xff\xff\xff\x00\x00\x00\x00",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bytes_are_refused(data: bytes) -> None:
    err = _err(data)
    assert isinstance(err, MalformedError)
    assert err.code == "malformed"


@pytest.mark.parametrize("opener", [b"\x91", b"\x81\xa1k"])
def test_nesting_is_limited(opener: bytes) -> None:
    at_limit = opener * (MAX_DEPTH - 1) + b"\x90"
    assert check_canonical(at_limit) is not None
    over = opener * MAX_DEPTH + b"\x90"
    with pytest.raises(MalformedError, match="nests deeper"):
        check_canonical(over)
    with pytest.raises(MalformedError):
        decode_generic(over)


def test_very_deep_nesting_is_malformed_not_a_crash() -> None:
    for depth in (1_000, 100_000):
        with pytest.raises(MalformedError):
            check_canonical(b"\x91" * depth + b"\xc0")


def test_encode_sorts_keys_whatever_the_insertion_order() -> None:
    a = {"b": 1, "a": {"d": 2, "c": 3}}
    b = {"a": {"c": 3, "d": 2}, "b": 1}
    assert encode(a) == encode(b)
    assert check_canonical(encode(a)) == a


def test_error_names_what_was_checked() -> None:
    with pytest.raises(NonCanonicalError, match="body"):
        check_canonical(b"\xcc\x05", what="body")
    with pytest.raises(MalformedError, match="body"):
        check_canonical(b"", what="body")
