"""Rateless set reconciliation with coded symbols (a rateless IBLT). Pure: no I/O.

After Yang, Gilad and Alizadeh, "Practical Rateless Set Reconciliation" (SIGCOMM 2024). Two
parties hold sets of 32-byte record ids and want their symmetric difference. Where ranges
(reconcile.py) pay about a kilobyte per difference scattered at random, a sketch pays about 1.5
*coded symbols* of 42 bytes per difference, wherever the differences lie.

**Coded symbols.** Each id is mapped to an infinite, increasing sequence of symbol indices,
starting at 0, that contains index i with probability about 1/(1 + i/2). Symbol i of a set is
(XOR of the ids mapped to it, XOR of their 8-byte checksums, how many). Symbols are linear: those
of set A minus those of set B (XOR, XOR, subtract) are the symbols of the difference, where ids
only in A count +1 and ids only in B count -1. A *pure* difference symbol (count ±1 and the
checksum of its id XOR equal to its checksum XOR) holds one id; the decoder takes it out of every
symbol it maps to, which leaves others pure (peeling). Symbol 0 holds every id: the difference is
decoded when symbol 0 is empty. Symbols [0, m) decode about m/1.4 differences.

**The mapping, exactly** (both sides must compute the same symbols):

- ``digest = BLAKE2b(id, key=KEY, digest_size=16)``; the checksum is ``digest[:8]`` and the PRNG
  seed ``digest[8:]``, each a little-endian unsigned integer.
- Index 0 first. Then, with ``r`` the PRNG state (64 bits) and ``i`` the last index:
  ``r = (r * 6364136223846793005 + 1442695040888963407) mod 2^64`` and
  ``i = i + floor((i + 1.5) * (2^32 / sqrt(r + 1) - 1)) + 1`` in IEEE 754 double arithmetic
  (``r + 1`` rounded to a double, ``sqrt`` correctly rounded): the paper's index generator.
  Computing symbols [0, m) walks each id's sequence only until it passes m: O(N log m).

``KEY`` is public and fixed, so every node computes the same symbols for the same ids and can keep
its own set's symbols up to date as records come and go (`Encoder.update`) instead of encoding
its set anew for each peer. Ids are SHA-256 digests of signed envelopes: grinding them to forge a
pure symbol costs a signature per try, and what a forged symbol can do is make decoding fail (the
caller then falls back to ranges) or name an id that nobody holds.

**Wire.** A symbol is 42 bytes: the id XOR (32), the checksum XOR (8, little-endian) and the
count modulo 2^16 (2, little-endian; differences are read back as signed 16-bit numbers, so any
cell's count difference is exact while fewer than 32,768 ids differ). The initiator asks for a
`SketchChunk` [start, end); the responder, keeping no state between requests, answers with
`SketchSymbols` [start, end) of its set (`respond`). `Session` is the initiator: it subtracts its
own symbols, peels, and names the next chunk (sized from an estimate of what is left) until
symbol 0 is empty or `MAX_SYMBOLS` are spent.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Annotated, Final, TypeVar

import msgspec
from msgspec import Meta, Struct

from .errors import MalformedError, TooLargeError

VERSION: Final = 1
ID_SIZE: Final = 32
CHECK_SIZE: Final = 8
COUNT_SIZE: Final = 2
SYMBOL_SIZE: Final = ID_SIZE + CHECK_SIZE + COUNT_SIZE
MAX_CHUNK: Final = 4096
"""Symbols in one reply at most (172 KiB)."""
MAX_SYMBOLS: Final = 16_384
"""Symbol indices stop here: enough for about 11,000 differences (688 KiB in all); beyond that
ranges do as well and cost the responder less."""
MARGIN: Final = 1.6
"""Symbols asked for per estimated difference: 1.35-1.5 decode it on average (fewer for large
differences), and asking for a few too many costs less than another round."""
FIRST_CHUNK: Final = 16
"""Symbols asked for first: two equal sets are done with 672 bytes."""
GROW_FROM: Final = 256
"""Symbols an encoder computes at least when asked for any (then it doubles): walking every id
costs only about twice as much for 256 symbols as for 16, and a cached encoder then rarely has
to walk them all again."""
KEY: Final = b"citymesh/riblt/1"

_A: Final = 6364136223846793005
_C: Final = 1442695040888963407
_MASK: Final = (1 << 64) - 1
_TWO32: Final = 4294967296.0
_ID_MASK: Final = (1 << (8 * ID_SIZE)) - 1
_VALUE_SIZE: Final = ID_SIZE + CHECK_SIZE
_COUNT_MOD: Final = 1 << (8 * COUNT_SIZE)
_T = TypeVar("_T", "SketchChunk", "SketchSymbols")


class SketchError(MalformedError):
    """A chunk request or a reply that breaks a rule the schema cannot state."""

    code = "bad_sketch"


class SketchChunk(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which coded symbols to send: indices [start, end), at most `MAX_CHUNK` of them."""

    version: Annotated[int, Meta(ge=VERSION, le=VERSION)] = VERSION
    start: Annotated[int, Meta(ge=0, le=MAX_SYMBOLS - 1)]
    end: Annotated[int, Meta(ge=1, le=MAX_SYMBOLS)]


