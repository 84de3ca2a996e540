"""``citymesh relay run``: configure and supervise a nats-server that carries networks' logs.

The relay is nats-server itself (JetStream with ``sync_interval: always``, file store under the
relay's store directory, monitoring endpoint); citymesh only writes its configuration, makes sure
each network's stream exists, and stops the server cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nats
from nats.errors import Error as NatsError

from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.subjects import check_network

from .natsserver import NatsServer, NatsServerError, ServerConfig, relevant_log_line
from .streams import StreamConfigError, ensure_stream

DEFAULT_NETWORK: Final = "citymesh"
DEFAULT_LISTEN: Final = "127.0.0.1:4222"
DEFAULT_MONITOR: Final = "127.0.0.1:8222"
DEFAULT_MAX_FILE_STORE: Final = 10 * 1024**3
DEFAULT_MAX_MEMORY_STORE: Final = 256 * 1024**2

_HOSTNAME = re.compile(
    r"\A(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
_SIZE = re.compile(r"\A\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*\Z", re.IGNORECASE)
_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class RelayError(Exception):
    """The relay could not start or its nats-server stopped unexpectedly (one line)."""


@dataclass(frozen=True, kw_only=True)
class RelayConfig:
    """A relay: where it stores, where it listens, which networks it carries.

    Port ``0`` (client or monitor) means any free port; ``monitor=None`` turns monitoring off.
    """

    store: Path
    host: str = "127.0.0.1"
    port: int = 4222
    networks: tuple[str, ...] = (DEFAULT_NETWORK,)
    monitor: tuple[str, int] | None = ("127.0.0.1", 8222)
    max_file_store: int = DEFAULT_MAX_FILE_STORE
    max_memory_store: int = DEFAULT_MAX_MEMORY_STORE
    server_name: str | None = None
    replicas: int = 1


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6 addresses) → (host, port); ValueError if malformed."""
    value = text.strip()
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r} is not HOST:PORT (IPv6 form: [ADDRESS]:PORT)")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:4222")
        if ":" in host:
            raise ValueError(f"{text!r}: write IPv6 addresses in brackets, e.g. [::1]:4222")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(f"{text!r}: {host!r} is not an IP address or host name") from None
    return host, int(port_text)


def parse_size(text: str) -> int:
    """``1073741824``, ``512M``, ``10G``, ``10GiB`` (binary units) → bytes; ValueError if not."""
    match = _SIZE.match(text)
    if not match or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a size such as 512M, 10G or a number of bytes")
    return int(match[1]) * _UNITS[match[2].upper()]


def check_networks(networks: Iterable[str]) -> tuple[str, ...]:
    """Valid network names, duplicates removed, order kept; ValueError naming the bad one."""
    seen: dict[str, None] = {}
    for network in networks:
        try:
            seen[check_network(network)] = None
        except ProtocolError as err:
            raise ValueError(err.message) from err
    if not seen:
        raise ValueError("at least one network is needed")
    return tuple(seen)


def server_config(cfg: RelayConfig) -> ServerConfig:
    """The nats-server configuration of a relay: JetStream store under ``cfg.store``."""
    monitor_host, monitor_port = cfg.monitor if cfg.monitor is not None else (None, None)
    return ServerConfig(
        store_dir=cfg.store,
        host=cfg.host,
        port=cfg.port or -1,
        monitor_host=monitor_host,
        monitor_port=(monitor_port or -1) if monitor_port is not None else None,
        server_name=cfg.server_name,
        max_file_store=cfg.max_file_store,
        max_memory_store=cfg.max_memory_store,
    )


def ready_line(server: NatsServer, networks: Iterable[str]) -> str:
    monitor = server.monitor_url or "off"
    return (
        f"citymesh relay ready: {server.client_url} monitor {monitor} "
        f"networks {','.join(networks)} log {server.log_path}"
    )


async def prepare_streams(url: str, networks: Iterable[str], *, replicas: int = 1) -> None:
    """Connect to a relay and ensure every network's stream."""
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream()
        for network in networks:
            await ensure_stream(js, network, replicas=replicas)
    finally:
        await nc.close()


@contextlib.contextmanager
def _signals_set(event: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGINT, signal.SIGTERM)
    for sig in sigs:
        loop.add_signal_handler(sig, event.set)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


async def run_relay(
    cfg: RelayConfig,
    *,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Start the relay, ensure its streams, announce one line, run until ``stop`` is set (by
    default: until SIGINT or SIGTERM), then stop nats-server. RelayError on any failure."""
    try:
        networks = check_networks(cfg.networks)
    except ValueError as err:
        raise RelayError(str(err)) from err
    if stop is None:
        stop = asyncio.Event()
        with _signals_set(stop):
            await _run(cfg, networks, stop, announce)
    else:
        await _run(cfg, networks, stop, announce)


async def _run(
    cfg: RelayConfig,
    networks: tuple[str, ...],
    stop: asyncio.Event,
    announce: Callable[[str], None],
) -> None:
    server = NatsServer(server_config(cfg))
    try:
        await asyncio.to_thread(server.start)
    except NatsServerError as err:
        raise RelayError(f"{err.message} (log: {server.log_path})") from err
    exited: asyncio.Task[int | None] | None = None
    stopping: asyncio.Task[bool] | None = None
    try:
        try:
            await prepare_streams(server.client_url, networks, replicas=cfg.replicas)
        except StreamConfigError as err:
            raise RelayError(str(err)) from err
        except (OSError, NatsError) as err:
            raise RelayError(f"cannot set up streams on {server.client_url}: {err}") from err
        if stop.is_set():
            return
        announce(ready_line(server, networks))
        exited = asyncio.create_task(asyncio.to_thread(server.wait))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done() and not stop.is_set():
            code = exited.result()
            if code != 0:
                await asyncio.to_thread(server.stop)  # reap, and read the log to its end
                last = relevant_log_line(server.log_tail())
                how = f"with code {code}"
                if code is not None and code < 0:
                    how = f"killed by {signal.Signals(-code).name}"
                raise RelayError(f"nats-server exited unexpectedly, {how}; last log line: {last}")
    finally:
        await asyncio.to_thread(server.stop)
        if stopping is not None:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
        if exited is not None:
            await exited
