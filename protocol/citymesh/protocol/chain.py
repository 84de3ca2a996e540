"""Pure helpers over one author's chain: gaps, equivocation, current versions, retractions, keys.

Rules (PROTOCOL.md §6):
- seq runs 1, 2, 3... per author; ``prev`` is the id of the record at seq - 1.
- A missing seq is a gap (an omission, to be fetched). Two valid records with the same seq and
  different ids are equivocation: both are kept as evidence; the author is frozen past that seq.
- For an address (kind, addr) the version with the highest seq is current.
- A retraction at seq s with addr "<kind>/<addr>" hides every version of that address below s.
  A version published after the retraction is current again.
- The signing key of an author starts as the genesis key and changes only through key_rotation
  records, each signed by the then-current key (or a genesis recovery key) and counter-signed by
  the new key; a rotation must match the previous next-key commitment when one was made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import BadSignatureError, ChainError
from .identity import Genesis, next_key_commitment
from .records import KeyRotationBody, Record
from .signing import rotation_message, verify_detached


@dataclass(frozen=True, slots=True)
class Link:
    seq: int
    id: bytes
    prev: bytes | None


@dataclass(frozen=True, slots=True)
class ChainReport:
    head_seq: int
    """Highest seq seen."""
    contiguous_seq: int
    """Highest seq up to which every record is present and linked (0 if seq 1 is missing)."""
    gaps: list[tuple[int, int]] = field(default_factory=list)
    """Missing seq ranges, inclusive."""
    equivocations: list[int] = field(default_factory=list)
    """Seqs with two or more different records."""
    broken_links: list[int] = field(default_factory=list)
    """Seqs whose prev is not the id of the (unique) record before them."""


def check_links(links: Iterable[Link]) -> ChainReport:
    by_seq: dict[int, set[bytes]] = {}
    prev_of: dict[bytes, bytes | None] = {}
    for link in links:
        by_seq.setdefault(link.seq, set()).add(link.id)
        prev_of[link.id] = link.prev
    if not by_seq:
        return ChainReport(head_seq=0, contiguous_seq=0)
    head = max(by_seq)
    gaps: list[tuple[int, int]] = []
    equivocations = sorted(s for s, ids in by_seq.items() if len(ids) > 1)
    broken: list[int] = []
    expected = 1
    for seq in sorted(by_seq):
        if seq > expected:
            gaps.append((expected, seq - 1))
        expected = seq + 1
        before = by_seq.get(seq - 1)
        if seq > 1 and before is not None and len(before) == 1:
            (prev_id,) = before
            if any(prev_of[i] != prev_id for i in by_seq[seq]):
                broken.append(seq)
    contiguous = 0
    for seq in range(1, head + 1):
        ids = by_seq.get(seq)
        if not ids or len(ids) > 1 or seq in broken:
            break
        contiguous = seq
    return ChainReport(head, contiguous, gaps, equivocations, broken)


def current_versions(records: Iterable[Record]) -> dict[tuple[str, str], Record]:
    """The current record per (kind, addr) of one author, retractions applied.

    Retraction records themselves are included under ("retraction", target).
    """
    latest: dict[tuple[str, str], Record] = {}
    for rec in records:
        key: tuple[str, str] = (rec.header.kind, rec.header.addr)
        have = latest.get(key)
        if have is None or rec.header.seq > have.header.seq:
            latest[key] = rec
    out: dict[tuple[str, str], Record] = {}
    for key, rec in latest.items():
        if key[0] == "retraction":
            out[key] = rec
            continue
        retraction = latest.get(("retraction", f"{key[0]}/{key[1]}"))
        if retraction is not None and retraction.header.seq > rec.header.seq:
            continue
        out[key] = rec
    return out


class KeyState:
    """Tracks which key may sign an author's records, from the genesis through rotations."""

    def __init__(self, genesis: Genesis) -> None:
        self.current = genesis.key
        self.recovery = tuple(genesis.recovery)
        self.commitment = genesis.next_key
        self.rotated_at: list[int] = []

    @classmethod
    def resume(
        cls, current: bytes, recovery: tuple[bytes, ...], commitment: bytes | None
    ) -> KeyState:
        """Continue from a saved state (current key, genesis recovery keys, next-key commitment)."""
        return cls(Genesis(key=current, recovery=list(recovery), next_key=commitment))

    def check_signer(self, record: Record) -> None:
        signer = record.header.signer
        if signer == self.current:
            return
        if isinstance(record.body, KeyRotationBody) and signer in self.recovery:
            return
        raise ChainError(
            f"seq {record.header.seq} is signed by a key that is not the author's current key",
            field="signer",
        )

    def apply(self, record: Record) -> None:
        """Check the signer; apply a rotation. Call in seq order."""
        self.check_signer(record)
        body = record.body
        if not isinstance(body, KeyRotationBody):
            return
        by_recovery = record.header.signer in self.recovery and record.header.signer != self.current
        if body.by_recovery != by_recovery:
            raise ChainError("by_recovery does not match the key that signed the rotation")
        if (
            not by_recovery
            and self.commitment is not None
            and next_key_commitment(body.new_key) != self.commitment
        ):
            raise ChainError("the new key does not match the committed next key", field="new_key")
        try:
            verify_detached(
                body.new_key,
                rotation_message(record.header.author, body.new_key),
                body.counter_signature,
            )
        except BadSignatureError as err:
            raise ChainError("the new key's counter-signature does not verify") from err
        self.current = body.new_key
        self.commitment = body.next_key
        self.rotated_at.append(record.header.seq)
