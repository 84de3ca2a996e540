"""Pure domain rules: rating aggregation, freshness, evidence levels, field-level changes."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citymesh.practices.freshness import freshness
from citymesh.practices.lineage import ReplicationFact, changed_fields, evidence_level
from citymesh.practices.ratings import summarize
from citymesh.practices.taxonomy import sector_label, target_group_label
from citymesh.protocol.codes import SECTORS, TARGET_GROUPS
from citymesh.protocol.records import Contact, Evaluation, PracticeBody, Result

A = b"a" * 20
B = b"b" * 20
C = b"c" * 20


def body(**kw: object) -> PracticeBody:
    base: dict[str, object] = {
        "title": {"en": "Welcome desk"},
        "status": "active",
        "sectors": ["HOUSING"],
        "contact": Contact(role_mailbox="desk@city.example.org"),
    }
    base.update(kw)
    return PracticeBody(**base)  # type: ignore[arg-type]


def test_one_five_star_does_not_outrank_twenty_four_and_a_half() -> None:
    one = summarize([5], prior_mean=3.5)
    twenty = summarize([4, 5] * 10, prior_mean=3.5)
    assert one.bayes is not None and twenty.bayes is not None
    assert twenty.bayes > one.bayes


def test_mean_hidden_below_min_count_distribution_always_shown() -> None:
    s = summarize([5, 4], min_count=3)
    assert s.mean is None
    assert s.count == 2
    assert s.distribution == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1}
    assert summarize([5, 4, 3], min_count=3).mean == 4.0


def test_no_ratings() -> None:
    s = summarize([])
    assert (s.count, s.mean, s.bayes) == (0, None, None)


def test_scores_outside_range_refused() -> None:
    with pytest.raises(ValueError, match="outside 1-5"):
        summarize([6])


@given(st.lists(st.integers(1, 5), max_size=50), st.floats(1, 5))
def test_bayes_between_prior_and_mean(scores: list[int], prior: float) -> None:
    s = summarize(scores, prior_mean=prior, min_count=1)
    if not scores:
        return
    mean = sum(scores) / len(scores)
    assert s.bayes is not None
    assert min(mean, prior) - 1e-3 <= s.bayes <= max(mean, prior) + 1e-3


def test_freshness() -> None:
    today = datetime.date(2026, 11, 26)
    assert freshness(None, today) == "unknown"
    assert freshness(datetime.date(2026, 11, 25), today) == "overdue"
    assert freshness(datetime.date(2026, 12, 20), today) == "due"
    assert freshness(datetime.date(2027, 6, 1), today) == "fresh"


def test_evidence_levels() -> None:
    plain = body()
    assert evidence_level(plain, A, []) == "idea"
    with_results = body(results=[Result(label="People housed", value=120, unit="persons")])
    assert evidence_level(with_results, A, []) == "promising"
    evaluated = body(
        results=[Result(label="People housed", value=120)], evaluation=Evaluation(type="external")
    )
    assert evidence_level(evaluated, A, []) == "demonstrated"
    worked = [ReplicationFact(B, "running", "yes")]
    assert evidence_level(plain, A, worked) == "replicated"
    partly = [ReplicationFact(B, "running", "partly"), ReplicationFact(C, "ended", "partly")]
    assert evidence_level(plain, A, partly) == "replicated"
    failed = [ReplicationFact(B, "abandoned", "no")]
    assert evidence_level(plain, A, failed) == "idea"
    own = [ReplicationFact(A, "running", "yes")]
    assert evidence_level(plain, A, own) == "idea", "the author's own replication never counts"


def test_changed_fields() -> None:
    old = body()
    new = body(status="regular_service", sectors=["HOUSING", "WORK"])
    assert changed_fields(old, new) == ["sectors", "status"]
    assert changed_fields(old, old) == []
    first = changed_fields(None, old)
    assert {"title", "status", "sectors", "contact"} <= set(first)


def test_every_code_has_a_label() -> None:
    assert all(sector_label(c) != c for c in SECTORS)
    assert all(target_group_label(c) != c for c in TARGET_GROUPS)
