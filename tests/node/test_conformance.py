"""Schemathesis against a real ``citymesh node run``: every default check (negative data and
ignored auth included), the examples, coverage, fuzzing and stateful phases, with no failure.

The node under test (A) and a second city (B) run as processes on one relay; B's practice gives
A a practice to rate and replicate, A's own one a practice it may not rate (409).

The stateful phase chains requests along the document's OpenAPI links (a published practice's
author and slug to the practice, its rating, its retraction; a list's first item to its detail;
a key rotation to the status; ...). It runs first, on its own, while A is fresh, and the test
checks from schemathesis' records that it ran and how many steps took their input from a link.

What the document states only in words is told to schemathesis as it is told to any client:

- identities and keys carry a ``format`` (``citymesh-identity``, ``citymesh-key``): the bech32m
  checksum holds and a key is a point of large order. Strategies for both are registered here
  (the two cities' identities and keys among them, so lookups sometimes find something).
- rules no schema can hold (a cursor issued for the query, the disclosure firewall, a member
  with no profile) answer 422, documented on the routes. 422 is not in schemathesis' default
  list for schema-valid input, so it is added there, and a check of our own makes sure that
  every 422 carries one of those documented codes (a 422 for anything else fails the run).

Bounded: a fixed seed, few examples per operation; under three minutes on two cores.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.engine.recorder import ScenarioRecorder
from schemathesis.engine.run import PhaseName
from schemathesis.schemas import BaseSchema

from citymesh.node.natsserver import NatsServer
from citymesh.protocol import api
from citymesh.protocol.identity import SecretKey, identity_text, public_key_text

from ..faults.cluster import NodeProc, make_home, wait_for

pytestmark = pytest.mark.slow

SEED = 20_251_201
MAX_EXAMPLES = int(os.environ.get("CITYMESH_ST_EXAMPLES", "12"))
MIN_LINK_STEPS = 60
"""Stateful steps whose input came from a link of the document (of some 450 steps; about 150
take one, as schemathesis sometimes draws a parameter afresh instead)."""
MIN_LINKS = 20
"""Distinct links those steps followed."""
GET_PUBLISHED = "-> [201] GetPractice -> GET /v1/practices/{author}/{addr}"
"""Any write's 201 (a publication, a rating, a replication) linked to the practice it names."""
RATE = "-> POST /v1/practices/{author}/{addr}/ratings"
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


@dataclass
class Outcome:
    """What a run found, and how much of the stateful phase's link graph it walked."""

    problems: list[str] = field(default_factory=list)
    tally: dict[str, int] = field(default_factory=dict)
    stateful_status: Status | None = None
    stateful_skip: object = None
    stateful_transitions: int = 0
    followed: Counter[str] = field(default_factory=Counter)
    """Stateful steps that took a value from a declared (not inferred) link, by link."""
    answers: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    """The statuses those steps were answered with, by link."""

    def count_links(self, recorder: ScenarioRecorder) -> None:
        for case_id, node in recorder.cases.items():
            transition = node.transition
            if transition is None or transition.is_inferred or not node.is_transition_applied:
                continue
            self.followed[transition.id] += 1
            interaction = recorder.interactions.get(case_id)
            if interaction is not None and interaction.response is not None:
                self.answers[transition.id][interaction.response.status_code] += 1

    def answered(self, link_suffix: str, *statuses: int) -> int:
        """Steps along links ending in ``link_suffix`` answered with one of ``statuses``."""
        return sum(
            codes[status]
            for link, codes in self.answers.items()
            if link.endswith(link_suffix)
            for status in statuses
        )