class SketchSymbols(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Coded symbols [start, start + len(data) / 42) of the responder's set, 42 bytes each."""

    start: Annotated[int, Meta(ge=0, le=MAX_SYMBOLS - 1)]
    data: Annotated[bytes, Meta(max_length=MAX_CHUNK * SYMBOL_SIZE)]  # a multiple of 3: base64


def check_chunk(chunk: SketchChunk) -> None:
    """start < end, at most `MAX_CHUNK` symbols; the schema holds the rest."""
    if chunk.end <= chunk.start:
        raise SketchError("end must be after start", field="chunk.end")
    if chunk.end - chunk.start > MAX_CHUNK:
        raise TooLargeError(f"at most {MAX_CHUNK} symbols in one chunk", field="chunk.end")


def _digest(item_id: bytes) -> tuple[int, int]:
    """(the id and its checksum as one 320-bit value, the PRNG seed)."""
    d = hashlib.blake2b(item_id, key=KEY, digest_size=16).digest()
    value = int.from_bytes(item_id, "little") | int.from_bytes(d[:CHECK_SIZE], "little") << 256
    return value, int.from_bytes(d[CHECK_SIZE:], "little")


def indices(item_id: bytes, end: int) -> list[int]:
    """The symbol indices below ``end`` that ``item_id`` is mapped to."""
    return _walk(_digest(item_id)[1], end)


def _apply(values: list[int], counts: list[int], lo: int, hi: int, v: int, r: int, d: int) -> None:
    """Add (d=1) or take out (d=-1) one id into symbols [lo, hi); ``r`` is its seed."""
    sqrt = math.sqrt
    i = 0
    while i < lo:
        r = (r * _A + _C) & _MASK
        i += int((i + 1.5) * (_TWO32 / sqrt(r + 1) - 1.0)) + 1
    while i < hi:
        values[i - lo] ^= v
        counts[i - lo] += d
        r = (r * _A + _C) & _MASK
        i += int((i + 1.5) * (_TWO32 / sqrt(r + 1) - 1.0)) + 1


class Encoder:
    """The coded symbols [0, size) of a set of ids, kept up to date as the set changes.

    The ids are kept sorted in one bytes object (32 bytes each), so that `update` can find what
    changed by merging and `extend` can walk every id again; the symbols grow on demand."""

    def __init__(self, ids: Iterable[bytes] = (), size: int = 0) -> None:
        self._ids = b""
        self.size = 0
        self._values: list[int] = []
        self._counts: list[int] = []
        self.update(ids)
        self.extend(size)

    def __len__(self) -> int:
        return len(self._ids) // ID_SIZE

    def update(self, ids: Iterable[bytes]) -> tuple[int, int]:
        """Make the set ``ids``; the symbols follow, each added or removed id costing
        O(log size). Returns (ids added, ids removed)."""
        new = sorted(set(ids))
        blob = b"".join(new)
        if len(blob) != ID_SIZE * len(new):
            raise ValueError(f"ids are {ID_SIZE} bytes")
        if blob == self._ids:
            return 0, 0
        old = self._ids
        added: list[bytes] = []
        removed: list[bytes] = []
        k, n_old = 0, len(old)
        for item_id in new:
            while k < n_old and old[k : k + ID_SIZE] < item_id:
                removed.append(old[k : k + ID_SIZE])
                k += ID_SIZE
            if k < n_old and old[k : k + ID_SIZE] == item_id:
                k += ID_SIZE
            else:
                added.append(item_id)
        removed.extend(old[j : j + ID_SIZE] for j in range(k, n_old, ID_SIZE))
        if self.size:
            for item_id, d in [(i, 1) for i in added] + [(i, -1) for i in removed]:
                v, r = _digest(item_id)
                _apply(self._values, self._counts, 0, self.size, v, r, d)
        self._ids = blob
        return len(added), len(removed)

    def extend(self, size: int) -> None:
        """Compute symbols up to ``size`` (each id walked again from index 0: O(N log size))."""
        if size <= self.size:
            return
        lo = self.size
        values = [0] * (size - lo)
        counts = [0] * (size - lo)
        ids = self._ids
        for k in range(0, len(ids), ID_SIZE):
            v, r = _digest(ids[k : k + ID_SIZE])
            _apply(values, counts, lo, size, v, r, 1)
        self._values.extend(values)
        self._counts.extend(counts)
        self.size = size

    def cells(self, start: int, end: int) -> tuple[list[int], list[int]]:
        """(values, counts) of symbols [start, end), computing more first if needed."""
        if end > self.size:
            self.extend(max(end, min(max(2 * self.size, GROW_FROM), MAX_SYMBOLS)))
        return self._values[start:end], self._counts[start:end]

    def symbols(self, start: int, end: int) -> bytes:
        """Symbols [start, end) in their wire form (42 bytes each)."""
        values, counts = self.cells(start, end)
        return b"".join(
            v.to_bytes(_VALUE_SIZE, "little") + (c % _COUNT_MOD).to_bytes(COUNT_SIZE, "little")
            for v, c in zip(values, counts, strict=True)
        )


def respond(encoder: Encoder, chunk: SketchChunk) -> SketchSymbols:
    """The responder's answer to one chunk request (stateless but for the encoder's cache)."""
    check_chunk(chunk)
    return SketchSymbols(start=chunk.start, data=encoder.symbols(chunk.start, chunk.end))


class Session:
    """The initiator: asks for chunks of the responder's symbols until the difference decodes.

    ``need`` are ids the responder holds and we lack, ``have`` ids we hold and it lacks.
    Use: ``chunk = s.next_chunk()``; while it is not None, send it, ``s.receive(reply)``, and
    ask `next_chunk` again. `next_chunk` raises `TooLargeError` once ``max_symbols`` are spent
    without decoding."""

    def __init__(
        self, local: Encoder, *, max_symbols: int = MAX_SYMBOLS, first: int = FIRST_CHUNK
    ) -> None:
        self.local = local
        self.max_symbols = min(max_symbols, MAX_SYMBOLS)
        self.first = max(1, min(first, MAX_CHUNK, self.max_symbols))
        self.need: list[bytes] = []
        self.have: list[bytes] = []
        self.rounds = 0
        self._values: list[int] = []
        self._counts: list[int] = []
        self._decoded: dict[int, tuple[int, int]] = {}
        """Value of each decoded id → (its direction: +1 need, -1 have; its seed)."""
        self._pending: SketchChunk | None = None

    @property
    def received(self) -> int:
        """Symbols received so far."""
        return len(self._values)

    @property
    def done(self) -> bool:
        return self.received > 0 and self._values[0] == 0 and self._counts[0] == 0

    def next_chunk(self) -> SketchChunk | None:
        """The chunk to ask for next; None once decoded."""
        if self.done:
            return None
        start = self.received
        if start >= self.max_symbols:
            raise TooLargeError(
                f"the difference did not decode within {self.max_symbols} symbols"
                f" ({len(self.need) + len(self.have)} ids decoded so far)",
                field="symbols",
            )
        if start == 0:
            end = self.first
        else:
            # At least 1/8 more, then 1/4, 1/2, double: a low estimate costs a few rounds.
            floor = start + max(8, start >> max(0, 4 - self.rounds))
            end = max(floor, math.ceil(MARGIN * (len(self._decoded) + self._left())) + 8)
        end = min(end, start + MAX_CHUNK, self.max_symbols)
        self._pending = SketchChunk(start=start, end=end)
        return self._pending

    def _left(self) -> float:
        """How many ids are still undecoded, estimated from the residual counts.

        Symbol 0 holds every undecoded id: its count c_0 is (theirs less ours), exactly, and
        exactly how many are left when they all lie on one side. An undecoded id lands in symbol
        i with probability p_i = 1/(1 + i/2), so c_i has mean c_0 p_i and variance
        n p_i (1 - p_i) for n ids left on both sides together: when the spread of the counts is
        well beyond what |c_0| explains, ids lie on both sides and the spread estimates n."""
        counts = self._counts
        c0 = abs(counts[0])
        terms = []
        for i, c in enumerate(counts[1:], start=1):
            p = _density(i)
            terms.append((c - counts[0] * p) ** 2 / (p * (1.0 - p)))
        if not terms:
            return c0
        spread = sum(terms) / len(terms)
        # Symbols share ids, so the spread is noisier than independent symbols would make it:
        # only a spread well beyond what one side explains (three times, from 16 symbols; less
        # as more arrive) counts as ids on both sides.
        two_sided = spread > c0 * (1.0 + 8.0 / math.sqrt(len(terms))) + 4
        return spread if two_sided else c0

    def receive(self, reply: SketchSymbols) -> None:
        """Take the symbols answering the pending chunk; peel what decodes."""
        pending = self._pending
        if pending is None:
            raise SketchError("no chunk was asked for", field="symbols")
        if reply.start != pending.start:
            raise SketchError(f"symbols start at {reply.start}, not {pending.start}", field="start")
        n = pending.end - pending.start
        if len(reply.data) != n * SYMBOL_SIZE:
            raise SketchError(f"expected {n} symbols of {SYMBOL_SIZE} bytes", field="data")
        self._pending = None
        self.rounds += 1
        lo, hi = pending.start, pending.end
        local_values, local_counts = self.local.cells(lo, hi)
        data = reply.data
        half = _COUNT_MOD // 2
        for j in range(n):
            o = j * SYMBOL_SIZE
            v = int.from_bytes(data[o : o + _VALUE_SIZE], "little") ^ local_values[j]
            c = int.from_bytes(data[o + _VALUE_SIZE : o + SYMBOL_SIZE], "little")
            c = (c - local_counts[j]) % _COUNT_MOD
            self._values.append(v)
            self._counts.append(c - _COUNT_MOD if c >= half else c)
        # Ids decoded earlier are taken out of the new symbols too.
        new_values, new_counts = self._values[lo:], self._counts[lo:]
        for v, (d, r) in self._decoded.items():
            _apply(new_values, new_counts, lo, hi, v, r, -d)
        self._values[lo:], self._counts[lo:] = new_values, new_counts
        self._peel([i for i in range(lo, hi) if self._counts[i] in (1, -1)])

    def _peel(self, queue: list[int]) -> None:
        values, counts, size = self._values, self._counts, self.received
        while queue:
            i = queue.pop()
            d = counts[i]
            if d not in (1, -1):
                continue
            v = values[i]
            item_id = _id_of(v)
            expected, r = _digest(item_id)
            if expected != v:
                continue  # not pure: several ids whose counts add up to ±1
            if v in self._decoded:
                raise SketchError("inconsistent symbols: an id decoded twice", field="data")
            self._decoded[v] = (d, r)
            (self.need if d == 1 else self.have).append(item_id)
            for j in _walk(r, size):
                values[j] ^= v
                counts[j] -= d
                if counts[j] in (1, -1):
                    queue.append(j)


def _density_table(n: int) -> list[float]:
    """P(index i is in an id's sequence) for i < n, exactly: from index i the next step is at
    least s with probability ((i + 1.5) / (i + 0.5 + s))^2."""
    q = [1.0] + [0.0] * (n - 1)
    for i in range(n - 1):
        for s in range(1, n - i):
            step = ((i + 1.5) / (i + 0.5 + s)) ** 2 - ((i + 1.5) / (i + 1.5 + s)) ** 2
            q[i + s] += q[i] * step
    return q


_DENSITY: Final = _density_table(64)


def _density(i: int) -> float:
    """About 1/(1 + i/2), the paper's approximation; exact for the first 64 indices."""
    return _DENSITY[i] if i < len(_DENSITY) else 1.0 / (1.0 + i / 2.0)


def _id_of(value: int) -> bytes:
    return (value & _ID_MASK).to_bytes(ID_SIZE, "little")


def _walk(r: int, end: int) -> list[int]:
    """The indices below ``end`` of the id whose seed is ``r``."""
    sqrt = math.sqrt
    out: list[int] = []
    i = 0
    while i < end:
        out.append(i)
        r = (r * _A + _C) & _MASK
        i += int((i + 1.5) * (_TWO32 / sqrt(r + 1) - 1.0)) + 1
    return out


_encoder = msgspec.msgpack.Encoder()
_chunk_decoder = msgspec.msgpack.Decoder(SketchChunk)
_symbols_decoder = msgspec.msgpack.Decoder(SketchSymbols)


def encode(message: SketchChunk | SketchSymbols) -> bytes:
    return _encoder.encode(message)


def decode_chunk(data: bytes) -> SketchChunk:
    """Decode and check a chunk request; `SketchError` or `TooLargeError` name what is wrong."""
    chunk = _decode(_chunk_decoder, data, "chunk")
    check_chunk(chunk)
    return chunk


def decode_symbols(data: bytes) -> SketchSymbols:
    """Decode a reply (its size against the chunk asked for is checked by `Session.receive`)."""
    symbols = _decode(_symbols_decoder, data, "symbols")
    if len(symbols.data) % SYMBOL_SIZE:
        raise SketchError(f"symbols are {SYMBOL_SIZE} bytes each", field="symbols.data")
    return symbols


def _decode(decoder: msgspec.msgpack.Decoder[_T], data: bytes, what: str) -> _T:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as err:
        raise SketchError(f"sketch {what}: {err}", field=what) from err
    except msgspec.DecodeError as err:
        raise SketchError(f"sketch {what} is not msgpack: {err}", field=what) from err


def reconcile_sets(
    client: Encoder, server: Encoder, *, max_symbols: int = MAX_SYMBOLS, first: int = FIRST_CHUNK
) -> tuple[list[bytes], list[bytes], int, int]:
    """Run a whole session in memory over msgpack: (have, need, rounds, bytes both ways)."""
    session = Session(client, max_symbols=max_symbols, first=first)
    exchanged = 0
    chunk = session.next_chunk()
    while chunk is not None:
        request = encode(chunk)
        reply = encode(respond(server, decode_chunk(request)))
        exchanged += len(request) + len(reply)
        session.receive(decode_symbols(reply))
        chunk = session.next_chunk()
    return session.have, session.need, session.rounds, exchanged
