"""Rating and replication figures of many practices at once, at the end of an ingest batch.

`catalogue.refresh_stats` recomputes one practice with about ten statements. During a catch-up
most records are ratings and replications of different practices, and every one of them paid
that. Here the practices a batch touched are recomputed together: one statement reads the new
and the stored figures of all of them, and only those whose figures moved are written, with one
tick of the change counter for the whole batch. The result is the same as refreshing each
practice one at a time, in any order (figures are recomputed from the current tables).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from .catalogue import _bump, _has_search

CHUNK = 500
"""Practices per read (the refs travel as one JSON array parameter)."""

_FIGURES = """
SELECT d.value,
    (SELECT count(*) FROM ratings WHERE ref = d.value AND counts),
    (SELECT coalesce(sum(score), 0) FROM ratings WHERE ref = d.value AND counts),
    (SELECT count(*) FROM replications WHERE ref = d.value AND counts),
    (SELECT coalesce(sum(worked = 'yes'), 0) FROM replications WHERE ref = d.value AND counts),
    s.ref IS NOT NULL, s.rating_count, s.rating_sum, s.replications, s.worked
FROM json_each(?) d LEFT JOIN practice_stats s ON s.ref = d.value
"""


def refresh_many(db: sqlite3.Connection, refs: Iterable[str]) -> int:
    """Recompute the figures of ``refs`` (inside the caller's transaction); return how many
    practices' search figures changed."""
    written: list[tuple[str, int, int, int, int]] = []
    shown: list[tuple[int, int, int, str]] = []
    delta_count = delta_sum = 0
    ordered = sorted(set(refs))
    for i in range(0, len(ordered), CHUNK):
        rows = db.execute(_FIGURES, (json.dumps(ordered[i : i + CHUNK]),)).fetchall()
        for ref, count, total, replications, worked, known, *stored in rows:
            new = (int(count), int(total), int(replications), int(worked))
            old = tuple(int(v) for v in stored) if known else (0, 0, 0, 0)
            if not known or old != new:
                written.append((str(ref), *new))
            if old[:3] != new[:3]:
                delta_count += new[0] - old[0]
                delta_sum += new[1] - old[1]
                shown.append((*new[:3], str(ref)))
    if written:
        db.executemany(
            "INSERT INTO practice_stats (ref, rating_count, rating_sum, replications, worked)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (ref) DO UPDATE SET"
            " rating_count = excluded.rating_count, rating_sum = excluded.rating_sum,"
            " replications = excluded.replications, worked = excluded.worked",
            written,
        )
    if not shown or not _has_search(db):
        return len(shown)
    db.execute(
        "UPDATE search_state SET rating_count = rating_count + ?, rating_sum = rating_sum + ?"
        " WHERE id = 0",
        (delta_count, delta_sum),
    )
    tick = _bump(db, text=False)  # one tick for the batch: readers ask for rows changed since
    db.executemany(
        "UPDATE practice_search SET rating_count = ?, rating_sum = ?, replications = ?,"
        " changed = ? WHERE ref = ?",
        [(count, total, replications, tick, ref) for count, total, replications, ref in shown],
    )
    return len(shown)
