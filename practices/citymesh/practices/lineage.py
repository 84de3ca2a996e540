"""Replication lineage and evidence levels.

Evidence levels (lowest to highest):
- idea: described, no reported results.
- promising: reported results with values, or an evaluation, but no replication that worked.
- demonstrated: an internal/external/academic evaluation and results with values.
- replicated: at least one other city reports a replication that worked (worked = "yes"), or two
  that worked partly.
Replications by the author itself never count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import msgspec

from citymesh.protocol.records import PracticeBody

EvidenceLevel = Literal["idea", "promising", "demonstrated", "replicated"]
RIGOROUS = frozenset({"internal", "external", "academic"})


@dataclass(frozen=True, slots=True)
class ReplicationFact:
    author: bytes
    status: str
    worked: str | None


def evidence_level(
    practice: PracticeBody, author: bytes, replications: Iterable[ReplicationFact]
) -> EvidenceLevel:
    worked = [r.worked for r in replications if r.author != author]
    if worked.count("yes") >= 1 or worked.count("partly") >= 2:
        return "replicated"
    has_values = any(r.value is not None for r in practice.results)
    if practice.evaluation.type in RIGOROUS and has_values:
        return "demonstrated"
    if has_values or practice.evaluation.type != "none":
        return "promising"
    return "idea"


def changed_fields(old: PracticeBody | None, new: PracticeBody) -> list[str]:
    """Top-level body fields whose value differs between two versions (all set ones if no old)."""
    new_fields = msgspec.structs.asdict(new)
    if old is None:
        return sorted(k for k, v in new_fields.items() if v not in (None, "", [], {}, False))
    old_fields = msgspec.structs.asdict(old)
    return sorted(k for k, v in new_fields.items() if old_fields.get(k) != v)
