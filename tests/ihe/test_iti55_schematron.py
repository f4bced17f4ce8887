"""Every kind of XCPD answer passes IPF's ITI-55 response schematron (issue 14, item 8), run with Saxon: it needs
XPath 2 (resolve-QName), which lxml's XSLT 1.0 lacks. tests/ihe/schematron.py runs the ISO pipeline."""

from __future__ import annotations

import copy

import pytest
from lxml import etree
from tests.ihe.schematron import failed_asserts, fired_rules
from tests.ihe.support import (
    ACTION_55,
    HL7,
    NHS_OID,
    NS,
    UNKNOWN_NHS,
    Pds,
    UpstreamDown,
    iti55_body,
    patient,
)

from xhuma.ports import PdsSearchMatch, PdsSearchResult

EPIC_MRN = ("1.2.840.114350.1.13.525.3.7.3.688884.100", "E12345")


def searching(result: PdsSearchResult) -> Pds:
    pds = Pds()
    pds.search_result = result
    return pds


ANSWERS = {
    # kind: (PDS stand-in, request, expected acknowledgement and queryResponseCode)
    "OK": (None, iti55_body(), ("AA", "OK")),
    "OK-by-demographics": (searching(PdsSearchResult((PdsSearchMatch(patient(gender="unknown"), 1.0),))),
                           iti55_body([[EPIC_MRN]]), ("AA", "OK")),
    "NF": (None, iti55_body([[(NHS_OID, UNKNOWN_NHS)]]), ("AA", "NF")),
    "NF-with-DetectedIssue": (searching(PdsSearchResult(too_many=True)), iti55_body([[EPIC_MRN]]), ("AA", "NF")),
    "AE": (Pds(error=UpstreamDown("PDS 503")), iti55_body(), ("AE", "AE")),
    "AE-deferred-NS250": (None, iti55_body(priority="D"), ("AE", "AE")),
}


@pytest.mark.parametrize("kind", list(ANSWERS))
async def test_every_xcpd_answer_kind_passes_the_ipf_iti55_schematron(harness_factory, kind):
    pds, request, expected = ANSWERS[kind]
    harness = await harness_factory(pds=pds) if pds is not None else await harness_factory()
    _, _, message = await harness.answered("/SOAP/iti55", ACTION_55, request)
    assert (message.find("hl7:acknowledgement/hl7:typeCode", NS).get("code"),
            message.find(".//hl7:queryAck/hl7:queryResponseCode", NS).get("code")) == expected
    if kind == "NF-with-DetectedIssue":
        assert message.find(".//hl7:detectedIssueEvent/hl7:triggerFor", NS) is not None
    if kind.startswith("OK"):
        # The rules about the patient, the person and the custodian did look at the answer.
        assert any(context.endswith("hl7:patientPerson") for context in fired_rules(message))
    assert failed_asserts(message) == []


async def test_the_schematron_run_finds_what_ipf_forbids(harness):
    """The run is not vacuous: an answer with two patient ids and a custodian without its Health Data Locator code
    fails exactly those asserts."""
    _, _, message = await harness.answered("/SOAP/iti55", ACTION_55, iti55_body())
    broken = copy.deepcopy(message)
    patient_element = broken.find(".//hl7:subject1/hl7:patient", NS)
    patient_element.insert(1, etree.Element(f"{{{HL7}}}id", root=EPIC_MRN[0], extension=EPIC_MRN[1]))
    code = broken.find(".//hl7:custodian/hl7:assignedEntity/hl7:code", NS)
    code.getparent().remove(code)
    failures = failed_asserts(broken)
    assert len(failures) == 2
    assert any("exactly one main patient ID" in failure for failure in failures)
    assert any("Health Data Locator" in failure for failure in failures)
