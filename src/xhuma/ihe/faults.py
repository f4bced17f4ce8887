"""The one place where Xhuma's error taxonomy (``xhuma.errors``) becomes an IHE answer.

* SOAP layer problems (malformed, unsupported, security): a SOAP 1.2 Fault (``soap_fault``).
* ITI-55 inside a well-formed request: ``AA``+``NF`` for every patient outcome (the reason goes to the audit
  only), ``AE`` with an XCPD error code for processing errors (``xcpd_answer``; LESSONS 2).
* ITI-38 / ITI-39: a ``RegistryError`` with an XDS error code (``registry_error``). ``codeContext`` is fixed,
  safe text chosen here, never an exception message or a dump of the request (LESSONS 4, 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from xhuma import errors
from xhuma.ihe.soap import WSA, WSSE, SoapFault

if TYPE_CHECKING:
    from xhuma.ihe.descriptor import Transaction

SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SEVERITY_WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

# XCPD error codes, code system 1.3.6.1.4.1.19376.1.2.27.3 (ITI TF-2 Table 3.55.4.2.2.7-1)
XCPD_INTERNAL_ERROR = "InternalError"
XCPD_RESPONDER_BUSY = "ResponderBusy"
XCPD_ANSWER_NOT_AVAILABLE = "AnswerNotAvailable"
# HL7 V3 AcknowledgementDetailCode (2.16.840.1.113883.5.1100)
ACK_INTERNAL_ERROR = "INTERR"
ACK_UNSUPPORTED_PROCESSING_MODE = "NS250"


def _is_rate_limited(error: BaseException) -> bool:
    # errors.RateLimited may be added by the security capability; match it by its stable code.
    return getattr(error, "code", None) in ("RateLimited",) or (
        isinstance(error, errors.UpstreamError) and error.status == 429
    )


def soap_fault(error: BaseException) -> SoapFault:
    """The SOAP 1.2 Fault for an error that stops a request before (or outside) its transaction."""
    if isinstance(error, SoapFault):
        return error
    if isinstance(error, errors.RequestTooLarge):
        return SoapFault("Sender", "The request is larger than this gateway accepts", error_code=error.code)
    if isinstance(error, errors.SecurityError):
        # WS-Security 1.1 §12: FailedAuthentication / InvalidSecurity / MessageExpired
        local = getattr(error, "wsse_code", None) or "FailedAuthentication"
        return SoapFault("Sender", error.message, subcode=(WSSE, "wsse", local), error_code=error.code)
    if _is_rate_limited(error):
        # Our limiter: RFC 6585 §4, 429 Too Many Requests with Retry-After; a busy upstream: 503. Never the
        # binding's 500, which tells the caller the gateway is broken.
        status = 429 if isinstance(error, errors.RateLimited) else 503
        return SoapFault("Receiver", "The gateway is busy; retry later", error_code="RateLimited", status=status)
    if isinstance(error, errors.InvalidRequest):
        return SoapFault("Sender", error.message, error_code=error.code)
    # Anything else is our problem: a Receiver fault with neutral text (never the exception's own text).
    return SoapFault("Receiver", "The gateway could not process the request", error_code="InternalError")


def addressing_fault(local: str, reason: str) -> SoapFault:
    return SoapFault("Sender", reason, subcode=(WSA, "wsa", local))


# --- ITI-55 ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class XcpdAnswer:
    """``no_match``: AA + NF. Otherwise AE with ``xcpd_code`` and ``text`` (safe, generic)."""

    no_match: bool
    reason: str  # for the audit trail only (PHI-free code)
    xcpd_code: str | None = None  # None: no reasonOf/detectedIssueEvent
    text: str | None = None
    requested: tuple[str, ...] = ()  # NF: the attributes that would single the patient out (ITI TF-2 3.55.4.2.2.6)
    ack_detail: str = ACK_INTERNAL_ERROR  # acknowledgementDetail/code (HL7 AcknowledgementDetailCode)


def xcpd_answer(error: BaseException) -> XcpdAnswer:
    if isinstance(error, errors.MoreDemographicsNeeded):
        # ITI TF-2 3.55.4.2.3 case 4: AA + NF, asking for the demographics that would tell the candidates apart.
        return XcpdAnswer(no_match=True, reason=error.code, requested=error.requested)
    if isinstance(error, errors.PatientOutcome | errors.InvalidNhsNumber):
        # XCPD: not found, restricted, deceased, superseded and conflicting demographics are all "no match";
        # the restriction must not be disclosed (SPEC §1.3 steps 3-7, ITI TF-2 3.55.4.2.3 case 2).
        return XcpdAnswer(no_match=True, reason=error.code)
    if isinstance(error, errors.UnsupportedProcessingMode):
        # HL7 V3 AcknowledgementDetailCode NS250 "unsupported processing mode", as IPF's ITI-55 service answers a
        # deferred request it does not serve; no XCPD error code, which would suggest a retry could succeed.
        return XcpdAnswer(False, error.code, None, "The deferred response option is not supported",
                          ack_detail=ACK_UNSUPPORTED_PROCESSING_MODE)
    if _is_rate_limited(error):
        return XcpdAnswer(False, "RateLimited", XCPD_RESPONDER_BUSY, "The responder is busy; retry later")
    if isinstance(error, errors.CacheError):
        return XcpdAnswer(False, error.code, XCPD_RESPONDER_BUSY, "The responder is busy; retry later")
    if isinstance(error, errors.UpstreamError):
        # PDS could not answer (a read or a search): our trouble, never "no match"; the initiator may retry.
        return XcpdAnswer(
            False, error.code, XCPD_INTERNAL_ERROR, "The patient directory is not available; retry later"
        )
    if isinstance(error, errors.XhumaError):
        return XcpdAnswer(False, error.code, XCPD_INTERNAL_ERROR, "The query could not be processed")
    return XcpdAnswer(False, "InternalError", XCPD_INTERNAL_ERROR, "The query could not be processed")


# --- ITI-38 / ITI-39 --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RegistryErrorInfo:
    error_code: str
    code_context: str
    severity: str = SEVERITY_ERROR
    reason: str = ""  # for the audit trail (error taxonomy code)
    location: str | None = None  # ITI-39: the DocumentUniqueId that failed (else the homeCommunityId)

    @property
    def is_warning(self) -> bool:
        return self.severity == SEVERITY_WARNING


def _xds_codes(transaction: Transaction | str) -> tuple[str, str]:
    """The codes of our own failure and of a busy service: those of the transaction's descriptor (looked up in the
    registry for an id), the XDS registry's when it names none."""
    if isinstance(transaction, str):
        # Imported here: the registry imports the transaction modules, which import this one.
        from xhuma.ihe.transactions import BY_ID

        transaction = BY_ID[transaction]
    return transaction.generic_error or "XDSRegistryError", transaction.busy_error or "XDSRegistryBusy"


