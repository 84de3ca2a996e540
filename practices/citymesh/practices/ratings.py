"""Rating aggregation: a shrunk (Bayesian) mean, so one 5-star rating does not outrank twenty 4.5s.

bayes = (prior_weight * prior_mean + sum(scores)) / (prior_weight + n)

The prior mean is the mean of all current ratings the node holds (or 3.0 when it holds none); the
plain mean is hidden below ``min_count`` ratings, the distribution is always shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_PRIOR_MEAN = 3.0
DEFAULT_PRIOR_WEIGHT = 5.0
DEFAULT_MIN_COUNT = 3


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    mean: float | None
    bayes: float | None
    distribution: dict[str, int] = field(default_factory=dict)
    min_count: int = DEFAULT_MIN_COUNT


def summarize(
    scores: Iterable[int],
    *,
    prior_mean: float = DEFAULT_PRIOR_MEAN,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    min_count: int = DEFAULT_MIN_COUNT,
) -> Summary:
    distribution = {str(s): 0 for s in range(1, 6)}
    total = 0
    n = 0
    for score in scores:
        if not 1 <= score <= 5:
            raise ValueError(f"score {score} is outside 1-5")
        distribution[str(score)] += 1
        total += score
        n += 1
    return Summary(
        count=n,
        mean=round(total / n, 2) if n >= min_count and n else None,
        bayes=round(bayes_mean(total, n, prior_mean, prior_weight), 3) if n else None,
        distribution=distribution,
        min_count=min_count,
    )


def bayes_mean(total: float, n: int, prior_mean: float, prior_weight: float) -> float:
    return (prior_weight * prior_mean + total) / (prior_weight + n)
