"""IPF's ITI-55 response schematron run with Saxon (saxonche): the ISO Schematron XSLT 2.0 pipeline (include,
abstract patterns, compile to an SVRL stylesheet), then the compiled stylesheet over an answer. The schematron and
the pipeline are vendored unchanged under tests/standards/ihe/schematron (SOURCES.md there)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from lxml import etree
from saxonche import PySaxonProcessor

SCHEMATRON = Path(__file__).parents[1] / "standards" / "ihe" / "schematron"
PIPELINE = SCHEMATRON / "iso-schematron-xslt2"
SVRL = "http://purl.oclc.org/dsdl/svrl"


@cache
def _processor() -> Any:
    return PySaxonProcessor(license=False)


@cache
def _compiled(schema: str) -> Any:
    """The SVRL stylesheet compiled from ``schema`` (a path under SCHEMATRON), once per test session."""
    processor = _processor()
    xslt = processor.new_xslt30_processor()
    included = xslt.compile_stylesheet(stylesheet_file=str(PIPELINE / "iso_dsdl_include.xsl")).transform_to_string(
        source_file=str(SCHEMATRON / schema)  # its base URI resolves sch:extends/@href
    )
    expanded = xslt.compile_stylesheet(stylesheet_file=str(PIPELINE / "iso_abstract_expand.xsl")).transform_to_string(
        xdm_node=processor.parse_xml(xml_text=included)
    )
    compiler = xslt.compile_stylesheet(stylesheet_file=str(PIPELINE / "iso_svrl_for_xslt2.xsl"))
    svrl_stylesheet = compiler.transform_to_string(xdm_node=processor.parse_xml(xml_text=expanded))
    return xslt.compile_stylesheet(stylesheet_text=svrl_stylesheet)


def failed_asserts(message: etree._Element, schema: str = "iti55/PRPA_IN201306UV02.sch.xml") -> list[str]:
    """Every failed assert (and successful report) of the schematron over ``message``, as 'location: text'."""
    processor = _processor()
    document = processor.parse_xml(xml_text=etree.tostring(message, encoding="unicode"))
    report = etree.fromstring(_compiled(schema).transform_to_string(xdm_node=document).encode())
    return [
        f"{item.get('location')}: {' '.join((item.findtext(f'{{{SVRL}}}text') or '').split())}"
        for item in report.iter(f"{{{SVRL}}}failed-assert", f"{{{SVRL}}}successful-report")
    ]


def fired_rules(message: etree._Element, schema: str = "iti55/PRPA_IN201306UV02.sch.xml") -> list[str]:
    """The contexts of the rules that fired (to show that the schematron looked at the answer at all)."""
    processor = _processor()
    document = processor.parse_xml(xml_text=etree.tostring(message, encoding="unicode"))
    report = etree.fromstring(_compiled(schema).transform_to_string(xdm_node=document).encode())
    return [item.get("context") or "" for item in report.iter(f"{{{SVRL}}}fired-rule")]
