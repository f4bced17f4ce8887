"""Social history (SPEC §8.4.11): Smoking Status MU 4.78:2014-06-09, Tobacco Use 4.85, Social History Obs 4.38."""

from __future__ import annotations

from tests.ccda.conftest import NS, converted, tree
from tests.ccda.crafted import assert_valid, bundle, gp_list, observation, run, section, text_of

SOCIAL = "29762-2"


def test_smoking_status_meaningful_use_72166_2_with_the_gp_code_as_value() -> None:
    social = section(tree(converted("gp2gp-adaptor/docs-example-response")), SOCIAL)
    smoking = social.xpath("c:entry/c:observation[c:templateId[@root='2.16.840.1.113883.10.20.22.4.78']]",
                           namespaces=NS)
    assert len(smoking) == 1
    assert smoking[0].xpath("c:code/@code", namespaces=NS) == ["72166-2"]
    assert smoking[0].xpath("c:value/@code", namespaces=NS) == ["266919005"]
    assert smoking[0].xpath("c:effectiveTime/@value", namespaces=NS) == ["20190328103000+0000"]
    assert not smoking[0].xpath("c:effectiveTime/c:low", namespaces=NS)  # CONF:1098-32894


def test_alcohol_units_are_social_history_observations_with_loinc_translation_and_ucum_unit() -> None:
    social = section(tree(converted("gp2gp-adaptor/docs-example-response")), SOCIAL)
    alcohol = social.xpath("c:entry/c:observation[c:code/@code='1082641000000106']", namespaces=NS)
    assert len(alcohol) == 3
    assert alcohol[0].xpath("c:templateId/@extension", namespaces=NS) == ["2015-08-01"]
    assert alcohol[0].xpath("c:code/c:translation/@code", namespaces=NS) == ["11331-6"]
    assert alcohol[0].xpath("c:value/@unit", namespaces=NS) == ["{units}/wk"]


def test_other_tobacco_codes_use_tobacco_use_4_85_and_findings_use_category_code() -> None:
    cigarettes = observation("t1", "65568007", "Cigarette smoker")
    teetotal = observation("a1", "105542008", "Non-drinker")
    conversion, root = run(bundle(gp_list("826501000000100", cigarettes, teetotal), cigarettes, teetotal))
    social = section(root, SOCIAL)
    tobacco = social.xpath("c:entry/c:observation[c:templateId[@root='2.16.840.1.113883.10.20.22.4.85']]",
                           namespaces=NS)[0]
    assert tobacco.xpath("c:code/@code", namespaces=NS) == ["11367-0"]
    assert tobacco.xpath("c:effectiveTime/c:low/@value", namespaces=NS) == ["20240501100000+0000"]
    finding = social.xpath("c:entry/c:observation[c:value/@code='105542008']", namespaces=NS)[0]
    assert finding.xpath("c:code/@code", namespaces=NS) == ["160573003"]  # Alcohol intake
    assert "Non-drinker" in text_of(social)
    assert_valid(conversion)


def test_social_history_section_is_present_without_entries_when_nothing_recorded() -> None:
    social = section(tree(converted("gpconnect-spec/allergies_response2")), SOCIAL)
    assert not social.xpath("c:entry", namespaces=NS)
    assert social.get("nullFlavor") is None  # entries-optional: present, narrative only
    assert "No information" in text_of(social)
