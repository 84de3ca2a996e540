"""HTTP schemas of the sync routes a node serves to its peers (omission repair, anti-entropy).

- ``GET /v1/sync/heads`` → `SyncHeads` (JSON): how far each author's chain is applied here.
- ``GET /v1/sync/records?author=&after=&limit=`` or ``?ids=<hex>,<hex>…`` → `SyncRecords` as
  **msgpack** (``application/msgpack``): the raw signed envelopes, byte for byte as stored, in chain
  order (seq, then id). Envelopes are binary and verified by the receiver, so they travel as
  msgpack ``bin`` (no base64 inflation); ``more`` says whether a next page exists after ``last``.
- ``POST /v1/sync/reconcile`` with `ReconcileIn` (msgpack or JSON) → `ReconcileOut` (same
  encoding as the request): one negentropy round (see `citymesh.protocol.reconcile`) over the ids
  of the records this node stores, optionally scoped to one kind and a ``created`` time range.
- ``POST /v1/sync/sketch`` with `SketchIn` (msgpack or JSON) → `SketchOut` (same encoding): coded
  symbols [start, end) of a rateless IBLT over the same ids (see `citymesh.protocol.sketch`),
  same scope; a few kilobytes whatever the differences, where ranges pay per scattered one.

These routes serve signed public records only and change nothing: they need no bearer token.
"""

from __future__ import annotations

from typing import Annotated, Final

from msgspec import Meta, Struct

from .api import IdentityText, RequestStruct
from .reconcile import Message
from .records import KINDS, TimestampMs
from .sketch import SketchChunk, SketchSymbols

MAX_PAGE: Final = 1000
"""Records in one ``GET /v1/sync/records`` page at most."""
MAX_IDS: Final = 100
"""Ids in one ``GET /v1/sync/records?ids=`` request at most."""

HexId = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", title="RecordId")]
Seq = Annotated[int, Meta(ge=0, le=2**53 - 1)]


class SyncHead(Struct, frozen=True, kw_only=True):
    """One author's chain as applied here: ``seq`` and the ``id`` of the record at that seq."""

    author: IdentityText
    seq: Seq
    id: HexId | None
    frozen_seq: Seq | None = None
    """Set when the author equivocated at that seq (nothing from there on is applied)."""


class SyncHeads(Struct, frozen=True, kw_only=True):
    network: str
    heads: list[SyncHead]


class SyncRecordsQuery(RequestStruct, frozen=True, kw_only=True):
    """Query of ``GET /v1/sync/records``: either ``author`` (with ``after``) or ``ids``."""

    author: IdentityText | None = None
    after: Annotated[int, Meta(ge=0, le=2**53 - 1, description="Records with seq > after.")] = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE)] = 256
    ids: (
        Annotated[
            str,
            Meta(
                pattern=r"^[0-9a-f]{64}(,[0-9a-f]{64}){0,99}$",
                description="Up to 100 record ids (the URL stays under 8 KiB), hex, comma-separated.",
            ),
        ]
        | None
    ) = None


class SyncRecords(Struct, frozen=True, kw_only=True):
    """A page of raw envelopes (msgpack ``bin``), in chain order."""

    records: list[bytes]
    more: bool = False
    last: Seq | None = None
    """The seq of the last record in the page (pass it as ``after`` for the next page)."""


Kind = Annotated[str, Meta(pattern="^(" + "|".join(sorted(KINDS)) + ")$")]


class ReconcileIn(RequestStruct, frozen=True, kw_only=True):
    """One negentropy round over this node's record ids (items: (created, id))."""

    message: Message
    kind: Kind | None = None
    since: TimestampMs | None = None
    """Only records created at or after this (UTC ms)."""
    until: TimestampMs | None = None
    """Only records created before this (UTC ms)."""


class ReconcileOut(Struct, frozen=True, kw_only=True):
    message: Message


class SketchIn(RequestStruct, frozen=True, kw_only=True):
    """Which coded symbols of this node's record ids to send; scoped as in `ReconcileIn`."""

    chunk: SketchChunk
    kind: Kind | None = None
    since: TimestampMs | None = None
    """Only records created at or after this (UTC ms)."""
    until: TimestampMs | None = None
    """Only records created before this (UTC ms)."""


class SketchOut(Struct, frozen=True, kw_only=True):
    symbols: SketchSymbols


SCHEMA_TYPES: Final[tuple[type[Struct], ...]] = (
    SyncHeads,
    SyncRecordsQuery,
    SyncRecords,
    ReconcileIn,
    ReconcileOut,
    SketchIn,
    SketchOut,
)
