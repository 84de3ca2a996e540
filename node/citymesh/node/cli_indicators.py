"""``citymesh indicators ...``: import aggregate tables through disclosure control, list, export."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec

from citymesh.practices.disclosure import TableError
from citymesh.practices.exports import Published, export
from citymesh.practices.indicators import CATALOGUE
from citymesh.practices.tables import parse_csv
from citymesh.protocol import api

from .cli_catalogue import client, fail, home_option
from .client import ClientError, pretty
from .indicators import definitions


@click.group()
def indicators() -> None:
    """Aggregate indicator tables: import (with disclosure control), list, export."""


@indicators.command(name="definitions")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def definitions_cmd(as_json: bool) -> None:
    """The indicator catalogue: codes, units, dimensions."""
    if as_json:
        click.echo(pretty(definitions()))
        return
    for d in CATALOGUE.values():
        dims = ", ".join(d.dimensions) or "-"
        click.echo(f"{d.code:<24} {d.unit:<5} {d.measure:<7} {d.sector:<18} [{dims}]  {d.name}")


@indicators.command(name="import")
@home_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--code", required=True, help="Indicator code (see `citymesh indicators definitions`)."
)
@click.option("--period", required=True, help="Period: YYYY, YYYY-Qn, YYYY-Sn or YYYY-MM.")
@click.option("--dry-run", is_flag=True, help="Show what disclosure control does; publish nothing.")
@click.option(
    "--threshold",
    type=click.IntRange(1, 1000),
    default=None,
    help="Primary suppression threshold (never below 10 for counts of people).",
)
@click.option(
    "--source-type",
    default=None,
    type=click.Choice(
        ["register", "administrative", "survey", "census", "service_data", "estimate"]
    ),
    help="Default: the indicator's usual source.",
)
@click.option("--officer-role", default="Data officer", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the preview as JSON.")
def import_cmd(
    home: Path | None,
    file: Path,
    code: str,
    period: str,
    dry_run: bool,
    threshold: int | None,
    source_type: str | None,
    officer_role: str,
    as_json: bool,
) -> None:
    """Import an aggregate table (long format CSV: dimension columns plus count, or value and
    base), apply disclosure control, show each cell's fate, and publish it signed."""
    defn = CATALOGUE.get(code)
    if defn is None:
        fail(f"unknown indicator {code!r} (see `citymesh indicators definitions`)")
        return
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        fail(f"cannot read {file}: {err}")
        return
    try:
        rows = parse_csv(defn, text)
    except TableError as err:
        where = f" (row {err.row})" if err.row else ""
        fail(f"{file}{where}: {err.message}")
        return
    body: dict[str, object] = {
        "code": code,
        "period": period,
        "rows": [
            {
                k: v
                for k, v in (
                    ("dims", dict(r.dims)),
                    ("count", r.count),
                    ("value", r.value),
                    ("base", r.base),
                )
                if v is not None
            }
            for r in rows
        ],
    }
    if threshold:
        body["threshold"] = threshold
    c = client(home)
    try:
        preview = c.post("/v1/indicators/preview", msgspec.json.encode(body), api.IndicatorPreview)
    except ClientError as err:
        fail(str(err))
        return
    if as_json:
        click.echo(pretty(preview))
    else:
        _show(preview)
    if dry_run:
        click.echo("dry run: nothing published", err=True)
        return
    body["source_type"] = source_type or defn.source_type
    body["attestation"] = {
        "aggregate_only": True,
        "officer_role": officer_role,
        "statement": "Aggregates only; disclosure control applied by citymesh before signing.",
    }
    try:
        published = c.post("/v1/indicators", msgspec.json.encode(body), api.Published)
    except ClientError as err:
        fail(str(err))
        return
    click.echo(f"published {published.ref} (seq {published.seq})", err=True)


def _show(p: api.IndicatorPreview) -> None:
    click.echo(
        f"{p.code} {p.period} ({p.unit}): {p.published} cells published, "
        f"{p.suppressed} suppressed — {p.method.notes}"
    )
    for cell in p.cells:
        dims = " ".join(f"{k}={v}" for k, v in cell.dims.items()) or "(total)"
        fate = (
            (f"{cell.value:g}" if cell.value is not None else "—")
            if cell.status == "published"
            else f"suppressed ({cell.reason})"
        )
        click.echo(f"  {dims:<50} {fate}")


@indicators.command(name="list")
@home_option
@click.option("--city", default=None, help="City identity (cmid1…).")
@click.option("--code", default=None)
@click.option("--period", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(
    home: Path | None, city: str | None, code: str | None, period: str | None, as_json: bool
) -> None:
    """Published tables this node holds (from every city of the network)."""
    try:
        result = client(home).get(
            "/v1/indicators",
            api.IndicatorList,
            {"city": city, "code": code, "period": period, "limit": 200},
        )
    except ClientError as err:
        fail(str(err))
        return
    if as_json:
        click.echo(pretty(result))
        return
    for t in result.items:
        hidden = sum(c.value is None for c in t.table.cells)
        click.echo(
            f"{t.table.code:<24} {t.table.period:<8} {t.city or t.author} "
            f"({t.country or '?'}): {len(t.table.cells)} cells, {hidden} suppressed"
        )
    if not result.items:
        click.echo("no indicator tables")


@indicators.command(name="export")
@home_option
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "sdmx", "hxl"]), default="sdmx", show_default=True
)
@click.option("--city", default=None)
@click.option("--code", default=None)
@click.option("--period", default=None)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export_cmd(
    home: Path | None,
    fmt: str,
    city: str | None,
    code: str | None,
    period: str | None,
    output: Path | None,
) -> None:
    """Export tables as CSV, SDMX-CSV or HXL-tagged CSV (suppressed cells stay empty, flagged)."""
    try:
        result = client(home).get(
            "/v1/indicators",
            api.IndicatorList,
            {"city": city, "code": code, "period": period, "limit": 200},
        )
    except ClientError as err:
        fail(str(err))
        return
    text = export(
        [Published(t.author, t.city or "", t.country or "", t.table) for t in result.items],
        fmt,  # type: ignore[arg-type]
    )
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as err:
            fail(f"cannot write {output}: {err.strerror}")
        click.echo(f"wrote {len(result.items)} tables to {output}", err=True)
