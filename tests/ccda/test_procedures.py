"""Procedures (SPEC §8.4.8): no GP Connect area; section 2.7.1:2014-06-09 with nullFlavor NI and an explanation."""

from __future__ import annotations

from dataclasses import replace

from tests.ccda.conftest import CONTEXT, NS, converted, load, tree
from tests.ccda.crafted import section, text_of

from xhuma.ccda import convert
from xhuma.nhs.terminology import packaged_facts


def test_procedures_section_is_no_information_never_an_empty_assertion() -> None:
    procedures = section(tree(converted("gp2gp-adaptor/docs-example-response")), "47519-4")
    assert procedures.get("nullFlavor") == "NI"
    assert procedures.xpath("c:templateId[@extension='2014-06-09']/@root", namespaces=NS) == [
        "2.16.840.1.113883.10.20.22.2.7.1"]
    assert not procedures.xpath("c:entry", namespaces=NS)
    assert "has no procedures list" in text_of(procedures)


def test_no_section_says_no_information_twice_or_repeats_a_row(fixture_name: str) -> None:
    """A section that explains why it is empty (Procedures, the provenance section's "no warnings") does not add the
    generic "No information available" paragraph under it, and no table of a section repeats a row."""
    bundle = load(fixture_name)
    for conversion in (converted(fixture_name), convert(bundle, replace(CONTEXT, terminology=packaged_facts(bundle)))):
        root = tree(conversion)
        for sec in root.xpath("//c:section", namespaces=NS):
            paragraphs = [text_of(p) for p in sec.xpath("c:text/c:paragraph", namespaces=NS)]
            if "No information available from the GP record." in paragraphs:
                assert len(paragraphs) == 1 or all("No information" not in p for p in paragraphs[:-1]), paragraphs
                assert "The GP system reported no warnings for this record." not in paragraphs
        for title in ("Procedures", "Past medical history", "Family history"):
            for sec in root.xpath(f"//c:section[c:title='{title}']", namespaces=NS):
                rows = [text_of(r) for r in sec.xpath("c:text//c:tbody/c:tr", namespaces=NS)]
                assert len(rows) == len(set(rows)), f"{title} repeats a row"
