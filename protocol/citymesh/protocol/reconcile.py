"""Range-based set reconciliation in the style of Nostr's negentropy (NIP-77). Pure: no I/O.

Two parties each hold a set of items ``(timestamp, id)`` (for citymesh: a record's ``created`` and
its 32-byte id) and want the symmetric difference: which ids one has that the other lacks.

Items are sorted by (timestamp, id). A message is a list of consecutive *ranges* that together
cover the item space from the lowest bound up to the last range's upper bound (anything beyond the
last range is skipped). A range's lower bound is the previous range's upper bound (the first
starts at (0, b"")); a bound is a timestamp and an id prefix (just long enough to separate two
neighbouring items), and an item is inside a range when lower <= (timestamp, id) < upper.

Each range has a mode:

- ``SKIP``: nothing to do here (the two sides agree, or the sender has finished this range).
- ``FINGERPRINT``: a digest of the sender's items in the range (the sum of their ids modulo 2^256
  and their count, hashed with SHA-256 and truncated to 16 bytes, as NIP-77 does). The receiver
  compares it with its own: equal means the range agrees (reply SKIP); different means it splits
  its own items of the range into ``BUCKETS`` sub-ranges with their fingerprints, or, when it holds
  fewer than ``ID_LIST_BELOW`` there, sends them as an ID_LIST.
- ``ID_LIST``: every id the sender holds in the range. The initiator compares it with its own ids
  (what it lacks: *need*; what the other lacks: *have*) and is done with the range; the responder
  replies with its own ID_LIST for the range so the initiator can do that.

The initiator (`Reconciler`) starts with `Reconciler.initiate` and feeds each reply to
`Reconciler.reconcile` until it returns None. The responder keeps no state between messages:
`respond` maps one message to its reply (an HTTP handler can serve it without sessions).

Sums of ids make fingerprints incremental: `ItemSet` keeps prefix sums, so any range's fingerprint
costs two lookups, whatever its size.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from .errors import MalformedError, TooLargeError

VERSION: Final = 1
ID_SIZE: Final = 32
FINGERPRINT_SIZE: Final = 16
INFINITY: Final = 2**63 - 1
"""The timestamp of the bound past every item (no item may carry it). NIP-77 reserves 2^64 - 1;
msgpack decoders commonly stop at int64, so here timestamps stay below 2^63 - 1."""
BUCKETS: Final = 16
"""Sub-ranges a mismatched range is split into."""
ID_LIST_BELOW: Final = 2 * BUCKETS
"""A mismatched range with fewer items than this is sent as an id list, not split further."""
MAX_RANGES: Final = 16_384
"""Ranges in one message at most (a message is bounded by the HTTP body limit anyway)."""
MAX_IDS_BYTES: Final = 8192 * ID_SIZE
_MOD: Final = 2**256

SKIP: Final = 0
FINGERPRINT: Final = 1
ID_LIST: Final = 2

Mode = Annotated[int, Meta(ge=SKIP, le=ID_LIST)]
Timestamp = Annotated[int, Meta(ge=0, le=INFINITY)]


class ReconcileError(MalformedError):
    """A reconciliation message that breaks a rule (bounds out of order, wrong payload size)."""

    code = "bad_reconcile"


class Range(Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One range of a message, encoded as a 4-element array ``[ts, prefix, mode, payload]``.

    ``ts`` is the upper bound's timestamp, delta-encoded as in NIP-77: 0 means infinity, else
    1 + (timestamp - previous upper bound's timestamp). ``payload`` is empty (SKIP), the 16-byte
    fingerprint (FINGERPRINT) or the concatenated 32-byte ids (ID_LIST)."""

    # The byte limits are rounded up to a multiple of 3 so that, as base64 in JSON, the length
    # limit of the text and of the bytes agree; `check_message` holds the exact sizes.
    ts: Timestamp
    prefix: Annotated[bytes, Meta(max_length=-(-ID_SIZE // 3) * 3)]
    mode: Mode
    payload: Annotated[bytes, Meta(max_length=-(-MAX_IDS_BYTES // 3) * 3)] = b""


class Message(Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One negentropy message: ``[version, [range, ...]]``."""

    version: Annotated[int, Meta(ge=1, le=1)]
    ranges: Annotated[list[Range], Meta(max_length=MAX_RANGES)]


Bound = tuple[int, bytes]
"""(timestamp, id prefix): items (ts, id) compare against it as tuples."""
Item = tuple[int, bytes]

MIN_BOUND: Final[Bound] = (0, b"")
MAX_BOUND: Final[Bound] = (INFINITY, b"")

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode_message(message: Message) -> bytes:
    return _encoder.encode(message)


def decode_message(data: bytes) -> Message:
    """Decode and check a message; `ReconcileError` (a `MalformedError`) names what is wrong."""
    try:
        message = _decoder.decode(data)
    except msgspec.ValidationError as err:
        raise ReconcileError(f"reconcile message: {err}", field="message") from err
    except msgspec.DecodeError as err:
        raise ReconcileError(f"reconcile message is not msgpack: {err}", field="message") from err
    check_message(message)
    return message


def check_message(message: Message) -> None:
    """Bounds strictly increasing, nothing after an infinite bound, payloads of the right size."""
    if len(message.ranges) > MAX_RANGES:
        raise TooLargeError(f"more than {MAX_RANGES} ranges", field="message.ranges")
    prev: Bound = MIN_BOUND
    for i, (bound, r) in enumerate(zip(_bounds(message.ranges), message.ranges, strict=True)):
        where = f"message.ranges[{i}]"
        if bound <= prev and i > 0:
            raise ReconcileError("range bounds must increase", field=where)
        if prev == MAX_BOUND and i > 0:
            raise ReconcileError("no range may follow the infinite bound", field=where)
        if len(r.prefix) > ID_SIZE:
            raise ReconcileError(f"an id prefix is at most {ID_SIZE} bytes", field=where)
        if len(r.payload) > MAX_IDS_BYTES:
            raise TooLargeError(f"a payload is at most {MAX_IDS_BYTES} bytes", field=where)
        if bound[0] == INFINITY and bound[1]:
            raise ReconcileError("the infinite bound takes no id prefix", field=where)
        if r.mode == SKIP and r.payload:
            raise ReconcileError("a skip carries no payload", field=where)
        if r.mode == FINGERPRINT and len(r.payload) != FINGERPRINT_SIZE:
            raise ReconcileError(f"a fingerprint is {FINGERPRINT_SIZE} bytes", field=where)
        if r.mode == ID_LIST and len(r.payload) % ID_SIZE:
            raise ReconcileError(f"an id list is a multiple of {ID_SIZE} bytes", field=where)
        prev = bound


def _bounds(ranges: Iterable[Range]) -> Iterable[Bound]:
    ts = 0
    for r in ranges:
        ts = INFINITY if r.ts == 0 else min(ts + r.ts - 1, INFINITY)
        yield ts, r.prefix


class _Writer:
    """Builds a message: delta-encodes bounds, merges consecutive skips, drops trailing skips."""

    def __init__(self) -> None:
        self.ranges: list[Range] = []
        self._last_ts = 0
        self._pending_skip: Bound | None = None

    def _emit(self, bound: Bound, mode: int, payload: bytes) -> None:
        ts, prefix = bound
        if ts == INFINITY:
            delta = 0
        else:
            delta = 1 + ts - self._last_ts
            self._last_ts = ts
        self.ranges.append(Range(delta, prefix, mode, payload))

    def skip(self, upper: Bound) -> None:
        self._pending_skip = upper

    def add(self, upper: Bound, mode: int, payload: bytes) -> None:
        if self._pending_skip is not None:
            self._emit(self._pending_skip, SKIP, b"")
            self._pending_skip = None
        self._emit(upper, mode, payload)

    def message(self) -> Message:
        return Message(VERSION, self.ranges)


class ItemSet:
    """A sorted, de-duplicated set of items with prefix sums of the ids (for fingerprints)."""

    def __init__(self, items: Iterable[Item]) -> None:
        keys = sorted(set(items))
        for ts, item_id in keys[:1] + keys[-1:]:
            if len(item_id) != ID_SIZE or not 0 <= ts < INFINITY:
                raise ValueError(f"items are (0 <= timestamp < 2^63 - 1, {ID_SIZE}-byte id)")
        self.keys: list[Item] = keys
        sums = [0] * (len(keys) + 1)
        total = 0
        for i, (_, item_id) in enumerate(keys):
            if len(item_id) != ID_SIZE:
                raise ValueError(f"ids are {ID_SIZE} bytes")
            total += int.from_bytes(item_id, "little")
            sums[i + 1] = total
        self._sums = sums

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, bound: Bound) -> int:
        """Index of the first item >= bound."""
        if bound[0] == INFINITY:
            return len(self.keys)
        return bisect_left(self.keys, bound)

    def fingerprint(self, lo: int, hi: int) -> bytes:
        total = (self._sums[hi] - self._sums[lo]) % _MOD
        return fingerprint_of(total, hi - lo)

    def ids(self, lo: int, hi: int) -> list[bytes]:
        return [item_id for _, item_id in self.keys[lo:hi]]


def fingerprint_of(id_sum: int, count: int) -> bytes:
    """SHA-256 over (sum of ids mod 2^256, little-endian 32 bytes) and the count as a varint."""
    return hashlib.sha256(id_sum.to_bytes(32, "little") + _varint(count)).digest()[
        :FINGERPRINT_SIZE
    ]


def _varint(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def _separator(before: Item, after: Item) -> Bound:
    """The shortest bound > ``before`` and <= ``after``."""
    if before[0] != after[0]:
        return after[0], b""
    a, b = before[1], after[1]
    n = 0
    while n < ID_SIZE and a[n] == b[n]:
        n += 1
    return after[0], b[: n + 1]


def _split(items: ItemSet, lo: int, hi: int, upper: Bound, out: _Writer) -> None:
    """Our items of [lo, hi) as an id list (few) or as BUCKETS fingerprinted sub-ranges."""
    n = hi - lo
    if n < ID_LIST_BELOW:
        out.add(upper, ID_LIST, b"".join(items.ids(lo, hi)))
        return
    per, extra = divmod(n, BUCKETS)
    start = lo
    for b in range(BUCKETS):
        end = start + per + (1 if b < extra else 0)
        bound = upper if b == BUCKETS - 1 else _separator(items.keys[end - 1], items.keys[end])
        out.add(bound, FINGERPRINT, items.fingerprint(start, end))
        start = end


def _split_ids(payload: bytes) -> list[bytes]:
    return [payload[i : i + ID_SIZE] for i in range(0, len(payload), ID_SIZE)]


@dataclass
class Outcome:
    """What one step found: ids we have that the other side lacks, and ids we lack."""

    have: list[bytes] = field(default_factory=list)
    need: list[bytes] = field(default_factory=list)


def _process(items: ItemSet, message: Message, *, initiator: bool) -> tuple[Message, Outcome]:
    check_message(message)
    out = _Writer()
    outcome = Outcome()
    lo = 0
    for upper, r in zip(_bounds(message.ranges), message.ranges, strict=True):
        hi = items.find(upper)
        if r.mode == SKIP:
            out.skip(upper)
        elif r.mode == FINGERPRINT:
            if items.fingerprint(lo, hi) == r.payload:
                out.skip(upper)
            else:
                _split(items, lo, hi, upper, out)
        else:
            theirs = _split_ids(r.payload)
            if initiator:
                ours = set(items.ids(lo, hi))
                their_set = set(theirs)
                outcome.have.extend(i for i in items.ids(lo, hi) if i not in their_set)
                outcome.need.extend(i for i in dict.fromkeys(theirs) if i not in ours)
                out.skip(upper)
            else:
                out.add(upper, ID_LIST, b"".join(items.ids(lo, hi)))
        lo = hi
    return out.message(), outcome


def respond(items: ItemSet, message: Message) -> Message:
    """The responder's reply to one message (stateless)."""
    reply, _ = _process(items, message, initiator=False)
    return reply


class Reconciler:
    """The initiator's side: accumulates what it has and needs across rounds."""

    def __init__(self, items: ItemSet) -> None:
        self.items = items
        self.have: list[bytes] = []
        self.need: list[bytes] = []

    def initiate(self) -> Message:
        out = _Writer()
        _split(self.items, 0, len(self.items), MAX_BOUND, out)
        return out.message()

    def reconcile(self, reply: Message) -> Message | None:
        """Take the responder's reply; the next message to send, or None when done."""
        message, outcome = _process(self.items, reply, initiator=True)
        self.have.extend(outcome.have)
        self.need.extend(outcome.need)
        return message if message.ranges else None


def reconcile_sets(
    client: ItemSet, server: ItemSet, *, max_rounds: int = 64
) -> tuple[list[bytes], list[bytes], int, int]:
    """Run a whole reconciliation in memory: (have, need, rounds, bytes exchanged both ways)."""
    rec = Reconciler(client)
    message: Message | None = rec.initiate()
    rounds = 0
    sent = 0
    while message is not None:
        if rounds >= max_rounds:
            raise ReconcileError(f"no agreement after {max_rounds} rounds")
        data = encode_message(message)
        reply = respond(server, decode_message(data))
        reply_data = encode_message(reply)
        sent += len(data) + len(reply_data)
        rounds += 1
        message = rec.reconcile(decode_message(reply_data))
    return rec.have, rec.need, rounds, sent
