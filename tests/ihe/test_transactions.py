"""The transaction registry is what the endpoints, faults, audit trail and ATNA exporter read (one descriptor per
transaction, xhuma.ihe.transactions): a transaction listed there is served, audited and coded from its descriptor."""

from __future__ import annotations

import inspect
import sys
from datetime import UTC, datetime

from lxml import etree

from xhuma import errors
from xhuma.atna import dicom_audit_message
from xhuma.audit import IHE_TRANSACTIONS, claims_disclosure
from xhuma.ihe import faults
from xhuma.ihe.endpoints import SOAP_PATHS
from xhuma.ihe.transactions import BY_ID, TRANSACTIONS, ErrorForm
from xhuma.ports import AuditEvent


def test_every_transaction_is_one_module_holding_its_descriptor_and_its_handler(harness) -> None:
    for transaction in TRANSACTIONS:
        module = sys.modules[transaction.handler.__module__]
        assert getattr(module, transaction.id.replace("-", "_")) is transaction, transaction.id
        assert module.__name__.startswith("xhuma.ihe."), transaction.id
        # Built once per gateway from its services; answers an exchange.
        handler = harness.gateway.handler(transaction)
        assert harness.gateway.handler(transaction) is handler
        assert inspect.iscoroutinefunction(type(handler).__call__), transaction.id
        assert list(inspect.signature(handler).parameters) == ["exchange"], transaction.id


def test_the_endpoints_serve_exactly_the_registered_paths_and_ids_and_paths_are_unique() -> None:
    assert {path: t.id for path, t in SOAP_PATHS.items()} == {t.path: t.id for t in TRANSACTIONS}
    assert len({t.id for t in TRANSACTIONS}) == len({t.path for t in TRANSACTIONS}) == len(TRANSACTIONS)
    assert len({t.request_action for t in TRANSACTIONS}) == len(TRANSACTIONS)


def test_registry_error_transactions_take_their_generic_and_busy_codes_from_the_descriptor() -> None:
    for transaction in TRANSACTIONS:
        if transaction.error_form is not ErrorForm.REGISTRY_ERROR:
            continue
        assert faults.registry_error(errors.AuditUnavailable(), transaction=transaction.id).error_code == (
            transaction.generic_error
        )
        assert faults.registry_error(errors.RecordBusy(), transaction=transaction.id).error_code == (
            transaction.busy_error
        )
    assert faults.registry_error(errors.RecordBusy(), transaction="ITI-39").error_code == "XDSRepositoryBusy"
    assert faults.registry_error(errors.RecordBusy(), transaction=BY_ID["ITI-39"]).error_code == "XDSRepositoryBusy"


def test_only_registered_transactions_count_as_disclosures_and_are_coded_by_their_atna_event() -> None:
    assert frozenset(BY_ID) == IHE_TRANSACTIONS
    for transaction in TRANSACTIONS:
        event = AuditEvent(transaction=transaction.id, outcome="success", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
        assert claims_disclosure(event)
        message = etree.fromstring(dicom_audit_message(event, source_id="xhuma"))
        identification = message.find("EventIdentification")
        assert identification is not None
        assert identification.get("EventActionCode") == transaction.atna.action
        assert identification.find("EventID").get("csd-code") == transaction.atna.code
    assert not claims_disclosure(
        AuditEvent(transaction="PDS", outcome="success", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    )
