"""``citymesh relay run``: configure and supervise a nats-server that carries networks' logs.

The relay is nats-server itself (JetStream with ``sync_interval: always``, file store under the
relay's store directory, monitoring endpoint); citymesh only writes its configuration, makes sure
each network's stream exists, and stops the server cleanly on SIGINT/SIGTERM.

- **Governed** (``stewards`` given): the relay enforces membership at the transport. nats-server
  starts with only the relay's own operator user (its nkey seed in ``<store>/relay.nk``), the
  stewards' nodes named by ``steward_keys`` and linked relays (``link_keys``). The relay then
  follows its networks' charter, membership and retraction records on its own stream
  (`Governor`), computes standings (``practices.membership``), renders the users and their
  permissions (relay_auth.py) and reloads nats-server (SIGHUP, confirmed in its log) whenever
  they change: admitted cities can log in with their transport key, revoked ones are cut off,
  and the server never restarts.
- **Cluster**: ``cluster`` + ``routes`` + a unique ``server_name`` per server; ``replicas`` sets
  the streams' replication (3 for a three-server cluster).
- **Linked networks**: ``leaf_listen`` accepts leaf-node links from other networks' relays;
  ``leaf_remotes`` links to them; ``sources`` makes this relay's streams source another network's
  stream across the link (streams.py: one hop only, so links never cycle). Linked relays need
  distinct JetStream domains (``domain``, default: the relay's first network).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext, api

from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import SecretKey, identity_text
from citymesh.protocol.subjects import check_network, stream_name

from .natsserver import (
    ClusterConfig,
    LeafRemote,
    NatsServer,
    NatsServerError,
    ServerConfig,
    relevant_log_line,
)
from .nkey import NkeyError, decode_seed, encode_public, encode_seed
from .relay_auth import (
    Grant,
    MembershipLog,
    governance_filters,
    link_grants,
    member_grants,
    render_authorization,
    steward_grants,
)
from .streams import LinkedSource, StreamConfigError, ensure_sources, ensure_stream

log = logging.getLogger("citymesh.relay")

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
_DOMAIN = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")

KEY_FILE: Final = "relay.nk"
"""The relay's own nkey seed (mode 0600): its operator login, and its login to linked relays."""
GOVERN_TICK: Final = 30.0
"""Seconds between re-checks of time-bounded memberships (valid_from / valid_until)."""
GOVERN_DEBOUNCE: Final = 0.05
CATCH_UP_TIMEOUT: Final = 15.0
DEFAULT_CLUSTER_WAIT: Final = 120.0


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
    stewards: tuple[bytes, ...] = ()
    """Trust anchors (steward identities). Given: the relay is governed (enforces membership)."""
    steward_keys: tuple[tuple[bytes, bytes], ...] = ()
    """(steward identity, transport public key): users for stewards' own nodes, so they can
    publish the charter and the first memberships."""
    link_keys: tuple[bytes, ...] = ()
    """Public keys of other networks' relays that may source this relay's streams (leaf link)."""
    cluster: str | None = None
    cluster_listen: tuple[str, int] | None = None
    routes: tuple[str, ...] = ()
    domain: str | None = None
    leaf_listen: tuple[str, int] | None = None
    leaf_remotes: tuple[str, ...] = ()
    sources: tuple[LinkedSource, ...] = ()
    key_file: Path | None = None
    """Default: ``<store>/relay.nk``."""
    cluster_wait: float = DEFAULT_CLUSTER_WAIT
    """Seconds a clustered relay waits for its peers before the streams can be set up."""

    @property
    def governed(self) -> bool:
        return bool(self.stewards)

    @property
    def key_path(self) -> Path:
        return self.key_file if self.key_file is not None else self.store / KEY_FILE

    @property
    def linked(self) -> bool:
        return bool(self.leaf_listen or self.leaf_remotes or self.sources)

    @property
    def jetstream_domain(self) -> str | None:
        """Linked relays need distinct JetStream domains: by default the first network's name."""
        if self.domain is not None:
            return self.domain
        return self.networks[0] if self.linked and self.networks else None


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


