"""Adding a transaction touches one module and one registry line (issue 14, TRANSACTIONS.md).

A toy transaction is defined whole in this module, its descriptor and its handler, and registered with one line
(``TRANSACTIONS.registered``); no other module is changed. The real application then serves it at its path, answers
a bad request with the right SOAP Fault and an error inside a well-formed one in the transaction's own error form
(with the codes its descriptor names), and the audit trail, the metrics and the ATNA exporter label it by its id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from lxml import etree
from tests.support.soap import ACTION_38, NS, SOAP_CT, body_of, envelope, parse_response

from xhuma import errors
from xhuma.app import Runtime, create_app
from xhuma.atna import dicom_audit_message
from xhuma.audit import claims_disclosure
from xhuma.config import Settings
from xhuma.ihe import faults
from xhuma.ihe.descriptor import AtnaEvent, ErrorForm, Transaction
from xhuma.ihe.exchange import Exchange, GatewayServices, SoapResponse
from xhuma.ihe.soap import sender_fault
from xhuma.ihe.transactions import BY_ID, BY_PATH, IHE_TRANSACTION_IDS, TRANSACTIONS
from xhuma.ihe.xca_query import build_response
from xhuma.ports import AuditEvent

# --- the toy transaction: everything a new transaction's module holds ---------------------------------------------
TOY = "urn:example:xhuma:toy"


class Echo:
    """TOY-1's handler: answers an EchoRequest's text in an EchoResponse; an empty text is an error in the
    transaction's own form (a RegistryError with the descriptor's code), any other body a SOAP Fault."""

    def __init__(self, services: GatewayServices) -> None:
        self.settings = services.settings

    async def __call__(self, exchange: Exchange) -> SoapResponse:
        body = exchange.request.body
        if body.tag != ECHO.request_element:
            return await exchange.fault(sender_fault("The TOY-1 body must be an EchoRequest"))
        text = (body.text or "").strip()
        if not text:
            info = faults.registry_error(errors.InvalidRequest("empty echo"), transaction=ECHO)
            await exchange.audit("error", caller=exchange.caller, error_code=info.error_code,
                                 message_id=exchange.message_id, duration_ms=exchange.elapsed_ms())
            return exchange.reply(build_response([], self.settings, errors=[info]))
        if not await exchange.audit("success", caller=exchange.caller, message_id=exchange.message_id,
                                    duration_ms=exchange.elapsed_ms(), details={"characters": len(text)}):
            return await exchange.fault(errors.AuditUnavailable())
        answer = etree.Element(f"{{{TOY}}}EchoResponse", nsmap={None: TOY})
        answer.text = text
        return exchange.reply(answer)


ECHO = Transaction(
    id="TOY-1",
    name="Echo",
    path="/SOAP/toy1",
    request_action=f"{TOY}:Echo",
    response_action=f"{TOY}:EchoResponse",
    request_element=f"{{{TOY}}}EchoRequest",
    response_element=f"{{{TOY}}}EchoResponse",
    request_schema="toy/echo.xsd",
    response_schema="toy/echo.xsd",
    atna=AtnaEvent("110112", "Query", "E", "Toy Echo"),
    error_form=ErrorForm.REGISTRY_ERROR,
    handler=Echo,
    generic_error="ToyEchoError",
    busy_error="ToyEchoBusy",
)


# --- the application serving it ------------------------------------------------------------------------------------
@dataclass
class Served:
    client: httpx.AsyncClient
    runtime: Runtime

    async def echo(self, body: etree._Element, action: str = ECHO.request_action, **options: Any) -> httpx.Response:
        return await self.client.post(ECHO.path, content=envelope(action, body, **options),
                                      headers={"content-type": SOAP_CT})

    async def events(self) -> list[dict[str, Any]]:
        return list(await self.runtime.audit.query(transaction=ECHO.id))

    def counted(self, outcome: str) -> float:
        value = self.runtime.metrics.registry.get_sample_value(
            "xhuma_requests_total", {"transaction": ECHO.id, "outcome": outcome})
        return value or 0.0


def fault_of(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    """(code, subcode, reason) of a SOAP Fault answer."""
    fault = parse_response(response).find("env:Body/env:Fault", NS)
    assert fault is not None, response.text
    return (fault.findtext("env:Code/env:Value", namespaces=NS),
            fault.findtext("env:Code/env:Subcode/env:Value", namespaces=NS),
            fault.findtext("env:Reason/env:Text", namespaces=NS))


def echo_request(text: str) -> etree._Element:
    element = etree.Element(f"{{{TOY}}}EchoRequest", nsmap={None: TOY})
    element.text = text
    return element


@pytest.fixture
async def served(make_settings: Callable[..., Settings]) -> AsyncIterator[Served]:
    with TRANSACTIONS.registered(ECHO):  # the one registry line
        app = create_app(make_settings())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://xhuma.test") as client:
                yield Served(client, app.state.runtime)
    assert ECHO.path not in BY_PATH and ECHO.id not in IHE_TRANSACTION_IDS  # gone with its registration


async def test_a_transaction_registered_with_one_line_is_served_at_its_path_audited_and_counted_by_its_id(
    served: Served,
) -> None:
    message_id = "urn:uuid:0f0e0d0c-0b0a-4009-8807-060504030201"
    response = await served.echo(echo_request("hello"), message_id=message_id)
    assert response.status_code == 200, response.text
    env = parse_response(response)
    assert env.findtext("env:Header/wsa:Action", namespaces=NS) == ECHO.response_action
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == message_id
    answer = body_of(env)
    assert answer.tag == ECHO.response_element and answer.text == "hello"
    (event,) = await served.events()
    assert event["outcome"] == "success" and event["message_id"] == message_id
    assert event["details"] == {"characters": 5}
    assert served.counted("success") == 1
    metrics = (await served.client.get("/metrics")).text
    assert 'xhuma_requests_total{outcome="success",transaction="TOY-1"} 1.0' in metrics
    assert 'xhuma_request_seconds_count{transaction="TOY-1"} 1.0' in metrics


async def test_a_registered_transactions_bad_request_gets_the_right_fault_audited_under_its_id(
    served: Served,
) -> None:
    wrong_body = await served.echo(etree.Element(f"{{{TOY}}}Other"))
    assert wrong_body.status_code == 400
    assert fault_of(wrong_body) == ("env:Sender", None, "The TOY-1 body must be an EchoRequest")

    # Another transaction's action at this path: refused by the gateway's shared WS-Addressing check, which reads
    # the descriptor's request action.
    wrong_action = await served.echo(echo_request("hello"), action=ACTION_38)
    assert wrong_action.status_code == 400
    assert fault_of(wrong_action) == (
        "env:Sender", "wsa:ActionNotSupported", "This endpoint does not support the requested wsa:Action"
    )

    not_post = await served.client.get(ECHO.path)
    assert not_post.status_code == 405 and not_post.headers["allow"] == "POST"

    assert [event["outcome"] for event in await served.events()] == ["error", "error"]
    assert served.counted("error") == 2 and served.counted("success") == 0


async def test_an_error_inside_a_registered_transactions_request_takes_its_error_form_and_its_codes(
    served: Served,
) -> None:
    response = await served.echo(echo_request("   "))
    assert response.status_code == 200
    errors_listed = body_of(parse_response(response)).findall("rs:RegistryErrorList/rs:RegistryError", NS)
    assert [error.get("errorCode") for error in errors_listed] == [ECHO.generic_error]
    (event,) = await served.events()
    assert event["outcome"] == "error" and event["error_code"] == "ToyEchoError"
    # Faults find the transaction's codes by its id too, while it is registered.
    assert faults.registry_error(errors.RecordBusy(), transaction=ECHO.id).error_code == "ToyEchoBusy"


def test_a_registered_transaction_is_a_disclosure_and_is_atna_coded_by_its_descriptor() -> None:
    event = AuditEvent(transaction=ECHO.id, outcome="success", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert not claims_disclosure(event)
    with TRANSACTIONS.registered(ECHO):
        assert BY_ID[ECHO.id] is ECHO and claims_disclosure(event)
        message = etree.fromstring(dicom_audit_message(event, source_id="xhuma"))
        identification = message.find("EventIdentification")
        assert identification is not None
        assert identification.find("EventTypeCode").get("originalText") == "Toy Echo"
    assert not claims_disclosure(event)


def test_the_registry_refuses_a_second_transaction_with_a_taken_id_path_or_request_action() -> None:
    for clash in (replace(ECHO, path="/SOAP/other", request_action="urn:example:other", id="ITI-55"),
                  replace(ECHO, path="/SOAP/iti39"),
                  replace(ECHO, request_action=ACTION_38)):
        with pytest.raises(ValueError, match="another registered transaction"):
            TRANSACTIONS.register(clash)
        assert clash not in list(TRANSACTIONS)
    assert [t.id for t in TRANSACTIONS] == ["ITI-55", "ITI-38", "ITI-39"]
