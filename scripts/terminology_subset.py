"""Regenerates src/xhuma/nhs/simulator/terminology_subset.json: the simulator's terminology, one entry per code in
the fixtures (tests/data/gpconnect). Run: ``.venv/bin/python scripts/terminology_subset.py``.

Honest provenance: this is NOT extracted from a SNOMED CT or dm+d release. Each code's hierarchy comes, in order,
from the semantic tag of a display the fixtures give (``... (disorder)``), from the reviewed list REVIEWED below
(a reviewer read each display of a coded uncategorised entry without a value — the entries placement depends on —
and named its top-level hierarchy), or from the resource it codes (Medication/Immunization product codes are
products); everything else is left unclassified (null), which the converter treats as "hierarchy unknown".
dm+d facts are read from the form words of the product's name (FORM_WORDS), never guessed beyond them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "gpconnect"
TARGET = ROOT / "src" / "xhuma" / "nhs" / "simulator" / "terminology_subset.json"
SNOMED = "http://snomed.info/sct"
VERSION = "xhuma-fixture-subset-2026-12"
TAGS = {"procedure": "procedure", "regime/therapy": "procedure", "disorder": "disorder", "finding": "finding"}

# Reviewed by reading the display (top-level hierarchy of the concept as published in SNOMED CT).
REVIEWED: dict[str, str] = {
    "46825001": "procedure",  # Electrocardiographic monitoring
    "308931006": "procedure",  # Walking practice (regime/therapy)
    "26604007": "procedure",  # Full blood count
    "21719001": "disorder", "197480006": "disorder", "82272006": "disorder", "76376003": "disorder",
    "22298006": "disorder", "76880004": "disorder", "231504006": "disorder", "359814004": "disorder",
    "54150009": "disorder", "234050002": "disorder", "445241004": "disorder",
    "21522001": "finding", "49727002": "finding", "80182007": "finding", "30989003": "finding",
    "162397003": "finding", "449614009": "finding", "299373004": "finding", "267032009": "finding",
    "266919005": "finding", "163020007": "finding",
    # "FH: ..." situations: Family history of <finding> (situation), << 416471007 |Family history of clinical finding|
    "266894000": "family-history", "160393005": "family-history",
    "161779006": "past-history",  # H/O: menstrual disorder (situation), << 417662000 |History of clinical finding|
    "37331000000100": "other", "196411000000103": "other", "196421000000109": "other",  # record artifacts
    "364712009": "other",  # Laboratory test observable (observable entity)
    "265943003": "occupation",  # Etcher/engraver (occupation), << 14679004 |Occupation|
    "413153004": "procedure",  # Blood pressure recorded by patient at home (procedure)
}
# Codes a reviewer looked at and deliberately left unclassified (null), with the reason (the converter then keeps
# the entry in "Other GP record entries" and its report line says the hierarchy is not known).
UNCLASSIFIED: dict[str, str] = {
    "417528008": "reviewed, not classified: a record-sharing consent statement (Consent given for upload to local "
                 "shared electronic record); its hierarchy could not be confirmed from the fixtures, and it is not "
                 "clinical history",
    "1990681000006100": "reviewed, not classified: a supplier-namespace (1000006) local code (Preferred method of "
                        "contact), not in the UK Edition a terminology server serves",
    "268559007": "reviewed, not classified: No consent for any immunization is an immunisation status the "
                 "Immunisations section shows; placement by hierarchy does not use it",
}
ROUTES = {"oral": ("26643006", "Oral"), "cutaneous": ("448598008", "Cutaneous"),
          "ophthalmic": ("54485002", "Ophthalmic"), "buccal": ("54471007", "Buccal"), "rectal": ("37161004", "Rectal")}
UNITS = {"tablet": ("428673006", "tablet"), "capsule": ("428641000", "capsule"), "ml": ("258773002", "ml"),
         "gram": ("258682000", "gram"), "suppository": ("430293001", "suppository")}
# (name pattern, form, route, unit): the first that matches a product name wins.
FORM_WORDS: list[tuple[str, tuple[str, str] | None, str, str | None]] = [
    (r"buccal tablets", None, "buccal", "tablet"),
    (r"gastro-resistant tablets", ("385057009", "Gastro-resistant tablet"), "oral", "tablet"),
    (r"(dispersible|modified-release|orodispersible) tablets", None, "oral", "tablet"),
    (r"\btable?ts\b", ("385055001", "Tablet"), "oral", "tablet"),
    (r"gastro-resistant capsules", None, "oral", "capsule"),
    (r"\bcapsules\b", ("385049006", "Capsule"), "oral", "capsule"),
    (r"oral suspension", ("385024007", "Oral suspension"), "oral", "ml"),
    (r"oral solution", ("385023001", "Oral solution"), "oral", "ml"),
    (r"\beye drops\b", ("385124005", "Eye drops"), "ophthalmic", None),
    (r"\bcream\b", ("385099005", "Cream"), "cutaneous", "gram"),
    (r"\bointment\b", ("385101003", "Ointment"), "cutaneous", "gram"),
    (r"\bsuppositories\b", ("385194003", "Suppository"), "rectal", "suppository"),
]


Seen = dict[str, tuple[set[str], set[str]]]  # code -> (displays, resource types)


def _walk(value: object, found: Seen, resource_type: str) -> None:
    if isinstance(value, dict):
        if value.get("system") == SNOMED and isinstance(value.get("code"), str):
            displays, types = found.setdefault(value["code"].strip(), (set(), set()))
            if value.get("display"):
                displays.add(str(value["display"]))
            types.add(resource_type)
        for item in value.values():
            _walk(item, found, resource_type)
    elif isinstance(value, list):
        for item in value:
            _walk(item, found, resource_type)


def _hierarchy(code: str, displays: set[str], types: set[str]) -> tuple[str | None, str]:
    for display in sorted(displays):
        tag = re.search(r"\(([a-z /]+)\)\s*$", display)
        if tag and tag.group(1) in TAGS:
            return TAGS[tag.group(1)], f"semantic tag of the fixture display '{display}'"
    if code in REVIEWED:
        return REVIEWED[code], "reviewed: top-level hierarchy named from the display"
    if code in UNCLASSIFIED:
        return None, UNCLASSIFIED[code]
    if types <= {"Medication", "Immunization"} and types:
        return "other", "product code (coded in Medication/Immunization)"
    return None, "unclassified: no semantic tag in the fixtures and not reviewed"


def _dmd(name: str) -> dict[str, object] | None:
    for pattern, form, route, unit in FORM_WORDS:
        if re.search(pattern, name, re.IGNORECASE):
            return {"form": form, "route": ROUTES[route], "unit": UNITS[unit] if unit else None,
                    "basis": f"form words of the product name ('{pattern}')"}
    return None


def main() -> None:
    found: Seen = {}
    medications: dict[str, str] = {}
    for path in sorted(FIXTURES.rglob("*.json")):
        bundle = json.loads(path.read_text())
        for item in bundle.get("entry") or []:
            resource = item.get("resource") or {}
            _walk(resource, found, resource.get("resourceType", ""))
            if resource.get("resourceType") == "Medication":
                for coding in (resource.get("code") or {}).get("coding") or []:
                    if coding.get("system") == SNOMED and coding.get("display"):
                        medications[coding["code"].strip()] = coding["display"]
    snomed = {}
    for code in sorted(found):
        displays, types = found[code]
        hierarchy, basis = _hierarchy(code, displays, types)
        snomed[code] = {"display": sorted(displays)[0] if displays else None, "hierarchy": hierarchy,
                        "basis": basis}
    dmd = {code: {"display": name, **facts} for code, name in sorted(medications.items())
           if (facts := _dmd(name)) is not None}
    document = {
        "provenance": {
            "version": VERSION,
            "derived_from": "the SNOMED CT codes and displays of the GP Connect fixtures (tests/data/gpconnect)",
            "not_from": "a SNOMED CT or dm+d release: hierarchies and dm+d facts here are not authoritative",
            "hierarchy": "semantic tag of a fixture display, else a reviewer's reading of the display (the coded "
                         "uncategorised entries without a value), else 'other' for product codes, else null; "
                         "values: procedure, disorder, finding, family-history (<< 416471007), past-history "
                         "(<< 417662000), occupation (<< 14679004), other",
            "dmd": "dose form, route and unit of measure read from the form words of the product name; null when "
                   "the name has none of the listed words",
            "generator": "scripts/terminology_subset.py",
        },
        "snomed": snomed,
        "dmd": dmd,
    }
    TARGET.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    classified = sum(1 for e in snomed.values() if e["hierarchy"])
    print(f"{len(snomed)} SNOMED codes ({classified} classified), {len(dmd)} dm+d products -> {TARGET.name}")


if __name__ == "__main__":
    main()