def check_config(cfg: RelayConfig) -> tuple[str, ...]:
    """The relay's networks; RelayError (one line) if the options do not fit together."""
    try:
        networks = check_networks(cfg.networks)
    except ValueError as err:
        raise RelayError(str(err)) from err
    anchors = set(cfg.stewards)
    if not cfg.governed and (cfg.steward_keys or cfg.link_keys):
        raise RelayError("--steward-key and --link-key need --steward (a governed relay)")
    for identity, _ in cfg.steward_keys:
        if identity not in anchors:
            raise RelayError(
                f"--steward-key names {identity_text(identity)}, which is not a --steward"
            )
    if cfg.replicas < 1:
        raise RelayError(f"--replicas must be at least 1, not {cfg.replicas}")
    if cfg.replicas > 1 and cfg.cluster is None:
        raise RelayError("--replicas above 1 needs a cluster (--cluster with --route)")
    if cfg.cluster is not None and not cfg.server_name:
        raise RelayError("a clustered relay needs a --server-name, unique in its cluster")
    if (cfg.routes or cfg.cluster_listen) and cfg.cluster is None:
        raise RelayError("--route and --cluster-listen need --cluster NAME")
    domain = cfg.jetstream_domain
    if domain is not None and not _DOMAIN.match(domain):
        raise RelayError(f"--domain {domain!r}: use letters, digits, '-' or '_' (at most 64)")
    if cfg.sources and not (cfg.leaf_listen or cfg.leaf_remotes):
        raise RelayError("--source needs a leaf link (--leaf-remote or --leaf-listen)")
    for source in cfg.sources:
        if source.network in networks:
            raise RelayError(f"--source {source.network}: this relay carries that network")
        if source.domain == domain:
            raise RelayError(
                f"--source {source.network}@{source.domain}: the linked relay needs a JetStream "
                f"domain other than this relay's ({domain})"
            )
    return networks


def load_relay_key(path: Path) -> str:
    """The relay's nkey seed (``SU…``), created (mode 0600) on first use."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        seed = encode_seed(os.urandom(32))
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_relay_key(path)  # created meanwhile by another process
        except OSError as err:
            raise RelayError(f"cannot create the relay key {path}: {err.strerror or err}") from err
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(seed + "\n")
        return seed
    except (OSError, UnicodeDecodeError) as err:
        raise RelayError(f"cannot read the relay key {path}: {err}") from err
    try:
        decode_seed(text)
    except NkeyError as err:
        raise RelayError(f"{path} does not hold a user nkey seed: {err}") from err
    return text


def public_nkey(seed: str) -> str:
    """``U…`` of an ``SU…`` seed."""
    return encode_public(SecretKey(decode_seed(seed)).public_key)


def static_grants(cfg: RelayConfig, networks: tuple[str, ...]) -> list[Grant]:
    """Users that do not depend on records: stewards' nodes and linked relays."""
    grants: list[Grant] = []
    keys: dict[bytes, list[bytes]] = {}
    for identity, key in cfg.steward_keys:
        keys.setdefault(identity, []).append(key)
    for network in networks:
        grants.extend(steward_grants(network, keys))
    domain = cfg.jetstream_domain
    if cfg.link_keys and domain is not None:
        grants.extend(link_grants(domain, networks, cfg.link_keys))
    return grants


def server_config(cfg: RelayConfig, *, extra: str = "", seed: str | None = None) -> ServerConfig:
    """The nats-server configuration of a relay: JetStream store under ``cfg.store``."""
    monitor_host, monitor_port = cfg.monitor if cfg.monitor is not None else (None, None)
    cluster = None
    if cfg.cluster is not None:
        listen_host, listen_port = cfg.cluster_listen or (None, -1)
        cluster = ClusterConfig(
            name=cfg.cluster, host=listen_host, port=listen_port or -1, routes=cfg.routes
        )
    leaf_host, leaf_port = cfg.leaf_listen if cfg.leaf_listen is not None else (None, None)
    return ServerConfig(
        store_dir=cfg.store,
        host=cfg.host,
        port=cfg.port or -1,
        monitor_host=monitor_host,
        monitor_port=(monitor_port or -1) if monitor_port is not None else None,
        server_name=cfg.server_name,
        max_file_store=cfg.max_file_store,
        max_memory_store=cfg.max_memory_store,
        cluster=cluster,
        leafnode_host=leaf_host,
        leafnode_port=(leaf_port or -1) if leaf_port is not None else None,
        leaf_remotes=tuple(
            LeafRemote(url=url, nkey_seed=seed, deny_imports=("cm.>",), deny_exports=("cm.>",))
            for url in cfg.leaf_remotes
        ),
        jetstream_domain=cfg.jetstream_domain,
        extra=extra,
    )


