"""What every answer to hostile input must look like (LESSONS 7: never a 500 that is not a SOAP Fault, never a
traceback or exception text reaching the caller)."""

from __future__ import annotations

import re

import httpx
from lxml import etree
from tests.ihe.support import SOAP12, body_of, parse_response

# Python exception text or a traceback in a body: the signs of an unhandled error reaching the caller.
LEAK = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+|\b[A-Z][A-Za-z]*(?:Error|Exception): "
    r"|Internal Server Error"
)
# Fault codes that SOAP 1.2 Part 2 §7.5.1 answers with HTTP 500 although the caller is at fault.
CALLER_FAULTS_WITH_500 = {"env:VersionMismatch", "env:MustUnderstand"}


def no_leak(response: httpx.Response) -> None:
    assert not LEAK.search(response.text), response.text[:500]


def soap_answer(response: httpx.Response) -> etree._Element:
    """The SOAP 1.2 answer (a Fault or the transaction's own response); asserts the status fits."""
    assert response.status_code in (200, 400, 500), response.status_code
    no_leak(response)
    envelope = parse_response(response)
    assert envelope.tag == f"{{{SOAP12}}}Envelope"
    answer = body_of(envelope)
    if response.status_code != 200:
        assert answer.tag == f"{{{SOAP12}}}Fault", etree.tostring(answer)[:300]
    return answer


def fault_code(answer: etree._Element) -> tuple[str, str | None]:
    assert answer.tag == f"{{{SOAP12}}}Fault", etree.tostring(answer)[:300]
    code = answer.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Value")
    subcode = answer.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Subcode/{{{SOAP12}}}Value")
    assert code is not None
    return code, subcode


def sender_fault(response: httpx.Response, subcode: str | None = None) -> str:
    """A Sender Fault (HTTP 400); returns its Reason text."""
    answer = soap_answer(response)
    code, sub = fault_code(answer)
    assert (response.status_code, code) == (400, "env:Sender"), (response.status_code, code, sub)
    if subcode is not None:
        assert sub == subcode
    return answer.findtext(f"{{{SOAP12}}}Reason/{{{SOAP12}}}Text") or ""


def not_our_fault(answer: etree._Element) -> None:
    """Hostile input is the caller's problem: never a Receiver Fault ('the gateway could not process')."""
    if answer.tag == f"{{{SOAP12}}}Fault":
        code, _ = fault_code(answer)
        assert code in {"env:Sender", *CALLER_FAULTS_WITH_500}, code


def registry_errors(answer: etree._Element) -> list[tuple[str | None, str | None]]:
    return [(error.get("errorCode"), error.get("severity", "").rsplit(":", 1)[-1])
            for error in answer.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0}RegistryError")]
