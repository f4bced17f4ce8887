"""Procedures (SPEC §8.4.8): no GP Connect area; section 2.7.1:2014-06-09 with nullFlavor NI and an explanation."""

from __future__ import annotations

from tests.ccda.conftest import NS, converted, tree
from tests.ccda.crafted import section, text_of


def test_procedures_section_is_no_information_never_an_empty_assertion() -> None:
    procedures = section(tree(converted("gp2gp-adaptor/docs-example-response")), "47519-4")
    assert procedures.get("nullFlavor") == "NI"
    assert procedures.xpath("c:templateId[@extension='2014-06-09']/@root", namespaces=NS) == [
        "2.16.840.1.113883.10.20.22.2.7.1"]
    assert not procedures.xpath("c:entry", namespaces=NS)
    assert "has no procedures list" in text_of(procedures)
