"""The JetStream stream that keeps a network's full log.

One stream per network, subjects ``cm.<network>.>``, file storage, nothing expires: a relay is a
cache of every signed record, and nodes repair it. ``Nats-Msg-Id`` (the record id) deduplicates
republished records within ``DUPLICATE_WINDOW``; beyond it ingest is idempotent anyway.

Linked networks: a network's stream may *source* another network's stream from a relay across a
leaf-node link (JetStream domains). Only the origin's own records cross, ``cm.<origin>.*.*`` (four
tokens), and they land as ``cm.<network>.<origin>.<author>.<kind>`` (five tokens): inside the
network's ``cm.<network>.>`` so its nodes receive them, never on a member's own subject, never
matching the per-kind filters ``cm.<network>.*.<kind>``, and never sourced again (a record makes
one hop, so links between relays can never form a cycle, whatever the stewards configure).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    ExternalStream,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
    StreamSource,
    SubjectTransform,
)
from nats.js.errors import APIError, NotFoundError

from citymesh.protocol.envelope import MAX_ENVELOPE
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.subjects import SUBJECT_ROOT, check_network, network_filter, stream_name

DUPLICATE_WINDOW: Final = 120.0
"""Seconds JetStream remembers a ``Nats-Msg-Id``."""
HEADER_ROOM: Final = 8 * 1024
STREAM_MAX_MSG_SIZE: Final = MAX_ENVELOPE + HEADER_ROOM
"""A stored message is headers plus the envelope; the server counts both against this limit."""
_STREAM_NAME_IN_USE: Final = 10058


class StreamConfigError(Exception):
    """The network's stream cannot be created or does not match what citymesh needs."""


def _wanted(network: str, replicas: int) -> dict[str, Any]:
    """The settings ensure_stream owns; anything else on an existing stream (sources,
    placement, metadata a steward added) is left as it is."""
    return {
        "subjects": [network_filter(network)],
        "retention": RetentionPolicy.LIMITS,
        "storage": StorageType.FILE,
        "discard": DiscardPolicy.OLD,
        "max_age": 0.0,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_msgs_per_subject": -1,
        "max_msg_size": STREAM_MAX_MSG_SIZE,
        "duplicate_window": DUPLICATE_WINDOW,
        "allow_direct": True,
        "num_replicas": replicas,
    }


def _differences(config: StreamConfig, wanted: dict[str, Any]) -> list[str]:
    return [key for key, value in wanted.items() if getattr(config, key) != value]


async def ensure_stream(js: JetStreamContext, network: str, *, replicas: int = 1) -> StreamInfo:
    """Create the network's stream, or bring an existing one to citymesh's settings.

    Idempotent: an existing stream that already matches is returned untouched. A stream of that
    name over other subjects, or one the server refuses to change, is a StreamConfigError.
    """
    try:
        name = stream_name(network)
    except ProtocolError as err:
        raise StreamConfigError(str(err)) from err
    if replicas < 1:
        raise StreamConfigError(f"replicas must be at least 1, not {replicas}")
    wanted = _wanted(network, replicas)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        config = StreamConfig(
            name=name,
            description=f"citymesh network {network}: every signed record, kept forever",
            **wanted,
        )
        try:
            return await js.add_stream(config)
        except APIError as err:
            if err.err_code != _STREAM_NAME_IN_USE:
                raise StreamConfigError(
                    f"cannot create stream {name} for network {network!r}: {err.description}"
                ) from err
            info = await js.stream_info(name)  # created concurrently by someone else
    existing = info.config
    subjects = sorted(existing.subjects or [])
    if subjects != wanted["subjects"]:
        raise StreamConfigError(
            f"stream {name} already exists with subjects {subjects}, not {wanted['subjects']}: "
            f"it is not network {network!r}'s citymesh stream; rename or remove it"
        )
    changed = _differences(existing, wanted)
    if not changed:
        return info
    try:
        return await js.update_stream(existing.evolve(**wanted))
    except APIError as err:
        raise StreamConfigError(
            f"stream {name} exists with different {', '.join(changed)} and the server refused "
            f"to change it: {err.description}"
        ) from err


@dataclass(frozen=True, slots=True)
class LinkedSource:
    """Another network's stream, read over a leaf-node link from JetStream domain ``domain``."""

    network: str
    domain: str

    def stream_source(self, into: str) -> StreamSource:
        """The source entry of network ``into``'s stream."""
        return StreamSource(
            name=stream_name(self.network),
            external=ExternalStream(api=f"$JS.{self.domain}.API"),
            subject_transforms=[
                SubjectTransform(
                    src=f"{SUBJECT_ROOT}.{self.network}.*.*",
                    dest=linked_prefix(into, self.network) + ".{{wildcard(1)}}.{{wildcard(2)}}",
                )
            ],
        )


def linked_prefix(network: str, origin: str) -> str:
    """Where records of network ``origin`` land in network ``network``'s stream."""
    return f"{SUBJECT_ROOT}.{check_network(network)}.{check_network(origin)}"


def _is_linked(source: StreamSource, network: str) -> bool:
    """A source that ensure_sources manages (its transform lands in the linked namespace)."""
    for transform in source.subject_transforms or []:
        if (
            transform.dest.startswith(f"{SUBJECT_ROOT}.{network}.")
            and transform.dest.count(".") == 4
        ):
            return True
    return False


def _same(a: StreamSource, b: StreamSource) -> bool:
    return (
        a.name == b.name
        and (a.external.api if a.external else None) == (b.external.api if b.external else None)
        and [(t.src, t.dest) for t in a.subject_transforms or []]
        == [(t.src, t.dest) for t in b.subject_transforms or []]
    )


async def ensure_sources(
    js: JetStreamContext, network: str, sources: Iterable[LinkedSource]
) -> StreamInfo:
    """Make network's stream source exactly ``sources`` among the linked sources citymesh manages
    (other sources a steward added are kept). The stream must exist (ensure_stream first)."""
    name = stream_name(network)
    wanted = [s.stream_source(network) for s in dict.fromkeys(sources)]
    if any(s.name == name for s in wanted):
        raise StreamConfigError(f"network {network!r} cannot source its own stream")
    info = await js.stream_info(name)
    existing = list(info.config.sources or [])
    kept = [s for s in existing if not _is_linked(s, network)]
    mine = [s for s in existing if _is_linked(s, network)]
    if len(mine) == len(wanted) and all(any(_same(m, w) for m in mine) for w in wanted):
        return info
    try:
        return await js.update_stream(info.config.evolve(sources=kept + wanted or None))
    except APIError as err:
        raise StreamConfigError(
            f"cannot link stream {name} to {', '.join(s.name for s in wanted) or 'nothing'}: "
            f"{err.description}"
        ) from err
