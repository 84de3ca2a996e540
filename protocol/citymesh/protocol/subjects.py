"""NATS subjects and stream names (PROTOCOL.md §8).

Subject per author and kind: ``cm.<network>.<author>.<kind>``. Every token is lowercase ASCII
letters, digits and hyphens or underscores: never ``.``, ``*``, ``>`` or whitespace. The subject
count stays at cities x kinds, not records.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import InvalidRecordError
from .identity import identity_text
from .records import KINDS, Record

SUBJECT_ROOT: Final = "cm"
_NETWORK = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?\Z")


def check_network(network: str) -> str:
    if not _NETWORK.match(network):
        raise InvalidRecordError(
            f"network name {network[:40]!r} must be 1-32 lowercase letters, digits or inner hyphens",
            field="network",
        )
    return network


def subject(network: str, author: bytes, kind: str) -> str:
    if kind not in KINDS:
        raise InvalidRecordError(f"unknown kind {kind!r}", field="kind")
    return f"{SUBJECT_ROOT}.{check_network(network)}.{identity_text(author)}.{kind}"


def subject_of(record: Record) -> str:
    return subject(record.header.network, record.header.author, record.header.kind)


def network_filter(network: str) -> str:
    """All records of a network."""
    return f"{SUBJECT_ROOT}.{check_network(network)}.>"


def author_filter(network: str, author: bytes) -> str:
    """All records of one author in a network (guards append order)."""
    return f"{SUBJECT_ROOT}.{check_network(network)}.{identity_text(author)}.*"


def kind_filter(network: str, kind: str) -> str:
    """One kind network-wide, e.g. every rating."""
    if kind not in KINDS:
        raise InvalidRecordError(f"unknown kind {kind!r}", field="kind")
    return f"{SUBJECT_ROOT}.{check_network(network)}.*.{kind}"


def stream_name(network: str) -> str:
    """JetStream stream holding a network's full log."""
    return "CM_" + check_network(network).upper().replace("-", "_")
