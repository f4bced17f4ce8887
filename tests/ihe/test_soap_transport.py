"""SOAP 1.2 transport: hardened parsing, body limit, WS-Addressing, faults (SPEC §1.6; LESSONS 7, 9, 10, 12)."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from lxml import etree
from tests.ihe.schemas import envelope_errors
from tests.ihe.support import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    NS,
    SOAP_CT,
    body_of,
    envelope,
    iti38_body,
    iti39_body,
    iti55_body,
    parse_response,
)

from xhuma.ihe import soap
from xhuma.ihe.xca_retrieve import CrossGatewayRetrieve

ENDPOINTS = [
    ("/SOAP/iti55", ACTION_55, iti55_body),
    ("/SOAP/iti38", ACTION_38, iti38_body),
    ("/SOAP/iti39", ACTION_39, lambda: iti39_body([("urn:oid:1.2", "1.2", "1.2.3")])),
]


def fault_of(response):
    env = parse_response(response)
    assert envelope_errors(env) == []
    fault = env.find("env:Body/env:Fault", NS)
    assert fault is not None, response.text
    subcode = fault.findtext("env:Code/env:Subcode/env:Value", namespaces=NS)
    return (
        env,
        fault.findtext("env:Code/env:Value", namespaces=NS),
        subcode,
        fault.findtext("env:Reason/env:Text", namespaces=NS),
    )


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE s:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x>&xxe;</x></s:Body></s:Envelope>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x>&lol3;</x></s:Body></s:Envelope>"""


@pytest.mark.parametrize("path", ["/SOAP/iti55", "/SOAP/iti38", "/SOAP/iti39"])
@pytest.mark.parametrize("payload", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
async def test_dtds_and_entities_are_refused_with_a_sender_fault(harness, path, payload):
    response = await harness.post(path, payload)
    assert response.status_code == 400
    _, code, _, reason = fault_of(response)
    assert code == "env:Sender" and "DTD" in reason
    assert b"root:" not in response.content and b"lollol" not in response.content


async def test_nesting_beyond_the_depth_limit_is_refused(harness):
    deep = b"<a>" * 200 + b"</a>" * 200
    raw = envelope(ACTION_38, etree.fromstring(deep))
    response = await harness.post("/SOAP/iti38", raw)
    assert response.status_code == 400 and "deeply" in fault_of(response)[3]


async def test_body_over_the_limit_is_a_soap_fault_not_a_hang(harness_factory, make_settings):
    harness = await harness_factory(make_settings(max_request_bytes=4096))
    big = envelope(ACTION_38, iti38_body()) + b" " * 10_000
    response = await asyncio.wait_for(harness.post("/SOAP/iti38", big), timeout=5)
    assert response.status_code == 400
    assert "larger" in fault_of(response)[3]

    async def chunks():
        for _ in range(100):
            yield b" " * 1024

    streamed = await asyncio.wait_for(
        harness.client.post("/SOAP/iti38", content=chunks(), headers={"content-type": SOAP_CT}), timeout=5
    )
    assert streamed.status_code == 400 and "larger" in fault_of(streamed)[3]


@pytest.mark.parametrize(("path", "action", "body"), ENDPOINTS)
async def test_relates_to_is_the_request_message_id_and_message_id_is_fresh_LESSONS_9(harness, path, action, body):
    message_id = "urn:uuid:5a7c3b1e-2222-4b6b-8f54-1d0e9c7a6b01"
    response = await harness.post(path, envelope(action, body(), message_id=message_id))
    env = parse_response(response)
    header = env.find("env:Header", NS)
    assert header.findtext("wsa:RelatesTo", namespaces=NS) == message_id
    response_id = header.findtext("wsa:MessageID", namespaces=NS)
    assert response_id.startswith("urn:uuid:") and response_id != message_id
    assert header.find("wsa:Action", NS).get(f"{{{soap.SOAP12}}}mustUnderstand") == "true"
    assert (
        header.findtext("wsa:Action", namespaces=NS)
        == {
            ACTION_55: "urn:hl7-org:v3:PRPA_IN201306UV02:CrossGatewayPatientDiscovery",
            ACTION_38: "urn:ihe:iti:2007:CrossGatewayQueryResponse",
            ACTION_39: "urn:ihe:iti:2007:CrossGatewayRetrieveResponse",
        }[action]
    )


@pytest.mark.parametrize(
    ("kwargs", "subcode"),
    [
        ({"action": None}, "wsa:MessageAddressingHeaderRequired"),
        ({"action": "urn:ihe:iti:2007:CrossGatewayRetrieve"}, "wsa:ActionNotSupported"),
        ({"message_id": None}, "wsa:MessageAddressingHeaderRequired"),
    ],
)
async def test_ws_addressing_problems_are_sender_faults(harness, kwargs, subcode):
    action = kwargs.pop("action", ACTION_38)
    response = await harness.post("/SOAP/iti38", envelope(action, iti38_body(), **kwargs))
    assert response.status_code == 400
    _, code, found, _ = fault_of(response)
    assert (code, found) == ("env:Sender", subcode)


@pytest.mark.parametrize(
    ("payload", "content_type", "code"),
    [
        (b"", SOAP_CT, "env:Sender"),
        (b"not xml at all", SOAP_CT, "env:Sender"),
        (b"<Envelope/>", SOAP_CT, "env:VersionMismatch"),  # not the SOAP 1.2 namespace (SOAP 1.2 Part 1 5.4.7)
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
            "text/xml",
            "env:VersionMismatch",
        ),
        (
            b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
            SOAP_CT,
            "env:Sender",
        ),
        (b"<x/>", "application/json", "env:Sender"),
        (b"--b\r\n\r\n--b--", 'multipart/related; boundary="b"', "env:Sender"),
        (b"<x/>", "multipart/related", "env:Sender"),
    ],
)
async def test_malformed_requests_get_a_soap_fault_never_a_bare_500_LESSONS_7(harness, payload, content_type, code):
    for path in ("/SOAP/iti55", "/SOAP/iti38", "/SOAP/iti39"):
        response = await harness.post(path, payload, content_type)
        assert response.status_code in (400, 500)
        assert fault_of(response)[1] == code


