"""Trust routes: the network charter, admitting and revoking cities, rotating the signing key."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from citymesh.protocol import api
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import (
    SecretKey,
    fingerprint,
    identity_text,
    parse_public_key,
    public_key_text,
)
from citymesh.protocol.records import CityBody, MembershipBody, NetworkBody, Policies

from .daemon import RecoveryKeyError
from .errors import ApiError
from .keys import NODE
from .routes import json_response, read_json

_city = msgspec.json.Decoder(CityBody)


async def charter(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_json(request, api.NetworkIn)
    assert isinstance(body, api.NetworkIn)
    stewards = [api.identity_from_text(s, field="stewards") for s in body.stewards]
    if body.admission_threshold > len(stewards):
        raise ApiError(
            400,
            "invalid",
            "the admission threshold exceeds the number of stewards",
            field="admission_threshold",
        )
    record = await node.publish(
        NetworkBody(
            title=body.title,
            description=body.description,
            stewards=stewards,
            admission_threshold=body.admission_threshold,
            relays=body.relays,
            policies=Policies(
                max_records_per_hour=body.max_records_per_hour,
                min_count_threshold=body.min_count_threshold,
            ),
        ),
        addr=node.network,
    )
    await node.trust_own_charter()
    return json_response(
        api.Published(
            ref=f"{identity_text(node.identity)}/{node.network}",
            id=record.id.hex(),
            seq=record.seq,
            kind="network",
            author=identity_text(node.identity),
        ),
        status=201,
    )


async def member(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_json(request, api.MemberIn)
    assert isinstance(body, api.MemberIn)
    member_id = api.identity_from_text(body.member, field="member")
    store = node.writer.store
    assert store is not None
    profile_json = await node.writer.run(store.current_body, member_id, "city", "")
    profile = _city.decode(profile_json) if profile_json else None
    city = body.city or (profile.name if profile else None)
    if city is None:
        raise ApiError(
            422, "unknown_city", "no profile of that city here: give its name", field="city"
        )
    transport: bytes | None = profile.transport_key if profile else None
    if body.transport_key is not None:
        transport = parse_public_key(body.transport_key)
    until_seq = body.until_seq
    if body.status == "revoked" and until_seq is None:
        until_seq, _ = await node.writer.run(store.applied_head, member_id)
    record = await node.publish(
        MembershipBody(
            network=node.network,
            member=member_id,
            city=city,
            role=body.role,
            status=body.status,
            transport_key=transport,
            valid_from=int(time.time() * 1000),
            reason=body.reason,
            until_seq=until_seq,
            replaces=api.identity_from_text(body.replaces, field="replaces")
            if body.replaces
            else None,
        ),
        addr=body.member,
    )
    return json_response(
        api.Published(
            ref=f"{identity_text(node.identity)}/{body.member}",
            id=record.id.hex(),
            seq=record.seq,
            kind="membership",
            author=identity_text(node.identity),
        ),
        status=201,
    )


async def rotate(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if request.body_exists:  # no body, or an empty object
        await read_json(request, api.KeyRotateIn)
    record = await node.rotate_key()
    return json_response(
        api.KeyRotated(
            key=public_key_text(node.key.public_key),
            fingerprint=fingerprint(node.key.public_key),
            seq=record.seq,
            id=record.id.hex(),
        ),
        status=201,
    )


async def recover(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_json(request, api.KeyRecoverIn)
    assert isinstance(body, api.KeyRecoverIn)
    try:
        recovery = SecretKey.from_text(body.recovery_key)
    except ProtocolError as err:
        raise ApiError(422, err.code, f"recovery_key: {err.message}", field="recovery_key") from err
    try:
        record = await node.recover_key(recovery)
    except RecoveryKeyError as err:
        raise ApiError(422, "not_recovery_key", str(err), field="recovery_key") from err
    return json_response(
        api.KeyRotated(
            key=public_key_text(node.key.public_key),
            fingerprint=fingerprint(node.key.public_key),
            seq=record.seq,
            id=record.id.hex(),
        ),
        status=201,
    )


def add_trust_routes(app: web.Application) -> None:
    app.router.add_post("/v1/network", charter)
    app.router.add_post("/v1/network/members", member)
    app.router.add_post("/v1/keys/rotate", rotate)
    app.router.add_post("/v1/keys/recover", recover)
