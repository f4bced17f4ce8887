"""Shared fixtures of the converter tests: the GP Connect fixture bundles and a fixed conversion context."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from xhuma.ccda import Conversion, ConversionContext, convert

DATA = Path(__file__).resolve().parents[1] / "data" / "gpconnect"
FIXTURES = sorted(DATA.glob("*/*.json"))
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
CONTEXT = ConversionContext(now=NOW)
NS = {"c": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@cache
def load(name: str) -> dict[str, Any]:
    """A fixture bundle by ``folder/stem`` (fresh parse each call site must not mutate it: use copy.deepcopy)."""
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


@cache
def converted(name: str) -> Conversion:
    return convert(load(name), CONTEXT)


def tree(conversion: Conversion) -> etree._Element:
    return etree.fromstring(conversion.xml)


@pytest.fixture(params=FIXTURES, ids=fixture_id)
def fixture_name(request: pytest.FixtureRequest) -> str:
    return fixture_id(request.param)


def xpath(node: etree._Element, expression: str) -> list[Any]:
    return node.xpath(expression, namespaces=NS)  # type: ignore[no-any-return]


def section(document: etree._Element, loinc: str) -> etree._Element:
    found = xpath(document, f"//c:section[c:code/@code='{loinc}']")
    assert len(found) == 1, f"expected one section {loinc}, found {len(found)}"
    return found[0]


def bundle_with(*resources: dict[str, Any], lists: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A minimal GP Connect structured record around hand-written resources (for rule-level tests)."""
    patient = {
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9690937286"}],
        "name": [{"use": "official", "family": "Smith", "given": ["Jane"]}], "gender": "female",
        "birthDate": "1970-02-03", "managingOrganization": {"reference": "Organization/o1"},
    }
    practice = {"resourceType": "Organization", "id": "o1", "name": "Test Surgery",
                "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A12345"}]}
    entries = [patient, practice, *resources, *(lists or [])]
    return {
        "resourceType": "Bundle", "type": "collection",
        "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-StructuredRecord-Bundle-1"]},
        "entry": [{"resource": r} for r in entries],
    }


def gp_list(code: str, *references: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "List", "id": f"list-{code}", "status": "current", "mode": "snapshot",
        "title": "Any title", "date": "2024-05-01T10:00:00+00:00",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
        "entry": [{"item": {"reference": ref}} for ref in references], **extra,
    }