def ready_line(server: NatsServer, networks: Iterable[str]) -> str:
    monitor = server.monitor_url or "off"
    return (
        f"citymesh relay ready: {server.client_url} monitor {monitor} "
        f"networks {','.join(networks)} log {server.log_path}"
    )


async def prepare_streams(
    url: str,
    networks: Iterable[str],
    *,
    replicas: int = 1,
    seed: str | None = None,
    sources: Iterable[LinkedSource] = (),
) -> None:
    """Connect to a relay and ensure every network's stream (and its linked sources)."""
    auth = {"nkeys_seed_str": seed} if seed is not None else {}
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False, **auth)
    try:
        js = nc.jetstream()
        sources = tuple(sources)
        for network in networks:
            await ensure_stream(js, network, replicas=replicas)
            await ensure_sources(js, network, sources)
    finally:
        await nc.close()


class Governor:
    """Follows a governed relay's membership and keeps nats-server's users in step.

    Connects as the relay's operator, reads every network's charter, membership and retraction
    records with one ordered consumer per network (stream order, so any state it passes through
    is a prefix of the log), and after each change (and every ``GOVERN_TICK`` seconds, for
    time-bounded memberships) renders the authorization block; when the text differs from what
    the server runs, `NatsServer.reload` applies it without a restart.
    """

    def __init__(
        self,
        server: NatsServer,
        *,
        seed: str,
        networks: tuple[str, ...],
        anchors: Iterable[bytes],
        fixed: list[Grant],
        applied: str,
    ) -> None:
        self.server = server
        self.seed = seed
        self.operator = public_nkey(seed)
        self.networks = networks
        self.logs = {n: MembershipLog(n, frozenset(anchors)) for n in networks}
        self.fixed = fixed
        self.applied = applied
        """The authorization text the server runs now."""
        self.reloads = 0
        self.last_error: str | None = None
        self._caught_up = {n: asyncio.Event() for n in networks}
        self._changed = asyncio.Event()
        self._nc: Client | None = None
        self._task: asyncio.Task[None] | None = None

    def render(self, now_ms: int) -> str:
        grants = list(self.fixed)
        for network, membership in self.logs.items():
            grants.extend(member_grants(network, membership.standings(now_ms=now_ms)))
        return render_authorization(self.operator, grants)

    async def start(self) -> None:
        async def on_error(err: Exception) -> None:
            if isinstance(err, (nats.errors.UnexpectedEOF, nats.errors.StaleConnectionError)):
                return  # the server going away: the supervisor notices and reports that
            log.warning("relay governor: %s: %s", type(err).__name__, err)

        self._nc = await nats.connect(
            self.server.client_url,
            name="citymesh relay governor",
            nkeys_seed_str=self.seed,
            connect_timeout=5,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=on_error,
        )
        js = self._nc.jetstream(timeout=10)
        for network in self.networks:
            await self._follow(js, network)
        self._task = asyncio.create_task(self._loop(), name="relay-governor")

    async def _follow(self, js: JetStreamContext, network: str) -> None:
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.ALL, filter_subjects=list(governance_filters(network))
        )
        sub = await js.subscribe(
            "",
            stream=stream_name(network),
            cb=functools.partial(self._on_msg, network),
            ordered_consumer=True,
            config=config,
            idle_heartbeat=5.0,
        )
        info = await sub.consumer_info()
        if info.num_pending == 0 and (info.delivered is None or not info.delivered.stream_seq):
            self._caught_up[network].set()  # nothing to read

    async def _on_msg(self, network: str, msg: Msg) -> None:
        now = int(time.time() * 1000)
        if self.logs[network].add(msg.subject, msg.data, now_ms=now):
            self._changed.set()
        with contextlib.suppress(ValueError, NatsError):
            if msg.metadata.num_pending == 0:
                self._caught_up[network].set()

    async def _loop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in self._caught_up.values())), CATCH_UP_TIMEOUT
            )
        while True:
            await self.apply()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), GOVERN_TICK)
            self._changed.clear()
            await asyncio.sleep(GOVERN_DEBOUNCE)

    async def apply(self) -> bool:
        """Render the users now and reload the server if they changed; True if it reloaded."""
        text = self.render(int(time.time() * 1000))
        if text == self.applied:
            return False
        try:
            await asyncio.to_thread(self.server.reload, extra=text)
        except NatsServerError as err:
            if err.message != self.last_error:
                log.error("relay: membership changed but the reload failed: %s", err.message)
            self.last_error = err.message
            return False
        self.applied = text
        self.last_error = None
        self.reloads += 1
        users = text.count("{nkey:") - 1
        log.info("relay: membership changed; nats-server reloaded with %d users", users)
        return True

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(NatsError, OSError):
                await self._nc.close()


