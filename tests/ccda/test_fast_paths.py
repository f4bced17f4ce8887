"""The fast paths of the converter agree with the generic builders they stand in for."""

from __future__ import annotations

from lxml import etree

from xhuma.ccda.fhir import extension, extensions, sub_extension, sub_extension_values
from xhuma.ccda.hl7 import cd, cd_markup, pq
from xhuma.ccda.memo import clear_all
from xhuma.ccda.xmlwriter import SLOT, Element, el, element, fragment, frame, inner_markup, leaf, markup_of

TRICKY = ["a < b & c > d", 'quote " and \' apostrophe', "£5 – naïve ✓", "tab\there", "line\rfeed", "plain"]


def test_inner_markup_is_markup_of_without_the_element_tags() -> None:
    node = element("observation")
    for text in TRICKY:
        child = el(node, "value", {"note": text}, text=text)
        leaf(child, "originalText", text=text)
        fragment(node, "<id root=\"1.2.3\"/>")
    whole = markup_of(node)
    assert whole == f"<observation>{inner_markup(node)}</observation>"


def test_frame_around_inner_markup_is_the_built_tree() -> None:
    def wrapper() -> tuple[Element, Element]:
        root = element("component")
        return root, el(root, "observation", {"classCode": "OBS", "moodCode": "EVN"})

    framed_root, framed_entry = wrapper()
    fragment(framed_entry, SLOT)
    head, tail = frame(framed_root)
    built_root, built_entry = wrapper()
    scratch = element("observation")
    for parent in (built_entry, scratch):
        for text in TRICKY:
            leaf(parent, "text", text=text)
    assert head + inner_markup(scratch) + tail == markup_of(built_root)


def test_extensions_finds_what_extension_finds() -> None:
    resource = {"extension": [
        "not an object",
        {"url": 7},
        {"url": "https://x/StructureDefinition/Extension-A-1", "valueString": "first A"},
        {"url": "https://y/Extension-B-1", "valueString": "B"},
        {"url": "https://z/Extension-A-1", "valueString": "second A"},
        {"url": "https://z/Extension-D-1", "valueString": "none of the suffixes"},
    ]}
    suffixes = ("A-1", "B-1", "C-1")
    assert extensions(resource, *suffixes) == [extension(resource, s) for s in suffixes]
    assert extensions(resource, *suffixes)[0] == resource["extension"][2]  # the first of two
    assert extensions({}, *suffixes) == [None, None, None]


def test_sub_extension_values_reads_what_sub_extension_reads() -> None:
    parent = {"extension": [
        {"url": "allowed", "valuePositiveInt": 3},
        {"url": "allowed", "valuePositiveInt": 9},
        {"url": "expiry"},
        None,
    ]}
    wanted = (("allowed", "valuePositiveInt"), ("issued", "valueUnsignedInt"), ("expiry", "valueDateTime"))
    expected = [(sub_extension(parent, url) or {}).get(key) for url, key in wanted]
    assert sub_extension_values(parent, *wanted) == expected == [3, None, None]
    assert sub_extension_values(None, *wanted) == [None, None, None]


CONCEPTS: list[object] = [
    None,
    {"text": "free text only < & >"},
    {"coding": [{"system": "http://snomed.info/sct", "code": "22298006", "display": "Myocardial infarction – £"}]},
    {"coding": [
        {"system": "http://read.info/readv2", "code": "G30..", "display": "Acute MI"},
        {"system": "http://snomed.info/sct", "code": "22298006", "display": "MI \"quoted\" & <tagged>"},
        {"system": "https://local.example/codes", "code": "X1", "display": "local ✓"},
        {"system": "urn:oid:1.2.3.4", "code": "A"},
    ], "text": "Heart attack"},
    {"coding": [{"system": "https://unknown", "display": "no code\tat all"}], "text": ""},
]


def _as_lxml_writes_it(markup: str) -> str:
    """The markup parsed and re-serialised by lxml (a difference is an escaping or well-formedness fault)."""
    return etree.tostring(etree.fromstring(markup), encoding="unicode")


def test_cd_markup_is_well_formed_and_escaped_as_lxml_escapes_it() -> None:
    for concept in CONCEPTS:
        for reference in (None, "#row-1-code"):
            for xsi_type in (None, "CD"):
                for null_flavor in ("UNK", "NI"):
                    parent = element("x")
                    written = cd(parent, "code", concept, reference=reference, xsi_type=xsi_type,
                                 null_flavor=null_flavor)
                    assert markup_of(parent) == f"<x>{written}</x>"
                    wrapped = f'<x xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">{written}</x>'
                    assert _as_lxml_writes_it(wrapped) == wrapped


QUANTITIES: list[object] = [
    None,
    {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
    {"value": 12, "unit": "tablet(s) < & >"},
    {"value": "7.0", "unit": "%"},
    {"unit": "no value £"},
    {"value": 1e-7, "code": 3},
]


def test_pq_markup_is_well_formed_and_escaped_as_lxml_escapes_it() -> None:
    for quantity in QUANTITIES:
        for xsi_type in (None, "PQ"):
            for inclusive in (None, "true"):
                parent = element("x")
                written = pq(parent, "value", quantity, xsi_type=xsi_type, inclusive=inclusive)
                wrapped = f'<x xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">{written}</x>'
                assert _as_lxml_writes_it(wrapped) == wrapped
                if inclusive:
                    assert etree.fromstring(wrapped)[0].get("inclusive") == "true"


def test_remembered_concepts_give_the_markup_written_afresh() -> None:
    """cd_markup remembers concepts (a record repeats its codes): the narrative reference is never remembered,
    and values that are equal keys without being the same text (1, 1.0, True) are not remembered at all."""
    snomed = {"coding": [{"system": "http://snomed.info/sct", "code": "1234", "display": "Serum sodium"}]}
    odd = [{"coding": [{"system": "http://example.org/local", "code": "X1", "display": value}]}
           for value in (1, 1.0, True)]
    calls = [(snomed, "#row-1-code"), (snomed, "#row-2-code"), (snomed, None), *((c, None) for c in odd)]
    fresh = []
    for concept, reference in calls:
        clear_all()
        fresh.append(cd_markup("code", concept, reference=reference))
    clear_all()
    for _ in range(2):  # filled by the first round, read by the second
        assert [cd_markup("code", concept, reference=reference) for concept, reference in calls] == fresh
    assert 'value="#row-2-code"' in fresh[1]
    assert "X1 1<" in fresh[3] and "X1 1.0<" in fresh[4] and "X1 True<" in fresh[5]
