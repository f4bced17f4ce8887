"""The simulator's PDS search, ``GET /Patient?...`` (PDS FHIR API, search-patient), over its patients.

As the real service in application-restricted access: one result at most, and only for a unique match; several
matches are a 200 ``TOO_MANY_MATCHES`` OperationOutcome; ``_max-results`` above 1 is 403 ``INVALID_VALUE``. A
match needs the family name and birth date; every other parameter sent must agree too. Scores are PDS-like: 1.0
when everything agrees with current data, less for a previous name or address (a search with history) or a
sound-alike name (fuzzy search). Restricted patients are never found by postcode and lose their address, telecom
and GP. Invalidated (absent) records are never returned.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

HISTORIC = 0.85  # what matching only a previous name or address leaves of the score
SOUND_ALIKE = 0.9  # ... a name matched by Soundex only (fuzzy search)
_KNOWN = frozenset({
    "family", "given", "gender", "birthdate", "address-postalcode", "address-postcode", "phone", "email",
    "_fuzzy-match", "_exact-match", "_history", "_max-results", "death-date", "general-practitioner",
})
_RESTRICTED = ("R", "V", "REDACTED")


class SearchRejected(Exception):
    """A search PDS refuses: HTTP status, Spine error code, display and diagnostics."""

    def __init__(self, status: int, code: str, display: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status, self.code, self.display, self.diagnostics = status, code, display, diagnostics


@dataclass(frozen=True, slots=True)
class Search:
    family: str
    birth_date: str
    given: tuple[str, ...]
    gender: str | None
    postcode: str | None
    phone: str | None
    email: str | None
    fuzzy: bool
    exact: bool
    history: bool
    max_results: int


def _last(values: Mapping[str, list[str]], name: str) -> str | None:
    return values[name][-1] if values.get(name) else None


def _flag(values: Mapping[str, list[str]], name: str) -> bool:
    return (values.get(name) or ["false"])[-1].lower() == "true"


def parse_search(values: Mapping[str, list[str]]) -> Search:
    """The search in a query string (each parameter with its values); SearchRejected as PDS answers a bad one."""
    if not values:
        raise SearchRejected(400, "UNSUPPORTED_SERVICE", "Unsupported Service", "No search parameters provided")
    unknown = sorted(set(values) - _KNOWN)
    if unknown:
        raise SearchRejected(400, "ADDITIONAL_PROPERTIES", "Additional properties",
                             f"Invalid request with error - unrecognised parameter '{unknown[0]}'")
    family = (values.get("family") or [""])[-1]
    birth = (values.get("birthdate") or [""])[-1]
    if not family or not birth:
        raise SearchRejected(400, "INVALID_SEARCH_DATA", "Invalid search data",
                             "Invalid search data provided - 'family' and 'birthdate' are required")
    birth = birth[2:] if birth[:2] == "eq" else birth
    try:
        date.fromisoformat(birth)
    except ValueError:
        raise SearchRejected(400, "INVALID_VALUE", "Provided value is invalid",
                             "Invalid value - 'birthdate' must be YYYY-MM-DD") from None
    try:
        max_results = int((values.get("_max-results") or ["1"])[-1])
    except ValueError:
        max_results = 0
    if not 1 <= max_results <= 50:
        raise SearchRejected(400, "INVALID_VALUE", "Provided value is invalid",
                             "Invalid value - '_max-results' must be between 1 and 50")
    if max_results > 1:
        raise SearchRejected(403, "INVALID_VALUE", "Provided value is invalid",
                             "Multiple results requested when using the API in application-restricted mode")
    return Search(
        family=family, birth_date=birth, given=tuple(values.get("given") or ()),
        gender=_last(values, "gender"),
        postcode=_last(values, "address-postalcode") or _last(values, "address-postcode"),
        phone=_last(values, "phone"), email=_last(values, "email"),
        fuzzy=_flag(values, "_fuzzy-match"), exact=_flag(values, "_exact-match"),
        history=_flag(values, "_history") or _flag(values, "_fuzzy-match"), max_results=max_results,
    )


def _fold(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if ch.isalnum()).casefold()


def soundex(text: str) -> str:
    """American Soundex, as PDS's fuzzy search uses for homophones (Smith, Smythe)."""
    letters = [ch for ch in _fold(text).upper() if ch.isalpha()]
    if not letters:
        return ""
    codes = {**dict.fromkeys("BFPV", "1"), **dict.fromkeys("CGJKQSXZ", "2"), **dict.fromkeys("DT", "3"),
             "L": "4", **dict.fromkeys("MN", "5"), "R": "6"}
    result, previous = letters[0], codes.get(letters[0], "")
    for ch in letters[1:]:
        code = codes.get(ch, "")
        if code and code != previous:
            result += code
        if ch not in "HW":
            previous = code
    return (result + "000")[:4]


