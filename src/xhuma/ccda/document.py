"""Document assembly: header, every section module in order, provenance, and the resource accounting.

``convert`` is pure: no I/O, no clock, no randomness, no module-level mutable state (only bounded memo caches of
pure functions: serialised attribute sets and templateIds, date formatting, UCUM checks, the fixed markup of a few
entry parts; they never change a result). It pauses the cyclic garbage collector while it runs (see ``convert``).
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.bundle import KNOWN_TYPES, BundleIndex, is_structured_record
from xhuma.ccda.context import Conversion, ConversionContext
from xhuma.ccda.fhir import JSON_OBJECT, as_list, fhir_datetime, string
from xhuma.ccda.header import build_header
from xhuma.ccda.hl7 import hl7_ts
from xhuma.ccda.memo import clear_all
from xhuma.ccda.report import ReportBuilder
from xhuma.ccda.section import DISABLED_AREA_SECTIONS, ConversionState
from xhuma.ccda.sections import SECTION_ORDER
from xhuma.ccda.xmlwriter import el, serialize
from xhuma.errors import ConversionError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Resources that describe who/where rather than clinical facts: when no entry refers to them they carry no
# clinical content of their own, so they are reported as directory data rather than as unmapped.
DIRECTORY_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization", "Location", "Device"})
CLINICAL_REASON = "no section converted it (not a member of any converted List and not referenced by an entry)"


class NotAStructuredRecord(ConversionError):
    """The input is not a GP Connect Access Record: Structured bundle."""

    code = "NotAStructuredRecord"


def convert(bundle: Mapping[str, Any], context: ConversionContext | None = None) -> Conversion:
    """GP Connect structured record (FHIR STU3 Bundle, parsed JSON) → C-CDA R2.1 CCD and conversion report."""
    # The cyclic garbage collector is paused while the document is built: the ~10^4 element nodes, all alive until
    # serialisation, otherwise trigger young collections and, every other large document, a full collection over
    # every object of the process (the parsed bundle included) that cost as much as the conversion itself. Nodes
    # form no reference cycles; the few cycles a conversion makes are collected once the collector resumes.
    # Concurrent conversions are safe: a thread resumes the collector only if it paused it.
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _convert(bundle, context)
    finally:
        if paused:
            gc.enable()


def _convert(bundle: Mapping[str, Any], context: ConversionContext | None) -> Conversion:
    ok, reason = is_structured_record(bundle)
    if not ok:
        raise NotAStructuredRecord(reason)
    context = context or ConversionContext()
    index = BundleIndex(bundle)
    report = ReportBuilder()
    for problem in index.problems:
        report.warn(problem.code, problem.message, resource=problem.resource)
    now = _document_time(bundle, index, context, report)
    state = ConversionState(index=index, context=context, report=report, now=now)
    _disabled_areas(state)

    root, facts = build_header(state)
    for key in SECTION_ORDER:
        module = _section_module(key)
        if module is not None:
            _run_section(module, key, state)
    _add_placeholders(state)
    provenance = _section_module("provenance")
    assert provenance is not None
    provenance.build(state)

    body = el(el(root, "component"), "structuredBody")
    ordered = sorted(state.sections, key=lambda s: s.key != "provenance")  # provenance first (SPEC §8.5)
    for section in ordered:
        body.append(section.render())

    _account_for_everything(state)
    xml = serialize(root)
    document = {
        "id": facts.document_id,
        "effective_time": facts.effective_time,
        "sections": [s.key for s in ordered],
    }
    order = [key for key, _ in index.resources] + [key for key, _ in index.contained]
    # Writers refer to the state and the state to its writers: break that cycle so the document tree is freed on
    # return by reference counting rather than left to the cyclic collector.
    state.sections.clear()
    return Conversion(
        xml=xml,
        report=report.as_dict(order, document),
        document_id=facts.document_id,
        title=context.title,
        effective_time=now,
        service_start=facts.service_start,
        service_stop=facts.service_stop,
        confidentiality_code=context.confidentiality_code,
        language_code=context.language_code,
        nhs_number=facts.nhs_number,
        practice_ods=facts.practice_ods,
        practice_name=facts.practice_name,
    )


def clear_caches() -> None:
    """Empty the converter's memo caches (measurement: a first conversion in a fresh process pays for them)."""
    for key in SECTION_ORDER:  # every module whose caches register themselves is imported
        _section_module(key)
    clear_all()


def _section_module(key: str) -> ModuleType | None:
    name = f"xhuma.ccda.sections.{key}"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            return None
        raise


