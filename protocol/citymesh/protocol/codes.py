"""Code lists that are part of the wire format. Codes are stable identifiers; labels live in
``citymesh.practices.taxonomy`` and can be translated. New codes may be added in a minor version;
a code is never renamed or reused."""

from __future__ import annotations

from typing import Literal, get_args

Sector = Literal[
    # The Mechelen Declaration's assessment sectors
    "FOOD",
    "WASH",
    "SAFETY",
    "INFRA_COMMS",
    "HOUSING",
    "EDUCATION",
    "ID_REGULARISATION",
    "RIGHTS_INFO",
    "JUSTICE",
    # and the wider integration sectors
    "HEALTH",
    "WORK",
    "PARTICIPATION",
    "COHESION",
    "GOVERNANCE",
    "CRISIS",
]
SECTORS: tuple[str, ...] = get_args(Sector)

TargetGroup = Literal[
    "FOREIGN_BORN",
    "FOREIGN_CITIZEN",
    "NEWCOMER",
    "REFUGEE",
    "ASYLUM_SEEKER",
    "IDP",
    "RETURNEE",
    "STATELESS",
    "IRREGULAR",
    "MIGRANT_WORKER",
    "SECOND_GEN",
    "UAM",
    "HOST",
    "STAFF",
    "EMPLOYERS",
]
TARGET_GROUPS: tuple[str, ...] = get_args(TargetGroup)

Sex = Literal["F", "M", "X"]
AgeBand = Literal["Y0-5", "Y6-14", "Y15-17", "Y18-24", "Y25-34", "Y35-49", "Y50-64", "Y65+"]
AGE_BANDS: tuple[str, ...] = get_args(AgeBand)

PracticeStatus = Literal["pilot", "active", "regular_service", "ended"]
MechelenCommitment = Literal[
    "CITY_TO_CITY",  # city-to-city cooperation replicating successful practices
    "LOCAL_DATA",  # standardised, disaggregated local data
    "FIREWALL",  # firewall between data collection and service provision
    "ACCESS_SERVICES",  # access to basic services regardless of status
    "INCLUSION",  # social and economic inclusion
    "PARTICIPATION",  # migrants' voice in local decisions
]
ActorRole = Literal["lead", "partner", "funder", "implementer", "evaluator", "mentor"]
ActorType = Literal[
    "city",
    "regional_gov",
    "national_gov",
    "international",
    "ngo",
    "migrant_led",
    "academic",
    "private",
    "faith_based",
    "other",
]
BudgetBand = Literal["lt_10k", "10k_50k", "50k_250k", "250k_1m", "gt_1m"]
FundingType = Literal[
    "municipal",
    "regional",
    "national",
    "eu",
    "international",
    "private",
    "philanthropic",
    "in_kind",
]
EvaluationType = Literal["none", "monitoring", "internal", "external", "academic"]
Scale = Literal["neighbourhood", "city", "metropolitan", "regional", "national"]
PopulationBand = Literal[
    "lt_50k", "50k_100k", "100k_250k", "250k_500k", "500k_1m", "1m_5m", "gt_5m"
]

RaterRole = Literal["peer", "expert", "adopter"]
Relation = Literal["inspired_by", "adapted", "replicated", "scaled"]
ReplicationStatus = Literal["planned", "piloting", "running", "ended", "abandoned"]
Worked = Literal["yes", "partly", "no", "too_early"]

# SDMX code lists (OBS_STATUS, CONF_STATUS), the subset citymesh writes.
ObsStatus = Literal["A", "E", "P", "M", "L", "O"]
"""A normal, E estimated, P provisional, M missing, L missing (not collected), O missing (suppressed)"""
ConfStatus = Literal["F", "C", "D", "N"]
"""F free, C confidential (primary), D secondary confidentiality, N not for publication"""
SourceType = Literal["register", "administrative", "survey", "census", "service_data", "estimate"]

MemberRole = Literal["member", "observer", "steward"]
MembershipStatus = Literal["active", "revoked"]
