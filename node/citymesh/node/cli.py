"""``citymesh`` command line: parses arguments and calls into the node; holds no logic of its own.

Errors are one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec

from citymesh.protocol import api
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import (
    MAX_RECOVERY_KEYS,
    SecretKey,
    fingerprint,
    identity_text,
    public_key_text,
)

from .cli_catalogue import export, rate, replicate, retract
from .cli_indicators import indicators
from .cli_relay import relay
from .cli_trust import keys, network
from .client import ClientError, NodeClient, pretty
from .config import (
    DEFAULT_NETWORK,
    ConfigError,
    Home,
    NodeConfig,
    resolve_home,
    write_secret,
)
from .demo import run_demo
from .natsserver import NatsServerError
from .relay import parse_hostport
from .serve import serve
from .setup import init_home
from .store import StoreError
from .store.db import connect

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Node home directory (default: $CITYMESH_HOME, else the platform's user data dir).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def fail(message: str) -> NoReturn:
    click.echo(f"citymesh: {message}", err=True)
    sys.exit(1)


def _home(home: Path | None) -> Home:
    return Home(resolve_home(home))


def _client(home: Path | None) -> NodeClient:
    try:
        return NodeClient.for_home(_home(home))
    except ConfigError as err:
        fail(str(err))


@click.group()
@click.version_option("0.1.0", prog_name="citymesh")
@click.option("-v", "--verbose", is_flag=True, help="Log more (to stderr).")
def main(verbose: bool) -> None:
    """citymesh: cities share signed good practices, ratings, replications and safe aggregates."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


main.add_command(relay)
main.add_command(rate)
main.add_command(replicate)
main.add_command(export)
main.add_command(indicators)
main.add_command(network)
main.add_command(keys)


# -- init ----------------------------------------------------------------------------------------
@main.command()
@home_option
@click.option("--city", required=True, help="The city's name, as it should appear to others.")
@click.option("--country", required=True, help="ISO 3166-1 alpha-3 code, e.g. BEL.")
@click.option("--network", default=DEFAULT_NETWORK, show_default=True, help="Network to join.")
@click.option("--listen", default=None, help="HTTP API address HOST:PORT (default 127.0.0.1:8470).")
@click.option("--relay", "relays", multiple=True, help="Relay URL (repeatable); none: embedded.")
@click.option(
    "--recovery-keys",
    type=click.IntRange(0, MAX_RECOVERY_KEYS),
    default=0,
    show_default=True,
    help="Offline recovery keys to create; the genesis names them (they can take the identity "
    "back after a theft).",
)
@click.option(
    "--recovery-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the recovery keys (default: <home>/recovery-keys). Move them offline.",
)
def init(
    home: Path | None,
    city: str,
    country: str,
    network: str,
    listen: str | None,
    relays: tuple[str, ...],
    recovery_keys: int,
    recovery_dir: Path | None,
) -> None:
    """Create a city identity: signing key (0600), config, API token, genesis record."""
    target = _home(home)
    try:
        config = msgspec.convert(
            {
                "city": {"name": city, "country": country.upper()},
                "network": network,
                "relays": list(relays),
                **({"listen": listen} if listen else {}),
            },
            NodeConfig,
        )
    except msgspec.ValidationError as err:
        fail(f"invalid setting: {err}")
    if listen:
        _check_listen(listen)
    rescue = [SecretKey(os.urandom(32)) for _ in range(recovery_keys)]
    rescue_dir = recovery_dir or target.root / "recovery-keys"
    if rescue and rescue_dir.exists() and any(rescue_dir.iterdir()):
        fail(f"--recovery-dir {rescue_dir} is not empty; refusing to overwrite keys there")
    try:
        record = init_home(target, config, recovery=[k.public_key for k in rescue])
    except ConfigError as err:
        fail(str(err))
    for i, rescue_key in enumerate(rescue, 1):
        write_secret(rescue_dir / f"recovery-{i}.key", rescue_key.to_text() + "\n")
    key = target.load_key()
    click.echo(f"city       {city} ({config.city.country})")
    click.echo(
        f"identity   {identity_text(record.header.author)}  [{fingerprint(record.header.author)}]"
    )
    click.echo(f"public key {public_key_text(key.public_key)}")
    click.echo(f"home       {target.root}")
    if rescue:
        click.echo(f"recovery   {len(rescue)} key(s) in {rescue_dir}: move them offline now")
    click.echo(f"next       citymesh node run --home {target.root}")


def _check_listen(listen: str) -> tuple[str, int]:
    try:
        return parse_hostport(listen)
    except ValueError as err:
        fail(f"--listen: {err}")


# -- node run ------------------------------------------------------------------------------------
@main.group()
def node() -> None:
    """Run this city's node."""


