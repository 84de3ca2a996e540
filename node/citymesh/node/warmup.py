"""What a node prepares once at start, on a thread of its own, so that the first requests after
a start find warm caches instead of building them: the identity texts of every author
(idtext.py; a city list shows them for every city) and the search's facet index (search.py; a
first search at 100,000 practices otherwise builds it: about 1.2 s).

`warm` runs on its own read-only connection (WAL: it never blocks the writer) while the node
serves: requests other than searches do not wait for it, and a search that arrives before the
index is built waits for this build rather than starting one of its own.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from . import idtext, search
from .store.db import StoreError, connect

log = logging.getLogger("citymesh.node.warmup")


def warm(path: Path) -> None:
    """Build the caches of the database at ``path`` (blocking: call it on a thread)."""
    try:
        db = connect(path, readonly=True)
    except StoreError as err:
        log.warning("cannot prepare the caches: %s", err)
        return
    try:
        t0 = time.perf_counter()
        idtext.warm(db)  # first: a tenth of the index's time at 2,000 cities
        t1 = time.perf_counter()
        search.warm_index(db)
        log.info(
            "caches ready: identity texts in %.2f s, search index in %.2f s",
            t1 - t0,
            time.perf_counter() - t1,
        )
    except sqlite3.Error as err:  # a cache is only a head start: searches build their own
        log.warning("cannot prepare the caches: %s", err)
    finally:
        db.close()
