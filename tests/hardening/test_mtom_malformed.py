"""Hostile MTOM/XOP (multipart/related) requests to ITI-39 (and the other endpoints): every one is a SOAP Fault
or an XDS answer, never a bare 500 (LESSONS 7; LESSONS 10 "real MIME parsing"; ITI TF-2 V.3.3 MTOM/XOP)."""

from __future__ import annotations

import pytest
from tests.hardening.checks import not_our_fault, registry_errors, sender_fault, soap_answer
from tests.hardening.conftest import Target
from tests.ihe.support import ACTION_39, envelope, iti39_body, mtom_wrap

BOUNDARY = "uuid:0f8d7e6a-epic"
XOP_INCLUDE = b'<xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:%s"/>'


def _request(target: Target) -> bytes:
    return envelope(ACTION_39, iti39_body([(target.home, target.repository, target.unique_id)]))


def test_wellformed_mtom_request_is_answered(target: Target) -> None:
    """The control: the same package unharmed retrieves the document (CRLF, LF-only, without start)."""
    for options in ({}, {"line_end": b"\n"}, {"start": False}):
        body, content_type = mtom_wrap(_request(target), **options)  # type: ignore[arg-type]
        answer = soap_answer(target.post("/SOAP/iti39", body, content_type))
        assert registry_errors(answer) == [] and answer.find("{*}DocumentResponse") is not None


@pytest.mark.parametrize("case", [
    "no boundary", "empty boundary", "wrong boundary", "boundary never closed", "only the close delimiter",
    "empty body",
    "part without a header section", "start names no part", "latin-1 boundary", "preamble only",
])
def test_garbled_multipart_is_a_sender_fault(target: Target, case: str) -> None:
    body, content_type = mtom_wrap(_request(target))
    if case == "no boundary":
        content_type = 'multipart/related; type="application/xop+xml"'
    elif case == "empty boundary":
        content_type = content_type.replace(f'boundary="{BOUNDARY}"', 'boundary=""')
    elif case == "wrong boundary":
        content_type = content_type.replace(BOUNDARY, "other-boundary")
    elif case == "boundary never closed":
        body = body.replace(f"--{BOUNDARY}--".encode(), b"")[: len(body) // 2]
    elif case == "only the close delimiter":
        body = f"--{BOUNDARY}--\r\n".encode()
    elif case == "empty body":
        body = b""
    elif case == "part without a header section":
        body = f"--{BOUNDARY}\r\nno headers here--{BOUNDARY}--".encode()
    elif case == "start names no part":
        content_type = content_type.replace("root.message@cxf.apache.org", "missing@nowhere")
    elif case == "latin-1 boundary":
        content_type = content_type.replace(BOUNDARY, "caf\xe9")
    elif case == "preamble only":
        body = b"this is a preamble with no delimiter at all"
    response = target.client.post("/SOAP/iti39", content=body,
                                  headers={"content-type": content_type.encode("latin-1")})  # type: ignore[dict-item]
    if case == "boundary never closed":  # a truncated last part may still hold a complete root part
        not_our_fault(soap_answer(response))
    else:
        sender_fault(response)


def test_xop_include_pointing_nowhere_is_a_sender_fault(target: Target) -> None:
    request = _request(target).replace(target.unique_id.encode(), XOP_INCLUDE % b"nowhere@x")
    assert "missing MIME part" in sender_fault(target.post("/SOAP/iti39", *mtom_wrap(request)))
    request = _request(target).replace(target.unique_id.encode(), b'<xop:Include xmlns:xop="http://www.w3.org/2004/'
                                       b'08/xop/include"/>')
    sender_fault(target.post("/SOAP/iti39", *mtom_wrap(request)))


def _with_attachment(target: Target, content: bytes, encoding: str) -> tuple[bytes, str]:
    request = _request(target).replace(target.unique_id.encode(), XOP_INCLUDE % b"att@x")
    body, content_type = mtom_wrap(request)
    part = (f"--{BOUNDARY}\r\nContent-ID: <att@x>\r\nContent-Type: text/plain\r\n"
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n").encode() + content + b"\r\n"
    return body.replace(f"--{BOUNDARY}--".encode(), part + f"--{BOUNDARY}--".encode()), content_type


def test_base64_garbage_in_an_attachment_is_a_sender_fault_or_an_xds_error(target: Target) -> None:
    sender_fault(target.post("/SOAP/iti39", *_with_attachment(target, b"!!!notbase64***", "base64")))
    # bytes that decode to nothing: the DocumentUniqueId is then empty, an XDS error for that request
    answer = soap_answer(target.post("/SOAP/iti39", *_with_attachment(target, b"\xff\xfe\x00", "base64")))
    assert registry_errors(answer) == [("XDSDocumentUniqueIdError", "Error")]
    # XOP puts the base64 of the part in the element (a base64Binary infoset), which is no known uniqueId
    answer = soap_answer(target.post("/SOAP/iti39", *_with_attachment(target, target.unique_id.encode(), "binary")))
    assert registry_errors(answer) == [("XDSDocumentUniqueIdError", "Error")]


def test_root_part_that_is_not_xml_is_a_sender_fault(target: Target) -> None:
    for root in (b"", b"\x00\x01\x02", b"<unclosed", b'{"json": true}'):
        sender_fault(target.post("/SOAP/iti39", *mtom_wrap(root)))


@pytest.mark.parametrize("path", ["/SOAP/iti55", "/SOAP/iti38"])
def test_mtom_on_the_other_endpoints_is_handled_too(target: Target, path: str) -> None:
    sender_fault(target.post(path, b"", 'multipart/related; boundary="x"'))
    sender_fault(target.post(path, *mtom_wrap(b"<unclosed")))
