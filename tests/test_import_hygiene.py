"""Import every submodule of a package in a fresh interpreter and check what it pulled in.

The import-linter contracts in pyproject.toml check the code statically; this checks at run time,
third-party and standard-library imports included (tconbeer/harlequin does the same).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SANS_IO_FORBIDDEN = [
    "asyncio",
    "socket",
    "sqlite3",
    "aiohttp",
    "nats",
    "textual",
    "subprocess",
    "citymesh.node",
    "citymesh.tui",
]
TUI_FORBIDDEN = ["citymesh.node", "citymesh.practices"]

_PROBE = r"""
import importlib, json, pkgutil, sys

package, forbidden = sys.argv[1], json.loads(sys.argv[2])

def present():
    return sorted(
        f for f in forbidden if any(m == f or m.startswith(f + ".") for m in sys.modules)
    )

baseline = present()
pulled, errors, modules = {}, {}, [package]
root = importlib.import_module(package)
for f in present():
    pulled.setdefault(f, package)
for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
    modules.append(info.name)
    try:
        importlib.import_module(info.name)
    except Exception as err:
        errors[info.name] = repr(err)
    for f in present():
        pulled.setdefault(f, info.name)
print(json.dumps({"baseline": baseline, "pulled": pulled, "errors": errors, "modules": modules}))
"""


def _probe(package: str, forbidden: list[str]) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, package, json.dumps(forbidden)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize("package", ["citymesh.protocol", "citymesh.practices"])
def test_sans_io_packages_import_no_io(package: str) -> None:
    report = _probe(package, SANS_IO_FORBIDDEN)
    assert report["baseline"] == [], f"a bare interpreter already imports {report['baseline']}"
    assert report["errors"] == {}
    assert report["pulled"] == {}, (
        f"{package} pulled in (module: first importer): {report['pulled']}"
    )
    assert package in report["modules"]  # type: ignore[operator]


def test_protocol_submodules_are_all_checked() -> None:
    report = _probe("citymesh.protocol", SANS_IO_FORBIDDEN)
    modules = set(report["modules"])  # type: ignore[call-overload]
    for name in ("codec", "envelope", "identity", "records", "signing", "chain", "subjects"):
        assert f"citymesh.protocol.{name}" in modules


def test_tui_does_not_import_the_node() -> None:
    report = _probe("citymesh.tui", TUI_FORBIDDEN)
    assert report["errors"] == {}
    assert report["pulled"] == {}, f"citymesh.tui pulled in: {report['pulled']}"
