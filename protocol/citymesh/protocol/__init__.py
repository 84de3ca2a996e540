"""citymesh wire protocol: signed records, identities, subjects and API schemas.

Pure: no I/O, no clock, no randomness. Callers pass time (`now_ms`) and keys in.
The byte-level specification is ``protocol/PROTOCOL.md`` in the source tree.
"""

PROTOCOL_VERSION = 1
"""Major protocol version carried in every payload header (``v``)."""

ENVELOPE_VERSION = 1
"""First element of every envelope array."""