async def test_wrong_body_for_the_endpoint_is_a_sender_fault(harness):
    response = await harness.post("/SOAP/iti55", envelope(ACTION_55, iti38_body()))
    assert response.status_code == 400 and fault_of(response)[1] == "env:Sender"


async def test_unknown_must_understand_header_is_a_MustUnderstand_fault(harness):
    raw = envelope(ACTION_38, iti38_body()).replace(
        b"</s:Header>", b'<x:Trace xmlns:x="urn:example" s:mustUnderstand="1"/></s:Header>'
    )
    response = await harness.post("/SOAP/iti38", raw)
    assert fault_of(response)[1] == "env:MustUnderstand"


async def test_unexpected_internal_error_is_a_receiver_fault_with_neutral_text(harness, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail 9690937286")

    monkeypatch.setattr("xhuma.ihe.xcpd.parse_request", explode)
    response = await harness.post("/SOAP/iti55", envelope(ACTION_55, iti55_body()))
    assert response.status_code == 500
    _, code, _, _reason = fault_of(response)
    assert code == "env:Receiver" and "secret" not in response.text and "9690937286" not in response.text


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self):
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def reply_to_server():
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/callback"
    server.shutdown()


async def test_iti39_never_sends_the_document_to_a_caller_supplied_reply_to_LESSONS_12(
    harness_factory, make_settings, reply_to_server
):
    harness = await harness_factory()
    from xhuma.ports import CallerIdentity

    (document,) = (await harness.records.query_documents("9690937286", CallerIdentity())).documents
    request = iti39_body(
        [(harness.settings.home_community_urn, harness.settings.repository_unique_id, document.unique_id)]
    )
    response = await harness.post("/SOAP/iti39", envelope(ACTION_39, request, reply_to=reply_to_server))
    assert response.status_code == 400
    assert fault_of(response)[2] == "wsa:OnlyAnonymousAddressSupported"
    assert document.content not in response.content
    # Even an allow-listed address is not called: the answer goes on the HTTP back-channel only.
    allowed = await harness_factory(make_settings(reply_to_allow_list=[reply_to_server]))
    await allowed.records.query_documents("9690937286", CallerIdentity())
    response = await allowed.post("/SOAP/iti39", envelope(ACTION_39, request, reply_to=reply_to_server))
    assert response.status_code == 200
    await asyncio.sleep(0.2)
    assert _Recorder.hits == []


