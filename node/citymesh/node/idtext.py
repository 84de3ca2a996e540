"""Identity texts and fingerprints of authors for API answers, made once per author per process.

Both are a pure-Python bech32m checksum (about 0.2 and 0.1 ms each), and a city list shows both
for every city: 0.6 s for 2,000 cities, on every request. `warm` makes them for every author the
store holds (at node start, see warmup.py), so even the first city list finds them made.
"""

from __future__ import annotations

import functools
import sqlite3

from citymesh.protocol.identity import fingerprint as _fingerprint
from citymesh.protocol.identity import identity_text as _identity_text

LIMIT = 100_000
"""Authors kept (about 200 bytes each); the least recently used go first past this."""

identity_text = functools.lru_cache(maxsize=LIMIT)(_identity_text)
"""The identity text of an author (ingest asks it for every rating and practice too)."""
fingerprint = functools.lru_cache(maxsize=LIMIT)(_fingerprint)


def warm(db: sqlite3.Connection) -> None:
    """Make the texts of every author the store holds (up to `LIMIT`)."""
    for (author,) in db.execute("SELECT author FROM authors LIMIT ?", (LIMIT,)):
        identity_text(bytes(author))
        fingerprint(bytes(author))
