"""Freshness of a practice against its review-by date. The caller passes today's date."""

from __future__ import annotations

import datetime
from typing import Literal

Freshness = Literal["fresh", "due", "overdue", "unknown"]
DUE_WITHIN = datetime.timedelta(days=60)
"""A practice whose review-by date is this close counts as due for review."""


def freshness(review_by: datetime.date | None, today: datetime.date) -> Freshness:
    if review_by is None:
        return "unknown"
    if review_by < today:
        return "overdue"
    if review_by - today <= DUE_WITHIN:
        return "due"
    return "fresh"
