"""Family history (issue 13): "FH: ..." codes of uncategorised data (SNOMED << 416471007, told by the terminology
facts) become a C-CDA R2.1 Family History Section of Family History Organizers, with the relative the GP named;
without terminology they stay in "Other GP record entries" and the report says why."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.ccda.conftest import CONTEXT, load, tree, xpath
from tests.ccda.crafted import assert_valid, bundle, gp_list, observation, outcome, section_titled, text_of

from xhuma.ccda import Conversion, convert
from xhuma.ccda.context import Hierarchy, TerminologyFacts
from xhuma.ccda.sections.family_history import relative
from xhuma.nhs.terminology import packaged_facts

RECORD = "gp2gp-adaptor/gpc-access-structured"
SECTION = "2.16.840.1.113883.10.20.22.2.15"
ORGANIZER = "2.16.840.1.113883.10.20.22.4.45"
OBSERVATION = "2.16.840.1.113883.10.20.22.4.46"
FH_CARDIOVASCULAR = "Observation/B38DF435-D8E5-4D02-8161-55A71E37F684"
FACTS = TerminologyFacts({"266894000": Hierarchy.FAMILY_HISTORY}, source="test", version="1")


def _packaged(name: str) -> Conversion:
    bundle_ = load(name)
    return convert(bundle_, replace(CONTEXT, terminology=packaged_facts(bundle_)))


def _family_history(root: object) -> object:
    found = xpath(root, f"//c:section[c:templateId[@root='{SECTION}' and @extension='2015-08-01']]")
    assert len(found) == 1
    return found[0]


def test_fh_codes_become_family_history_organizers_with_the_relative_the_gp_named() -> None:
    conversion = _packaged(RECORD)
    section = _family_history(tree(conversion))
    assert xpath(section, "c:code/@code") == ["10157-6"]
    organizers = xpath(section, "c:entry/c:organizer")
    assert len(organizers) == 3
    relatives = sorted(xpath(o, "c:subject/c:relatedSubject/c:code/@code")[0] for o in organizers)
    assert relatives == ["FTH", "MTH", "UNCLE"]  # "Family member : Father / Mother / Uncle" in the comments
    for organizer in organizers:
        assert xpath(organizer, f"c:templateId[@root='{ORGANIZER}']/@extension") == ["2015-08-01"]
        assert xpath(organizer, "c:subject/c:relatedSubject/@classCode") == ["PRS"]
        observations = xpath(organizer, f"c:component/c:observation[c:templateId/@root='{OBSERVATION}']")
        assert len(observations) == 1
        assert xpath(observations[0], "c:value/@code")[0] in ("266894000", "160393005")
        assert xpath(observations[0], "c:code/c:translation/@code") == ["75326-9"]
    outcome_ = outcome(conversion, FH_CARDIOVASCULAR)
    assert outcome_["outcome"] == "entry" and outcome_["section"] == "family_history"
    assert "FH: Cardiovascular disease" not in text_of(section_titled(tree(conversion), "Other GP record entries"))
    assert_valid(conversion)


def test_an_fh_entry_without_a_named_relative_is_a_family_member_not_a_guess() -> None:
    fh = observation("fh1", "266894000", "FH: Cardiovascular disease", comment="Recorded at registration")
    conversion = convert(bundle(gp_list("826501000000100", fh), fh), replace(CONTEXT, terminology=FACTS))
    section = _family_history(tree(conversion))
    assert xpath(section, "c:entry/c:organizer/c:subject/c:relatedSubject/c:code/@code") == ["FAMMEMB"]
    assert "Not stated" in text_of(section) and "Recorded at registration" in text_of(section)
    assert_valid(conversion)


@pytest.mark.parametrize(("comment", "expected"), [
    ("Family member : Uncle", "UNCLE"),
    ("Family member : Father - note - this is obviously wrong?", "FTH"),
    ("Significance : Minor - Family member: Paternal grandmother", "PGRMTH"),
    ("Family member : Neighbour", None),  # not a relative of the Family Member value set: no code invented
    ("Uncle had a heart attack", None),  # free text is not the qualifier
])
def test_the_relative_is_read_only_from_the_family_member_qualifier(comment: str, expected: str | None) -> None:
    found = relative({"comment": comment})
    assert (found[0] if found else None) == expected


def test_without_terminology_fh_entries_stay_in_other_gp_record_entries_and_say_why() -> None:
    fh = observation("fh1", "266894000", "FH: Cardiovascular disease", comment="Family member : Uncle")
    conversion = convert(bundle(gp_list("826501000000100", fh), fh), CONTEXT)
    root = tree(conversion)
    assert not xpath(root, f"//c:section[c:templateId/@root='{SECTION}']")
    assert "FH: Cardiovascular disease" in text_of(section_titled(root, "Other GP record entries"))
    assert "no terminology" in outcome(conversion, "Observation/fh1")["reason"]
    assert any(w["code"] == "terminology-unavailable" for w in conversion.report["warnings"])


def test_the_uncategorised_lists_warnings_open_the_family_history_section() -> None:
    section = _family_history(tree(_packaged(RECORD)))
    paragraphs = [text_of(p) for p in xpath(section, "c:text/c:paragraph")]
    assert any("Data in transit" in p for p in paragraphs[:3])  # the record may be incomplete: said first
    assert any("Confidential items" in p for p in paragraphs[:3])
