"""How a GP Connect provider checks a get-structured-record request, and what it returns (SPEC §7).

Failures are ``ProviderError``s carrying the HTTP status, FHIR issue code and Spine error code the
specification prescribes (SPEC §7.5): bad JWT or Spine header -> 400 BAD_REQUEST, bad NHS number -> 400
INVALID_NHS_NUMBER, unparsable Parameters -> 422 INVALID_RESOURCE, unknown/missing/forbidden parameters -> 422
INVALID_PARAMETER. ``select_areas`` returns only the clinical areas asked for.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from xhuma.nhs.clinical_areas import (
    BY_NAME,
    BY_PARAMETER,
    CLINICAL_AREAS,
    CONSULTATION_STRUCTURE_LISTS,
    FORBIDDEN_WITH_CONSULTATIONS,
    FORBIDDEN_WITH_PROBLEMS,
    RESOLVED_ALLERGIES_LIST,
)
from xhuma.nhs.nhs_number import NHS_NUMBER_SYSTEM, is_valid_nhs_number
from xhuma.nhs.operation_outcome import operation_outcome

SPINE_ERROR_SYSTEM = "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1"
GPC_OPERATION_OUTCOME_PROFILE = "https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-OperationOutcome-1"
BUNDLE_PROFILE = "https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-StructuredRecord-Bundle-1"
LIST_PROFILE = "https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-GPC-List-1"
SNOMED = "http://snomed.info/sct"

DISPLAYS = {
    "BAD_REQUEST": "Bad request",
    "INVALID_NHS_NUMBER": "Invalid NHS number",
    "INVALID_IDENTIFIER_SYSTEM": "Invalid identifier system",
    "INVALID_RESOURCE": "Invalid validation of resource",
    "INVALID_PARAMETER": "Invalid parameter",
    "PATIENT_NOT_FOUND": "Patient record not found",
    "NO_PATIENT_CONSENT": "Patient has not provided consent to share data",
    "ACCESS DENIED": "Access denied",
    "INTERNAL_SERVER_ERROR": "Internal server error",
}


@dataclass
class ProviderError(Exception):
    status: int
    issue_code: str
    spine_code: str
    diagnostics: str

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(
            self.issue_code, self.spine_code, DISPLAYS.get(self.spine_code, self.spine_code),
            system=SPINE_ERROR_SYSTEM, diagnostics=self.diagnostics, profile=GPC_OPERATION_OUTCOME_PROFILE,
        )


def bad_request(diagnostics: str) -> ProviderError:
    return ProviderError(400, "invalid", "BAD_REQUEST", diagnostics)


def invalid_parameter(diagnostics: str) -> ProviderError:
    return ProviderError(422, "invalid", "INVALID_PARAMETER", diagnostics)


def invalid_resource(diagnostics: str) -> ProviderError:
    return ProviderError(422, "invalid", "INVALID_RESOURCE", diagnostics)


# --- the audit JWT (SPEC §7.2) ------------------------------------------------------------------------------------
REQUIRED_CLAIMS = (
    "iss", "sub", "aud", "exp", "iat", "reason_for_request", "requested_scope", "requesting_device",
    "requesting_organization", "requesting_practitioner",
)


def _b64json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode()))


def check_jwt(authorization: str | None, audience: str, *, now: float | None = None) -> dict[str, Any]:
    """Validate the bearer token the way a provider does; return its claims."""
    now = time.time() if now is None else now
    claims = _unsigned_claims(authorization)
    for claim in REQUIRED_CLAIMS:
        if claims.get(claim) in (None, "", [], {}):
            raise bad_request(f"Empty JWT {claim} claim")
    _check_lifetime(claims, now)
    if claims["aud"] != audience:
        raise bad_request("JWT aud claim does not match the requested endpoint")
    if claims["reason_for_request"] != "directcare":
        raise bad_request("JWT reason_for_request must be directcare")
    scope = str(claims["requested_scope"])
    if not re.fullmatch(r"patient/\*\.read( conf/[NR])?", scope):
        raise bad_request("JWT requested_scope must be patient/*.read")
    _check_device(claims["requesting_device"])
    organization = claims["requesting_organization"]
    if (
        not isinstance(organization, dict)
        or organization.get("resourceType") != "Organization"
        or not _has_identifier(organization, "https://fhir.nhs.uk/Id/ods-organization-code")
    ):
        raise bad_request("JWT requesting_organization must be an Organization with an ODS code")
    _check_practitioner(claims["requesting_practitioner"], claims["sub"])
    return claims


def _unsigned_claims(authorization: str | None) -> dict[str, Any]:
    """The claims of an unsigned (``alg: none``) bearer JWT, as GP Connect requires it."""
    if not authorization or not authorization.startswith("Bearer "):
        raise bad_request("Authorization header missing or not a Bearer token")
    token = authorization[len("Bearer "):].strip()
    segments = token.split(".")
    if len(segments) != 3:
        raise bad_request("JWT must have three segments (header.payload.)")
    if segments[2]:
        raise bad_request("JWT must be unsigned: the signature segment must be empty")
    try:
        header, claims = _b64json(segments[0]), _b64json(segments[1])
    except (ValueError, UnicodeDecodeError):
        raise bad_request("JWT is not base64url-encoded JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "none":
        raise bad_request("JWT header alg must be none")
    if header.get("typ", "JWT") != "JWT":
        raise bad_request("JWT header typ must be JWT")
    if not isinstance(claims, dict):
        raise bad_request("JWT payload is not an object")
    return claims


def _check_lifetime(claims: Mapping[str, Any], now: float) -> None:
    iat, exp = claims["iat"], claims["exp"]
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise bad_request("JWT iat and exp must be integers (seconds)")
    if exp - iat != 300:
        raise bad_request("JWT exp must be iat + 300")
    if iat > now + 5:
        raise bad_request("JWT iat is in the future")
    if exp <= now:
        raise bad_request("JWT has expired")


def _check_device(device: Any) -> None:
    if not isinstance(device, dict) or device.get("resourceType") != "Device" or not _has_identifier(device):
        raise bad_request("JWT requesting_device must be a Device with an identifier")
    if not device.get("model") or not device.get("version"):
        raise bad_request("JWT requesting_device needs model and version")


def _check_practitioner(practitioner: Any, subject: Any) -> None:
    if not isinstance(practitioner, dict) or practitioner.get("resourceType") != "Practitioner":
        raise bad_request("JWT requesting_practitioner must be a Practitioner")
    if practitioner.get("id") != subject:
        raise bad_request("JWT sub must equal requesting_practitioner.id")
    names = practitioner.get("name")
    if not isinstance(names, list) or not names or not isinstance(names[0], dict) or not names[0].get("family"):
        raise bad_request("JWT requesting_practitioner needs a name with a family name")
    for system in ("https://fhir.nhs.uk/Id/sds-user-id", "https://fhir.nhs.uk/Id/sds-role-profile-id"):
        if not _has_identifier(practitioner, system):
            raise bad_request(f"JWT requesting_practitioner lacks identifier {system}")


def _has_identifier(resource: Mapping[str, Any], system: str | None = None) -> bool:
    identifiers = resource.get("identifier")
    if not isinstance(identifiers, list):
        return False
    return any(
        isinstance(item, dict)
        and item.get("value")
        and item.get("system")
        and (system is None or item["system"] == system)
        for item in identifiers
    )


# --- Parameters (SPEC §7.3) ---------------------------------------------------------------------------------------
WHOLE_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class StructuredRequest:
    nhs_number: str
    areas: set[str] = field(default_factory=set)
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def include_resolved_allergies(self) -> bool:
        return bool(self.parts.get("includeResolvedAllergies", False))


def _whole_date(value: Any, name: str) -> date:
    if not isinstance(value, str) or not WHOLE_DATE.match(value):
        raise invalid_parameter(f"{name} must be a whole date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise invalid_parameter(f"{name} is not a valid date") from None


def parse_parameters(body: Any, today: date) -> StructuredRequest:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise invalid_resource("Request body is not a FHIR Parameters resource")
    parameters = body.get("parameter")
    if not isinstance(parameters, list) or not parameters:
        raise invalid_parameter("No parameters supplied")
    seen: set[str] = set()
    nhs_number: str | None = None
    request = StructuredRequest(nhs_number="")
    for parameter in parameters:
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise invalid_resource("Parameter without a name")
        name = parameter["name"]
        if name in seen:
            raise invalid_parameter(f"Parameter {name} supplied more than once")
        seen.add(name)
        if name == "patientNHSNumber":
            nhs_number = _patient_nhs_number(parameter)
        else:
            _add_area(request, name, parameter)
    if nhs_number is None:
        raise invalid_parameter("patientNHSNumber is mandatory")
    request.nhs_number = nhs_number
    _check_parts(request, today)
    return request


def _patient_nhs_number(parameter: Mapping[str, Any]) -> str:
    identifier = parameter.get("valueIdentifier")
    if not isinstance(identifier, dict):
        raise invalid_parameter("patientNHSNumber needs a valueIdentifier")
    if identifier.get("system") != NHS_NUMBER_SYSTEM:
        raise ProviderError(400, "value", "INVALID_IDENTIFIER_SYSTEM", "patientNHSNumber system is invalid")
    value = identifier.get("value")
    if not isinstance(value, str) or not is_valid_nhs_number(value) or len(value) != 10:
        raise ProviderError(400, "value", "INVALID_NHS_NUMBER", "NHS number is invalid")
    return value


def _add_area(request: StructuredRequest, name: str, parameter: Mapping[str, Any]) -> None:
    """A clinical area parameter (``includeAllergies`` ...) and its part parameters."""
    area = BY_PARAMETER.get(name)
    if area is None:
        raise invalid_parameter(f"Unrecognised parameter {name}")
    request.areas.add(area.name)
    for part in parameter.get("part") or []:
        if not isinstance(part, dict) or part.get("name") not in area.parts:
            raise invalid_parameter(f"Unrecognised part parameter in {name}")
        value_key = area.parts[part["name"]]
        if value_key not in part:
            raise invalid_parameter(f"Part parameter {part['name']} has no {value_key}")
        request.parts[part["name"]] = part[value_key]


def _check_parts(request: StructuredRequest, today: date) -> None:
    parts = request.parts
    _check_part_values(request)
    _check_part_dates(parts, today)
    # Not-permitted combinations (SPEC §7.3).
    if "consultations" in request.areas and FORBIDDEN_WITH_CONSULTATIONS & parts.keys():
        raise invalid_parameter("Part parameters not permitted with includeConsultations")
    if "problems" in request.areas and FORBIDDEN_WITH_PROBLEMS & parts.keys():
        raise invalid_parameter("Part parameters not permitted with includeProblems")


def _check_part_values(request: StructuredRequest) -> None:
    parts = request.parts
    if "allergies" in request.areas and not isinstance(parts.get("includeResolvedAllergies"), bool):
        raise invalid_parameter("includeResolvedAllergies is mandatory with includeAllergies")
    for name in ("includePrescriptionIssues", "includeNotGiven", "includeStatus"):
        if name in parts and not isinstance(parts[name], bool):
            raise invalid_parameter(f"{name} must be a boolean")
    if "consultationSearchPeriod" in parts and "includeNumberOfMostRecent" in parts:
        raise invalid_resource("consultationSearchPeriod and includeNumberOfMostRecent cannot be used together")
    if "includeNumberOfMostRecent" in parts:
        value = parts["includeNumberOfMostRecent"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise invalid_parameter("includeNumberOfMostRecent must be a positive integer")
    if "filterStatus" in parts and parts["filterStatus"] not in ("active", "inactive"):
        raise invalid_parameter("filterStatus must be active or inactive")


def _check_part_dates(parts: Mapping[str, Any], today: date) -> None:
    if "medicationSearchFromDate" in parts:
        if _whole_date(parts["medicationSearchFromDate"], "medicationSearchFromDate") > today:
            raise invalid_parameter("medicationSearchFromDate is in the future")
    if "diaryEntriesSearchDate" in parts:
        if _whole_date(parts["diaryEntriesSearchDate"], "diaryEntriesSearchDate") < today:
            raise invalid_parameter("diaryEntriesSearchDate is in the past")
    for name in ("consultationSearchPeriod", "uncategorisedDataSearchPeriod", "investigationSearchPeriod",
                 "referralSearchPeriod"):
        if name in parts:
            period = parts[name]
            if not isinstance(period, dict) or not (period.get("start") or period.get("end")):
                raise invalid_parameter(f"{name} must be a Period")
            start = _whole_date(period["start"], name) if period.get("start") else None
            end = _whole_date(period["end"], name) if period.get("end") else None
            if (start and start > today) or (end and end > today):
                raise invalid_parameter(f"{name} is in the future")
            if start and end and start > end:
                raise invalid_parameter(f"{name} start is after its end")


# --- answering with the requested clinical areas --------------------------------------------------------------------
CODE_TO_AREA = {code: area.name for area in CLINICAL_AREAS for code in area.lists}
CODE_TO_AREA[RESOLVED_ALLERGIES_LIST] = "allergies"
CODE_TO_AREA.update({code: "consultations" for code in CONSULTATION_STRUCTURE_LISTS})
NON_CLINICAL = {"Patient", "Organization", "Practitioner", "PractitionerRole", "Location", "Device", "OperationOutcome"}


def _list_area(resource: Mapping[str, Any]) -> str | None:
    """The clinical area of a List, by SNOMED code; secondary lists belong to problems/consultations queries."""
    for coding in (resource.get("code") or {}).get("coding") or []:
        code = str(coding.get("code") or "")
        if code in CODE_TO_AREA:
            return CODE_TO_AREA[code]
        if code.startswith(("problems-", "consultations-")):
            return "secondary"
    return None


def _references(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and "/" in value:
                found.add(value)
            else:
                found |= _references(value)
    elif isinstance(node, list):
        for item in node:
            found |= _references(item)
    return found


def _closure(start: list[Mapping[str, Any]], index: Mapping[str, Mapping[str, Any]]) -> set[str]:
    reached: set[str] = set()
    pending = [ref for resource in start for ref in _references(resource)]
    while pending:
        ref = pending.pop()
        if ref in reached or ref not in index:
            continue
        reached.add(ref)
        resource = index[ref]
        if resource.get("resourceType") not in NON_CLINICAL:
            pending.extend(_references(resource))
    return reached


def select_areas(bundle: Mapping[str, Any], request: StructuredRequest, trace_id: str) -> dict[str, Any]:
    """A copy of the bundle holding only the requested clinical areas (plus the people and places they cite).

    Lists of areas not asked for are removed with the clinical items only they lead to; items no list leads to are
    kept (they cannot be attributed). A requested area with no List gets an empty one, as providers send."""
    result = copy.deepcopy(dict(bundle))
    entries = [e for e in result.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    index = {f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}": e["resource"] for e in entries}
    lists = [e["resource"] for e in entries if e["resource"].get("resourceType") == "List"]
    kept_lists = [resource for resource in lists if _list_wanted(resource, request)]
    kept_entries = _kept_entries(entries, index, lists, kept_lists)
    present = {_list_area(resource) for resource in kept_lists}
    patient = next((r for r in index.values() if r.get("resourceType") == "Patient"), None)
    for area in sorted(request.areas - present):
        for code, title in BY_NAME[area].lists.items():
            kept_entries.append({"resource": empty_list(code, title, patient, trace_id)})
    result["entry"] = kept_entries
    result["id"] = trace_id  # Bundle.id is the request's Ssp-TraceID (SPEC §7.4)
    result["meta"] = {"profile": [BUNDLE_PROFILE]}
    result["type"] = "collection"
    return result


def _list_wanted(resource: Mapping[str, Any], request: StructuredRequest) -> bool:
    area = _list_area(resource)
    if area == "secondary":
        return bool({"problems", "consultations"} & request.areas)
    if area is None:
        return True  # unknown list code: never drop what we cannot classify
    if area == "allergies" and any(
        c.get("code") == RESOLVED_ALLERGIES_LIST for c in (resource.get("code") or {}).get("coding") or []
    ):
        return "allergies" in request.areas and request.include_resolved_allergies
    return area in request.areas


def _kept_entries(
    entries: list[dict[str, Any]],
    index: Mapping[str, Mapping[str, Any]],
    lists: list[Mapping[str, Any]],
    kept_lists: list[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The kept Lists, the clinical items they lead to, items no List leads to, and every non-clinical resource."""
    reachable_all = _closure(lists, index)
    reachable_kept = _closure(kept_lists, index)
    # Medication issues point at their authorisation (basedOn), not the other way: keep issues of kept plans.
    for key, resource in index.items():
        if resource.get("resourceType") != "MedicationRequest":
            continue
        if _references(resource.get("basedOn")) & reachable_kept:
            reachable_kept.add(key)
    kept_entries = []
    for entry in entries:
        resource = entry["resource"]
        key = f"{resource.get('resourceType')}/{resource.get('id')}"
        if resource.get("resourceType") == "List":
            if resource in kept_lists:
                kept_entries.append(entry)
        elif resource.get("resourceType") in NON_CLINICAL or key not in reachable_all or key in reachable_kept:
            kept_entries.append(entry)
    return kept_entries


