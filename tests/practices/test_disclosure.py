"""Disclosure control: properties over random tables, an LP audit of what the published margins
of two consecutive releases reveal, and refusal of person-level input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from citymesh.practices.disclosure import Cell, Policy, Release, Row, TableError, cell_key, protect
from citymesh.practices.indicators import CATALOGUE, TOTAL
from citymesh.practices.tables import check_rows, parse_csv

SHELTER = CATALOGUE["SHELTER_USERS"]  # SEX x AGE x MIG_STATUS, persons
FOOD = CATALOGUE["FOOD_AID_USERS"]
KEY = b"k" * 32
POLICY = Policy()

SEXES = ("F", "M")
AGES = ("Y18-24", "Y25-34", "Y35-49")
STATUSES = ("REFUGEE", "ASYLUM_SEEKER", "HOST")


def table(counts: list[int]) -> list[Row]:
    combos = list(itertools.product(SEXES, AGES, STATUSES))
    return [
        Row(dims={"SEX": s, "AGE": a, "MIG_STATUS": m}, count=n)
        for (s, a, m), n in zip(combos, counts, strict=False)
    ]


counts = st.lists(st.one_of(st.integers(0, 12), st.integers(0, 400)), min_size=18, max_size=18)


def lines(release: Release) -> list[list[Cell]]:
    by_key = {cell_key(c.dims): c for c in release.cells}
    dims = SHELTER.dimensions
    codes = {d: sorted({c.dims[d] for c in release.cells} - {TOTAL}) for d in dims}
    out = []
    for d in dims:
        others = [x for x in dims if x != d]
        for fixed in itertools.product(*([*codes[o], TOTAL] for o in others)):
            base = dict(zip(others, fixed, strict=True))
            out.append([by_key[cell_key({**base, d: c})] for c in [*codes[d], TOTAL]])
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts)
def test_published_counts_are_safe(values: list[int]) -> None:
    release = protect(SHELTER, table(values), policy=POLICY, key=KEY)
    for cell in release.cells:
        if cell.suppressed:
            assert cell.value is None, "suppressed cells are never published as a number"
            assert cell.obs_status == "O" and cell.conf_status in ("C", "D")
        else:
            assert cell.value is not None
            assert not 1 <= cell.value <= 9, "no published count is 1-9"
            assert cell.value % 5 == 0, "every published count is a multiple of 5"
    for line in lines(release):
        assert sum(c.suppressed for c in line) != 1, "no line has exactly one suppressed cell"


@settings(max_examples=30, deadline=None)
@given(counts)
def test_deterministic(values: list[int]) -> None:
    a = protect(SHELTER, table(values), policy=POLICY, key=KEY)
    b = protect(SHELTER, list(reversed(table(values))), policy=POLICY, key=KEY)
    assert a.cells == b.cells


@settings(max_examples=40, deadline=None)
@given(counts, st.integers(0, 17))
def test_one_more_person_in_a_small_cell_is_not_revealed(values: list[int], at: int) -> None:
    values = list(values)
    values[at] = 1 + values[at] % 8  # a small cell (1..8)
    before = protect(SHELTER, table(values), policy=POLICY, key=KEY)
    after_values = list(values)
    after_values[at] += 1
    after = protect(
        SHELTER, table(after_values), policy=POLICY, key=KEY, carried=before.suppressed_keys
    )
    small = table(values)[at].dims
    (cell,) = [c for c in after.cells if c.dims == dict(small)]
    assert cell.suppressed
    assert before.suppressed_keys <= after.suppressed_keys, "the pattern is carried"
    assert all(c.value is None or c.value % 5 == 0 for c in after.cells)


def _lp_bounds(releases: list[tuple[list[Row], Release]]) -> list[tuple[float, float, int]]:
    """For every suppressed interior cell: the narrowest range the published cells allow.

    Unknowns: the true interior counts of each release. Constraints: each published cell (interior
    or margin) lies within its rounding interval; all counts >= 0 and the suppressed ones are
    either 0 or >= 1 (relaxed to >= 0). Returns (min, max, true value) per suppressed cell.
    """
    bounds = []
    for rows, release in releases:
        keys = [cell_key(r.dims) for r in rows]
        index = {k: i for i, k in enumerate(keys)}
        truth = {cell_key(r.dims): r.count or 0 for r in rows}
        a_ub: list[list[float]] = []
        b_ub: list[float] = []
        for cell in release.cells:
            if cell.suppressed or cell.value is None:
                continue
            members = [
                index[k]
                for k in keys
                if all(cell.dims[d] in (TOTAL, dict(k)[d]) for d in cell.dims)
            ]
            row = [0.0] * len(keys)
            for i in members:
                row[i] = 1.0
            lo = 0.0 if cell.value == 0 else cell.value - 4
            hi = cell.value + 4 if cell.value else 0.0
            a_ub.append(row)
            b_ub.append(hi)
            a_ub.append([-x for x in row])
            b_ub.append(-lo)
        for cell in release.cells:
            k = cell_key(cell.dims)
            if not cell.suppressed or k not in index:
                continue
            objective = np.zeros(len(keys))
            objective[index[k]] = 1.0
            low = linprog(objective, A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs")
            high = linprog(-objective, A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs")
            assert low.status == 0 and high.status in (0, 3)
            upper = float("inf") if high.status == 3 else -high.fun
            bounds.append((low.fun, upper, truth[k]))
    return bounds


@pytest.mark.parametrize("seed", range(20))
def test_lp_audit_two_consecutive_releases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q1 = [int(x) for x in rng.choice([0, 2, 3, 5, 8, 14, 25, 60, 120, 300], size=18)]
    q2 = [max(0, v + int(rng.integers(-3, 4))) for v in q1]
    rows1, rows2 = table(q1), table(q2)
    r1 = protect(SHELTER, rows1, policy=POLICY, key=KEY)
    r2 = protect(SHELTER, rows2, policy=POLICY, key=KEY, carried=r1.suppressed_keys)
    checked = 0
    for low, high, true in _lp_bounds([(rows1, r1), (rows2, r2)]):
        assert low - 1e-6 <= true <= high + 1e-6, "the bound must contain the truth"
        if 0 < true < POLICY.threshold:
            checked += 1
            assert high - low >= POLICY.threshold, (
                f"a small cell ({true}) is pinned to [{low:.1f}, {high:.1f}]"
            )
    assert checked > 0, "the releases hold small cells to audit"


def test_threshold_never_below_ten_for_people() -> None:
    release = protect(SHELTER, table([4] + [200] * 17), policy=Policy(threshold=3), key=KEY)
    assert release.policy.threshold == 10
    assert any(c.reason == "primary" for c in release.cells)


def test_rates_need_a_base_of_at_least_ten() -> None:
    rate = CATALOGUE["EMPLOYMENT_RATE"]
    rows = [
        Row(dims={"SEX": "F", "C_BIRTH": "FOR"}, value=61.5, base=240),
        Row(dims={"SEX": "M", "C_BIRTH": "FOR"}, value=70.0, base=7),
    ]
    release = protect(rate, check_rows(rate, rows), policy=POLICY, key=KEY)
    assert [(c.value, c.reason) for c in release.cells] == [(61.5, None), (None, "base")]


GOOD_CSV = "SEX,AGE,MIG_STATUS,count\n" + "\n".join(
    f"{s},{a},{m},{n}"
    for (s, a, m), n in zip(itertools.product(SEXES, AGES, STATUSES), range(10, 28), strict=False)
)


def test_csv_reads_an_aggregate_table() -> None:
    rows = parse_csv(FOOD, GOOD_CSV)
    assert len(rows) == 18 and rows[0].count == 10


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("SEX,AGE,MIG_STATUS,name,count\nF,Y18-24,REFUGEE,Ana,1\n", "personal data"),
        ("person_id,SEX,AGE,MIG_STATUS,count\n17,F,Y18-24,REFUGEE,1\n", "personal data"),
        ("SEX,AGE,MIG_STATUS,colour,count\nF,Y18-24,REFUGEE,red,3\n", "not a dimension"),
        ("SEX,AGE,count\nF,Y18-24,3\n", "'MIG_STATUS' is missing"),
        ("SEX,AGE,MIG_STATUS\nF,Y18-24,REFUGEE\n", "'count' is missing"),
        ("SEX,AGE,MIG_STATUS,count\nF,Y18-24,MARTIAN,3\n", "not in the code list"),
        ("SEX,AGE,MIG_STATUS,count\nF,Y18-24,REFUGEE,-3\n", "whole number"),
        (
            "SEX,AGE,MIG_STATUS,count\nF,Y18-24,REFUGEE,3\nF,Y18-24,REFUGEE,4\n",
            "one row per person",
        ),
        ("SEX,AGE,MIG_STATUS,count\n_T,Y18-24,REFUGEE,30\n", "leave totals out"),
        (
            "SEX,AGE,MIG_STATUS,count\n"
            + "\n".join(f"{s},{a},REFUGEE,1" for s, a in itertools.product(SEXES, AGES)),
            "person-level",
        ),
        ("", "empty"),
        ("SEX,AGE,MIG_STATUS,count\nF,Y18-24\n", "fields"),
    ],
)
def test_csv_refuses_what_is_not_an_aggregate(text: str, says: str) -> None:
    with pytest.raises(TableError, match=says):
        parse_csv(FOOD, text)