def registry_error(error: BaseException, *, transaction: Transaction | str = "ITI-38") -> RegistryErrorInfo:
    """The RegistryError for an error raised while answering ITI-38 / ITI-39 (SPEC §2.5 mapping table); the codes
    of our own failures and of a busy service are the transaction's (its descriptor, or its id)."""
    generic, busy = _xds_codes(transaction)
    code = getattr(error, "code", "InternalError")
    if isinstance(error, errors.InvalidNhsNumber):
        return RegistryErrorInfo("XDSUnknownPatientId", "The patient id is not a valid NHS number", reason=code)
    if isinstance(error, errors.PatientOutcome):
        # Not found / restricted / deceased / superseded: an empty Success with a neutral warning.
        return RegistryErrorInfo(
            "XDSUnknownPatientId", "No documents are available for this patient", SEVERITY_WARNING, code
        )
    if isinstance(error, errors.NoEndpoint | errors.AmbiguousEndpoint):
        return RegistryErrorInfo(
            "XDSRegistryError", "GP record not available electronically", SEVERITY_WARNING, code
        )
    if isinstance(error, errors.ConsentRefused | errors.AccessDenied):
        return RegistryErrorInfo(
            "XDSRegistryError", "No documents are available for this patient", SEVERITY_WARNING, code
        )
    if isinstance(error, errors.DocumentNotFound):
        return RegistryErrorInfo("XDSDocumentUniqueIdError", "The document is not available", reason=code)
    if isinstance(error, errors.CacheError):
        # The document store could not answer (failed, timed out, bypassed): transient, never "not found".
        return RegistryErrorInfo(busy, "The document store is busy; retry later", reason=code)
    if isinstance(error, errors.AuditUnavailable):
        return RegistryErrorInfo(generic, "The request could not be recorded; nothing was disclosed", reason=code)
    if _is_rate_limited(error) or isinstance(error, errors.UpstreamUnavailable):
        # Unreachable, timed out, failing (5xx), paused by its breaker, or another replica still fetching: transient,
        # the initiator may retry (issue 15: our trouble is never answered as final).
        return RegistryErrorInfo(busy, "The GP record service is busy; retry later", reason=code)
    if isinstance(error, errors.UpstreamError):
        return RegistryErrorInfo(generic, "GP record could not be retrieved", reason=code)
    if isinstance(error, errors.ConversionError):
        return RegistryErrorInfo(generic, "GP record could not be converted", reason=code)
    if isinstance(error, errors.InvalidRequest):
        return RegistryErrorInfo(generic, "The request is not supported", reason=code)
    return RegistryErrorInfo(generic, "The request could not be processed", reason="InternalError")


def audit_outcome(error: BaseException) -> tuple[str, str]:
    """(outcome, error code) for the audit trail."""
    code = getattr(error, "error_code", None) or getattr(error, "code", None) or "InternalError"
    if isinstance(error, errors.PatientOutcome | errors.InvalidNhsNumber):
        return "no-match", str(code)
    if isinstance(error, errors.SecurityError) or (
        isinstance(error, SoapFault) and error.subcode is not None and error.subcode[0] == WSSE
    ):
        return "denied", str(code)
    return "error", str(code)
