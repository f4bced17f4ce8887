"""One exception hierarchy for the whole service.

Callers match on these classes; the IHE layer maps them to SOAP Faults, XCPD ``AE``/``NF`` and XDS
``RegistryError``s in exactly one place (``xhuma.ihe.faults``). Messages are safe to show to a caller and to
log: they never contain an NHS number, a name or a document.
"""

from __future__ import annotations


class XhumaError(Exception):
    """Base of every error Xhuma raises on purpose. ``code`` is a stable machine-readable name."""

    code = "InternalError"

    def __init__(self, message: str = "", *, detail: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip().splitlines()[0]
        self.detail = detail  # extra, PHI-free context for the audit trail


# --- request problems (the caller sent something wrong) ---------------------------------------------
class InvalidRequest(XhumaError):
    """The request is malformed or not supported."""

    code = "InvalidRequest"


class RequestTooLarge(InvalidRequest):
    """The request body is larger than the configured limit."""

    code = "RequestTooLarge"


class SecurityError(XhumaError):
    """The caller could not be authenticated or its assertion is not acceptable."""

    code = "SecurityError"


class RateLimited(XhumaError):
    """Too many requests from this client; try again later."""

    code = "RateLimited"

    def __init__(self, message: str = "", *, retry_after: int = 1, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.retry_after = max(1, int(retry_after))  # whole seconds, for the Retry-After header


class UnsupportedProcessingMode(InvalidRequest):
    """The request asks for a processing mode this gateway does not offer (XCPD deferred response)."""

    code = "UnsupportedProcessingMode"


class InvalidNhsNumber(InvalidRequest):
    """The NHS number is not a valid 10-digit Modulus 11 number."""

    code = "InvalidNhsNumber"


# --- patient outcomes (no match in XCPD, reasons go to the audit only) -------------------------------
class PatientOutcome(XhumaError):
    """Base of the outcomes that are answered as 'no match' to the caller."""

    code = "PatientOutcome"


class PatientNotFound(PatientOutcome):
    """No patient with this NHS number."""

    code = "PatientNotFound"


class PatientRestricted(PatientOutcome):
    """The patient's record is restricted (PDS security R/V)."""

    code = "PatientRestricted"


class PatientDeceased(PatientOutcome):
    """The patient is recorded as deceased."""

    code = "PatientDeceased"


class PatientSuperseded(PatientOutcome):
    """The NHS number has been superseded by another one."""

    code = "PatientSuperseded"


class DemographicsMismatch(PatientOutcome):
    """The demographics do not agree with PDS."""

    code = "DemographicsMismatch"


class MoreDemographicsNeeded(PatientOutcome):
    """A demographic search found no single sure match: several candidates, or one below the score threshold.

    ``requested`` names the XCPD attributes that could single the patient out (ITI TF-2 3.55.4.2.2.6)."""

    code = "MoreDemographicsNeeded"

    def __init__(self, message: str = "", *, requested: tuple[str, ...] = (), detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.requested = requested


# --- upstream outcomes -----------------------------------------------------------------------------------
class UpstreamError(XhumaError):
    """An NHS service answered with an error."""

    code = "UpstreamError"

    def __init__(self, message: str = "", *, service: str = "", status: int | None = None,
                 spine_code: str | None = None, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.service = service
        self.status = status
        self.spine_code = spine_code


class UpstreamUnavailable(UpstreamError):
    """An NHS service could not be reached, timed out, or is failing."""

    code = "UpstreamUnavailable"


class CircuitOpen(UpstreamUnavailable):
    """Calls to this NHS service are paused after repeated failures."""

    code = "CircuitOpen"


class RecordBusy(UpstreamUnavailable):
    """Another replica is still fetching this patient's record; retry later."""

    code = "RecordBusy"


class UpstreamUnauthorised(UpstreamError):
    """An NHS service refused our credentials."""

    code = "UpstreamUnauthorised"


class UpstreamInvalidResponse(UpstreamError):
    """An NHS service answered with something we cannot read."""

    code = "UpstreamInvalidResponse"


class UpstreamRejectedRequest(UpstreamError):
    """An NHS service rejected our request as invalid (INVALID_PARAMETER, INVALID_RESOURCE, BAD_REQUEST)."""

    code = "UpstreamRejectedRequest"


class ConsentRefused(UpstreamError):
    """The patient has dissented from sharing (GP Connect NO_PATIENT_CONSENT)."""

    code = "ConsentRefused"


class AccessDenied(UpstreamError):
    """The GP practice denied access (GP Connect ACCESS DENIED)."""

    code = "AccessDenied"


class NoEndpoint(UpstreamError):
    """The practice has no GP Connect endpoint in SDS."""

    code = "NoEndpoint"


class AmbiguousEndpoint(UpstreamError):
    """SDS returned several GP Connect endpoints for the practice."""

    code = "AmbiguousEndpoint"


# --- internal -------------------------------------------------------------------------------------------
class DocumentNotFound(XhumaError):
    """No document with this uniqueId is available (unknown or expired)."""

    code = "DocumentNotFound"


class AuditUnavailable(XhumaError):
    """The audit trail could not be written, so nothing may be disclosed."""

    code = "AuditUnavailable"


class AuditOutcomeUnknown(AuditUnavailable):
    """The audit write was sent but not acknowledged in time: the event may still commit (until its deadline).
    Nothing is disclosed, as for any AuditUnavailable; a disclosure event is then voided (xhuma.audit)."""


class ConversionError(XhumaError):
    """The record could not be converted to a document."""

    code = "ConversionError"


class CacheError(XhumaError):
    """The cache could not answer (failed, timed out or bypassed).

    Not a miss: callers that can fetch again log and bypass it; a document that could not be read or stored is
    answered as busy (xhuma.ihe.faults)."""

    code = "CacheError"
