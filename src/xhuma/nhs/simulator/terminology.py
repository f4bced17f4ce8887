"""The simulator's NHS England Terminology Server (issue 13): the operations xhuma.nhs.terminology uses, answered
from the packaged subset (terminology_subset.json; its provenance says what it is and is not).

* ``POST {TERMINOLOGY_PATH}/token``: OAuth 2.0 client credentials (SIMULATOR_CLIENT_ID / SIMULATOR_CLIENT_SECRET);
* ``GET CodeSystem?url=``: the subset's release version for SNOMED CT and dm+d;
* ``POST|GET ValueSet/$expand`` of ``http://snomed.info/sct?fhir_vs=ecl/<ecl>`` for the ECL forms the client sends:
  ``(c1 OR c2 ...)`` and ``(<< root) AND (c1 OR c2 ...)`` with root 71388002, 64572001, 404684003, 416471007,
  417662000 or 14679004;
* ``GET CodeSystem/$lookup`` (SNOMED CT: display; dm+d: the FORMCD, ROUTECD and UNIT_DOSE_UOMCD properties) and a
  ``batch`` Bundle of them posted to the base.

Every request but the token needs the bearer token the token endpoint gave.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from fastapi import APIRouter, Request, Response

from xhuma.nhs.terminology import DMD, DMD_PROPERTIES, SNOMED, packaged_subset

TERMINOLOGY_PATH = "/terminology/fhir"
TERMINOLOGY_TOKEN_PATH = "/terminology/token"  # noqa: S105 - a path
SIMULATOR_CLIENT_ID = "xhuma-simulator-terminology"
SIMULATOR_CLIENT_SECRET = "xhuma-simulator-terminology-secret"  # noqa: S105 - the simulator's own, public
ROOTS = {"71388002": {"procedure"}, "64572001": {"disorder"}, "404684003": {"finding", "disorder"},
         "416471007": {"family-history"}, "417662000": {"past-history"}, "14679004": {"occupation"}}
_FOCUS = re.compile(r"^\(<<\s*(\d+)\)\s*AND\s*\((.*)\)$")
_MEMBERS = re.compile(r"^\((.*)\)$")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/fhir+json")


def _outcome(status: int, code: str, text: str) -> Response:
    return _json({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": code, "diagnostics": text}]}, status)


def expand(ecl: str) -> list[dict[str, str]] | None:
    """The subset's members of one of the two ECL forms the client sends, or None for any other ECL."""
    snomed = packaged_subset()["snomed"]
    focus = _FOCUS.match(ecl.strip())
    members = focus.group(2) if focus else (_MEMBERS.match(ecl.strip()) or [None, None])[1]
    if members is None or (focus and focus.group(1) not in ROOTS):
        return None
    codes = [c.strip() for c in members.split(" OR ")]
    if not all(c.isdigit() for c in codes):
        return None
    allowed = ROOTS[focus.group(1)] if focus else None
    # A code the subset left unclassified (hierarchy null) is treated as unknown to this release: no fact about it.
    return [{"system": SNOMED, "code": c, "display": snomed[c]["display"] or c} for c in codes
            if c in snomed and snomed[c]["hierarchy"] and (allowed is None or snomed[c]["hierarchy"] in allowed)]


def lookup(system: str | None, code: str | None) -> Response:
    subset = packaged_subset()
    if system == DMD and code in subset["dmd"]:
        entry = subset["dmd"][code]
        parameters: list[dict[str, Any]] = [{"name": "name", "valueString": "dm+d"},
                                            {"name": "version", "valueString": subset["provenance"]["version"]},
                                            {"name": "display", "valueString": entry["display"]}]
        for field, name in DMD_PROPERTIES.items():
            if entry.get(field):
                value, display = entry[field]
                parameters.append({"name": "property", "part": [
                    {"name": "code", "valueCode": name},
                    {"name": "value", "valueCoding": {"system": SNOMED, "code": value, "display": display}}]})
        return _json({"resourceType": "Parameters", "parameter": parameters})
    if system == SNOMED and code in subset["snomed"]:
        display = subset["snomed"][code]["display"] or code
        return _json({"resourceType": "Parameters", "parameter": [
            {"name": "name", "valueString": "SNOMED CT"}, {"name": "display", "valueString": display}]})
    return _outcome(404, "not-found", "code not in the simulator's terminology subset")


