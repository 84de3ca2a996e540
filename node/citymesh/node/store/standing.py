"""Whether an author's record counts under the node's trust policy (read inside a transaction).

- No trust anchors configured: an open network, every valid record counts.
- Otherwise a record counts when its author is a member of a followed network, or was one and
  the record is at or below the seq its revocation names. Records of other authors are kept and
  shown as unverified; they never count in ratings or replication evidence.
"""

from __future__ import annotations

import sqlite3

EVERYTHING = 2**62
"""A counting limit above any seq."""


def is_open(db: sqlite3.Connection) -> bool:
    return bool(db.execute("SELECT NOT EXISTS (SELECT 1 FROM trust_anchors)").fetchone()[0])


def counting_limit(db: sqlite3.Connection, author: bytes) -> int:
    """The highest seq of the author's records that counts (0: none)."""
    open_network, state, until = db.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM trust_anchors), t.state, t.until_seq"
        " FROM (SELECT 1) LEFT JOIN trust t ON t.author = ?",
        (author,),
    ).fetchone()
    if open_network or state == "member":
        return EVERYTHING
    if state == "revoked" and until is not None:
        return int(until)
    return 0


def counts(db: sqlite3.Connection, author: bytes, seq: int) -> bool:
    return seq <= counting_limit(db, author)
