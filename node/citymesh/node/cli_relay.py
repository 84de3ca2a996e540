"""``citymesh relay ...``: parses options and calls relay.py; no logic of its own."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import parse_identity
from citymesh.protocol.subjects import check_network

from .nkey import NkeyError, parse_user_key
from .relay import (
    DEFAULT_LISTEN,
    DEFAULT_MONITOR,
    DEFAULT_NETWORK,
    KEY_FILE,
    RelayConfig,
    RelayError,
    check_networks,
    load_relay_key,
    parse_hostport,
    parse_size,
    public_nkey,
    run_relay,
)
from .streams import LinkedSource

_OFF = ("off", "none", "")


def _hostport(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_hostport(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None


def _monitor(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int] | None:
    if value.strip().lower() in _OFF:
        return None
    return _hostport(ctx, param, value)


def _networks(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    try:
        return check_networks(value or (DEFAULT_NETWORK,))
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None


def _hostport_opt(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    return None if value is None else _hostport(ctx, param, value)


def _identities(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[bytes, ...]:
    out: dict[bytes, None] = {}
    for text in value:
        try:
            out[parse_identity(text.strip())] = None
        except ProtocolError as err:
            raise click.BadParameter(f"{text!r}: {err.message}", ctx=ctx, param=param) from None
    return tuple(out)


def _keys(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[bytes, ...]:
    out: dict[bytes, None] = {}
    for text in value:
        try:
            out[parse_user_key(text)] = None
        except NkeyError as err:
            raise click.BadParameter(str(err), ctx=ctx, param=param) from None
    return tuple(out)


def _steward_keys(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[tuple[bytes | None, bytes], ...]:
    out: list[tuple[bytes | None, bytes]] = []
    for text in value:
        who, sep, key = text.strip().rpartition("=")
        try:
            identity = parse_identity(who.strip()) if sep else None
            out.append((identity, parse_user_key(key)))
        except (ProtocolError, NkeyError) as err:
            message = err.message if isinstance(err, ProtocolError) else str(err)
            raise click.BadParameter(f"{text!r}: {message}", ctx=ctx, param=param) from None
    return tuple(out)


def _sources(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[LinkedSource, ...]:
    out: list[LinkedSource] = []
    for text in value:
        network, _, domain = text.strip().partition("@")
        try:
            check_network(network)
        except ProtocolError as err:
            raise click.BadParameter(f"{text!r}: {err.message}", ctx=ctx, param=param) from None
        out.append(LinkedSource(network=network, domain=domain or network))
    return tuple(out)


def _leaf_urls(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    for url in value:
        if not url.startswith(("nats-leaf://", "nats://", "tls://", "ws://", "wss://")):
            raise click.BadParameter(
                f"{url!r} is not a leaf-node URL such as nats-leaf://relay.example.org:7422",
                ctx=ctx,
                param=param,
            )
    return value


def _route_urls(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    for url in value:
        if not url.startswith(("nats-route://", "nats://", "tls://")):
            raise click.BadParameter(
                f"{url!r} is not a route URL such as nats-route://10.0.0.2:6222",
                ctx=ctx,
                param=param,
            )
    return value


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None


@click.group(name="relay")
def relay() -> None:
    """Run a relay: a nats-server with JetStream that carries networks' signed records."""


