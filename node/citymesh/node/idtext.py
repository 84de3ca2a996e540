"""Identity texts and fingerprints of authors for API answers, made once per author per process.

Both are a pure-Python bech32m checksum (about 0.2 and 0.1 ms each), and a city list shows both
for every city: 0.6 s for 2,000 cities, on every request. `warm` makes them for every author the
store holds (at node start, see warmup.py), so even the first city list finds them made.
"""

from __future__ import annotations

import sqlite3

from citymesh.protocol.identity import fingerprint as _fingerprint
from citymesh.protocol.identity import identity_text as _identity_text

LIMIT = 100_000
"""Authors kept (about 200 bytes each); past this the cache starts over."""

_texts: dict[bytes, str] = {}
_fingerprints: dict[bytes, str] = {}


def identity_text(author: bytes) -> str:
    text = _texts.get(author)
    if text is None:
        if len(_texts) >= LIMIT:
            _texts.clear()
        text = _texts[author] = _identity_text(author)
    return text


def fingerprint(author: bytes) -> str:
    text = _fingerprints.get(author)
    if text is None:
        if len(_fingerprints) >= LIMIT:
            _fingerprints.clear()
        text = _fingerprints[author] = _fingerprint(author)
    return text


def warm(db: sqlite3.Connection) -> None:
    """Make the texts of every author the store holds (up to `LIMIT`)."""
    for (author,) in db.execute("SELECT author FROM authors LIMIT ?", (LIMIT,)):
        identity_text(bytes(author))
        fingerprint(bytes(author))
