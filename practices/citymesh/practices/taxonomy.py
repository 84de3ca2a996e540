"""Labels for the wire codes of citymesh.protocol.codes (English; codes are stable, labels may be
translated). Also the Mechelen Declaration grouping of sectors."""

from __future__ import annotations

from typing import Final

from citymesh.protocol.codes import SECTORS, TARGET_GROUPS

SECTOR_LABELS: Final[dict[str, str]] = {
    "FOOD": "Food security",
    "WASH": "Water, sanitation and hygiene",
    "SAFETY": "Safety and protection",
    "INFRA_COMMS": "Infrastructure and communications",
    "HOUSING": "Housing and shelter",
    "EDUCATION": "Education and language",
    "ID_REGULARISATION": "Identity documents and regularisation",
    "RIGHTS_INFO": "Information on rights and services",
    "JUSTICE": "Access to justice",
    "HEALTH": "Health",
    "WORK": "Work and skills",
    "PARTICIPATION": "Participation and voice",
    "COHESION": "Social cohesion",
    "GOVERNANCE": "Local governance and coordination",
    "CRISIS": "Crisis response",
}

MECHELEN_ASSESSMENT_SECTORS: Final = frozenset(
    {
        "FOOD",
        "WASH",
        "SAFETY",
        "INFRA_COMMS",
        "HOUSING",
        "EDUCATION",
        "ID_REGULARISATION",
        "RIGHTS_INFO",
        "JUSTICE",
    }
)
"""The assessment sectors named in the Mechelen Declaration."""

TARGET_GROUP_LABELS: Final[dict[str, str]] = {
    "FOREIGN_BORN": "Foreign-born residents",
    "FOREIGN_CITIZEN": "Foreign citizens",
    "NEWCOMER": "Newcomers",
    "REFUGEE": "Refugees",
    "ASYLUM_SEEKER": "Asylum seekers",
    "IDP": "Internally displaced people",
    "RETURNEE": "Returnees",
    "STATELESS": "Stateless people",
    "IRREGULAR": "People with irregular status",
    "MIGRANT_WORKER": "Migrant workers",
    "SECOND_GEN": "Second generation",
    "UAM": "Unaccompanied minors",
    "HOST": "Host community",
    "STAFF": "Front-line staff",
    "EMPLOYERS": "Employers",
}

assert set(SECTOR_LABELS) == set(SECTORS), "every sector code needs a label"
assert set(TARGET_GROUP_LABELS) == set(TARGET_GROUPS), "every target group code needs a label"


def sector_label(code: str) -> str:
    return SECTOR_LABELS.get(code, code)


def target_group_label(code: str) -> str:
    return TARGET_GROUP_LABELS.get(code, code)