@relay.command(name="run")
@click.option(
    "--store",
    required=True,
    type=click.Path(file_okay=False, dir_okay=True, writable=False, path_type=Path),
    help="Directory for the JetStream store, the generated config and the server log.",
)
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    callback=_hostport,
    metavar="HOST:PORT",
    help="Client address; port 0 picks a free port.",
)
@click.option(
    "--network",
    "networks",
    multiple=True,
    callback=_networks,
    metavar="NET",
    help=f"Network whose stream this relay keeps; repeatable. [default: {DEFAULT_NETWORK}]",
)
@click.option(
    "--monitor",
    default=DEFAULT_MONITOR,
    show_default=True,
    callback=_monitor,
    metavar="HOST:PORT|off",
    help="HTTP monitoring address (/healthz, /varz, /jsz); port 0 picks a free port.",
)
@click.option(
    "--max-store",
    default="10G",
    show_default=True,
    callback=_size,
    metavar="SIZE",
    help="JetStream file store limit, e.g. 500M, 10G.",
)
@click.option("--server-name", default=None, help="Server name (unique within a cluster).")
@click.option(
    "--steward",
    "stewards",
    multiple=True,
    callback=_identities,
    metavar="IDENTITY",
    help="Trust anchor (a steward's identity, cmid1…); repeatable. Makes the relay governed: "
    "only members admitted by the stewards' signed records may publish, each on its own subjects.",
)
@click.option(
    "--steward-key",
    "steward_keys",
    multiple=True,
    callback=_steward_keys,
    metavar="[IDENTITY=]KEY",
    help="Transport key (U… or cmpk1…) of a steward's node, so it can publish the charter and "
    "first memberships; IDENTITY= may be left out when there is one --steward. Repeatable.",
)
@click.option(
    "--link-key",
    "link_keys",
    multiple=True,
    callback=_keys,
    metavar="KEY",
    help="Key of another network's relay (its `citymesh relay key`) that may source this "
    "relay's streams over a leaf-node link; repeatable. Governed relays only.",
)
@click.option("--cluster", "cluster", default=None, metavar="NAME", help="JetStream cluster name.")
@click.option(
    "--cluster-listen",
    default=None,
    callback=_hostport_opt,
    metavar="HOST:PORT",
    help="Route listen address of this cluster member (port 0: any free port).",
)
@click.option(
    "--route",
    "routes",
    multiple=True,
    callback=_route_urls,
    metavar="URL",
    help="Route URL of a cluster peer (nats-route://HOST:PORT); repeatable.",
)
@click.option(
    "--replicas",
    default=1,
    show_default=True,
    type=click.IntRange(1, 5),
    help="Replicas of each network's stream (3 in a three-server cluster).",
)
@click.option(
    "--domain",
    default=None,
    metavar="NAME",
    help="JetStream domain; linked relays need distinct ones. [default with leaf options: "
    "the first network]",
)
@click.option(
    "--leaf-listen",
    default=None,
    callback=_hostport_opt,
    metavar="HOST:PORT",
    help="Accept leaf-node links from other networks' relays on this address.",
)
@click.option(
    "--leaf-remote",
    "leaf_remotes",
    multiple=True,
    callback=_leaf_urls,
    metavar="URL",
    help="Link to another network's relay (nats-leaf://HOST:PORT), logging in with this relay's "
    "key; repeatable.",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    callback=_sources,
    metavar="NET[@DOMAIN]",
    help="Carry network NET's records (from the linked relay whose JetStream domain is DOMAIN, "
    "default NET) into this relay's networks, as cm.<net>.<NET>.<author>.<kind>; repeatable.",
)
@click.option(
    "--key-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"The relay's nkey seed file. [default: STORE/{KEY_FILE}, created on first use]",
)
def run(
    store: Path,
    listen: tuple[str, int],
    networks: tuple[str, ...],
    monitor: tuple[str, int] | None,
    max_store: int,
    server_name: str | None,
    stewards: tuple[bytes, ...],
    steward_keys: tuple[tuple[bytes | None, bytes], ...],
    link_keys: tuple[bytes, ...],
    cluster: str | None,
    cluster_listen: tuple[str, int] | None,
    routes: tuple[str, ...],
    replicas: int,
    domain: str | None,
    leaf_listen: tuple[str, int] | None,
    leaf_remotes: tuple[str, ...],
    sources: tuple[LinkedSource, ...],
    key_file: Path | None,
) -> None:
    """Start nats-server, ensure each network's stream, run until SIGINT or SIGTERM."""
    host, port = listen
    bound: list[tuple[bytes, bytes]] = []
    for named, key in steward_keys:
        if named is None and len(stewards) != 1:
            raise click.BadParameter(
                "write IDENTITY=KEY when there is not exactly one --steward",
                param_hint="--steward-key",
            )
        bound.append((named if named is not None else stewards[0], key))
    cfg = RelayConfig(
        store=store,
        host=host,
        port=port,
        networks=networks,
        monitor=monitor,
        max_file_store=max_store,
        server_name=server_name,
        replicas=replicas,
        stewards=stewards,
        steward_keys=tuple(bound),
        link_keys=link_keys,
        cluster=cluster,
        cluster_listen=cluster_listen,
        routes=routes,
        domain=domain,
        leaf_listen=leaf_listen,
        leaf_remotes=leaf_remotes,
        sources=sources,
        key_file=key_file,
    )
    if stewards:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    try:
        asyncio.run(run_relay(cfg, announce=click.echo))
    except RelayError as err:
        raise click.ClickException(str(err)) from None
    click.echo("citymesh relay stopped", err=True)


@relay.command(name="key")
@click.option(
    "--store",
    required=True,
    type=click.Path(file_okay=False, dir_okay=True, path_type=Path),
    help="The relay's store directory.",
)
@click.option(
    "--key-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"The relay's nkey seed file. [default: STORE/{KEY_FILE}]",
)
def key(store: Path, key_file: Path | None) -> None:
    """Print the relay's public key (U…), creating the key on first use.

    A linked network's steward passes it to their relay as --link-key.
    """
    try:
        click.echo(public_nkey(load_relay_key(key_file or store / KEY_FILE)))
    except RelayError as err:
        raise click.ClickException(str(err)) from None


if __name__ == "__main__":
    relay(prog_name="citymesh relay")
