"""Accessors for FHIR STU3 JSON as GP Connect sends it: malformed input answers None or empty, never raises."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, TypeAlias

from xhuma.ccda import templates as T
from xhuma.ccda.memo import memo

Resource: TypeAlias = Mapping[str, Any]
# isinstance() against this tuple: parsed JSON objects are dicts, matched without the ABC machinery of Mapping.
JSON_OBJECT: Final = (dict, Mapping)

FHIR_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def fhir_datetime(value: object) -> datetime | None:
    """FHIR date/dateTime → aware datetime (partial dates to their first instant; no zone read as UTC)."""
    if not isinstance(value, str):
        return None
    match = FHIR_DATE.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz: timezone = UTC
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
            int(float(fraction) * 1_000_000) if fraction and len(fraction) > 1 else 0, tzinfo=tz,
        )
    except ValueError:
        return None


def readable_date(value: object) -> str:
    """Clinically readable date for narrative: 07-May-2011, May-2011, 2011, or 07-May-2011 10:57."""
    return _readable_date(value) if isinstance(value, str) else ""


@memo(maxsize=4096)
def _readable_date(value: str) -> str:
    match = FHIR_DATE.match(value.strip())
    if match is None:
        return value
    year, month, day, hour, minute, *_ = match.groups()
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    if month is None or not 1 <= int(month) <= 12:
        return year
    name = months[int(month) - 1]
    if day is None:
        return f"{name}-{year}"
    text = f"{day}-{name}-{year}"
    if hour is not None and (hour, minute) != ("00", "00"):
        text += f" {hour}:{minute}"
    return text


def codings(concept: object) -> list[Mapping[str, Any]]:
    """The codings of a CodeableConcept that are JSON objects, as a new list (the caller may change it)."""
    # ``is None`` first here and in the other accessors called with absent values: isinstance(None, Mapping)
    # goes through the ABC machinery, a Python-level call (thousands of absent values per document).
    if concept is None or not isinstance(concept, JSON_OBJECT):
        return []
    found = concept.get("coding")
    if not isinstance(found, list):
        return []
    for coding in found:  # parsed JSON: codings are dicts, and a copy of the list is all that is needed
        if coding.__class__ is not dict:
            return [c for c in found if isinstance(c, JSON_OBJECT)]
    return found[:]


def coding_view(concept: object) -> Sequence[Mapping[str, Any]]:
    """``codings`` for callers that only read them: the concept's own list when every coding is a JSON object
    (parsed JSON: nearly always), without a copy. Not to be changed."""
    if concept is None or not isinstance(concept, JSON_OBJECT):
        return ()
    found = concept.get("coding")
    if not isinstance(found, list):
        return ()
    for coding in found:  # parsed JSON: codings are dicts
        if coding.__class__ is not dict:
            return [c for c in found if isinstance(c, JSON_OBJECT)]
    return found


def coding_display(coding: Mapping[str, Any]) -> str | None:
    """SNOMED DescriptionDisplay when present (the term the clinician chose), else display (SPEC §7.4)."""
    for extension in coding.get("extension") or ():
        if isinstance(extension, JSON_OBJECT) and extension.get("url") == T.EXT_SCT_DESCRIPTION:
            for part in extension.get("extension") or ():
                if isinstance(part, JSON_OBJECT) and part.get("url") == "descriptionDisplay":
                    text = part.get("valueString")
                    if isinstance(text, str) and text.strip():
                        return text.strip()
    display = coding.get("display")
    return (display.strip() or None) if isinstance(display, str) else None


def concept_text(concept: object, default: str = "") -> str:
    """The human-readable term of a CodeableConcept: DescriptionDisplay > text > display > code."""
    term = concept_term(concept)
    return default if term is None else term


def concept_term(concept: object) -> str | None:
    """``concept_text`` without a default: None when the concept names nothing."""
    if concept is None or not isinstance(concept, JSON_OBJECT):
        return None
    all_codings = coding_view(concept)
    for coding in all_codings:
        if coding.get("system") == T.SNOMED_URI:
            display = coding_display(coding)
            if display:
                return display
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    for coding in all_codings:
        display = coding_display(coding)
        if display:
            return display
    for coding in all_codings:
        if isinstance(coding.get("code"), str):
            return str(coding["code"])
    return None



# --- small FHIR accessors ------------------------------------------------------------------------------------------
def first(items: object) -> Any:
    if isinstance(items, list) and items:
        return items[0]
    return None


def mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (malformed input never raises AttributeError)."""
    return value if value is not None and isinstance(value, JSON_OBJECT) else {}


def json_object(value: object) -> Mapping[str, Any] | None:
    """``value`` if it is a JSON object, else None. For optional elements, mostly absent: ``None`` is answered
    without ``isinstance(None, Mapping)``, which goes through the ABC machinery (a Python-level call)."""
    return None if value is None or not isinstance(value, JSON_OBJECT) else value


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def extension(resource: Mapping[str, Any], url_suffix: str) -> Mapping[str, Any] | None:
    """The first extension whose url ends with ``url_suffix`` (GP Connect URLs vary in host between releases)."""
    for item in as_list(resource.get("extension")):
        if isinstance(item, JSON_OBJECT) and isinstance(item.get("url"), str) and item["url"].endswith(url_suffix):
            return item
    return None


def extensions(resource: Mapping[str, Any], *url_suffixes: str) -> list[Mapping[str, Any] | None]:
    """``[extension(resource, suffix) for suffix in url_suffixes]`` in one pass over the extensions (for a
    resource whose extensions are read for several facts). An extension whose url ends with none of the suffixes
    (most of them) is passed over with one ``endswith`` of them all."""
    found: list[Mapping[str, Any] | None] = [None] * len(url_suffixes)
    for item in as_list(resource.get("extension")):
        if isinstance(item, JSON_OBJECT) and isinstance(url := item.get("url"), str) and url.endswith(url_suffixes):
            at = 0
            for suffix in url_suffixes:
                if found[at] is None and url.endswith(suffix):
                    found[at] = item
                at += 1
    return found


def sub_extension_values(parent: Mapping[str, Any] | None, *wanted: tuple[str, str]) -> list[Any]:
    """``[(sub_extension(parent, url) or {}).get(key) for url, key in wanted]`` in one pass over the
    sub-extensions."""
    values: list[Any] = [None] * len(wanted)
    if parent is None:
        return values
    found = [False] * len(wanted)
    for item in as_list(parent.get("extension")):
        if isinstance(item, JSON_OBJECT):
            url = item.get("url")
            at = 0
            for name, key in wanted:
                if url == name and not found[at]:
                    found[at] = True
                    values[at] = item.get(key)
                at += 1
    return values


def sub_extension(parent: Mapping[str, Any] | None, url: str) -> Mapping[str, Any] | None:
    if parent is None:
        return None
    for item in as_list(parent.get("extension")):
        if isinstance(item, JSON_OBJECT) and item.get("url") == url:
            return item
    return None


def notes_text(resource: Mapping[str, Any], key: str = "note") -> list[str]:
    out = []
    for note in as_list(resource.get(key)):
        if isinstance(note, JSON_OBJECT) and isinstance(note.get("text"), str) and note["text"].strip():
            out.append(note["text"].strip())
    return out


def string(value: object) -> str | None:
    if isinstance(value, str) and (stripped := value.strip()):
        return stripped
    return None


def join(parts: Sequence[str | None], sep: str = "; ") -> str:
    return sep.join(p for p in parts if p)
