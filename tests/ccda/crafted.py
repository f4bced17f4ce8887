"""Small crafted GP Connect bundles for the clinical-area tests (results, vital signs, encounters, …)."""

from __future__ import annotations

from typing import Any

from lxml import etree
from tests.ccda.conftest import CONTEXT, NS

from xhuma.ccda import Conversion, convert
from xhuma.ccda.validate import validate_bytes

SCT = "http://snomed.info/sct"
PATIENT = {
    "resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01", "gender": "female",
    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000009"}],
    "name": [{"use": "official", "family": "Test", "given": ["Pat"]}],
}
PRACTITIONER = {"resourceType": "Practitioner", "id": "gp1", "name": [{"family": "Jones", "given": ["Ann"],
                                                                       "prefix": ["Dr"]}],
                "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "G1234567"}]}


def concept(code: str, display: str, system: str = SCT) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def gp_list(code: str, *members: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "List", "id": f"list-{code}", "status": "current", "mode": "snapshot",
            "code": concept(code, f"list {code}"), "subject": {"reference": "Patient/p1"},
            "entry": [{"item": {"reference": f"{m['resourceType']}/{m['id']}"}} for m in members], **extra}


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-StructuredRecord-Bundle-1"]},
            "entry": [{"resource": r} for r in (PATIENT, PRACTITIONER, *resources)]}


def observation(oid: str, code: str, display: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "identifier": [{"system": "https://supplier.example/id", "value": oid}],
            "code": concept(code, display), "effectiveDateTime": "2024-05-01T10:00:00+00:00", **fields}


def run(resources_bundle: dict[str, Any]) -> tuple[Conversion, etree._Element]:
    conversion = convert(resources_bundle, CONTEXT)
    return conversion, etree.fromstring(conversion.xml)


def section(root: etree._Element, code: str) -> etree._Element:
    found = root.xpath(f"//c:section[c:code/@code='{code}']", namespaces=NS)
    assert found, f"no section with code {code}"
    return found[0]


def section_titled(root: etree._Element, title: str) -> etree._Element:
    found = root.xpath(f"//c:section[c:title='{title}']", namespaces=NS)
    assert found, f"no section titled {title}"
    return found[0]


def text_of(element: etree._Element) -> str:
    return " ".join(" ".join(element.itertext()).split())


def assert_valid(conversion: Conversion) -> None:
    result = validate_bytes(conversion.xml)
    assert result.schema_errors == []
    assert result.schematron_errors == []


def outcome(conversion: Conversion, key: str) -> dict[str, Any]:
    return next(o for o in conversion.report["resources"] if o["resource"] == key)


def warnings(conversion: Conversion, code: str) -> list[dict[str, Any]]:
    return [w for w in conversion.report["warnings"] if w["code"] == code]