def _run(url: str, token: str, outcome: Outcome, *, stateful: bool) -> None:
    """One engine run: the stateful phase alone, or the examples, coverage and fuzzing phases."""
    # schemathesis decides with the global `random` whether a step takes a link's value (its
    # `seed` covers hypothesis only): seeded too, so the steps taken repeat from run to run.
    random.seed(SEED)
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {token}"},
            "workers": 1,
            "request-timeout": 30,
            "suppress-health-check": ["all"],
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": not stateful},
                "coverage": {"enabled": not stateful},
                "fuzzing": {"enabled": not stateful},
                "stateful": {"enabled": stateful, "max-steps": 40},
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
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.PhaseFinished) and stateful:
            if event.phase.name is PhaseName.STATEFUL_TESTING:
                outcome.stateful_status = event.status
                outcome.stateful_skip = event.phase.skip_reason
        elif isinstance(event, events.PhaseStarted) and stateful:
            if isinstance(event.payload, events.StatefulPhasePayload):
                outcome.stateful_transitions = event.payload.transitions_selected
        elif isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            phase = getattr(event, "phase", None)
            name = phase.value if phase is not None else "fuzz"
            outcome.tally[name] = outcome.tally.get(name, 0) + len(event.recorder.cases)
            if phase is PhaseName.STATEFUL_TESTING:
                outcome.count_links(event.recorder)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        outcome.problems.append(
                            f"[{name}] {event.recorder.label} {check.name} ({failure.code}): "
                            f"{failure.title}\n{failure.message}\n"
                            f"{check.failure_info.code_sample[:600]}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            outcome.problems.append(f"error: {event.info.format()}")  # type: ignore[union-attr]


async def test_schemathesis_finds_no_failure(nats_server: NatsServer, tmp_path: Path) -> None:
    relay = nats_server.client_url
    a = NodeProc("A", make_home(tmp_path, "Mechelen", relays=[relay]), [], tmp_path / "a.log")
    b = NodeProc("B", make_home(tmp_path, "Ghent", relays=[relay]), [], tmp_path / "b.log")
    try:
        a.start()
        b.start()
        await a.wait_ready()
        await b.wait_ready()
        own = await a.publish(2, "own-desk")
        theirs = await b.publish(1, "welcome-desk")  # the newer: first in a plain search
        # Found by the stateful phase: a retraction reason over the document's maxLength was cut
        # short and the practice retracted. It is refused, and nothing is retracted.
        status, body = await a.request("DELETE", f"/v1/practices/{own['ref']}?reason={'x' * 1001}")
        assert (status, body["error"]["field"]) == (400, "reason"), body

        async def holds_theirs() -> bool:
            status, _ = await a.request("GET", f"/v1/practices/{theirs['ref']}")
            return status == 200

        await wait_for(holds_theirs, 30)
        status_a, status_b = (await a.status()), (await b.status())
        assert own["author"] == status_a["identity"], own  # links take a practice's author here
        status, _ = await a.request("GET", f"/v1/practices/{own['ref']}")
        assert status == 200
        _register_formats(
            [status_a["identity"], status_b["identity"]], [status_a["key"], status_b["key"]]
        )
        started, outcome, token = time.monotonic(), Outcome(), a.home.load_token()
        # The stateful phase first, while A is fresh: the other phases publish charters that allow
        # one record per hour, and from then on every write is refused (429, documented), which
        # would leave the stateful phase no write to chain from.
        await asyncio.to_thread(_run, a.base, token, outcome, stateful=True)
        await asyncio.to_thread(_run, a.base, token, outcome, stateful=False)
        elapsed = time.monotonic() - started
        a.check_alive()
    finally:
        a.stop()
        b.stop()
    followed = outcome.followed
    print(
        f"\nschemathesis ({elapsed:.0f} s): test cases per phase {outcome.tally}; stateful: "
        f"{sum(followed.values())} steps along {len(followed)} of "
        f"{outcome.stateful_transitions} links"
    )
    for link, n in sorted(followed.items()):
        print(f"  {n:3} {dict(sorted(outcome.answers[link].items()))}  {link}")
    problems = outcome.problems
    assert not problems, f"{len(problems)} problems:\n\n" + "\n\n".join(problems[:15])
    # The stateful phase ran and chained requests along the document's links.
    assert outcome.stateful_status is Status.SUCCESS, (
        outcome.stateful_status,
        outcome.stateful_skip,
    )
    assert outcome.stateful_transitions >= 40, outcome.stateful_transitions
    assert sum(followed.values()) >= MIN_LINK_STEPS, followed
    assert len(followed) >= MIN_LINKS, followed
    # Values flowed: a practice a write just named was fetched by its link, and a practice reached
    # by a link was rated (201) or refused as this city's own (409), never unknown (404).
    assert outcome.answered(GET_PUBLISHED, 200) > 0, outcome.answers[GET_PUBLISHED]
    assert outcome.answered(RATE, 201, 409) > 0, outcome.answers
