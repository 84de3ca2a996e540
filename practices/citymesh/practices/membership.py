"""Who belongs to a network: pure rules over network charters and membership records.

- Trust starts from anchors: the steward identities a node is configured to trust.
- A charter (``network`` record, addr = network name) by an anchor names the network's stewards
  and its admission threshold; the steward set is the anchors plus the stewards their current
  charters name.
- A steward admits or revokes a city with a ``membership`` record (addr = the member's identity).
  A city is a member when at least ``threshold`` stewards' current records for it say active and
  are valid at ``now``; it is revoked when any steward's current record says revoked.
- A revocation names ``until_seq``: the member's records up to it still count (marked), later
  ones do not. Stewards are members of their own network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from citymesh.protocol.records import MembershipBody, NetworkBody

State = Literal["member", "revoked", "unknown"]


@dataclass(frozen=True, slots=True)
class Charter:
    author: bytes
    network: str
    body: NetworkBody


@dataclass(frozen=True, slots=True)
class Admission:
    steward: bytes
    body: MembershipBody


@dataclass(frozen=True, slots=True)
class Standing:
    state: State
    until_seq: int | None = None
    """For a revoked city: its records up to this seq still count."""
    role: str = "member"
    transport_key: bytes | None = None
    city: str | None = None


def stewards(network: str, anchors: Iterable[bytes], charters: Iterable[Charter]) -> set[bytes]:
    anchor_set = set(anchors)
    out = set(anchor_set)
    for charter in charters:
        if charter.network == network and charter.author in anchor_set:
            out.update(charter.body.stewards)
    return out


def threshold(network: str, anchors: Iterable[bytes], charters: Iterable[Charter]) -> int:
    anchor_set = set(anchors)
    values = [
        c.body.admission_threshold
        for c in charters
        if c.network == network and c.author in anchor_set
    ]
    return max(values, default=1)


def standings(
    network: str,
    anchors: Iterable[bytes],
    charters: Iterable[Charter],
    admissions: Iterable[Admission],
    *,
    now_ms: int,
) -> dict[bytes, Standing]:
    """The standing of every city named by a steward (plus the stewards themselves)."""
    charters = list(charters)
    steward_set = stewards(network, anchors, charters)
    need = threshold(network, anchors, charters)
    by_member: dict[bytes, list[MembershipBody]] = {}
    for a in admissions:
        if a.steward in steward_set and a.body.network == network:
            by_member.setdefault(a.body.member, []).append(a.body)
    out: dict[bytes, Standing] = {s: Standing("member", role="steward") for s in steward_set}
    for member, bodies in by_member.items():
        revoked = [b for b in bodies if b.status == "revoked"]
        if revoked:
            until = min((b.until_seq for b in revoked if b.until_seq is not None), default=None)
            out[member] = Standing("revoked", until_seq=until, city=revoked[0].city)
            continue
        active = [
            b
            for b in bodies
            if b.valid_from <= now_ms and (b.valid_until is None or now_ms < b.valid_until)
        ]
        if len(active) >= need:
            latest = max(active, key=lambda b: b.valid_from)
            role = "steward" if member in steward_set else latest.role
            out[member] = Standing(
                "member", role=role, transport_key=latest.transport_key, city=latest.city
            )
        elif member not in out:
            out[member] = Standing("unknown", city=bodies[0].city)
    return out
