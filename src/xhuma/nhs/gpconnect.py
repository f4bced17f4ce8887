"""GP Connect Access Record: Structured consumer (SPEC §7).

``POST {ssp}/{provider service root}/Patient/$gpc.getstructuredrecord`` with the four Spine headers, a fresh
unsigned audit JWT and a ``Parameters`` resource built from settings that never holds a combination the provider
must reject. OperationOutcome errors become typed errors; OperationOutcome warnings inside a 200 bundle are kept
for the converter. The returned Patient is cross-checked against PDS (SCAL GEN-07, LESSONS 17).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import structlog

from xhuma.audit import Auditor
from xhuma.config import Settings
from xhuma.errors import (
    AccessDenied,
    ConsentRefused,
    DemographicsMismatch,
    InvalidNhsNumber,
    PatientNotFound,
    UpstreamInvalidResponse,
    UpstreamRejectedRequest,
    UpstreamUnauthorised,
    UpstreamUnavailable,
    XhumaError,
)
from xhuma.nhs.auth import encode_unsigned, gp_connect_claims, jwt_summary
from xhuma.nhs.clinical_areas import (
    BY_NAME,
    CLINICAL_AREAS,
    requested_areas,
)
from xhuma.nhs.nhs_number import NHS_NUMBER_SYSTEM, normalise, validate_nhs_number
from xhuma.nhs.operation_outcome import first_spine_code, parse_json
from xhuma.nhs.outbound import outbound_call
from xhuma.nhs.sds import GPC_STRUCTURED_INTERACTION
from xhuma.nhs.transport import Upstream
from xhuma.observability import Metrics
from xhuma.ports import CallerIdentity, PdsClient, PdsPatient, SdsRoute, StructuredRecord

log = structlog.get_logger(__name__)

FHIR_JSON_UTF8 = "application/fhir+json;charset=utf-8"

# Clinical area (setting value) -> top-level parameter name (SPEC §7.3), in request order.
AREA_PARAMETERS: dict[str, str] = {area.name: area.parameter for area in CLINICAL_AREAS}


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def build_parameters(nhs_number: str, settings: Settings, today: date) -> dict[str, Any]:
    """The ``Parameters`` resource for the configured clinical areas (SPEC §7.3).

    Search periods are whole dates, never in the future. When problems or consultations are requested the
    restricted part parameters (medication search date, uncategorised period) are left out, because the provider
    must reject them in that combination; the provider then returns the whole of those areas.
    """
    areas = [area.name for area in requested_areas(settings.gpc_clinical_areas)]
    restricted = "consultations" in areas or "problems" in areas
    parameters: list[dict[str, Any]] = [
        {"name": "patientNHSNumber", "valueIdentifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs_number}}
    ]
    for area in areas:
        name = BY_NAME[area].parameter
        parts: list[dict[str, Any]] = []
        if area == "allergies":
            # includeResolvedAllergies is 1..1 whenever includeAllergies is present.
            resolved = settings.gpc_include_resolved_allergies
            parts.append({"name": "includeResolvedAllergies", "valueBoolean": resolved})
        elif area == "medication":
            issues = settings.gpc_include_prescription_issues
            parts.append({"name": "includePrescriptionIssues", "valueBoolean": issues})
            if settings.gpc_medication_search_from_years > 0 and not restricted:
                since = _years_before(today, settings.gpc_medication_search_from_years)
                parts.append({"name": "medicationSearchFromDate", "valueDate": since.isoformat()})
        elif area == "uncategorised":
            if settings.gpc_uncategorised_data_years > 0 and not restricted:
                since = _years_before(today, settings.gpc_uncategorised_data_years)
                parts.append({
                    "name": "uncategorisedDataSearchPeriod",
                    "valuePeriod": {"start": since.isoformat(), "end": today.isoformat()},
                })
        elif area == "investigations":
            if settings.gpc_investigations_years > 0:
                since = _years_before(today, settings.gpc_investigations_years)
                parts.append({
                    "name": "investigationSearchPeriod",
                    "valuePeriod": {"start": since.isoformat(), "end": today.isoformat()},
                })
        elif area == "consultations":
            # includeNumberOfMostRecent, never together with consultationSearchPeriod (INVALID_RESOURCE).
            most_recent = settings.gpc_consultations_most_recent
            parts.append({"name": "includeNumberOfMostRecent", "valuePositiveInt": most_recent})
        parameter: dict[str, Any] = {"name": name}
        if parts:
            parameter["part"] = parts
        parameters.append(parameter)
    return {"resourceType": "Parameters", "parameter": parameters}


# --- OperationOutcome -> typed errors (SPEC §7.5) ------------------------------------------------------------------
def error_for(status: int, spine_code: str | None) -> XhumaError:
    code = (spine_code or "").upper()
    kwargs: dict[str, Any] = {"service": "gpconnect", "status": status, "spine_code": spine_code}
    if code == "INVALID_NHS_NUMBER":
        return InvalidNhsNumber(detail="GP Connect INVALID_NHS_NUMBER")
    if code in ("PATIENT_NOT_FOUND", "NO_RECORD_FOUND"):
        return PatientNotFound(detail=f"GP Connect {code}")
    if code == "INVALID_PATIENT_DEMOGRAPHICS":
        return DemographicsMismatch(detail="GP Connect INVALID_PATIENT_DEMOGRAPHICS")
    if code == "NO_PATIENT_CONSENT":
        return ConsentRefused(**kwargs)
    if code in ("ACCESS DENIED", "ACCESS_DENIED", "NO_ORGANISATION_CONSENT", "NO_RELATIONSHIP") or status == 403:
        return AccessDenied(**kwargs)
    if status == 401:
        return UpstreamUnauthorised("GP Connect refused our credentials", **kwargs)
    if status in (408, 429) or (status >= 500 and code != "NOT_IMPLEMENTED"):
        return UpstreamUnavailable("GP Connect provider unavailable", **kwargs)
    # INVALID_PARAMETER, INVALID_RESOURCE, BAD_REQUEST, INVALID_IDENTIFIER_*, REFERENCE_NOT_FOUND, NOT_IMPLEMENTED...
    return UpstreamRejectedRequest("GP Connect rejected the request", **kwargs)


def bundle_warnings(bundle: Mapping[str, Any]) -> tuple[str, ...]:
    """Codes of the OperationOutcome issues inside a 200 bundle (e.g. a clinical area not supported)."""
    codes: list[str] = []
    for resource in _resources(bundle, "OperationOutcome"):
        for issue in resource.get("issue") or []:
            if not isinstance(issue, Mapping):
                continue
            details = [
                str(coding.get("code"))
                for coding in (issue.get("details") or {}).get("coding") or []
                if isinstance(coding, Mapping) and coding.get("code")
            ]
            codes.extend(details or ([str(issue["code"])] if issue.get("code") else []))
    return tuple(codes)


def _resources(bundle: Mapping[str, Any], resource_type: str) -> Iterable[Mapping[str, Any]]:
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, Mapping) and resource.get("resourceType") == resource_type:
            yield resource


# --- demographic cross-check (SCAL GEN-07) ----------------------------------------------------------------------
def _fold(text: str | None) -> str:
    return " ".join((text or "").replace("-", " ").split()).casefold()


def cross_check(bundle: Mapping[str, Any], pds_patient: PdsPatient) -> None:
    """The Patient in the bundle must be the PDS patient: NHS number, birth date and family name agree.

    Raises DemographicsMismatch naming which item disagreed (never the values)."""
    patients = list(_resources(bundle, "Patient"))
    if not patients:
        raise UpstreamInvalidResponse("GP Connect bundle has no Patient", service="gpconnect", status=200)
    expected = normalise(pds_patient.nhs_number)
    for patient in patients:
        numbers = {
            normalise(str(identifier.get("value")))
            for identifier in patient.get("identifier") or []
            if isinstance(identifier, Mapping) and identifier.get("system") == NHS_NUMBER_SYSTEM
        }
        if expected not in numbers:
            raise DemographicsMismatch(detail="nhs-number")
        birth_date = patient.get("birthDate")
        if pds_patient.birth_date and birth_date and str(birth_date)[:10] != pds_patient.birth_date[:10]:
            raise DemographicsMismatch(detail="birth-date")
        families = {_fold(name.get("family")) for name in patient.get("name") or [] if isinstance(name, Mapping)}
        families.discard("")
        if pds_patient.family and families and _fold(pds_patient.family) not in families:
            raise DemographicsMismatch(detail="name")


def breaker_endpoint(route: SdsRoute) -> str:
    """The circuit breaker's key for a practice's provider system: ODS code and ASID (what SDS names it by); a
    failing practice never refuses another (docs/nhs.md). Neither is patient data."""
    return f"{route.ods_code}/{route.asid}"


class GpConnectFhirClient:
    """The ``GpConnectClient`` port over the Spine Secure Proxy."""

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        pds: PdsClient,
        *,
        ssp_url: str | None,
        auditor: Auditor | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self._pds = pds
        self._ssp_url = ssp_url.rstrip("/") if ssp_url else None
        self._auditor = auditor
        self._metrics = metrics
        self._clock = clock

    def url_for(self, route: SdsRoute) -> str:
        # SPEC §7.1: https://{ssp}/{provider service root URL including its scheme}/Patient/$gpc.getstructuredrecord
        root = route.endpoint_url.rstrip("/")
        target = f"{root}/Patient/$gpc.getstructuredrecord"
        return f"{self._ssp_url}/{target}" if self._ssp_url else target

    async def get_structured_record(
        self,
        nhs_number: str,
        route: SdsRoute,
        caller: CallerIdentity,
        *,
        pds_patient: PdsPatient | None = None,
    ) -> StructuredRecord:
        number = validate_nhs_number(nhs_number)  # SPEC §9: before any call
        # GP Connect prerequisite: the number has been traced on PDS; the cross-check needs that record.
        if pds_patient is None:
            pds_patient = await self._pds.get_patient(number)
        now = self._clock()
        claims = gp_connect_claims(self._settings, caller, route.endpoint_url.rstrip("/"), now)
        trace_id = str(uuid.uuid4())
        spine_headers = {
            "Ssp-TraceID": trace_id,
            "Ssp-From": self._settings.gpc_from_asid,
            "Ssp-To": route.asid,
            "Ssp-InteractionID": GPC_STRUCTURED_INTERACTION,
        }
        headers = {
            **spine_headers,
            "Authorization": f"Bearer {encode_unsigned(claims)}",
            "Accept": FHIR_JSON_UTF8,
            "Content-Type": FHIR_JSON_UTF8,
        }
        today = datetime.fromtimestamp(now, UTC).date()
        body = json.dumps(build_parameters(number, self._settings, today)).encode()
        async with outbound_call(
            self._auditor, self._metrics, transaction="GPC", stage="gpconnect", nhs_number=number, caller=caller
        ) as call:
            call.spine = {
                "trace_id": trace_id,
                "from": self._settings.gpc_from_asid,
                "to": route.asid,
                "interaction_id": GPC_STRUCTURED_INTERACTION,
            }
            call.jwt_summary = jwt_summary(claims)
            call.details["ods_code"] = route.ods_code
            # $gpc.getstructuredrecord is a read (a FHIR operation that changes nothing, sent by POST because it
            # takes Parameters): replayable on a new connection, with the same Ssp-TraceID, like a 502-504 retry.
            result = await self._upstream.request(
                "POST", self.url_for(route), headers=headers, content=body, replayable=True,
                endpoint=breaker_endpoint(route), subject=number,
            )
            response = result.response
            call.details.update({"attempts": result.attempts, "status": response.status_code})
            parsed = parse_json(response.content)
            if response.status_code != 200:
                raise error_for(response.status_code, first_spine_code(parsed))
            if not isinstance(parsed, Mapping) or parsed.get("resourceType") != "Bundle":
                raise UpstreamInvalidResponse("GP Connect answer is not a Bundle", service="gpconnect", status=200)
            cross_check(parsed, pds_patient)
            warnings = bundle_warnings(parsed)
            call.details["warnings"] = list(warnings)
            call.outcome = "success"
        return StructuredRecord(
            bundle=parsed,
            ods_code=route.ods_code,
            asid=route.asid,
            trace_id=trace_id,
            retrieved_at=datetime.fromtimestamp(now, UTC),
            warnings=warnings,
        )


__all__ = [
    "AREA_PARAMETERS",
    "GpConnectFhirClient",
    "breaker_endpoint",
    "build_parameters",
    "bundle_warnings",
    "cross_check",
    "error_for",
]
