"""``citymesh network ...`` and ``citymesh keys ...``: charters, memberships and key rotation,
signed by the running node."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from citymesh.protocol import api
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import parse_identity
from citymesh.protocol.records import NetworkName

from .cli_catalogue import client, fail, home_option
from .client import ClientError
from .config import ConfigError, Follow, Home, resolve_home


@click.group()
def network() -> None:
    """A network's charter and its members (for stewards)."""


@network.command(name="create")
@home_option
@click.option("--title", required=True, help="The network's name as people know it.")
@click.option(
    "--steward",
    "stewards",
    multiple=True,
    help="Steward identity (repeatable; default: this city).",
)
@click.option(
    "--threshold",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="How many stewards must admit a city.",
)
@click.option("--relay", "relays", multiple=True, help="Relay URL of the network (repeatable).")
@click.option("--description", default="")
@click.option(
    "--max-records-per-hour",
    type=click.IntRange(1, 1_000_000),
    default=600,
    show_default=True,
    help="Records one city may sign per hour; following nodes refuse the rest.",
)
@click.option(
    "--min-count-threshold",
    type=click.IntRange(10, 1000),
    default=10,
    show_default=True,
    help="Smallest count a member's published indicator table may show.",
)
def create(
    home: Path | None,
    title: str,
    stewards: tuple[str, ...],
    threshold: int,
    relays: tuple[str, ...],
    description: str,
    max_records_per_hour: int,
    min_count_threshold: int,
) -> None:
    """Sign the network's charter (title, stewards, admission rule, relays)."""
    c = client(home)
    try:
        if not stewards:
            stewards = (c.get("/v1/status", api.Status).identity,)
        body = {
            "title": title,
            "stewards": list(stewards),
            "admission_threshold": threshold,
            "relays": list(relays),
            "description": description,
            "max_records_per_hour": max_records_per_hour,
            "min_count_threshold": min_count_threshold,
        }
        published = c.post("/v1/network", msgspec.json.encode(body), api.Published)
    except ClientError as err:
        fail(str(err))
        return
    click.echo(f"charter signed (seq {published.seq}); stewards: {', '.join(stewards)}")


def _membership(home: Path | None, body: dict[str, object]) -> api.Published:
    try:
        return client(home).post("/v1/network/members", msgspec.json.encode(body), api.Published)
    except ClientError as err:
        fail(str(err))
        raise AssertionError from err  # unreachable: fail exits


@network.command(name="admit")
@home_option
@click.argument("identity")
@click.option("--city", default=None, help="City name (default: from its profile).")
@click.option("--role", type=click.Choice(["member", "observer", "steward"]), default="member")
@click.option(
    "--transport-key",
    default=None,
    help="The city's relay login key, cmpk1… (default: the one its profile names).",
)
@click.option(
    "--replaces",
    default=None,
    help="Re-admitting a city that lost its key: the identity it had before (cmid1…).",
)
def admit(
    home: Path | None,
    identity: str,
    city: str | None,
    role: str,
    transport_key: str | None,
    replaces: str | None,
) -> None:
    """Admit a city: sign its membership."""
    body: dict[str, object] = {"member": identity, "role": role}
    if replaces:
        body["replaces"] = replaces
    if city:
        body["city"] = city
    if transport_key:
        body["transport_key"] = transport_key
    published = _membership(home, body)
    click.echo(f"admitted {identity} (seq {published.seq})")


@network.command(name="revoke")
@home_option
@click.argument("identity")
@click.option("--reason", required=True, help="Why (kept in the signed record).")
@click.option(
    "--until-seq",
    type=click.IntRange(0),
    default=None,
    help="The city's records up to this seq still count (default: all held now).",
)
def revoke(home: Path | None, identity: str, reason: str, until_seq: int | None) -> None:
    """Revoke a city: its later records stop counting on every node."""
    body: dict[str, object] = {"member": identity, "status": "revoked", "reason": reason}
    if until_seq is not None:
        body["until_seq"] = until_seq
    published = _membership(home, body)
    click.echo(f"revoked {identity} (seq {published.seq})")


