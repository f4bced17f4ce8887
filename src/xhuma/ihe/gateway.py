"""The three responding-gateway transactions, from request bytes to response bytes.

Each transaction: parse the SOAP request (Fault on failure), check WS-Addressing and XUA, run the use case in
``xhuma.records``, render the answer in the transaction's own form, and audit the outcome. Whatever goes
wrong, the caller gets a SOAP Fault or the transaction's error form; never a bare HTTP 500 (LESSONS 7).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from lxml import etree

from xhuma import errors, tracing
from xhuma.audit import Auditor
from xhuma.config import Settings
from xhuma.ihe import faults, soap, xca_query, xca_retrieve, xcpd
from xhuma.ihe.faults import RegistryErrorInfo
from xhuma.ihe.saml import UNIDENTIFIED, SamlVerifier, resource_nhs_number
from xhuma.ihe.transactions import ITI_38, ITI_39, ITI_55
from xhuma.nhs.nhs_number import normalise
from xhuma.observability import level_enabled
from xhuma.ports import CallerIdentity, PdsPatient, StoredDocument
from xhuma.records import Records, is_valid_nhs_number
from xhuma.store.keys import CacheKeys

log = structlog.get_logger(__name__)
_log_info = level_enabled(__name__)

# Transaction ids as the audit trail, the metrics and the log name them (xhuma.ihe.transactions).
ITI55, ITI38, ITI39 = ITI_55.id, ITI_38.id, ITI_39.id


@dataclass(frozen=True, slots=True)
class SoapResponse:
    status_code: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Transport-level facts about the caller (mTLS subject, address) for the audit trail."""

    cert_subject: str | None = None
    address: str | None = None


@dataclass(slots=True)
class _QueryAnswer:
    """What an ITI-38 stored query has established so far (the caller narrows once the patient is known)."""

    caller: CallerIdentity
    nhs_number: str | None = None
    documents: list[StoredDocument] = field(default_factory=list)
    warnings: list[RegistryErrorInfo] = field(default_factory=list)
    spine: Mapping[str, str | None] = field(default_factory=dict)


def fault_response(error: BaseException, relates_to: str | None) -> SoapResponse:
    """The SOAP Fault answer for an error outside (or before) a transaction's own error form; a defect is logged
    by its type only and answered with neutral text."""
    fault = faults.soap_fault(error)
    if fault.code == "Receiver" and not isinstance(error, soap.SoapFault | errors.XhumaError):
        log.error("ihe_unexpected_error", error_type=type(error).__name__)
    headers = None
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        headers = {"Retry-After": str(retry_after)}
    return SoapResponse(
        fault.http_status, soap.fault_envelope(fault, relates_to=relates_to),
        soap.soap_content_type(soap.WSA_FAULT_ACTION), headers,
    )


