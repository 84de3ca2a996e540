"""Disclosure control applied at the source, before anything is signed.

For tables of counts (``measure == "count"``):

1. Cells are all combinations of the codes present, plus every margin (``_T``) computed from the
   unrounded cells. Missing combinations count as 0.
2. Primary suppression: a cell with 1 <= count < threshold is suppressed (``primary``). A cell
   that was suppressed in an earlier release of the series stays suppressed (``carried``), so two
   periods cannot be differenced around a protected cell.
3. Secondary suppression: every line (the cells along one dimension plus its total, the other
   dimensions fixed) holds no suppressed cell, or at least two whose counts add up to at least
   the threshold; otherwise the smallest other cell of the line that is at least the threshold
   is suppressed too (``secondary``), repeated to a fixed point.
4. Published counts are rounded to ``rounding_base`` by unbiased random rounding whose coin is a
   keyed hash (HMAC-SHA256) of the indicator, the cell and its true value: an unchanged release is
   byte-identical, and repeating it gives the attacker nothing to average. Margins are rounded
   independently from their own unrounded sums.

For means, medians, rates and shares, each value needs its ``base`` (the number of people or cases
behind it); a value whose base is below ``min_base`` is suppressed (``base``). Values are not
rounded and carry no margins.

Suppressed cells are published as suppressed (SDMX OBS_STATUS "O", CONF_STATUS "C" primary or
"D" secondary), never as zero. Pure: the caller passes the rows, the key and the previous pattern.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from citymesh.protocol.codes import ConfStatus, ObsStatus

from .indicators import TOTAL, IndicatorDef

MIN_PEOPLE_THRESHOLD: Final = 10
"""Counts of people by migratory status are never protected by a threshold below this."""

CellKey = tuple[tuple[str, str], ...]
Reason = Literal["primary", "secondary", "carried", "base", "missing"]
HASH_CONTEXT: Final = b"citymesh/rounding/v1\x00"


class TableError(ValueError):
    """Input that cannot be an aggregate table; says why and what to do instead."""

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.row = row
        self.column = column


@dataclass(frozen=True, slots=True)
class Row:
    dims: Mapping[str, str]
    count: int | None = None
    value: float | None = None
    base: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    threshold: int = 10
    rounding_base: int = 5
    min_base: int = 10

    def for_indicator(self, defn: IndicatorDef) -> Policy:
        """The policy in force for ``defn``: people counts never below the minimum threshold."""
        if defn.counts_people and self.threshold < MIN_PEOPLE_THRESHOLD:
            return Policy(MIN_PEOPLE_THRESHOLD, self.rounding_base, self.min_base)
        return self


@dataclass(frozen=True, slots=True)
class Cell:
    dims: dict[str, str]
    value: float | None
    reason: Reason | None = None
    """Why it is suppressed; None when published."""

    @property
    def suppressed(self) -> bool:
        return self.reason is not None

    @property
    def obs_status(self) -> ObsStatus:
        return "O" if self.suppressed else "A"

    @property
    def conf_status(self) -> ConfStatus:
        if self.reason in ("primary", "carried", "base"):
            return "C"
        if self.reason == "secondary":
            return "D"
        return "F"


@dataclass(frozen=True, slots=True)
class Release:
    cells: list[Cell]
    policy: Policy
    method: str
    suppressed_keys: frozenset[CellKey] = field(default_factory=frozenset)
    """The suppression pattern to carry into the next release of the series."""


def cell_key(dims: Mapping[str, str]) -> CellKey:
    return tuple(sorted(dims.items()))


def protect(
    defn: IndicatorDef,
    rows: Sequence[Row],
    *,
    policy: Policy,
    key: bytes,
    carried: Iterable[CellKey] = (),
) -> Release:
    """Apply disclosure control to validated rows (see `check_rows`)."""
    policy = policy.for_indicator(defn)
    if defn.measure == "count":
        return _protect_counts(defn, rows, policy, key, frozenset(carried))
    return _protect_values(defn, rows, policy)


def _protect_values(defn: IndicatorDef, rows: Sequence[Row], policy: Policy) -> Release:
    cells = []
    for row in rows:
        if row.value is None:
            cells.append(Cell(dict(row.dims), None, "missing"))
        elif row.base is None or row.base < policy.min_base:
            cells.append(Cell(dict(row.dims), None, "base"))
        else:
            cells.append(Cell(dict(row.dims), round(row.value, 3)))
    cells.sort(key=lambda c: _order(defn, c.dims))
    return Release(
        cells,
        policy,
        f"values published only where based on at least {policy.min_base}",
        frozenset(cell_key(c.dims) for c in cells if c.suppressed),
    )


def _protect_counts(
    defn: IndicatorDef, rows: Sequence[Row], policy: Policy, key: bytes, carried: frozenset[CellKey]
) -> Release:
    dims = defn.dimensions
    codes = {d: sorted({row.dims[d] for row in rows}) for d in dims}
    interior: dict[CellKey, int] = {}
    for combo in itertools.product(*(codes[d] for d in dims)):
        interior[tuple(sorted(zip(dims, combo, strict=True)))] = 0
    for row in rows:
        interior[cell_key({d: row.dims[d] for d in dims})] += row.count or 0
    values = dict(interior)
    for size in range(1, len(dims) + 1):
        for totalled in itertools.combinations(dims, size):
            sums: dict[CellKey, int] = {}
            for k, v in interior.items():
                margin = tuple((d, TOTAL if d in totalled else c) for d, c in k)
                sums[margin] = sums.get(margin, 0) + v
            values.update(sums)
    reasons: dict[CellKey, Reason] = {}
    for k, v in values.items():
        if k in carried:
            reasons[k] = "carried"
        elif 0 < v < policy.threshold:
            reasons[k] = "primary"
    _secondary(dims, codes, values, reasons, policy.threshold)
    cells = []
    for k, v in values.items():
        reason = reasons.get(k)
        published = None if reason else float(_round(defn.code, k, v, policy.rounding_base, key))
        named = dict(k)
        cells.append(Cell({d: named[d] for d in dims}, published, reason))
    cells.sort(key=lambda c: _order(defn, c.dims))
    method = (
        f"counts 1-{policy.threshold - 1} suppressed; complementary suppression (at least two "
        f"per line); keyed random rounding to base {policy.rounding_base}; margins from "
        "unrounded data; pattern carried across the series"
    )
    return Release(cells, policy, method, frozenset(reasons))


def _lines(dims: tuple[str, ...], codes: Mapping[str, Sequence[str]]) -> Iterable[list[CellKey]]:
    """Every line: one dimension varies over its codes and its total, the others fixed."""
    for d in dims:
        others = [x for x in dims if x != d]
        for fixed in itertools.product(*([*codes[o], TOTAL] for o in others)):
            assignment = dict(zip(others, fixed, strict=True))
            yield [tuple(sorted({**assignment, d: c}.items())) for c in [*codes[d], TOTAL]]


def _secondary(
    dims: tuple[str, ...],
    codes: Mapping[str, Sequence[str]],
    values: Mapping[CellKey, int],
    reasons: dict[CellKey, Reason],
    threshold: int,
) -> None:
    """Suppress complementary cells until every line is safe: no suppressed cell, or at least
    two whose values add up to at least the threshold (so their sum, which the published cells
    of the line reveal up to rounding, does not pin a small count)."""
    lines = list(_lines(dims, codes))
    changed = True
    while changed:
        changed = False
        for line in lines:
            hidden = [k for k in line if k in reasons]
            if not hidden:
                continue
            if len(hidden) >= 2 and sum(values[k] for k in hidden) >= threshold:
                continue
            candidates = [k for k in line if k not in reasons]
            if not candidates:
                continue
            interior = [k for k in candidates if k != line[-1]]
            # The smallest interior cell large enough to hide the others; else the largest
            # interior cell; the line's total only when nothing else is left.
            big = [k for k in interior if values[k] >= threshold]
            if big:
                choice = min(big, key=lambda k: (values[k], k))
            elif interior:
                choice = max(interior, key=lambda k: (values[k], k))
            else:
                choice = candidates[0]
            reasons[choice] = "secondary"
            changed = True


def _round(code: str, k: CellKey, value: int, base: int, key: bytes) -> int:
    if base <= 1:
        return value
    rest = value % base
    if rest == 0:
        return value
    message = HASH_CONTEXT + repr((code, k, value)).encode()
    coin = int.from_bytes(hmac.new(key, message, hashlib.sha256).digest()[:8], "big") / 2**64
    down = value - rest
    return down + base if coin < rest / base else down


def _order(defn: IndicatorDef, dims: Mapping[str, str]) -> tuple[tuple[int, str], ...]:
    return tuple((1 if dims.get(d) == TOTAL else 0, dims.get(d, "")) for d in defn.dimensions)