def _network_name(name: str) -> str:
    try:
        return msgspec.convert(name, NetworkName)
    except msgspec.ValidationError as err:
        fail(f"bad network name {name!r}: {err} (lowercase letters, digits and inner dashes)")
        raise AssertionError from err  # unreachable


@network.command(name="follow")
@home_option
@click.argument("name")
@click.option(
    "--steward",
    "stewards",
    multiple=True,
    required=True,
    help="Identity of a steward this node trusts for the network (repeatable).",
)
def follow(home: Path | None, name: str, stewards: tuple[str, ...]) -> None:
    """Follow a network: its members' records count here, other cities' show as unverified.

    Edits config.toml; restart the node to apply. A node that follows no network is open: every
    valid record counts.
    """
    name = _network_name(name)
    for text in stewards:
        try:
            parse_identity(text)
        except ProtocolError as err:
            fail(f"--steward {text[:80]!r} is not a city identity: {err.message}")
    h = Home(resolve_home(home))
    try:
        config = h.load_config()
        kept = [f for f in config.follow if f.network != name]
        h.save_config(
            msgspec.structs.replace(
                config, follow=[*kept, Follow(network=name, stewards=sorted(set(stewards)))]
            )
        )
    except ConfigError as err:
        fail(str(err))
    click.echo(f"following {name} with {len(set(stewards))} steward(s); restart the node to apply")


@network.command(name="unfollow")
@home_option
@click.argument("name")
def unfollow(home: Path | None, name: str) -> None:
    """Stop following a network (restart the node to apply)."""
    h = Home(resolve_home(home))
    try:
        config = h.load_config()
        if not any(f.network == name for f in config.follow):
            fail(f"this node does not follow {name!r}")
        h.save_config(
            msgspec.structs.replace(config, follow=[f for f in config.follow if f.network != name])
        )
    except ConfigError as err:
        fail(str(err))
    click.echo(f"no longer following {name}; restart the node to apply")


@click.group()
def keys() -> None:
    """This city's signing key."""


@keys.command(name="rotate")
@home_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def rotate(home: Path | None, yes: bool) -> None:
    """Replace the signing key (the old key signs the rotation, the new one counter-signs)."""
    if not yes:
        click.confirm("Rotate this city's signing key now?", abort=True)
    try:
        rotated = client(home).post("/v1/keys/rotate", b"{}", api.KeyRotated)
    except ClientError as err:
        fail(str(err))
        return
    click.echo(
        f"new signing key {rotated.key} [{rotated.fingerprint}] (rotation seq {rotated.seq})"
    )
    click.echo("the old key file is kept as city.key.<n>.old in the home; it signs nothing now")


@keys.command(name="recover")
@home_option
@click.option(
    "--recovery-key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A recovery key file that `init --recovery-keys` wrote (kept offline).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def recover(home: Path | None, key_file: Path, yes: bool) -> None:
    """Take the identity back after the signing key was stolen.

    The running node signs a rotation to a fresh key with the recovery key. Every node then
    refuses what the stolen key signs later, and records the thief signed in the 72 hours before
    lose to the recovery. The recovery key is used once and not stored.
    """
    try:
        text = key_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        fail(f"cannot read {key_file}: {err}")
        return
    if not yes:
        click.confirm("Replace this city's signing key using the recovery key?", abort=True)
    try:
        body = msgspec.json.encode({"recovery_key": text})
        rotated = client(home).post("/v1/keys/recover", body, api.KeyRotated)
    except ClientError as err:
        fail(str(err))
        return
    click.echo(
        f"identity recovered: new signing key {rotated.key} [{rotated.fingerprint}] "
        f"(rotation seq {rotated.seq})"
    )