class Relay:
    """One relay process: its nats-server, its streams and, when governed, its Governor."""

    def __init__(self, cfg: RelayConfig) -> None:
        self.cfg = cfg
        self.networks = check_config(cfg)
        needs_key = cfg.governed or bool(cfg.leaf_remotes)
        self.seed: str | None = load_relay_key(cfg.key_path) if needs_key else None
        extra = ""
        if cfg.governed:
            assert self.seed is not None
            extra = render_authorization(public_nkey(self.seed), static_grants(cfg, self.networks))
        self.server = NatsServer(server_config(cfg, extra=extra, seed=self.seed))
        self.governor: Governor | None = None
        if cfg.governed:
            assert self.seed is not None
            self.governor = Governor(
                self.server,
                seed=self.seed,
                networks=self.networks,
                anchors=cfg.stewards,
                fixed=static_grants(cfg, self.networks),
                applied=extra,
            )

    @property
    def client_url(self) -> str:
        return self.server.client_url

    async def start(self) -> None:
        """Start nats-server, set up the streams, start governing; RelayError on failure."""
        try:
            await asyncio.to_thread(self.server.start)
        except NatsServerError as err:
            raise RelayError(f"{err.message} (log: {self.server.log_path})") from err
        await self._prepare_streams()
        if self.governor is not None:
            try:
                await self.governor.start()
            except (OSError, TimeoutError, NatsError, nats.js.errors.Error) as err:
                raise RelayError(f"cannot follow membership on {self.client_url}: {err}") from err

    async def _prepare_streams(self) -> None:
        clustered = self.cfg.cluster is not None
        deadline = time.monotonic() + (self.cfg.cluster_wait if clustered else 0.0)
        delay = 0.25
        while True:
            try:
                await prepare_streams(
                    self.client_url,
                    self.networks,
                    replicas=self.cfg.replicas,
                    seed=self.seed if self.cfg.governed else None,
                    sources=self.cfg.sources,
                )
                return
            except StreamConfigError as err:
                problem: Exception = err
                message = str(err)
            except (OSError, TimeoutError, NatsError, nats.js.errors.Error) as err:
                problem = err
                message = f"cannot set up streams on {self.client_url}: {err or type(err).__name__}"
            if time.monotonic() >= deadline:
                if clustered:
                    message += f" (waited {self.cfg.cluster_wait:g} s for the cluster)"
                raise RelayError(message) from problem
            await asyncio.sleep(delay)  # a cluster forming: peers and a meta leader to come
            delay = min(delay * 2, 2.0)

    async def stop(self) -> None:
        if self.governor is not None:
            await self.governor.stop()
        await asyncio.to_thread(self.server.stop)


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
    relay = Relay(cfg)
    if stop is None:
        stop = asyncio.Event()
        with _signals_set(stop):
            await _run(relay, stop, announce)
    else:
        await _run(relay, stop, announce)


async def _run(relay: Relay, stop: asyncio.Event, announce: Callable[[str], None]) -> None:
    server = relay.server
    exited: asyncio.Task[int | None] | None = None
    stopping: asyncio.Task[bool] | None = None
    try:
        await relay.start()
        if stop.is_set():
            return
        announce(ready_line(server, relay.networks))
        exited = asyncio.create_task(asyncio.to_thread(server.wait))
        stopping = asyncio.create_task(stop.wait())
        watched: set[asyncio.Future[Any]] = {exited, stopping}
        governing = relay.governor.task if relay.governor is not None else None
        if governing is not None:
            watched.add(governing)
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if governing is not None and governing.done() and not governing.cancelled():
            problem = governing.exception()
            if problem is not None:
                raise RelayError(f"the relay stopped following membership: {problem}")
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
        await relay.stop()
        if stopping is not None:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
        if exited is not None:
            await exited