class IheGateway:
    def __init__(
        self,
        settings: Settings,
        records: Records,
        auditor: Auditor,
        *,
        verifier: SamlVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.auditor = auditor
        self.verifier = verifier or SamlVerifier(settings)
        self.codes = xca_query.EntryCodes.from_settings(settings)
        self.responder = xcpd.ResponderIdentity(
            device_oid=settings.device_oid,
            home_community_id=settings.home_community_id,
            organisation_name=settings.organisation_name,
            match_code_system=settings.xcpd_match_code_system,
        )

    # --- shared steps ----------------------------------------------------------------------------------------
    async def _open(self, request: soap.SoapRequest, action: str, client: ClientInfo) -> CallerIdentity:
        """Addressing and XUA checks of a parsed request (which the caller already holds, so that a refusal here
        is audited with its MessageID and answered with RelatesTo)."""
        soap.check_addressing(
            request.addressing, expected_actions=(action,), reply_to_allow_list=self.settings.reply_to_allow_list
        )
        caller = await self.verifier.admit(request.security)
        if caller is UNIDENTIFIED:  # no assertion (optional mode): only the transport's facts
            return CallerIdentity(client_cert_subject=client.cert_subject, client_address=client.address)
        return replace(caller, client_cert_subject=client.cert_subject, client_address=client.address)

    async def _audit(self, transaction: str, outcome: str, **fields: Any) -> bool:
        """Commit one audit event; False when the audit trail is unavailable (callers must then not disclose)."""
        try:
            await self.auditor.record(transaction, outcome, **fields)
        except errors.AuditUnavailable:
            log.error("audit_unavailable", transaction=transaction)
            return False
        # The operator's one line per transaction: what and how it ended, never who (the audit trail says that).
        if _log_info():
            log.info("transaction", transaction=transaction, outcome=outcome, error_code=fields.get("error_code"),
                     duration_ms=fields.get("duration_ms"))
        return True

    async def _audit_fault(
        self, transaction: str, error: BaseException, request: soap.SoapRequest | None, caller: CallerIdentity | None,
        client: ClientInfo, started: float,
    ) -> None:
        outcome, code = faults.audit_outcome(error)
        reason = getattr(error, "reason", None)
        await self._audit(
            transaction, outcome,
            caller=caller or CallerIdentity(client_cert_subject=client.cert_subject, client_address=client.address),
            error_code=code, reason=reason if isinstance(error, errors.SecurityError) else None,
            message_id=request.addressing.message_id if request else None, duration_ms=_elapsed(started),
        )

    def _reply(self, action: str, body: etree._Element, relates_to: str | None) -> SoapResponse:
        with tracing.stage(None, "serialise"):
            data = soap.envelope(action, soap.element_markup(body), relates_to=relates_to,
                                 timestamp_seconds=self.settings.wsse_timestamp_seconds)
        return SoapResponse(200, data, soap.soap_content_type(action))

    # --- ITI-55 ----------------------------------------------------------------------------------------------
    async def patient_discovery(self, body: bytes, content_type: str | None, client: ClientInfo) -> SoapResponse:
        started = time.perf_counter()
        request: soap.SoapRequest | None = None
        caller: CallerIdentity | None = None
        try:
            request = soap.parse_request(body, content_type)
            caller = await self._open(request, ITI_55.request_action, client)
            query = xcpd.parse_request(request.body)
            nhs_number = query.nhs_numbers[0] if len(query.nhs_numbers) == 1 else None
            caller = self.verifier.check_patient(caller, nhs_number)
        except Exception as error:
            await self._audit_fault(ITI55, error, request, caller, client, started)
            return fault_response(error, request.addressing.message_id if request else None)

        message_id = request.addressing.message_id
        patient: PdsPatient | None = None
        answer: faults.XcpdAnswer | None = None
        practice_name: str | None = None
        try:
            # Assigned only once every check has passed: an error must never leave a patient to disclose.
            patient, practice_name = await self._discover(query, caller)
        except Exception as error:
            answer = faults.xcpd_answer(error)
            if not isinstance(error, errors.XhumaError):
                log.error("ihe_unexpected_error", transaction=ITI55, error_type=type(error).__name__)
            detail = getattr(error, "detail", None)
            reason = f"{answer.reason}:{detail}" if detail else answer.reason
            await self._audit(
                ITI55, "no-match" if answer.no_match else "error", nhs_number=nhs_number, caller=caller,
                error_code=answer.xcpd_code or answer.reason, reason=reason, message_id=message_id,
                duration_ms=_elapsed(started),
            )
        else:
            # A match discloses demographics: no disclosure without a committed audit event.
            if not await self._audit(
                ITI55, "success", nhs_number=patient.nhs_number, caller=caller, message_id=message_id,
                duration_ms=_elapsed(started),
                details={"discovery": "nhs-number" if query.nhs_numbers else "demographics"},
            ):
                patient, answer = None, faults.xcpd_answer(errors.AuditUnavailable())
            elif self.settings.prefetch_on_match:
                self.records.prefetch(patient.nhs_number, caller)
        response = xcpd.build_response(query, self.responder, patient=patient, practice_name=practice_name,
                                       error=answer)
        return self._reply(ITI_55.response_action, response, message_id)

    async def _discover(
        self, query: xcpd.PatientDiscoveryRequest, caller: CallerIdentity
    ) -> tuple[PdsPatient, str | None]:
        """The patient an ITI-55 query names and its practice's name, or the error that answers it."""
        if query.response_priority == "D":
            raise errors.UnsupportedProcessingMode()
        if len(query.nhs_numbers) > 1:
            raise errors.DemographicsMismatch(detail="SeveralNhsNumbers")
        if query.nhs_numbers:
            patient = await self.records.discover_patient(query.nhs_numbers[0], query.demographics)
        elif query.nhs_number_sent:  # an empty NHS number: invalid, never replaced by a search's answer
            raise errors.InvalidNhsNumber()
        else:  # no NHS number (a partner's own MRN, or none): a PDS demographic search (docs/ihe.md)
            patient = await self.records.discover_by_demographics(query.demographics)
            named = resource_nhs_number(caller.resource_id) if caller.verified else None
            if named is not None and normalise(named) != patient.nhs_number:
                # The assertion is about another patient than the one the demographics found: disclose nothing.
                raise errors.DemographicsMismatch(detail="ResourceIdNamesAnotherPatient")
        practice = await self.records.practice_name(patient.gp_ods_code) if patient.gp_ods_code else None
        return patient, practice

    # --- ITI-38 ----------------------------------------------------------------------------------------------
    async def query(self, body: bytes, content_type: str | None, client: ClientInfo) -> SoapResponse:
        started = time.perf_counter()
        request: soap.SoapRequest | None = None
        caller: CallerIdentity | None = None
        try:
            request = soap.parse_request(body, content_type)
            caller = await self._open(request, ITI_38.request_action, client)
            stored_query = xca_query.parse_request(request.body)
        except xca_query.XdsQueryError as error:
            assert request is not None
            return await self._query_failed(error, None, request, caller, started)
        except Exception as error:
            await self._audit_fault(ITI38, error, request, caller, client, started)
            return fault_response(error, request.addressing.message_id if request else None)

        found = _QueryAnswer(caller)
        try:
            await self._run_stored_query(stored_query, found)
        except errors.SecurityError as error:
            await self._audit_fault(ITI38, error, request, found.caller, client, started)
            return fault_response(error, request.addressing.message_id)
        except Exception as error:
            return await self._query_failed(error, found.nhs_number, request, found.caller, started)

        documents, warnings = found.documents, found.warnings
        unique_id = documents[0].unique_id if len(documents) == 1 else None
        outcome = "success" if documents else "no-match"
        if not await self._audit(
            ITI38, outcome, nhs_number=found.nhs_number, caller=found.caller,
            message_id=request.addressing.message_id, reason=warnings[0].reason if warnings else None,
            document_unique_id=unique_id, duration_ms=_elapsed(started), spine=found.spine,
            details={"documents": len(documents), "query": stored_query.query_id},
        ) and documents:
            return await self._query_failed(
                errors.AuditUnavailable(), None, request, found.caller, started, audit=False
            )
        # "No documents" is a plain Success with an empty list: the withheld reason is in the audit only, since
        # initiators (Metriport's parser, for one) take any RegistryError without documents for a failure.
        response = xca_query.build_response(
            documents, self.settings, return_type=stored_query.return_type,
            errors=[error for error in warnings if not error.is_warning], codes=self.codes,
        )
        return self._reply(ITI_38.response_action, response, request.addressing.message_id)

    async def _run_stored_query(self, stored_query: xca_query.StoredQuery, found: _QueryAnswer) -> None:
        """Fill ``found`` as the stored query runs: what it holds when an error escapes is what gets audited."""
        xca_query.check_home(stored_query, self.settings.home_community_id)
        if stored_query.query_id == xca_query.FIND_DOCUMENTS:
            await self._find_documents(stored_query, found)
        elif stored_query.query_id == xca_query.GET_DOCUMENTS:
            found.documents = await self._get_documents(stored_query)
            if found.documents:
                found.nhs_number = found.documents[0].nhs_number
                found.caller = self.verifier.check_patient(found.caller, found.nhs_number)
        elif stored_query.query_id not in xca_query.EMPTY_QUERIES:
            raise xca_query.XdsQueryError("XDSUnknownStoredQuery", "The stored query id is not supported")

    async def _find_documents(self, stored_query: xca_query.StoredQuery, found: _QueryAnswer) -> None:
        patient_id = stored_query.single("$XDSDocumentEntryPatientId", required=True)
        if not stored_query.values("$XDSDocumentEntryStatus"):
            raise xca_query.XdsQueryError(
                "XDSStoredQueryMissingParam", "The stored query needs $XDSDocumentEntryStatus"
            )
        assert patient_id is not None
        nhs_number = found.nhs_number = xca_query.parse_patient_cx(patient_id).nhs_number
        if not is_valid_nhs_number(nhs_number):
            raise errors.InvalidNhsNumber()
        found.caller = self.verifier.check_patient(found.caller, nhs_number)
        if not xca_query.static_filters_pass(stored_query, self.settings, self.codes):
            return
        try:
            result = await self.records.query_documents(nhs_number, found.caller)
        except (errors.PatientOutcome, errors.NoEndpoint, errors.AmbiguousEndpoint,
                errors.ConsentRefused, errors.AccessDenied) as withheld:
            found.warnings.append(faults.registry_error(withheld, transaction=ITI38))
        else:
            found.spine = result.spine
            found.documents = [d for d in result.documents if xca_query.document_filters_pass(stored_query, d)]

    async def _get_documents(self, stored_query: xca_query.StoredQuery) -> list[StoredDocument]:
        unique_ids = stored_query.values("$XDSDocumentEntryUniqueId")
        entry_uuids = stored_query.values("$XDSDocumentEntryEntryUUID")
        if bool(unique_ids) == bool(entry_uuids):
            raise xca_query.XdsQueryError(
                "XDSStoredQueryParamNumber",
                "GetDocuments needs either $XDSDocumentEntryUniqueId or $XDSDocumentEntryEntryUUID",
            )
        if entry_uuids:
            unique_ids = [uid for uid in [await self.records.unique_id_for_entry(e) for e in entry_uuids] if uid]
        documents: list[StoredDocument] = []
        for unique_id in unique_ids:
            try:
                documents.append(await self.records.retrieve_document(unique_id))
            except errors.DocumentNotFound:
                continue
        if len({document.nhs_number for document in documents}) > 1:
            raise xca_query.XdsQueryError("XDSResultNotSinglePatient", "The documents are about several patients")
        return documents

    async def _query_failed(
        self, error: BaseException, nhs_number: str | None, request: soap.SoapRequest, caller: CallerIdentity | None,
        started: float, *, audit: bool = True,
    ) -> SoapResponse:
        if isinstance(error, xca_query.XdsQueryError):
            info = xca_query.query_error_info(error)
        else:
            info = faults.registry_error(error, transaction=ITI38)
            if not isinstance(error, errors.XhumaError):
                log.error("ihe_unexpected_error", transaction=ITI38, error_type=type(error).__name__)
        if audit:
            outcome = "no-match" if isinstance(error, errors.InvalidNhsNumber) else "error"
            await self._audit(
                ITI38, outcome, nhs_number=nhs_number, caller=caller, error_code=info.error_code,
                reason=info.reason or None, message_id=request.addressing.message_id, duration_ms=_elapsed(started),
            )
        response = xca_query.build_response([], self.settings, errors=[info], codes=self.codes)
        return self._reply(ITI_38.response_action, response, request.addressing.message_id)

    # --- ITI-39 ----------------------------------------------------------------------------------------------
    async def retrieve(self, body: bytes, content_type: str | None, client: ClientInfo) -> SoapResponse:
        started = time.perf_counter()
        request: soap.SoapRequest | None = None
        caller: CallerIdentity | None = None
        try:
            request = soap.parse_request(body, content_type)
            caller = await self._open(request, ITI_39.request_action, client)
            document_requests = xca_retrieve.parse_request(request.body)
        except Exception as error:
            await self._audit_fault(ITI39, error, request, caller, client, started)
            return fault_response(error, request.addressing.message_id if request else None)

        message_id = request.addressing.message_id
        retrieved: list[xca_retrieve.RetrievedDocument] = []
        problems: list[RegistryErrorInfo] = []
        # Every document's patient is checked against the assertion before anything is audited as disclosed: a
        # refusal at the second document must not leave a success event for the first, which is never sent.
        looked_up: list[tuple[xca_retrieve.DocumentRequest, StoredDocument | RegistryErrorInfo]] = []
        for item in document_requests:
            try:
                document = await self._retrieve_one(item)
                caller = self.verifier.check_patient(caller, document.nhs_number)
            except errors.SecurityError as error:
                await self._audit_fault(ITI39, error, request, caller, client, started)
                return fault_response(error, message_id)
            except Exception as error:
                info = (xca_query.query_error_info(error) if isinstance(error, xca_query.XdsQueryError)
                        else faults.registry_error(error, transaction=ITI39))
                if not isinstance(error, errors.XhumaError):
                    log.error("ihe_unexpected_error", transaction=ITI39, error_type=type(error).__name__)
                looked_up.append((item, info))
            else:
                looked_up.append((item, document))
        for item, found in looked_up:
            if isinstance(found, RegistryErrorInfo):
                problems.append(replace(found, location=item.document_unique_id))
                await self._audit(
                    ITI39, "error", caller=caller, error_code=found.error_code, reason=found.reason or None,
                    message_id=message_id, document_unique_id=item.document_unique_id, duration_ms=_elapsed(started),
                )
                continue
            document = found
            # Disclosure: only once the audit event is committed (no disclosure without audit).
            if await self._audit(
                ITI39, "success", nhs_number=document.nhs_number, caller=caller, message_id=message_id,
                document_unique_id=document.unique_id, duration_ms=_elapsed(started),
            ):
                retrieved.append(xca_retrieve.RetrievedDocument(item, document))
            else:
                problems.append(replace(faults.registry_error(errors.AuditUnavailable(), transaction=ITI39),
                                        location=document.unique_id))

        mtom = self.settings.mtom_responses
        with tracing.stage(None, "serialise"):
            response, attachments = xca_retrieve.build_response(
                retrieved, problems, home_community_urn=self.settings.home_community_urn,
                repository_unique_id=self.settings.repository_unique_id, mtom=mtom,
            )
            envelope = soap.envelope(ITI_39.response_action, response, relates_to=message_id,
                                     timestamp_seconds=self.settings.wsse_timestamp_seconds)
            if mtom:
                package, package_type = soap.mtom_package(envelope, attachments, action=ITI_39.response_action)
        if mtom:
            return SoapResponse(200, package, package_type)
        return SoapResponse(200, envelope, soap.soap_content_type(ITI_39.response_action))

    async def _retrieve_one(self, item: xca_retrieve.DocumentRequest) -> StoredDocument:
        if item.home_community_id is None:
            raise xca_query.XdsQueryError("XDSMissingHomeCommunityId", "The DocumentRequest has no HomeCommunityId")
        if not xca_query.same_community(item.home_community_id, self.settings.home_community_id):
            raise xca_query.XdsQueryError("XDSUnknownCommunity", "The HomeCommunityId is not this community")
        if item.repository_unique_id != self.settings.repository_unique_id:
            raise xca_query.XdsQueryError("XDSUnknownRepositoryId", "The RepositoryUniqueId is not this repository")
        if not item.document_unique_id:
            raise xca_query.XdsQueryError("XDSDocumentUniqueIdError", "The DocumentRequest has no DocumentUniqueId")
        return await self.records.retrieve_document(item.document_unique_id)


def _elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


__all__ = ["CacheKeys", "ClientInfo", "IheGateway", "SoapResponse", "fault_response"]
