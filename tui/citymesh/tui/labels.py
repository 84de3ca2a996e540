"""Short English labels for the wire codes the TUI shows (codes stay the identifiers).

The TUI may not import ``citymesh.practices`` (where the long labels live), and a terminal column
wants shorter ones anyway; a test checks that every code of ``citymesh.protocol.codes`` has one.
"""

from __future__ import annotations

from typing import Final

SECTORS: Final[dict[str, str]] = {
    "FOOD": "Food security",
    "WASH": "Water and sanitation",
    "SAFETY": "Safety, protection",
    "INFRA_COMMS": "Infrastructure, comms",
    "HOUSING": "Housing, shelter",
    "EDUCATION": "Education, language",
    "ID_REGULARISATION": "ID, regularisation",
    "RIGHTS_INFO": "Rights, information",
    "JUSTICE": "Justice",
    "HEALTH": "Health",
    "WORK": "Work, skills",
    "PARTICIPATION": "Participation",
    "COHESION": "Social cohesion",
    "GOVERNANCE": "Governance",
    "CRISIS": "Crisis response",
}

TARGET_GROUPS: Final[dict[str, str]] = {
    "FOREIGN_BORN": "Foreign-born",
    "FOREIGN_CITIZEN": "Foreign citizens",
    "NEWCOMER": "Newcomers",
    "REFUGEE": "Refugees",
    "ASYLUM_SEEKER": "Asylum seekers",
    "IDP": "Internally displaced",
    "RETURNEE": "Returnees",
    "STATELESS": "Stateless people",
    "IRREGULAR": "Irregular status",
    "MIGRANT_WORKER": "Migrant workers",
    "SECOND_GEN": "Second generation",
    "UAM": "Unaccompanied minors",
    "HOST": "Host community",
    "STAFF": "Front-line staff",
    "EMPLOYERS": "Employers",
}

PRACTICE_STATUS: Final[dict[str, str]] = {
    "pilot": "Pilot",
    "active": "Active",
    "regular_service": "Regular service",
    "ended": "Ended",
}

RELATION: Final[dict[str, str]] = {
    "inspired_by": "inspired by it",
    "adapted": "adapted it",
    "replicated": "replicated it",
    "scaled": "scaled it up",
}

REPLICATION_STATUS: Final[dict[str, str]] = {
    "planned": "planned",
    "piloting": "piloting",
    "running": "running",
    "ended": "ended",
    "abandoned": "abandoned",
}

WORKED: Final[dict[str, str]] = {
    "yes": "worked",
    "partly": "partly worked",
    "no": "did not work",
    "too_early": "too early to tell",
}

WORKED_SHORT: Final[dict[str, str]] = {
    "yes": "✓ worked",
    "partly": "◐ partly",
    "no": "✗ did not work",
    "too_early": "too early",
}

RATER_ROLE: Final[dict[str, str]] = {
    "peer": "peer city",
    "expert": "expert",
    "adopter": "adopter (we replicated it)",
}

FACETS: Final[dict[str, str]] = {
    "sector": "Sector",
    "target_group": "Target group",
    "country": "Country",
    "status": "Status",
    "rating": "Rating",
}


def sector(code: str) -> str:
    return SECTORS.get(code, code)


def target_group(code: str) -> str:
    return TARGET_GROUPS.get(code, code)


def practice_status(code: str) -> str:
    return PRACTICE_STATUS.get(code, code)


def facet_value(facet: str, code: str) -> str:
    """The label of one facet value (countries stay ISO 3166 alpha-3 codes)."""
    if facet == "sector":
        return sector(code)
    if facet == "target_group":
        return target_group(code)
    if facet == "status":
        return practice_status(code)
    return code
