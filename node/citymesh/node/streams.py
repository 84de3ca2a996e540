"""The JetStream stream that keeps a network's full log.

One stream per network, subjects ``cm.<network>.>``, file storage, nothing expires: a relay is a
cache of every signed record, and nodes repair it. ``Nats-Msg-Id`` (the record id) deduplicates
republished records within ``DUPLICATE_WINDOW``; beyond it ingest is idempotent anyway.
"""

from __future__ import annotations

from typing import Any, Final

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError

from citymesh.protocol.envelope import MAX_ENVELOPE
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.subjects import network_filter, stream_name

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
