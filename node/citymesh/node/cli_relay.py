"""``citymesh relay ...``: parses options and calls relay.py; no logic of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from .relay import (
    DEFAULT_LISTEN,
    DEFAULT_MONITOR,
    DEFAULT_NETWORK,
    RelayConfig,
    RelayError,
    check_networks,
    parse_hostport,
    parse_size,
    run_relay,
)

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
def run(
    store: Path,
    listen: tuple[str, int],
    networks: tuple[str, ...],
    monitor: tuple[str, int] | None,
    max_store: int,
    server_name: str | None,
) -> None:
    """Start nats-server, ensure each network's stream, run until SIGINT or SIGTERM."""
    host, port = listen
    cfg = RelayConfig(
        store=store,
        host=host,
        port=port,
        networks=networks,
        monitor=monitor,
        max_file_store=max_store,
        server_name=server_name,
    )
    try:
        asyncio.run(run_relay(cfg, announce=click.echo))
    except RelayError as err:
        raise click.ClickException(str(err)) from None
    click.echo("citymesh relay stopped", err=True)


if __name__ == "__main__":
    relay(prog_name="citymesh relay")
