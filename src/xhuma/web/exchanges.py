"""The audit trail read as exchanges, and its codes in words (admin API).

* ``GET /api/exchanges/{id}``: every event of one exchange: those carrying this trace id (an EHR that sends a
  W3C ``traceparent`` ties its ITI-55, ITI-38 and ITI-39 together) or this request id (one request and the PDS,
  SDS and GP Connect calls it made), grouped by request, oldest first. The search is bounded to a window around
  ``around`` (the time of the event the operator opened) so that it runs on the ``occurred_at`` index.
* ``GET /api/reasons``: every reason and error code the trail holds, as a plain sentence (``REASONS``; the
  service's own errors are worded once, in their docstrings in ``xhuma.errors``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from xhuma import errors
from xhuma.errors import AuditUnavailable
from xhuma.security.admin import AdminPrincipal, require_admin

router = APIRouter(prefix="/api", tags=["admin"], dependencies=[Depends(require_admin)])

EXCHANGE_WINDOW = timedelta(hours=6)  # either side of ``around``: an exchange's requests are minutes apart
MAX_EXCHANGE_EVENTS = 500

# Codes that are not Xhuma error classes: what the caller was answered (XCPD, XDS), why the admin API or the
# SAML check refused, and why demographics did not fit (xhuma.records.demographics_conflict).
REASONS: dict[str, str] = {
    "AnswerNotAvailable": "The patient's record could not be answered (XCPD AE); the reason code says why.",
    "ResponderBusy": "The gateway or an NHS service was busy or unreachable; the EHR may retry.",
    "InsufficientRequest": "The request was missing what the gateway needs (for example an NHS number).",
    "XDSRegistryError": "The document query failed; the reason code says why.",
    "XDSRepositoryError": "The document retrieval failed; the reason code says why.",
    "XDSRegistryBusy": "The document query could not be answered now (a cache or NHS service in trouble); retry.",
    "XDSRepositoryBusy": "The document could not be read now (the cache in trouble); retry.",
    "XDSDocumentUniqueIdError": "The document asked for is unknown or has expired from the cache.",
    "AdminApiDisabled": "The admin API is switched off: no admin token or OIDC issuer is configured.",
    "AdminTokenMissing": "The admin request carried no bearer token.",
    "AdminTokenInvalid": "The admin bearer token was not recognised.",
    "AdminRoleMissing": "The OIDC token is valid but lacks the admin role.",
    "SamlMissing": "The request carried no SAML assertion.",
    "SamlUnsigned": "The SAML assertion was not signed.",
    "SamlBadSignature": "The SAML assertion's signature did not verify.",
    "SamlNoTrustedCert": "The SAML assertion was signed by a certificate that is not trusted.",
    "SamlWrapped": "The SAML assertion was altered (signature wrapping).",
    "SamlExpired": "The SAML assertion had expired.",
    "SamlNotYetValid": "The SAML assertion was not yet valid.",
    "SamlReplayed": "The SAML assertion had already been used.",
    "SamlAudience": "The SAML assertion was meant for another service.",
    "SamlPurposeOfUse": "The SAML assertion's purpose of use is not allowed.",
    "SamlResourceMismatch": "The SAML assertion names another patient than the request.",
    "FamilyNameMismatch": "The family name sent does not match PDS.",
    "GivenNameMismatch": "The given name sent does not match PDS.",
    "BirthDateMismatch": "The birth date sent does not match PDS.",
    "BirthDateInvalid": "The birth date sent is not a valid date.",
    "GenderMismatch": "The gender sent does not match PDS.",
    "DemographicsMissing": "Family name and birth date are required with the NHS number (strict matching).",
    "InternalError": "An unexpected error in the gateway; the logs of this request id say more.",
}


def _error_sentences() -> dict[str, str]:
    """Each Xhuma error's code with the first line of its docstring (the words the errors module gives it)."""
    sentences: dict[str, str] = {}
    pending: list[type[errors.XhumaError]] = [errors.XhumaError]
    while pending:
        kind = pending.pop()
        pending.extend(kind.__subclasses__())
        doc = (kind.__doc__ or "").strip().splitlines()
        # Xhuma's own classes only: a subclass defined elsewhere (a test's stand-in) must not reword a code.
        own = kind.__module__.startswith("xhuma.")
        if kind is not errors.XhumaError and own and doc and kind.code not in sentences:
            sentences[kind.code] = doc[0].strip()
    return sentences


def reason_sentences() -> dict[str, str]:
    return {**_error_sentences(), **REASONS}


@router.get("/reasons")
async def reasons() -> dict[str, str]:
    return reason_sentences()


def _around(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


@router.get("/exchanges/{exchange_id}")
async def exchange(request: Request, exchange_id: str, principal: AdminPrincipal = Depends(require_admin),
                   around: datetime | None = Query(default=None)) -> dict[str, Any]:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(503, "the service is starting")
    if not exchange_id or len(exchange_id) > 64:
        raise HTTPException(422, "an exchange is named by a trace id or a request id (at most 64 characters)")
    moment = _around(around)
    window = {"since": moment - EXCHANGE_WINDOW, "until": moment + EXCHANGE_WINDOW}
    try:
        await runtime.auditor.record(
            "ADMIN", "success", caller=None, reason="audit-search",
            details={"action": "audit-search", "by": principal.subject, "method": principal.method,
                     "filters": ["exchange"]},
            client_address=request.client.host if request.client else None,
        )
        rows: dict[int, dict[str, Any]] = {}
        for name in ("trace_id", "request_id"):
            for row in await runtime.audit.query(limit=MAX_EXCHANGE_EVENTS, **window, **{name: exchange_id}):
                rows[row["id"]] = dict(row)
    except AuditUnavailable:
        raise HTTPException(503, "the audit trail is unavailable") from None
    except Exception as error:
        if type(error).__module__.startswith("sqlalchemy"):
            raise HTTPException(503, "the audit trail is unavailable") from None
        raise
    events = [_jsonable(rows[key]) for key in sorted(rows)]
    groups: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        groups.setdefault(event.get("request_id") or "(no request id)", []).append(event)
    return {
        "id": exchange_id,
        "trace_ids": sorted({event["trace_id"] for event in events if event.get("trace_id")}),
        "requests": [{"request_id": key, "events": items} for key, items in groups.items()],
        "total": len(events),
    }