def _text_factor(wanted: str, candidates: Iterable[str], fuzzy: bool) -> float:
    """1.0 when a candidate agrees (a trailing * is a prefix wildcard), SOUND_ALIKE for a Soundex match in a fuzzy
    search, 0.0 otherwise."""
    folded = [_fold(candidate) for candidate in candidates]
    if wanted.endswith("*") and not fuzzy:
        prefix = _fold(wanted[:-1])
        return 1.0 if prefix and any(candidate.startswith(prefix) for candidate in folded) else 0.0
    if _fold(wanted) in folded:
        return 1.0
    if fuzzy and soundex(wanted) in {soundex(candidate) for candidate in folded}:
        return SOUND_ALIKE
    return 0.0


_Items = list[Mapping[str, Any]]


def _current_and_previous(items: Iterable[Mapping[str, Any]]) -> tuple[_Items, _Items]:
    current: _Items = []
    previous: _Items = []
    for item in items:
        (previous if (item.get("period") or {}).get("end") else current).append(item)
    return current, previous


def _best(factor_current: float, factor_previous: float, history: bool) -> float:
    return max(factor_current, factor_previous * HISTORIC if history else 0.0)


def _postcode_key(value: str) -> str:
    return re.sub(r"\s+", "", value).upper()


def _postcode_factor(wanted: str, addresses: Iterable[Mapping[str, Any]]) -> float:
    key = _postcode_key(wanted)
    codes = [_postcode_key(str(address.get("postalCode") or "")) for address in addresses]
    if key.endswith("*"):
        return 1.0 if any(code.startswith(key[:-1]) for code in codes) else 0.0
    return 1.0 if key in codes else 0.0


def _name_factors(search: Search, resource: Mapping[str, Any]) -> list[float]:
    names, old_names = _current_and_previous(resource.get("name") or [])
    factors = [_best(_text_factor(search.family, [str(n.get("family") or "") for n in names], search.fuzzy),
                     _text_factor(search.family, [str(n.get("family") or "") for n in old_names], search.fuzzy),
                     search.history)]
    current = [str(g) for n in names for g in n.get("given") or []]
    previous = [str(g) for n in old_names for g in n.get("given") or []]
    for given in search.given:
        factors.append(_best(_text_factor(given, current, search.fuzzy), _text_factor(given, previous, search.fuzzy),
                             search.history))
    return factors


def _telecom_factor(wanted: str, telecom: Iterable[Mapping[str, Any]], system: str) -> float:
    if system == "phone":
        digits = re.sub(r"\D", "", wanted)
        return 1.0 if any(item.get("system") == "phone" and re.sub(r"\D", "", str(item.get("value"))) == digits
                          for item in telecom) else 0.0
    return 1.0 if any(item.get("system") == "email" and str(item.get("value")).lower() == wanted.lower()
                      for item in telecom) else 0.0


def _contact_factors(search: Search, resource: Mapping[str, Any]) -> list[float]:
    factors = []
    if search.gender:
        factors.append(1.0 if resource.get("gender") == search.gender else 0.0)
    if search.postcode:
        addresses, old_addresses = _current_and_previous(resource.get("address") or [])
        factors.append(_best(_postcode_factor(search.postcode, addresses),
                             _postcode_factor(search.postcode, old_addresses), search.history))
    telecom = [item for item in resource.get("telecom") or [] if not (item.get("period") or {}).get("end")]
    if search.phone:
        factors.append(_telecom_factor(search.phone, telecom, "phone"))
    if search.email:
        factors.append(_telecom_factor(search.email, telecom, "email"))
    return factors


def score(search: Search, resource: Mapping[str, Any]) -> float:
    """How well the PDS record matches the search (0.0: not a match): the product of one factor per parameter."""
    if resource.get("birthDate") != search.birth_date:
        return 0.0
    result = 1.0
    for factor in _name_factors(search, resource) + _contact_factors(search, resource):
        result *= factor
    return round(result, 4)


def _security(resource: Mapping[str, Any]) -> str:
    labels = (resource.get("meta") or {}).get("security") or [{}]
    return str(labels[0].get("code") or "U")


def run_search(search: Search, records: Iterable[Mapping[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    """Every record the search matches, best first, each once (a superseded number shares its successor's record)."""
    found: dict[str, tuple[dict[str, Any], float]] = {}
    for resource in records:
        restricted = _security(resource) in _RESTRICTED
        if restricted and search.postcode:
            continue  # PDS: a search with a postcode never returns a restricted patient
        value = score(search, resource)
        if value <= 0.0 or (search.exact and value < 1.0):
            continue
        view = dict(resource)
        if restricted:
            for key in ("address", "telecom", "contact", "generalPractitioner"):
                view.pop(key, None)
        found.setdefault(str(resource.get("id")), (view, value))
    return sorted(found.values(), key=lambda item: item[1], reverse=True)


def searchset(matches: list[tuple[dict[str, Any], float]], base_url: str, timestamp: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": timestamp,
        "total": len(matches),
        "entry": [
            {"fullUrl": f"{base_url}/Patient/{resource['id']}", "search": {"score": value}, "resource": resource}
            for resource, value in matches
        ],
    }


__all__ = ["Search", "SearchRejected", "parse_search", "run_search", "score", "searchset", "soundex"]