@node.command(name="run")
@home_option
@click.option("--relay", "relays", multiple=True, help="Relay URL (repeatable); none: embedded.")
@click.option("--listen", default=None, help="HTTP API address HOST:PORT.")
@click.option(
    "--peer",
    "peers",
    multiple=True,
    help="Peer node API URL for omission repair and anti-entropy (repeatable; adds to config).",
)
def node_run(
    home: Path | None, relays: tuple[str, ...], listen: str | None, peers: tuple[str, ...]
) -> None:
    """Run the node: sync with relays (or an embedded one), serve the HTTP API, until Ctrl-C."""
    target = _home(home)
    try:
        config = target.load_config()
    except ConfigError as err:
        fail(str(err))
    if listen:
        config = msgspec.structs.replace(config, listen=listen)
    for peer in peers:
        if not peer.startswith(("http://", "https://")) or len(peer) > 2000:
            fail(f"--peer: {peer[:80]!r} is not an http:// or https:// URL")
    if peers:
        config = msgspec.structs.replace(config, peers=[*config.peers, *peers])
    host, port = _check_listen(config.listen)
    try:
        asyncio.run(serve(target, config, host, port, relays=list(relays) or None))
    except (ConfigError, StoreError, NatsServerError, OSError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        pass


# -- status and practices ------------------------------------------------------------------------
@main.command()
@home_option
@json_option
def status(home: Path | None, as_json: bool) -> None:
    """Show this city, its relays and record counts (asks the running node)."""
    try:
        st = _client(home).get("/v1/status", api.Status)
    except ClientError as err:
        fail(str(err))
    if as_json:
        click.echo(pretty(st))
        return
    click.echo(f"{st.city} ({st.country})  {st.identity}  [{st.fingerprint}]  seq {st.seq}")
    click.echo(f"ready to publish: {'yes' if st.ready_to_publish else 'no'}")
    for r in st.relays:
        state = "connected" if r.connected else "DISCONNECTED"
        problem = f"  last error: {r.last_error}" if r.last_error else ""
        click.echo(f"relay {r.url}: {state}, lag {r.lag}, outbox {r.outbox_pending}{problem}")
    click.echo("records: " + ", ".join(f"{k} {n}" for k, n in sorted(st.records.items())))
    if st.rejected:
        click.echo("rejected: " + ", ".join(f"{k} {n}" for k, n in sorted(st.rejected.items())))


@main.group()
def practice() -> None:
    """Publish, list, show and retract practices."""


def _load_practice_file(path: Path) -> api.PracticeIn:
    try:
        raw = path.read_bytes()
    except OSError as err:
        fail(f"cannot read {path}: {err.strerror}")
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
            return msgspec.convert(data, api.PracticeIn, strict=False)
        return msgspec.json.decode(raw, type=api.PracticeIn)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        what = "TOML" if path.suffix.lower() == ".toml" else "JSON (UTF-8)"
        fail(f"{path} is not valid {what}: {err}")
    except msgspec.DecodeError as err:
        detail = api.error_detail(err)
        where = f" ({detail.field})" if detail.field else ""
        fail(f"{path}: {detail.code}: {detail.message}{where}")


practice.add_command(retract)


@practice.command(name="add")
@home_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def practice_add(home: Path | None, file: Path) -> None:
    """Publish (or update) one of this city's practices from a TOML or JSON file."""
    body = _load_practice_file(file)
    try:
        published = _client(home).post("/v1/practices", body, api.Published)
    except ClientError as err:
        fail(str(err))
    click.echo(f"published {published.ref} (seq {published.seq}, id {published.id[:16]}…)")


@practice.command(name="list")
@home_option
@json_option
@click.option("--q", "q", default=None, help="Search text.")
@click.option("--sector", default=None, help="Sector code, e.g. HOUSING.")
@click.option("--target-group", default=None, help="Target group code, e.g. REFUGEE.")
@click.option("--country", default=None, help="ISO3 country code.")
@click.option("--author", default=None, help="City identity (cmid1…).")
@click.option("--status", "status_", default=None, help="pilot, active, regular_service, ended.")
@click.option("--language", default=None, help="Language of the text, e.g. en.")
@click.option("--has-replications", is_flag=True, help="Only practices other cities replicated.")
@click.option("--min-rating", type=click.FloatRange(1, 5), default=None)
@click.option(
    "--sort",
    type=click.Choice(["relevance", "updated", "rating", "replications", "title"]),
    default="relevance",
    show_default=True,
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
def practice_list(
    home: Path | None,
    as_json: bool,
    q: str | None,
    sector: str | None,
    target_group: str | None,
    country: str | None,
    author: str | None,
    status_: str | None,
    language: str | None,
    has_replications: bool,
    min_rating: float | None,
    sort: str,
    limit: int,
) -> None:
    """Search the practices this node holds (text, filters, sorting)."""
    params = {
        "q": q,
        "sector": sector,
        "target_group": target_group,
        "country": country,
        "author": author,
        "status": status_,
        "language": language,
        "has_replications": "true" if has_replications else None,
        "min_rating": min_rating,
        "sort": sort,
        "limit": limit,
    }
    try:
        result = _client(home).get("/v1/practices", api.PracticeList, params)
    except ClientError as err:
        fail(str(err))
    if as_json:
        click.echo(pretty(result))
        return
    for item in result.items:
        rating = f"{item.rating.mean:.1f}" if item.rating.mean is not None else "-"
        click.echo(
            f"{item.ref}\n    {item.title} — {item.city or '?'} ({item.country or '?'})"
            f"  [{', '.join(item.sectors)}]  rating {rating} ({item.rating.count})"
            f"  replications {item.replications}"
        )
    if not result.items:
        click.echo("no practices match")


@practice.command(name="show")
@home_option
@json_option
@click.argument("ref")
def practice_show(home: Path | None, as_json: bool, ref: str) -> None:
    """Show one practice: REF is <city identity>/<slug>."""
    try:
        api.parse_ref(ref)
    except ProtocolError as err:
        fail(f"bad practice ref {ref!r}: {err.message}")
    try:
        detail = _client(home).get(f"/v1/practices/{ref}", api.PracticeDetail)
    except ClientError as err:
        fail(str(err))
    if as_json:
        click.echo(pretty(detail))
        return
    p = detail.practice
    title = p.title.get("en") or next(iter(p.title.values()))
    click.echo(f"{title}\n{detail.ref}  seq {detail.seq}")
    click.echo(
        f"{detail.city or '?'} ({detail.country or '?'}) · {p.status} · {', '.join(p.sectors)}"
    )
    summary = p.summary.get("en") or next(iter(p.summary.values()), "")
    if summary:
        click.echo(f"\n{summary}")
    if p.description:
        click.echo(f"\n{p.description}")
    r = detail.rating
    mean = f"{r.mean:.2f}" if r.mean is not None else "hidden below " + str(r.min_count)
    click.echo(f"\nrating: {r.count} ratings, mean {mean}")
    for rep in detail.replications:
        click.echo(f"replicated by {rep.city or rep.author}: {rep.relation}, {rep.status}")
    click.echo(f"contact: {p.contact.role_mailbox}")


# -- verify --------------------------------------------------------------------------------------
@main.command()
@home_option
@json_option
def verify(home: Path | None, as_json: bool) -> None:
    """Re-check the signature and encoding of every stored record."""
    target = _home(home)
    if not target.db_path.exists():
        fail(f"no database at {target.db_path} (run `citymesh init` first)")
    try:
        db = connect(target.db_path, readonly=True)
        total = int(db.execute("SELECT count(*) FROM records").fetchone()[0])
    except (StoreError, sqlite3.DatabaseError) as err:
        fail(f"cannot read {target.db_path}: {err}")
    bad: Counter[str] = Counter()
    far_future = int(time.time() * 1000) + 10**12
    last = b""
    with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
        while True:
            rows = db.execute(
                "SELECT id, envelope FROM records WHERE id > ? ORDER BY id LIMIT 1000", (last,)
            ).fetchall()
            if not rows:
                break
            for rid, envelope in rows:
                try:
                    rec = open_envelope(bytes(envelope), now_ms=far_future)
                    if rec.id != bytes(rid):
                        bad["id_mismatch"] += 1
                except ProtocolError as err:
                    bad[err.code] += 1
            last = bytes(rows[-1][0])
            bar.update(len(rows))
    db.close()
    result = {"records": total, "ok": total - sum(bad.values()), "bad": dict(bad)}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"{result['ok']} of {total} records verify" + (f"; bad: {dict(bad)}" if bad else "")
        )
    if bad:
        sys.exit(1)


# -- demo ----------------------------------------------------------------------------------------
@main.command()
@click.option("--check", is_flag=True, help="Exit 0 once every node holds every record.")
@click.option("--cities", default=5, show_default=True, type=click.IntRange(2, 5))
@click.option(
    "--port",
    default=8470,
    show_default=True,
    type=click.IntRange(1024, 65000),
    help="HTTP port of the first city; the others follow.",
)
def demo(check: bool, cities: int, port: int) -> None:
    """Start a relay and several city nodes with sample practices, and show them converge."""
    try:
        code = asyncio.run(run_demo(check=check, cities=cities, base_port=port))
    except (ConfigError, StoreError, NatsServerError, OSError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


# -- tui -----------------------------------------------------------------------------------------
@main.command()
@home_option
def tui(home: Path | None) -> None:
    """Open the coordinators' terminal UI on this city's node (it talks to the node's API)."""
    from citymesh.tui.cli import run_tui  # noqa: PLC0415 (only this command needs Textual)

    run_tui(str(home) if home is not None else None)


if __name__ == "__main__":
    main()