def terminology_router() -> APIRouter:
    router = APIRouter()
    tokens: set[str] = set()

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and header[7:] in tokens

    @router.post(TERMINOLOGY_TOKEN_PATH)
    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("latin-1")).items()}
        if form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, 400)
        if (form.get("client_id"), form.get("client_secret")) != (SIMULATOR_CLIENT_ID, SIMULATOR_CLIENT_SECRET):
            return _json({"error": "invalid_client"}, 401)
        issued = secrets.token_urlsafe(24)
        tokens.add(issued)
        return Response(orjson.dumps({"access_token": issued, "token_type": "bearer", "expires_in": 3600}),
                        media_type="application/json")

    @router.get(TERMINOLOGY_PATH + "/CodeSystem")
    async def code_systems(request: Request, url: str | None = None) -> Response:
        if not authorised(request):
            return _outcome(401, "security", "bearer token required")
        version = packaged_subset()["provenance"]["version"]
        entries = [{"resource": {"resourceType": "CodeSystem", "url": system, "version": version}}
                   for system in (SNOMED, DMD) if url in (None, system)]
        return _json({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})

    @router.api_route(TERMINOLOGY_PATH + "/ValueSet/$expand", methods=["GET", "POST"])
    async def value_set_expand(request: Request) -> Response:
        if not authorised(request):
            return _outcome(401, "security", "bearer token required")
        url = request.query_params.get("url")
        if request.method == "POST":
            body = orjson.loads(await request.body() or b"{}")
            url = next((p.get("valueUri") for p in body.get("parameter") or () if p.get("name") == "url"), url)
        prefix = f"{SNOMED}?fhir_vs=ecl/"
        if not url or not url.startswith(prefix):
            return _outcome(400, "not-supported", "only SNOMED CT ECL implicit value sets are simulated")
        contains = expand(url[len(prefix):])
        if contains is None:
            return _outcome(400, "not-supported", "ECL form not simulated")
        return _json({"resourceType": "ValueSet", "status": "active",
                      "expansion": {"total": len(contains), "contains": contains}})

    @router.get(TERMINOLOGY_PATH + "/CodeSystem/$lookup")
    async def code_system_lookup(request: Request, system: str | None = None, code: str | None = None) -> Response:
        if not authorised(request):
            return _outcome(401, "security", "bearer token required")
        return lookup(system, code)

    @router.post(TERMINOLOGY_PATH)
    async def batch(request: Request) -> Response:
        if not authorised(request):
            return _outcome(401, "security", "bearer token required")
        body = orjson.loads(await request.body() or b"{}")
        if not isinstance(body, Mapping) or body.get("type") != "batch":
            return _outcome(400, "invalid", "a batch Bundle is expected")
        entries = []
        for entry in body.get("entry") or ():
            target = urlsplit(str((entry.get("request") or {}).get("url", "")))
            query = {k: v[0] for k, v in parse_qs(target.query).items()}
            answer = (lookup(query.get("system"), query.get("code")) if target.path == "CodeSystem/$lookup"
                      else _outcome(400, "not-supported", "only $lookup is simulated in a batch"))
            entries.append({"resource": orjson.loads(answer.body),
                            "response": {"status": str(answer.status_code)}})
        return _json({"resourceType": "Bundle", "type": "batch-response", "entry": entries})

    return router


__all__ = ["SIMULATOR_CLIENT_ID", "SIMULATOR_CLIENT_SECRET", "TERMINOLOGY_PATH", "TERMINOLOGY_TOKEN_PATH", "expand",
           "terminology_router"]