def empty_list(code: str, title: str, patient: Mapping[str, Any] | None, trace_id: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "List",
        "id": f"empty-{code}",
        "meta": {"profile": [LIST_PROFILE]},
        "status": "current",
        "mode": "snapshot",
        "title": title,
        "code": {"coding": [{"system": SNOMED, "code": code, "display": title}]},
        "date": date.today().isoformat(),
        "emptyReason": {"coding": [{
            "system": "http://hl7.org/fhir/list-empty-reason",
            "code": "no-content-recorded",
            "display": "No Content Recorded",
        }]},
        "note": [{"text": "Information not available"}],
    }
    if patient is not None and patient.get("id"):
        resource["subject"] = {"reference": f"Patient/{patient['id']}"}
    return resource


def area_not_supported(area_display: str) -> dict[str, Any]:
    """The 200-bundle OperationOutcome of a clinical area the practice has disabled (SPEC §7.4)."""
    return {
        "resourceType": "OperationOutcome",
        "id": "area-not-supported",
        "meta": {"profile": [GPC_OPERATION_OUTCOME_PROFILE]},
        "issue": [{
            "severity": "warning",
            "code": "not-supported",
            "details": {"coding": [{
                "system": SPINE_ERROR_SYSTEM,
                "code": "NOT_IMPLEMENTED",
                "display": "Not implemented",
            }]},
            "diagnostics": f"{area_display} are not supported by this practice",
        }],
    }