async def test_anonymous_reply_to_is_accepted(harness):
    response = await harness.post(
        "/SOAP/iti38", envelope(ACTION_38, iti38_body(), reply_to="http://www.w3.org/2005/08/addressing/anonymous")
    )
    assert response.status_code == 200 and body_of(parse_response(response)).tag.endswith("AdhocQueryResponse")


def test_split_multipart_finds_the_root_part_by_content_id_whatever_its_position():
    body = (
        b"--B\r\nContent-Type: text/plain\r\nContent-ID: <att@x>\r\n\r\nhello\r\n"
        b"--B\r\nContent-Type: application/xop+xml\r\nContent-ID: <root@x>\r\n\r\n<e/>\r\n--B--\r\n"
    )
    envelope_bytes, attachments, mtom = soap.read_envelope_bytes(
        body, 'multipart/related; boundary=B; start="<root@x>"; type="application/xop+xml"'
    )
    assert (envelope_bytes, attachments, mtom) == (b"<e/>", {"att@x": b"hello"}, True)


@pytest.mark.parametrize("path", ["/SOAP/iti55", "/SOAP/iti38", "/SOAP/iti39"])
async def test_other_methods_than_post_get_405_with_allow_and_a_soap_fault(harness, path):
    response = await harness.client.get(path)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert fault_of(response)[1] == "env:Sender"


async def test_a_defect_escaping_the_gateway_is_still_a_receiver_fault_never_a_bare_500_LESSONS_7(
    harness, monkeypatch
):
    async def broken(*args, **kwargs):
        raise KeyError("internal detail 9690937286")

    # The ITI-39 handler itself raises: nothing in the gateway answers it, the endpoints' last net does.
    monkeypatch.setattr(CrossGatewayRetrieve, "__call__", broken)
    response = await harness.post("/SOAP/iti39", envelope(ACTION_39, iti39_body([("urn:oid:1.2", "1.2", "1.2.3")])))
    assert response.status_code == 500
    _, code, _, reason = fault_of(response)
    assert code == "env:Receiver" and reason == "The gateway could not process the request"
    assert "9690937286" not in response.text


@pytest.mark.parametrize(("path", "action", "body"), ENDPOINTS)
async def test_relates_to_echoes_a_message_id_with_markup_characters_intact_LESSONS_9(harness, path, action, body):
    """The answers are written as markup: a MessageID holding ``& < > "`` must come back as the same text."""
    message_id = 'urn:example:a&b<c>"d"\u00e9'
    response = await harness.post(path, envelope(action, body(), message_id=message_id))
    env = parse_response(response)
    assert envelope_errors(env) == []
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == message_id


async def test_a_defect_before_the_transaction_is_still_a_receiver_fault_LESSONS_7(harness, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("certificate parser defect")

    monkeypatch.setattr("xhuma.ihe.endpoints._identify_client", broken)
    response = await harness.post("/SOAP/iti38", envelope(ACTION_38, iti38_body()))
    assert response.status_code == 500
    assert fault_of(response)[1] == "env:Receiver" and "defect" not in response.text
