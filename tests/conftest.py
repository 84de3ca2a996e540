"""Fixtures shared by the node tests: real nats-server processes on random loopback ports.

Stacked like nats.py's own test suite: store dir (tmp_path) -> server -> URL; each test that
connects a client closes it itself.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from citymesh.node.natsserver import NatsServer, ServerConfig

NatsServerFactory = Callable[..., NatsServer]


@pytest.fixture
def nats_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServerFactory]:
    """``make(**ServerConfig fields)`` starts one more nats-server, each in its own store dir
    (unless ``store_dir`` is given); all are stopped at teardown."""
    servers: list[NatsServer] = []
    numbers = itertools.count(1)

    def make(**overrides: Any) -> NatsServer:
        if "store_dir" not in overrides:
            overrides["store_dir"] = tmp_path_factory.mktemp(f"nats{next(numbers)}")
        server = NatsServer(ServerConfig(**overrides))
        servers.append(server)
        server.start()
        return server

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """One JetStream nats-server on a random 127.0.0.1 port, its store under tmp_path."""
    with NatsServer(ServerConfig(store_dir=tmp_path / "nats")) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.client_url


@pytest.fixture
def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago, for command lines that need a number."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