def _run_section(module: ModuleType, key: str, state: ConversionState) -> None:
    """A section module that raises loses only its own sections, which become placeholders with a warning."""
    before = len(state.sections)
    try:
        module.build(state)
    except Exception as error:
        del state.sections[before:]
        state.report.warn("section-failed", f"section {key} could not be built ({type(error).__name__}); "
                          "its resources are listed in this report", section=key)
        spec = T.SECTION_SPECS.get(key)
        if spec is not None:
            writer = state.section(spec)
            writer.paragraph("This part of the GP record could not be converted; see the conversion report.")


def _add_placeholders(state: ConversionState) -> None:
    """Sections the CCD requires (or the registry marks as placeholders) that no module produced."""
    present = {s.key for s in state.sections}
    for key in SECTION_ORDER:
        spec = T.SECTION_SPECS[key]
        if key not in present and spec.placeholder:
            state.section(spec)
    # Keep document order = SECTION_ORDER regardless of who created a section when.
    rank = {key: position for position, key in enumerate(SECTION_ORDER)}
    state.sections.sort(key=lambda s: rank.get(s.key, len(rank)))


def _document_time(
    bundle: Mapping[str, Any], index: BundleIndex, context: ConversionContext, report: ReportBuilder
) -> datetime:
    """Document effectiveTime: the context's ``now``; else when the GP system produced the record."""
    if context.now is not None:
        return context.now if context.now.tzinfo else context.now.replace(tzinfo=UTC)
    meta = bundle.get("meta")
    if isinstance(meta, JSON_OBJECT):
        moment = fhir_datetime(meta.get("lastUpdated"))
        if moment is not None:
            return moment
    list_dates = [fhir_datetime(lst.get("date")) for lst in index.of_type("List")]
    known = [d for d in list_dates if d is not None]
    if known:
        return max(known)
    report.warn("no-document-time", "no time in the context or the bundle; document time set to 1970-01-01")
    return EPOCH


def _disabled_areas(state: ConversionState) -> None:
    """OperationOutcome inside the bundle: one issue per clinical area the practice disabled (SPEC §7.4, §8.5)."""
    for outcome in state.index.of_type("OperationOutcome"):
        for issue in as_list(outcome.get("issue")):
            if not isinstance(issue, JSON_OBJECT):
                continue
            parameter = string(issue.get("diagnostics")) or ""
            details = issue.get("details")
            text = string(details.get("text")) if isinstance(details, JSON_OBJECT) else None
            message = f"The GP system did not supply this information: {text or parameter or 'not supported'}."
            keys = DISABLED_AREA_SECTIONS.get(parameter, ())
            for key in keys:
                state.disabled_areas.setdefault(key, []).append(message)
            state.report.warn("gp-system-warning", message, section=keys[0] if keys else None)
        state.report.record(state.index.key(outcome), "OperationOutcome", "supporting",
                            reason="warnings shown in the affected sections and in the provenance section")


def _account_for_everything(state: ConversionState) -> None:
    """Every resource gets an outcome; unaccounted ones are reported with a reason (issue 3)."""
    report = state.report
    recorded = report.outcomes  # ``key in recorded``: ``report.outcome_of(key) is not None`` without a call
    for key, resource in (*state.index.resources, *state.index.contained):
        if key in recorded:
            continue
        rtype = str(resource.get("resourceType") or "Unknown")
        if "#entry" in key and key.split("#entry")[0] in recorded:
            first = key.split("#entry")[0]
            report.record(key, rtype, "not-mapped", reason=f"repeats the id of {first}, which was converted; "
                          "references cannot tell the two apart")
        elif rtype in DIRECTORY_TYPES:
            report.record(key, rtype, "supporting", reason="directory resource (people, places, organisations); "
                          "used wherever an entry refers to it")
        elif rtype == "List":
            codes = ",".join(BundleIndex._list_codes(resource)) or "no code"
            report.record(key, rtype, "not-mapped", reason=f"list ({codes}) not used by any section")
        elif rtype == "Unknown" or rtype not in KNOWN_TYPES:
            report.record(key, rtype, "not-mapped", reason=f"resource type {rtype} is not converted")
        else:
            report.record(key, rtype, "not-mapped", reason=CLINICAL_REASON)
            report.warn("resource-not-converted", f"{rtype} {key} was not converted: {CLINICAL_REASON}",
                        resource=key)


__all__ = ["EPOCH", "NotAStructuredRecord", "clear_caches", "convert", "hl7_ts"]
