"""Rateless set reconciliation (coded symbols): random sets decode to exactly their symmetric
difference; equal sets cost one small round; symbols follow their sets as ids come and go; every
malformed request or reply is refused with a typed error, and a hostile responder can only make
the session fail within its bound."""

from __future__ import annotations

import hashlib
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citymesh.protocol import sketch
from citymesh.protocol.errors import MalformedError, ProtocolError, TooLargeError
from citymesh.protocol.sketch import (
    FIRST_CHUNK,
    MAX_CHUNK,
    MAX_SYMBOLS,
    SYMBOL_SIZE,
    Encoder,
    Session,
    SketchChunk,
    SketchError,
    SketchSymbols,
    decode_chunk,
    decode_symbols,
    reconcile_sets,
    respond,
)


def ident(n: int, salt: str = "") -> bytes:
    return hashlib.sha256(f"{salt}{n}".encode()).digest()


@settings(max_examples=60, deadline=None)
@given(
    common=st.integers(0, 400),
    only_client=st.integers(0, 150),
    only_server=st.integers(0, 150),
    seed=st.integers(0, 2**32),
)
def test_random_sets_decode_to_the_symmetric_difference(
    common: int, only_client: int, only_server: int, seed: int
) -> None:
    both = [ident(i, f"c{seed}-") for i in range(common)]
    client_only = [ident(i, f"a{seed}-") for i in range(only_client)]
    server_only = [ident(i, f"b{seed}-") for i in range(only_server)]
    have, need, rounds, _ = reconcile_sets(Encoder(both + client_only), Encoder(both + server_only))
    assert sorted(have) == sorted(client_only)
    assert sorted(need) == sorted(server_only)
    assert rounds <= 8


@settings(max_examples=40, deadline=None)
@given(ids=st.sets(st.binary(min_size=32, max_size=32), max_size=200), data=st.data())
def test_any_ids_any_split(ids: set[bytes], data: st.DataObject) -> None:
    """Ids need not be hashes: any 32 bytes, split at random between the two sides."""
    items = sorted(ids)
    sides = data.draw(st.lists(st.sampled_from("abc"), min_size=len(items), max_size=len(items)))
    client = [i for i, s in zip(items, sides, strict=True) if s in "ab"]
    server = [i for i, s in zip(items, sides, strict=True) if s in "bc"]
    have, need, _, _ = reconcile_sets(Encoder(client), Encoder(server))
    assert set(have) == set(client) - set(server) and len(have) == len(set(have))
    assert set(need) == set(server) - set(client) and len(need) == len(set(need))


@pytest.mark.parametrize("d", [0, 1, 10, 100, 300])
def test_difference_sizes_up_to_300_in_a_large_set(d: int) -> None:
    base = [ident(i) for i in range(3000)]
    gone = set(random.Random(d).sample(range(3000), d))
    client = Encoder(x for i, x in enumerate(base) if i not in gone)
    _, need, rounds, size = reconcile_sets(client, Encoder(base))
    assert sorted(need) == sorted(base[i] for i in gone)
    # About 1.5 symbols of 42 bytes a difference, and a few hundred bytes of slack.
    assert size <= 2.2 * SYMBOL_SIZE * d + 2000
    assert rounds <= 4


def test_equal_sets_cost_one_small_round() -> None:
    same = Encoder(ident(i) for i in range(10_000))
    have, need, rounds, size = reconcile_sets(same, same)
    assert (have, need, rounds) == ([], [], 1)
    assert size < FIRST_CHUNK * SYMBOL_SIZE + 64
    assert reconcile_sets(Encoder(), Encoder())[:3] == ([], [], 1)


def test_empty_sides() -> None:
    full = Encoder(ident(i) for i in range(200))
    have, need, _, _ = reconcile_sets(Encoder(), full)
    assert (len(have), len(need)) == (0, 200)
    have, need, _, _ = reconcile_sets(full, Encoder())
    assert (len(have), len(need)) == (200, 0)


@settings(max_examples=30, deadline=None)
@given(
    first=st.sets(st.integers(0, 300), max_size=150),
    then=st.sets(st.integers(0, 300), max_size=150),
    size=st.integers(0, 300),
)
def test_an_updated_encoder_equals_one_built_afresh(
    first: set[int], then: set[int], size: int
) -> None:
    kept = Encoder((ident(i) for i in first), size=size)
    assert kept.update(ident(i) for i in then) == (len(then - first), len(first - then))
    fresh = Encoder(ident(i) for i in then)
    end = max(size, 1)
    assert kept.symbols(0, end) == fresh.symbols(0, end)
    assert len(kept) == len(then)
    assert kept.update(ident(i) for i in then) == (0, 0)


def test_symbol_zero_holds_every_id_and_density_falls_as_the_paper_says() -> None:
    ids = [ident(i) for i in range(4000)]
    hits = [0] * 64
    for x in ids:
        seq = sketch.indices(x, 64)
        assert seq[0] == 0 and seq == sorted(set(seq))
        for i in seq:
            hits[i] += 1
    assert hits[0] == len(ids)
    for i in (8, 20, 40, 63):
        assert hits[i] / len(ids) == pytest.approx(1 / (1 + i / 2), rel=0.25)


