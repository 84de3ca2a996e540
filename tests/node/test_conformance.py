"""Schemathesis against a real ``citymesh node run``: every default check (negative data and
ignored auth included), the examples, coverage, fuzzing and stateful phases, with no failure.

The node under test (A) and a second city (B) run as processes on one relay; B's practice gives
A a practice to rate and replicate, A's own one a practice it may not rate (409).

What the document states only in words is told to schemathesis as it is told to any client:

- identities and keys carry a ``format`` (``citymesh-identity``, ``citymesh-key``): the bech32m
  checksum holds and a key is a point of large order. Strategies for both are registered here
  (the two cities' identities and keys among them, so lookups sometimes find something).
- rules no schema can hold (a cursor issued for the query, the disclosure firewall, a member
  with no profile) answer 422, documented on the routes. 422 is not in schemathesis' default
  list for schema-valid input, so it is added there, and a check of our own makes sure that
  every 422 carries one of those documented codes (a 422 for anything else fails the run).

Bounded: a fixed seed, few examples per operation; about a minute on two cores.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from schemathesis.schemas import BaseSchema

from citymesh.node.natsserver import NatsServer
from citymesh.protocol import api
from citymesh.protocol.identity import SecretKey, identity_text, public_key_text

from ..faults.cluster import NodeProc, make_home, wait_for

pytestmark = pytest.mark.slow

SEED = 20_251_201
MAX_EXAMPLES = int(os.environ.get("CITYMESH_ST_EXAMPLES", "12"))
SEMANTIC_422 = frozenset(
    {
        "bad_identity",
        "bad_key",
        "invalid",  # with a field: a cursor not issued for the query, a cross-field rule
        "missing_field",  # one of two query parameters (sync records: author or ids)
        "unknown_indicator",
        "not_aggregate",
        "attestation",
        "unknown_city",
        "too_large",
        "bad_reconcile",  # a reconcile message's bounds and payload sizes
        "bad_sketch",  # a sketch chunk's end must be after its start
    }
)


@schemathesis.check
def unprocessable_only_for_documented_rules(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 422 must name one of the rules the document states in words (never a schema rule)."""
    if response.status_code != 422:
        return None
    error = response.json()["error"]
    code, field = error["code"], error.get("field")
    if code not in SEMANTIC_422 or field is None:
        raise AssertionError(f"422 for an undocumented rule: {error}")
    return True


def _register_formats(identities: list[str], keys: list[str]) -> None:
    random_identity = st.binary(min_size=20, max_size=20).map(identity_text)
    random_key = st.binary(min_size=32, max_size=32).map(
        lambda seed: public_key_text(SecretKey(seed).public_key)
    )
    schemathesis.openapi.format(api.IDENTITY_FORMAT, st.sampled_from(identities) | random_identity)
    schemathesis.openapi.format(api.KEY_FORMAT, st.sampled_from(keys) | random_key)


def _run(url: str, token: str) -> tuple[list[str], dict[str, int]]:
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {token}"},
            "workers": 1,
            "request-timeout": 30,
            "suppress-health-check": ["all"],
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": 40},
            },
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": [
                        "2xx",
                        "3xx",
                        "401",
                        "403",
                        "404",
                        "409",
                        "422",
                        "429",
                        "5xx",
                    ]
                },
                # A body over the node's size limit is refused before it is read: 413.
                "negative_data_rejection": {
                    "expected-statuses": [
                        "400",
                        "401",
                        "403",
                        "404",
                        "405",
                        "406",
                        "409",
                        "413",
                        "415",
                        "422",
                        "428",
                        "429",
                        "5xx",
                    ]
                },
            },
        }
    )
    schema: BaseSchema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    problems: list[str] = []
    tally: dict[str, int] = {}
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            phase = getattr(event, "phase", None)
            name = phase.value if phase is not None else "fuzz"
            tally[name] = tally.get(name, 0) + len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        problems.append(
                            f"[{name}] {event.recorder.label} {check.name} ({failure.code}): "
                            f"{failure.title}\n{failure.message}\n"
                            f"{check.failure_info.code_sample[:600]}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"error: {event.info.format()}")  # type: ignore[union-attr]
    return problems, tally


async def test_schemathesis_finds_no_failure(nats_server: NatsServer, tmp_path: Path) -> None:
    relay = nats_server.client_url
    a = NodeProc("A", make_home(tmp_path, "Mechelen", relays=[relay]), [], tmp_path / "a.log")
    b = NodeProc("B", make_home(tmp_path, "Ghent", relays=[relay]), [], tmp_path / "b.log")
    try:
        a.start()
        b.start()
        await a.wait_ready()
        await b.wait_ready()
        theirs = await b.publish(1, "welcome-desk")
        await a.publish(2, "own-desk")

        async def holds_theirs() -> bool:
            status, _ = await a.request("GET", f"/v1/practices/{theirs['ref']}")
            return status == 200

        await wait_for(holds_theirs, 30)
        status_a, status_b = (await a.status()), (await b.status())
        _register_formats(
            [status_a["identity"], status_b["identity"]], [status_a["key"], status_b["key"]]
        )
        problems, tally = await asyncio.to_thread(_run, a.base, a.home.load_token())
        a.check_alive()
    finally:
        a.stop()
        b.stop()
    print(f"\nschemathesis: test cases per phase {tally}")
    assert not problems, f"{len(problems)} problems:\n\n" + "\n\n".join(problems[:15])
