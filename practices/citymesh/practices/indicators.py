"""The indicator catalogue: definitions, dimensions and code lists (pure data).

Codes follow SDMX habits: dimension ids in capitals, ``_T`` for a total, UNIT_MEASURE codes
(PS persons, PC percent, DAYS, HH households, NR number). Where an upstream series exists the
definition names it in ``crosswalk`` (SDG series codes, Eurostat dataset codes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

TOTAL: Final = "_T"

Measure = Literal["count", "mean", "median", "rate", "share"]
Frequency = Literal["A", "S", "Q", "M"]


@dataclass(frozen=True, slots=True)
class Dimension:
    id: str
    name: str
    codes: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)


def _dim(id_: str, name: str, labels: dict[str, str]) -> Dimension:
    return Dimension(id_, name, tuple(labels), labels)


DIMENSIONS: Final[dict[str, Dimension]] = {
    d.id: d
    for d in (
        _dim("SEX", "Sex", {"F": "Female", "M": "Male", "X": "Other / not stated"}),
        _dim(
            "AGE",
            "Age band",
            {
                "Y0-17": "0-17 years",
                "Y18-24": "18-24 years",
                "Y25-34": "25-34 years",
                "Y35-49": "35-49 years",
                "Y50-64": "50-64 years",
                "Y_GE65": "65 years or over",
            },
        ),
        _dim(
            "MIG_STATUS",
            "Migratory status",
            {
                "REFUGEE": "Refugee",
                "ASYLUM_SEEKER": "Asylum seeker",
                "FOREIGN_CITIZEN": "Foreign citizen (other)",
                "MIGRANT_WORKER": "Migrant worker",
                "STATELESS": "Stateless",
                "IRREGULAR": "Irregular status",
                "IDP": "Internally displaced",
                "RETURNEE": "Returnee",
                "UAM": "Unaccompanied minor",
                "HOST": "Host population (no migration background)",
            },
        ),
        _dim(
            "CITIZEN",
            "Citizenship",
            {
                "NAT": "Nationals",
                "EU_FOR": "Other EU citizens",
                "NEU_FOR": "Non-EU citizens",
                "STLS": "Stateless",
            },
        ),
        _dim("C_BIRTH", "Country of birth", {"NAT": "Born in the country", "FOR": "Born abroad"}),
        _dim(
            "DURATION",
            "Duration of stay",
            {
                "Y_LT1": "Less than 1 year",
                "Y1-4": "1-4 years",
                "Y5-9": "5-9 years",
                "Y_GE10": "10 years or more",
            },
        ),
        _dim(
            "DOC_TYPE",
            "Document type",
            {"REG": "Residence registration", "ID": "Municipal ID card", "PERMIT": "Permit"},
        ),
        _dim(
            "LANG_GROUP",
            "Language group",
            {"MAIN": "Main resident languages", "OTHER": "Other languages"},
        ),
    )
}


@dataclass(frozen=True, slots=True)
class IndicatorDef:
    code: str
    name: str
    definition: str
    unit: str
    measure: Measure
    dimensions: tuple[str, ...]
    sector: str
    frequency: Frequency = "A"
    source_type: str = "administrative"
    crosswalk: dict[str, str] = field(default_factory=dict)

    @property
    def counts_people(self) -> bool:
        """Counts of persons: the suppression threshold can never be below 10."""
        return self.measure == "count" and self.unit == "PS"


def _ind(
    code: str,
    name: str,
    definition: str,
    unit: str,
    measure: Measure,
    dims: tuple[str, ...],
    sector: str,
    **kw: object,
) -> IndicatorDef:
    return IndicatorDef(code, name, definition, unit, measure, dims, sector, **kw)  # type: ignore[arg-type]


CATALOGUE: Final[dict[str, IndicatorDef]] = {
    i.code: i
    for i in (
        _ind(
            "RESIDENTS",
            "Residents",
            "Registered residents on 1 January (or period start).",
            "PS",
            "count",
            ("SEX", "AGE", "C_BIRTH"),
            "GOVERNANCE",
            source_type="register",
            crosswalk={"EUROSTAT": "migr_pop3ctb"},
        ),
        _ind(
            "NEWCOMERS_REG",
            "Newcomers registered",
            "People registering residence in the city for the first time during the period.",
            "PS",
            "count",
            ("SEX", "AGE", "CITIZEN"),
            "ID_REGULARISATION",
            frequency="Q",
            source_type="register",
            crosswalk={"EUROSTAT": "migr_imm1ctz"},
        ),
        _ind(
            "REG_DAYS_MEDIAN",
            "Median days to register residence or issue an ID document",
            "Median calendar days from first request to registration or municipal ID issued.",
            "DAYS",
            "median",
            ("DOC_TYPE", "MIG_STATUS"),
            "ID_REGULARISATION",
            frequency="Q",
        ),
        _ind(
            "BIRTH_REG_SHARE",
            "Births registered",
            "Share of births to residents registered with a civil authority.",
            "PC",
            "share",
            ("MIG_STATUS",),
            "ID_REGULARISATION",
            crosswalk={"SDG": "SG_REG_BRTH"},
        ),
        _ind(
            "RIGHTS_INFO_LANG",
            "Rights information in resident languages",
            "Share of the city's rights-and-obligations information pages available in the "
            "main languages spoken by residents.",
            "PC",
            "share",
            ("LANG_GROUP",),
            "RIGHTS_INFO",
            source_type="administrative",
        ),
        _ind(
            "INFO_DESK_CONTACTS",
            "Information desk contacts",
            "Contacts at the city's migrant information or welcome desk.",
            "NR",
            "count",
            ("MIG_STATUS",),
            "RIGHTS_INFO",
            frequency="Q",
            source_type="service_data",
        ),
        _ind(
            "SHELTER_USERS",
            "People in emergency shelter",
            "Distinct people accommodated in municipal emergency shelter during the period.",
            "PS",
            "count",
            ("SEX", "AGE", "MIG_STATUS"),
            "HOUSING",
            frequency="Q",
            source_type="service_data",
        ),
        _ind(
            "OVERCROWDING",
            "Overcrowding rate",
            "Share of people living in an overcrowded household.",
            "PC",
            "rate",
            ("C_BIRTH",),
            "HOUSING",
            source_type="survey",
            crosswalk={"EUROSTAT": "ilc_lvho15"},
        ),
        _ind(
            "HOUSING_COST_OVERBURDEN",
            "Housing cost overburden rate",
            "Share of people in households spending 40% or more of disposable income on housing.",
            "PC",
            "rate",
            ("CITIZEN",),
            "HOUSING",
            source_type="survey",
            crosswalk={"EUROSTAT": "ilc_lvho25"},
        ),
        _ind(
            "EMPLOYMENT_RATE",
            "Employment rate (20-64)",
            "Employed people aged 20-64 as a share of the population of that age.",
            "PC",
            "rate",
            ("SEX", "C_BIRTH"),
            "WORK",
            source_type="survey",
            crosswalk={"EUROSTAT": "lfsa_ergacob"},
        ),
        _ind(
            "NEET_RATE",
            "Young people not in employment, education or training",
            "Share of people aged 15-24 not in employment, education or training.",
            "PC",
            "rate",
            ("SEX", "C_BIRTH"),
            "WORK",
            source_type="survey",
            crosswalk={"SDG": "SL_TLF_NEET", "EUROSTAT": "edat_lfse_28"},
        ),
        _ind(
            "SKILLS_RECOGNISED",
            "Qualifications recognised",
            "People whose foreign qualifications were recognised with the city's support.",
            "PS",
            "count",
            ("SEX", "MIG_STATUS"),
            "WORK",
            source_type="service_data",
        ),
        _ind(
            "LANG_COURSE_ENROL",
            "Language course enrolments",
            "People enrolled in publicly funded host-language courses.",
            "PS",
            "count",
            ("SEX", "AGE", "DURATION"),
            "EDUCATION",
            frequency="S",
            source_type="service_data",
        ),
        _ind(
            "EARLY_LEAVERS",
            "Early leavers from education and training",
            "Share of people aged 18-24 with at most lower secondary education and not in "
            "further education or training.",
            "PC",
            "rate",
            ("SEX", "C_BIRTH"),
            "EDUCATION",
            source_type="survey",
            crosswalk={"EUROSTAT": "edat_lfse_02"},
        ),
        _ind(
            "UAM_IN_CARE",
            "Unaccompanied minors in care",
            "Unaccompanied migrant children in municipal or mandated care on the reference day.",
            "PS",
            "count",
            ("SEX", "AGE"),
            "SAFETY",
            source_type="administrative",
        ),
        _ind(
            "FEEL_SAFE_WALKING",
            "Feeling safe walking alone at night",
            "Share of people who feel safe walking alone around the area they live after dark.",
            "PC",
            "share",
            ("SEX", "C_BIRTH"),
            "SAFETY",
            source_type="survey",
            crosswalk={"SDG": "VC_SNS_WALN_DRK"},
        ),
        _ind(
            "HEALTH_REGISTERED",
            "Registered with a primary care provider",
            "Share of residents registered with a primary care provider.",
            "PC",
            "share",
            ("MIG_STATUS",),
            "HEALTH",
            source_type="administrative",
        ),
        _ind(
            "FOOD_AID_USERS",
            "People receiving food aid",
            "Distinct people receiving municipal or partner food aid during the period.",
            "PS",
            "count",
            ("SEX", "AGE", "MIG_STATUS"),
            "FOOD",
            frequency="Q",
            source_type="service_data",
        ),
        _ind(
            "WASH_ACCESS_SITES",
            "Reception sites with safe water and sanitation",
            "Share of reception and shelter sites meeting safe water and sanitation standards.",
            "PC",
            "share",
            (),
            "WASH",
            source_type="administrative",
            crosswalk={"SDG": "SH_H2O_SAFE"},
        ),
        _ind(
            "LEGAL_AID_CASES",
            "Legal aid cases opened",
            "Legal aid or counselling cases opened for residents.",
            "NR",
            "count",
            ("MIG_STATUS",),
            "JUSTICE",
            frequency="Q",
            source_type="service_data",
        ),
        _ind(
            "COUNCIL_SEATS_MIGRANT",
            "Migrant representation in advisory councils",
            "Members of municipal advisory councils with a migration background.",
            "PS",
            "count",
            ("SEX", "C_BIRTH"),
            "PARTICIPATION",
            source_type="administrative",
        ),
        _ind(
            "NATURALISATIONS",
            "Naturalisations",
            "Residents who acquired citizenship during the period.",
            "PS",
            "count",
            ("SEX", "AGE"),
            "ID_REGULARISATION",
            source_type="register",
            crosswalk={"EUROSTAT": "migr_acq"},
        ),
        _ind(
            "DIGITAL_ACCESS_POINTS",
            "Public digital access points",
            "Public access points with free internet and multilingual help.",
            "NR",
            "count",
            (),
            "INFRA_COMMS",
            source_type="administrative",
        ),
        _ind(
            "CRISIS_ARRIVALS",
            "People received in a displacement emergency",
            "People received at municipal reception during a declared displacement emergency.",
            "PS",
            "count",
            ("SEX", "AGE", "MIG_STATUS"),
            "CRISIS",
            frequency="M",
            source_type="service_data",
        ),
        _ind(
            "NEIGHBOURLY_TRUST",
            "Trust in neighbours",
            "Share of people who say most people in their neighbourhood can be trusted.",
            "PC",
            "share",
            ("C_BIRTH",),
            "COHESION",
            source_type="survey",
        ),
    )
}


def definition(code: str) -> IndicatorDef | None:
    return CATALOGUE.get(code)
