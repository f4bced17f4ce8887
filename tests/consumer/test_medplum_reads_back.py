"""An independent consumer reads every fixture's CCD back (issue 13): Medplum's C-CDA → FHIR conversion
(``@medplum/ccda``, pinned in tests/consumer/package.json and installed by ``npm ci`` in scripts/test) turns each
document into FHIR, and the numbers, units and vaccine codes it recovers are checked against the source bundle.

A value with a comparator (``>= 1000 ng/L``) is an IVL_PQ in C-CDA; Medplum 4.5 does not read IVL_PQ values
("Unhandled observation value type"), so for those the test checks the document itself carries the bound."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from tests.ccda.conftest import CONTEXT, FIXTURES, fixture_id, load

from xhuma.ccda import convert
from xhuma.ccda.ucum import quantity_unit
from xhuma.nhs.terminology import packaged_facts

CONSUMER = Path(__file__).resolve().parent
SNOMED = "http://snomed.info/sct"
VACCINATION_PROCEDURE = "Extension-CareConnect-VaccinationProcedure-1"


@cache
def _read_back(directory: str) -> dict[str, Any]:
    """Every fixture converted (with the packaged terminology, as ``xhuma convert`` does), then read by Medplum in
    one Node process."""
    if not (CONSUMER / "node_modules" / "@medplum" / "ccda").is_dir():
        pytest.fail("tests/consumer/node_modules is missing: run `npm ci` in tests/consumer (scripts/test does)")
    out = Path(directory)
    files = []
    for path in FIXTURES:
        bundle = load(fixture_id(path))
        target = out / (fixture_id(path).replace("/", "__") + ".xml")
        target.write_bytes(convert(bundle, replace(CONTEXT, terminology=packaged_facts(bundle))).xml)
        files.append(str(target))
    node = shutil.which("node")
    assert node is not None, "Node.js is required for the consumer test"
    done = subprocess.run([node, "read_ccda.cjs", *files], cwd=CONSUMER, capture_output=True, check=True, timeout=300)
    return {Path(k).stem.replace("__", "/"): v for k, v in json.loads(done.stdout).items()}


@pytest.fixture(scope="module")
def read_back(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _read_back(str(tmp_path_factory.mktemp("medplum")))


def _sct(concept: object) -> set[str]:
    if not isinstance(concept, dict):
        return set()
    return {str(c.get("code")).strip() for c in concept.get("coding") or [] if isinstance(c, dict)
            and str(c.get("system") or "").strip() == SNOMED and c.get("code")}


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry") or [] if isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == kind]


def _source_quantities(bundle: dict[str, Any]) -> list[tuple[set[str], dict[str, Any]]]:
    found = []
    for observation in _resources(bundle, "Observation"):
        for item in [observation, *(observation.get("component") or [])]:
            quantity = item.get("valueQuantity")
            if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float):
                found.append((_sct(item.get("code")), quantity))
    return found


def _same_unit(unit: str | None) -> str | None:
    """UCUM annotations are unity (UCUM §12): ``{resps}/min`` is ``/min``; an annotation alone stays itself."""
    if unit is None:
        return None
    bare = re.sub(r"\{[^}]*\}", "", unit)
    return bare if bare.strip("/.") else unit


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
def test_medplum_recovers_every_numeric_value_with_its_unit(path: Path, read_back: dict[str, Any]) -> None:
    name = fixture_id(path)
    fhir = read_back[name]
    assert "error" not in fhir, fhir
    recovered: dict[tuple[str, Decimal], set[str | None]] = {}
    for observation in _resources(fhir, "Observation"):
        quantity = observation.get("valueQuantity") or {}
        if "value" in quantity:
            for code in _sct(observation.get("code")):
                recovered.setdefault((code, Decimal(str(quantity["value"]))), set()).add(quantity.get("unit"))
    bounds: set[Decimal] = set()
    for codes, quantity in _source_quantities(load(name)):
        value = Decimal(str(quantity["value"]))
        if quantity.get("comparator"):
            bounds.add(value)
            continue
        units = set().union(*(recovered.get((code, value), set()) for code in codes))
        assert units, f"{name}: {codes} = {value} not recovered by the consumer"
        expected = _same_unit(quantity_unit(quantity).code)
        assert expected in {_same_unit(u) for u in units}, f"{name}: unit of {codes} = {value} not recovered"
    if bounds:
        xml = convert(load(name), replace(CONTEXT, terminology=packaged_facts(load(name)))).xml
        carried = {Decimal(v) for v in etree.fromstring(xml).xpath(
            "//c:value[@xsi:type='IVL_PQ']/*/@value",
            namespaces={"c": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"})}
        assert bounds <= carried


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
def test_medplum_identifies_every_vaccine_the_source_names(path: Path, read_back: dict[str, Any]) -> None:
    name = fixture_id(path)
    recovered = set().union(*(_sct(i.get("vaccineCode")) for i in _resources(read_back[name], "Immunization")))
    for immunisation in _resources(load(name), "Immunization"):
        expected = _sct(immunisation.get("vaccineCode"))
        if not expected:  # no product code: the vaccination procedure names the vaccine
            for extension in immunisation.get("extension") or []:
                if str(extension.get("url", "")).endswith(VACCINATION_PROCEDURE):
                    expected = _sct(extension.get("valueCodeableConcept"))
        if expected:
            assert expected & recovered, f"{name}: vaccine {expected} not identified by the consumer"


def test_the_lock_pins_the_consumer_and_names_no_registry_host() -> None:
    manifest = json.loads((CONSUMER / "package.json").read_text())
    lock = (CONSUMER / "package-lock.json").read_text()
    version = manifest["dependencies"]["@medplum/ccda"]
    assert version[0].isdigit(), "pinned to an exact version"
    assert json.loads(lock)["packages"]["node_modules/@medplum/ccda"]["version"] == version
    assert "resolved" not in lock and "registry" not in lock