def synthetic_bundle(pds: Mapping[str, Any], ods: str, *, birth_date: str | None = None) -> dict[str, Any]:
    """A minimal structured record for a built-in patient: Patient, practice and usual GP (lists added later)."""
    number = str(pds.get("id"))
    name = (pds.get("name") or [{}])[0]
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "patient-1",
        "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-GPC-Patient-1"]},
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": number}],
        "active": True,
        "name": [{"use": "official", "family": name.get("family"), "given": name.get("given", [])}],
        "gender": pds.get("gender"),
        "birthDate": birth_date or pds.get("birthDate"),
        "generalPractitioner": [{"reference": "Practitioner/gp-1"}],
        "managingOrganization": {"reference": "Organization/practice-1"},
    }
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [BUNDLE_PROFILE]},
        "type": "collection",
        "entry": [
            {"resource": patient},
            {"resource": {
                "resourceType": "Organization",
                "id": "practice-1",
                "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": ods}],
                "name": f"Simulated practice {ods}",
            }},
            {"resource": {
                "resourceType": "Practitioner",
                "id": "gp-1",
                "name": [{"use": "usual", "family": "Simulator", "given": ["Gp"], "prefix": ["Dr"]}],
            }},
        ],
    }


__all__ = [
    "ProviderError",
    "StructuredRequest",
    "area_not_supported",
    "check_jwt",
    "parse_parameters",
    "select_areas",
    "synthetic_bundle",
]
