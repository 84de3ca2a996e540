"""``citymesh rate | replicate | retract | export``: catalogue commands over the node's HTTP API."""

from __future__ import annotations

import csv
import datetime
import io
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import click
import msgspec

from citymesh.protocol import api
from citymesh.protocol.errors import ProtocolError

from .client import ClientError, NodeClient, pretty
from .config import ConfigError, Home, resolve_home

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Node home directory (default: $CITYMESH_HOME, else the platform's user data dir).",
)


def fail(message: str) -> None:
    click.echo(f"citymesh: {message}", err=True)
    sys.exit(1)


def client(home: Path | None) -> NodeClient:
    try:
        return NodeClient.for_home(Home(resolve_home(home)))
    except ConfigError as err:
        fail(str(err))
        raise AssertionError from err  # unreachable


def check_ref(ref: str) -> str:
    try:
        api.parse_ref(ref)
    except ProtocolError as err:
        fail(f"bad practice ref {ref!r}: {err.message} (expected <cmid1…>/<slug>)")
    return ref


@click.command()
@home_option
@click.argument("ref")
@click.option("--score", type=click.IntRange(1, 5), required=True, help="Overall score, 1-5.")
@click.option(
    "--relevance", type=click.IntRange(1, 5), default=None, help="Relevance to your city, 1-5."
)
@click.option(
    "--evidence", type=click.IntRange(1, 5), default=None, help="Strength of evidence, 1-5."
)
@click.option(
    "--transferability",
    type=click.IntRange(1, 5),
    default=None,
    help="How transferable it is, 1-5.",
)
@click.option(
    "--clarity", type=click.IntRange(1, 5), default=None, help="How clearly it is described, 1-5."
)
@click.option("--comment", default="", help="Comment (at most 2000 characters).")
@click.option("--role", type=click.Choice(["peer", "expert", "adopter"]), default="peer")
@click.option("--conflict-of-interest", is_flag=True, help="You were involved in it.")
def rate(
    home: Path | None,
    ref: str,
    score: int,
    relevance: int | None,
    evidence: int | None,
    transferability: int | None,
    clarity: int | None,
    comment: str,
    role: str,
    conflict_of_interest: bool,
) -> None:
    """Rate a practice (one current rating per city: rating again replaces it)."""
    check_ref(ref)
    body = {
        "score": score,
        "scores": {
            k: v
            for k, v in (
                ("relevance", relevance),
                ("evidence", evidence),
                ("transferability", transferability),
                ("clarity", clarity),
            )
            if v
        },
        "comment": comment,
        "role": role,
        "conflict_of_interest": conflict_of_interest,
    }
    try:
        published = client(home).post(
            f"/v1/practices/{ref}/ratings", msgspec.json.encode(body), api.Published
        )
    except ClientError as err:
        fail(str(err))
        return
    click.echo(f"rated {ref}: {score}/5 (seq {published.seq})")


@click.command()
@home_option
@click.argument("ref")
@click.option(
    "--status",
    type=click.Choice(["planned", "piloting", "running", "ended", "abandoned"]),
    required=True,
)
@click.option(
    "--relation",
    type=click.Choice(["inspired_by", "adapted", "replicated", "scaled"]),
    default="adapted",
    show_default=True,
)
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=None, help="YYYY-MM-DD.")
@click.option("--adaptations", default="", help="What your city changed.")
@click.option("--mentor", default=None, help="Mentor city identity (cmid1…).")
@click.option(
    "--worked",
    type=click.Choice(["yes", "partly", "no", "too_early"]),
    default=None,
    help="Report the outcome.",
)
@click.option("--lessons", default="", help="Lessons learned (with --worked).")
def replicate(
    home: Path | None,
    ref: str,
    status: str,
    relation: str,
    start: datetime.datetime | None,
    adaptations: str,
    mentor: str | None,
    worked: str | None,
    lessons: str,
) -> None:
    """Start or update this city's replication of a practice, and report how it went."""
    check_ref(ref)
    body: dict[str, Any] = {"relation": relation, "status": status, "adaptations": adaptations}
    if start:
        body["start"] = start.date().isoformat()
    if mentor:
        body["mentor"] = mentor
    if worked:
        body["outcome"] = {"worked": worked, "lessons": lessons}
    elif lessons:
        fail("--lessons needs --worked (the outcome they belong to)")
    try:
        published = client(home).post(
            f"/v1/practices/{ref}/replications", msgspec.json.encode(body), api.Published
        )
    except ClientError as err:
        fail(str(err))
        return
    click.echo(f"replication of {ref}: {relation}, {status} (seq {published.seq})")


@click.command()
@home_option
@click.argument("ref")
@click.option("--reason", default="", help="Why it is withdrawn.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def retract(home: Path | None, ref: str, reason: str, yes: bool) -> None:
    """Withdraw one of this city's practices (the signed history stays)."""
    check_ref(ref)
    if not yes:
        click.confirm(f"Retract {ref} from every node of the network?", abort=True)
    path = f"/v1/practices/{ref}"
    if reason:
        path += "?" + urllib.parse.urlencode({"reason": reason})
    try:
        client(home).request("DELETE", path)
    except ClientError as err:
        fail(str(err))
    click.echo(f"retracted {ref}")


CSV_COLUMNS = (
    "ref",
    "title",
    "city",
    "country",
    "status",
    "sectors",
    "target_groups",
    "rating_count",
    "rating_mean",
    "replications",
    "updated",
)


@click.command()
@home_option
@click.option(
    "--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: standard output).",
)
@click.option("--sector", default=None)
@click.option("--country", default=None)
def export(
    home: Path | None, fmt: str, output: Path | None, sector: str | None, country: str | None
) -> None:
    """Export the practices this node holds (JSON: full records; CSV: one row each)."""
    c = client(home)
    items: list[api.PracticeItem] = []
    cursor: str | None = None
    while True:
        params = {
            "limit": 200,
            "sort": "updated",
            "sector": sector,
            "country": country,
            "cursor": cursor,
        }
        try:
            page = c.get("/v1/practices", api.PracticeList, params)
        except ClientError as err:
            fail(str(err))
            return
        items += page.items
        click.echo(f"\rexporting: {len(items)} practices", err=True, nl=False)
        if page.next is None:
            break
        cursor = page.next
    click.echo("", err=True)
    if fmt == "json":
        details = []
        for item in items:
            try:
                details.append(c.get(f"/v1/practices/{item.ref}", api.PracticeDetail))
            except ClientError as err:
                if err.status != 404:  # retracted meanwhile: skip it
                    fail(str(err))
        text = pretty(details) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        for i in items:
            writer.writerow(
                [
                    i.ref,
                    i.title,
                    i.city or "",
                    i.country or "",
                    i.status,
                    " ".join(i.sectors),
                    " ".join(i.target_groups),
                    i.rating.count,
                    "" if i.rating.mean is None else i.rating.mean,
                    i.replications,
                    i.updated.isoformat(),
                ]
            )
        text = buf.getvalue()
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as err:
            fail(f"cannot write {output}: {err.strerror}")
        click.echo(f"wrote {len(items)} practices to {output}", err=True)
