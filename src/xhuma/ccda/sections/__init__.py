"""Section modules, in document order. Each exposes ``build(state: ConversionState) -> None`` (see SECTIONS.md).

The assembler imports ``xhuma.ccda.sections.<key>`` for every key below; a module that does not exist yet is
replaced by a valid placeholder section when the CCD requires that section.
"""

SECTION_ORDER: tuple[str, ...] = (
    "allergies",
    "medications",
    "problems",
    "immunizations",
    "results",
    "vital_signs",
    "social_history",
    "encounters",
    "notes",
    "procedures",
    "past_medical_history",  # after the sections that convert uncategorised data (vital signs, social history...)
    "family_history",
    "plan_of_treatment",
    "uncategorised",
)
