"""Indicator tables as CSV, SDMX-CSV and HXL-tagged CSV (pure: values in, text out).

Suppressed cells are written with an empty value and their status flags, never as zero.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from citymesh.protocol.records import IndicatorsBody

Format = Literal["csv", "sdmx", "hxl"]
DATAFLOW_AGENCY = "CITYMESH"


@dataclass(frozen=True, slots=True)
class Published:
    city: str
    """The publishing city's identity text."""
    city_name: str
    country: str
    table: IndicatorsBody


def _value(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _dimensions(tables: Sequence[Published]) -> list[str]:
    seen: dict[str, None] = {}
    for t in tables:
        for d in t.table.dimensions:
            seen.setdefault(d, None)
    return list(seen)


def export(tables: Iterable[Published], fmt: Format) -> str:
    rows = list(tables)
    dims = _dimensions(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if fmt == "csv":
        w.writerow(
            [
                "city",
                "city_name",
                "country",
                "indicator",
                "period",
                *dims,
                "value",
                "unit",
                "obs_status",
                "conf_status",
            ]
        )
    elif fmt == "sdmx":
        w.writerow(
            [
                "DATAFLOW",
                "REF_AREA",
                "INDICATOR",
                *dims,
                "TIME_PERIOD",
                "OBS_VALUE",
                "UNIT_MEASURE",
                "OBS_STATUS",
                "CONF_STATUS",
            ]
        )
    else:
        w.writerow(
            [
                "city",
                "city_name",
                "country",
                "indicator",
                "period",
                *dims,
                "value",
                "unit",
                "status",
            ]
        )
        w.writerow(
            [
                "#adm2+code",
                "#adm2+name",
                "#country+code",
                "#indicator+code",
                "#date+period",
                *(f"#meta+{d.lower()}" for d in dims),
                "#indicator+num",
                "#indicator+unit",
                "#status+conf",
            ]
        )
    for p in rows:
        t = p.table
        for cell in t.cells:
            values = [cell.dims.get(d, "") for d in dims]
            if fmt == "csv":
                w.writerow(
                    [
                        p.city,
                        p.city_name,
                        p.country,
                        t.code,
                        t.period,
                        *values,
                        _value(cell.value),
                        t.unit,
                        cell.obs_status,
                        cell.conf_status,
                    ]
                )
            elif fmt == "sdmx":
                w.writerow(
                    [
                        f"{DATAFLOW_AGENCY}:{t.code}(1.0)",
                        p.city,
                        t.code,
                        *values,
                        t.period,
                        _value(cell.value),
                        t.unit,
                        cell.obs_status,
                        cell.conf_status,
                    ]
                )
            else:
                w.writerow(
                    [
                        p.city,
                        p.city_name,
                        p.country,
                        t.code,
                        t.period,
                        *values,
                        _value(cell.value),
                        t.unit,
                        cell.conf_status,
                    ]
                )
    return buf.getvalue()
