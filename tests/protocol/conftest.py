"""Small fixtures for the protocol tests: a deterministic key, its genesis and record builders.

The test packages (``tests/__init__.py``, ``tests/protocol/__init__.py``) let the tests import
their helpers relatively (``from .builders import ...``) under pytest's default ``prepend``
import mode, with no ``sys.path`` changes and no clashes with same-named test files elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from citymesh.protocol.identity import Genesis, SecretKey, identity_of
from citymesh.protocol.records import Record

from .builders import build_record, make_genesis, records_of_every_kind, secret_key


@pytest.fixture
def secret() -> SecretKey:
    """The deterministic signing key of the test city."""
    return secret_key(0)


@pytest.fixture
def genesis(secret: SecretKey) -> Genesis:
    return make_genesis(secret)


@pytest.fixture
def author(genesis: Genesis) -> bytes:
    return identity_of(genesis)


@pytest.fixture
def make_record(secret: SecretKey, genesis: Genesis) -> Callable[..., Record]:
    """``make_record(kind, seq=..., prev=..., body=..., addr=..., created=...)`` seals a valid record."""
    builder: Callable[..., Record] = partial(build_record, secret=secret, genesis=genesis)
    return builder


@pytest.fixture
def first_record(make_record: Callable[..., Record]) -> Record:
    """The test city's seq-1 record (a city profile carrying the genesis)."""
    return make_record("city")


@pytest.fixture(scope="session")
def every_kind() -> dict[str, Record]:
    """One valid record of each kind (``city`` at seq 1, the rest at seq 2)."""
    return records_of_every_kind()
