"""Reading FHIR OperationOutcomes (PDS R4 and GP Connect STU3 share the shape)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def parse_json(content: bytes) -> Any:
    """JSON or None (an unreadable error body must not hide the HTTP status)."""
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def spine_codes(body: Any) -> list[str]:
    """The Spine error/warning codes of every issue (``issue.details.coding.code``), in order."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return []
    codes: list[str] = []
    for issue in body.get("issue") or []:
        if not isinstance(issue, Mapping):
            continue
        for coding in (issue.get("details") or {}).get("coding") or []:
            if isinstance(coding, Mapping) and coding.get("code"):
                codes.append(str(coding["code"]))
    return codes


def first_spine_code(body: Any) -> str | None:
    codes = spine_codes(body)
    return codes[0] if codes else None


def operation_outcome(
    http_code: str, spine_code: str, display: str, *, system: str, diagnostics: str | None = None,
    severity: str = "error", profile: str | None = None,
) -> dict[str, Any]:
    """Build an OperationOutcome with one issue (used by the simulator)."""
    issue: dict[str, Any] = {
        "severity": severity,
        "code": http_code,
        "details": {"coding": [{"system": system, "code": spine_code, "display": display}]},
    }
    if diagnostics:
        issue["diagnostics"] = diagnostics
    outcome: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": [issue]}
    if profile:
        outcome["meta"] = {"profile": [profile]}
    return outcome
