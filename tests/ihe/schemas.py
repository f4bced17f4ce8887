"""The vendored IHE schemas (tests/standards/ihe, see SOURCES.md), loaded once with lxml."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lxml import etree

from xhuma.ihe.transactions import TRANSACTIONS

STANDARDS = Path(__file__).resolve().parents[1] / "standards" / "ihe"
HL7 = "urn:hl7-org:v3"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
XOP = "http://www.w3.org/2004/08/xop/include"

# Each transaction's request and response body by the schema its descriptor names (xhuma.ihe.transactions).
SCHEMA_FOR = {
    **{t.request_element: t.request_schema for t in TRANSACTIONS},
    **{t.response_element: t.response_schema for t in TRANSACTIONS},
}


@cache
def schema(relative: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(STANDARDS / relative)))


def schema_errors(body: etree._Element) -> list[str]:
    """Validate one IHE body (xop:Include neutralised, as the XOP infoset); return the errors (empty: valid)."""
    standalone = etree.fromstring(etree.tostring(body))
    for include in list(standalone.iter(f"{{{XOP}}}Include")):
        parent = include.getparent()
        parent.remove(include)
    validator = schema(SCHEMA_FOR[standalone.tag])
    if validator.validate(standalone):
        return []
    return [f"{error.line}: {error.message}" for error in validator.error_log]


def envelope_errors(envelope: etree._Element) -> list[str]:
    """The SOAP 1.2 envelope (header blocks, Fault) against its schema; Body content is checked by schema_errors."""
    validator = schema("hl7v3/soap-1.2-envelope.xsd")
    standalone = etree.fromstring(etree.tostring(envelope))
    body = standalone.find("{http://www.w3.org/2003/05/soap-envelope}Body")
    if body is not None and not (len(body) and etree.QName(body[0]).localname == "Fault"):
        for child in list(body):
            body.remove(child)
    if validator.validate(standalone):
        return []
    return [f"{error.line}: {error.message}" for error in validator.error_log]
