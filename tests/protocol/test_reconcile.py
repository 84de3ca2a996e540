"""Range-based set reconciliation (negentropy style): two random sets reconcile to exactly their
symmetric difference, in few rounds; malformed messages are refused with a typed error."""

from __future__ import annotations

import hashlib
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citymesh.protocol.errors import MalformedError
from citymesh.protocol.reconcile import (
    BUCKETS,
    FINGERPRINT,
    ID_LIST,
    INFINITY,
    SKIP,
    ItemSet,
    Message,
    Range,
    ReconcileError,
    Reconciler,
    decode_message,
    encode_message,
    reconcile_sets,
    respond,
)

Item = tuple[int, bytes]


def item(n: int, ts: int | None = None) -> Item:
    return (n // 3 if ts is None else ts, hashlib.sha256(n.to_bytes(8, "big")).digest())


ids = st.binary(min_size=32, max_size=32)
# Few distinct timestamps, so equal timestamps (bounds with id prefixes) are common.
items = st.tuples(st.integers(0, 40), ids)
item_sets = st.sets(items, max_size=300)


@settings(max_examples=150, deadline=None)
@given(common=item_sets, only_client=item_sets, only_server=item_sets)
def test_random_sets_reconcile_to_the_symmetric_difference(
    common: set[Item], only_client: set[Item], only_server: set[Item]
) -> None:
    client = common | only_client
    server = common | only_server
    have, need, rounds, _ = reconcile_sets(ItemSet(client), ItemSet(server))
    client_ids = {i for _, i in client}
    server_ids = {i for _, i in server}
    assert len(have) == len(set(have)) and len(need) == len(set(need))
    assert set(have) == client_ids - server_ids
    assert set(need) == server_ids - client_ids
    assert rounds <= 8


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 3000),
    missing=st.sets(st.integers(0, 2999), max_size=40),
    extra=st.sets(st.integers(3000, 3100), max_size=10),
)
def test_large_sets_with_few_differences(n: int, missing: set[int], extra: set[int]) -> None:
    server = [item(i) for i in range(n)]
    client = [item(i) for i in range(n) if i not in missing] + [item(i) for i in extra]
    have, need, _, _ = reconcile_sets(ItemSet(client), ItemSet(server))
    assert set(need) == {item(i)[1] for i in missing if i < n}
    assert set(have) == {item(i)[1] for i in extra}


def test_equal_sets_take_one_round_and_one_fingerprint_per_bucket() -> None:
    same = ItemSet(item(i) for i in range(10_000))
    have, need, rounds, size = reconcile_sets(same, same)
    assert (have, need, rounds) == ([], [], 1)
    assert size < BUCKETS * 40


def test_a_few_differences_cost_far_less_than_the_id_list() -> None:
    n = 20_000
    gone = set(random.Random(7).sample(range(n), 20))
    server = ItemSet(item(i) for i in range(n))
    client = ItemSet(item(i) for i in range(n) if i not in gone)
    _, need, rounds, size = reconcile_sets(client, server)
    assert set(need) == {item(i)[1] for i in gone}
    assert size < n * 32 / 10
    assert rounds <= 5


def test_empty_sides() -> None:
    full = ItemSet(item(i) for i in range(100))
    empty = ItemSet([])
    have, need, _, _ = reconcile_sets(empty, full)
    assert (len(have), len(need)) == (0, 100)
    have, need, _, _ = reconcile_sets(full, empty)
    assert (len(have), len(need)) == (100, 0)
    assert reconcile_sets(empty, empty)[:2] == ([], [])


def test_messages_round_trip_as_compact_msgpack() -> None:
    rec = Reconciler(ItemSet(item(i) for i in range(1000)))
    first = rec.initiate()
    assert len(first.ranges) == BUCKETS
    assert first.ranges[-1].ts == 0  # infinity
    assert decode_message(encode_message(first)) == first
    assert all(r.mode == FINGERPRINT for r in first.ranges)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode([2, []]),  # unknown version
        msgspec.msgpack.encode([1, [[1, b"", 3, b""]]]),  # unknown mode
        msgspec.msgpack.encode([1, [[1, b"", FINGERPRINT, b"short"]]]),
        msgspec.msgpack.encode([1, [[1, b"", ID_LIST, b"x" * 33]]]),
        msgspec.msgpack.encode([1, [[1, b"", SKIP, b"payload"]]]),
        msgspec.msgpack.encode([1, [[5, b"", SKIP, b""], [1, b"", SKIP, b""]]]),  # not increasing
        msgspec.msgpack.encode([1, [[0, b"", SKIP, b""], [3, b"", SKIP, b""]]]),  # after infinity
        msgspec.msgpack.encode([1, [[0, b"\x01", SKIP, b""]]]),  # infinity with a prefix
        msgspec.msgpack.encode([1, [[-1, b"", SKIP, b""]]]),
        msgspec.msgpack.encode([1, [[INFINITY + 1, b"", SKIP, b""]]]),
        msgspec.msgpack.encode([1, [[1, b"x" * 33, SKIP, b""]]]),
        msgspec.msgpack.encode({"version": 1}),
    ],
)
def test_malformed_messages_are_refused_with_a_typed_error(data: bytes) -> None:
    with pytest.raises(ReconcileError) as info:
        decode_message(data)
    assert isinstance(info.value, MalformedError)
    assert info.value.field is not None and info.value.field.startswith("message")


def test_responder_checks_messages_built_in_memory_too() -> None:
    bad = Message(1, [Range(5, b"\x05", SKIP, b""), Range(1, b"\x01", SKIP, b"")])
    with pytest.raises(ReconcileError):
        respond(ItemSet([]), bad)
