"""SQLite store: raw records, derived current state, relay cursors, outbox, rejection counters."""

from .db import Store, StoreError

__all__ = ["Store", "StoreError"]
