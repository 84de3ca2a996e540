"""Creating a node home: keys, config, API token and the city's first (genesis) record."""

from __future__ import annotations

import os
import secrets
import time

from citymesh.protocol.envelope import seal
from citymesh.protocol.identity import identity_of
from citymesh.protocol.records import CityBody, Record

from .config import CityConfig, Home, NodeConfig
from .store import Store


def init_home(
    home: Home,
    config: NodeConfig,
    *,
    now_ms: int | None = None,
    recovery: list[bytes] | None = None,
) -> Record:
    """Write a new identity into ``home`` and sign its genesis city record (seq 1).

    ``recovery``: public keys of the city's offline recovery keys, named in the genesis.

    Refuses to overwrite an existing identity (`ConfigError`). Offline and safe: a fresh key has
    no history anywhere, so seq 1 cannot fork.
    """
    genesis = home.create(
        config,
        seed=os.urandom(32),
        transport_seed=os.urandom(32),
        salt=os.urandom(16),
        token=secrets.token_urlsafe(32),
        recovery=recovery,
    )
    key = home.load_key()
    transport = home.load_transport_key()
    body = city_body(config.city, config.network, transport.public_key)
    created = now_ms if now_ms is not None else int(time.time() * 1000)
    record = seal(
        key,
        body=body,
        network=config.network,
        author=identity_of(genesis),
        seq=1,
        prev=None,
        created=created,
        genesis=genesis,
    )
    store = Store(home.db_path)
    try:
        store.add_own(record, relays=[], now_ms=created)
    finally:
        store.close()
    return record


def city_body(city: CityConfig, network: str, transport_key: bytes | None) -> CityBody:
    return CityBody(
        name=city.name,
        country=city.country,
        admin_code=city.admin_code,
        population_band=city.population_band,
        languages=city.languages,
        role_mailbox=city.role_mailbox,
        networks=[network],
        description=city.description,
        transport_key=transport_key,
    )