def test_symbols_are_pinned_42_bytes_and_independent_of_order() -> None:
    """Every node must compute the same symbols for the same ids: the mapping is pinned."""
    assert sketch.indices(ident(0), 1000) == [
        0,
        1,
        2,
        6,
        7,
        14,
        16,
        17,
        19,
        27,
        39,
        59,
        85,
        100,
        335,
    ]
    fifty = Encoder(ident(i) for i in range(50)).symbols(0, 64)
    assert len(fifty) == 64 * SYMBOL_SIZE
    assert hashlib.sha256(fifty).hexdigest() == (
        "a26234cbb64bbcf0c5fdfe00742b289306d3c034f0bee2c9c181e4d34134bab6"
    )
    assert Encoder(ident(i) for i in reversed(range(50))).symbols(0, 64) == fifty
    two = Encoder([bytes(32), b"\xff" * 32]).symbols(0, 1)  # symbol 0 holds both
    assert two[:32] == b"\xff" * 32 and int.from_bytes(two[40:42], "little") == 2


def test_wrong_id_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        Encoder([b"short"])
    with pytest.raises(ValueError):
        Encoder().update([bytes(32), bytes(33)])


# -- hostile input ---------------------------------------------------------------------------
def chunk_bytes(**fields: object) -> bytes:
    return msgspec.msgpack.encode({"version": 1, "start": 0, "end": 16} | fields)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", SketchError),
        (b"\xc1", SketchError),
        (msgspec.msgpack.encode([1, 0, 16]), SketchError),
        (chunk_bytes(start=10, end=5), SketchError),
        (chunk_bytes(start=5, end=5), SketchError),
        (chunk_bytes(start=-1), SketchError),
        (chunk_bytes(end=MAX_SYMBOLS + 1), SketchError),
        (chunk_bytes(end=2**64 - 1), SketchError),
        (chunk_bytes(start=0, end=MAX_CHUNK + 1), TooLargeError),
        (chunk_bytes(version=2), SketchError),
        (chunk_bytes(extra=1), SketchError),
        (chunk_bytes(end="16"), SketchError),
    ],
)
def test_malformed_chunks_are_refused_with_a_typed_error(
    data: bytes, error: type[ProtocolError]
) -> None:
    with pytest.raises(error) as info:
        decode_chunk(data)
    assert info.value.field is not None and info.value.field.startswith("chunk")


def test_the_responder_checks_chunks_built_in_memory_too() -> None:
    enc = Encoder([ident(1)])
    with pytest.raises(SketchError):
        respond(enc, SketchChunk(start=9, end=3))
    with pytest.raises(TooLargeError):
        respond(enc, SketchChunk(start=0, end=MAX_CHUNK + 1))
    assert enc.size == 0  # refused before any work


@pytest.mark.parametrize(
    "data",
    [
        b"",
        msgspec.msgpack.encode({"start": 0}),
        msgspec.msgpack.encode({"start": 0, "data": b"x" * 41}),
        msgspec.msgpack.encode({"start": 0, "data": b"x" * (MAX_CHUNK * SYMBOL_SIZE + 42)}),
        msgspec.msgpack.encode({"start": -3, "data": b""}),
    ],
)
def test_malformed_replies_are_refused_with_a_typed_error(data: bytes) -> None:
    with pytest.raises(SketchError) as info:
        decode_symbols(data)
    assert isinstance(info.value, MalformedError)


def test_replies_that_do_not_answer_the_chunk_are_refused() -> None:
    session = Session(Encoder([ident(1)]))
    with pytest.raises(SketchError):  # nothing asked yet
        session.receive(SketchSymbols(start=0, data=b""))
    chunk = session.next_chunk()
    assert chunk is not None
    right = respond(Encoder(), chunk)
    with pytest.raises(SketchError):
        session.receive(SketchSymbols(start=1, data=right.data))
    with pytest.raises(SketchError):
        session.receive(SketchSymbols(start=0, data=right.data[:-SYMBOL_SIZE]))
    session.receive(right)
    assert session.next_chunk() is None and session.have == [ident(1)]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), fill=st.sampled_from(["random", "max", "pure"]))
def test_a_hostile_responder_can_only_make_the_session_fail_within_its_bound(
    seed: int, fill: str
) -> None:
    """Garbage symbols of the right size (random, counts at their extremes, or forged cells that
    look pure) end in a decoded set, a typed error, or the bound: never anything else."""
    rng = random.Random(seed)
    session = Session(Encoder(ident(i) for i in range(50)), max_symbols=600)
    chunk = session.next_chunk()
    try:
        while chunk is not None:
            n = chunk.end - chunk.start
            if fill == "random":
                data = rng.randbytes(n * SYMBOL_SIZE)
            elif fill == "max":
                data = b"".join(rng.randbytes(40) + b"\xff\x7f" for _ in range(n))
            else:  # a real id's symbol (its checksum, count 1), over and over
                forged = Encoder([ident(rng.randrange(10**6), "x")]).symbols(0, 1)
                data = forged * n
            session.receive(SketchSymbols(start=chunk.start, data=data))
            chunk = session.next_chunk()
    except ProtocolError as err:
        assert isinstance(err, MalformedError | TooLargeError)
    assert session.received <= 600


def test_a_difference_too_large_for_the_bound_raises_too_large() -> None:
    client = Encoder()
    server = Encoder(ident(i) for i in range(500))
    with pytest.raises(TooLargeError) as info:
        reconcile_sets(client, server, max_symbols=200)
    assert "200 symbols" in info.value.message


def test_chunks_stay_within_the_limits() -> None:
    session = Session(Encoder())
    server = Encoder(ident(i) for i in range(14_000))
    sizes = []
    with pytest.raises(TooLargeError):
        chunk = session.next_chunk()
        while chunk is not None:
            sizes.append(chunk.end - chunk.start)
            assert chunk.end <= MAX_SYMBOLS
            session.receive(respond(server, chunk))
            chunk = session.next_chunk()
    assert sizes[0] == FIRST_CHUNK and max(sizes) <= MAX_CHUNK
    assert session.received == MAX_SYMBOLS
