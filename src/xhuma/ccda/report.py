"""Conversion report: where every resource of the bundle went, warnings, counts per clinical area.

Issue 3 "never drop silently": every resource ends with exactly one outcome —
``entry`` (a C-CDA entry, with section and template), ``narrative`` (a narrative row only, with the reason),
``supporting`` (used inside another entry or the header: Medication, Practitioner, Organization, List, …) or
``not-mapped`` (with the reason). The report is plain JSON-serialisable data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["entry", "narrative", "supporting", "not-mapped"]
# A stronger outcome replaces a weaker one: a Medication first seen as supporting and later as an entry is an entry.
_RANK: dict[str, int] = {"not-mapped": 0, "supporting": 1, "narrative": 2, "entry": 3}


@dataclass(slots=True)
class ResourceOutcome:
    key: str
    resource_type: str
    outcome: Outcome
    section: str | None = None
    template: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resource": self.key, "type": self.resource_type, "outcome": self.outcome}
        if self.section is not None:  # each optional field in turn (a report lists hundreds of outcomes)
            out["section"] = self.section
        if self.template is not None:
            out["template"] = self.template
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to create, and a warning is only listed
class Warning:
    code: str
    message: str
    section: str | None = None
    resource: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.section is not None:
            out["section"] = self.section
        if self.resource is not None:
            out["resource"] = self.resource
        return out


@dataclass(slots=True)
class ReportBuilder:
    """Collects outcomes during one conversion (one instance per conversion; never shared)."""

    outcomes: dict[str, ResourceOutcome] = field(default_factory=dict)
    warnings: list[Warning] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def record(
        self,
        key: str,
        resource_type: str,
        outcome: Outcome,
        section: str | None = None,
        template: str | None = None,
        reason: str | None = None,
    ) -> None:
        """One resource's outcome. The section writers (several hundred calls per conversion) give every argument
        in order: a call with keyword arguments costs more."""
        current = self.outcomes.get(key)
        if current is not None:
            if _RANK[current.outcome] > _RANK[outcome]:
                return
            if current.outcome == outcome == "entry" and current.section != section:
                # Rendered twice (e.g. a problem also inside an encounter): keep the first, note the second.
                current.reason = f"also in section {section}"
                return
        self.outcomes[key] = ResourceOutcome(key, resource_type, outcome, section, template, reason)
        if section is not None and outcome in ("entry", "narrative"):
            area = self.counts.get(section)
            if area is None:
                area = self.counts[section] = {"entries": 0, "narrative_only": 0, "failed": 0}
            area["entries" if outcome == "entry" else "narrative_only"] += 1
            if current is not None and current.section == section and current.outcome == "narrative":
                area["narrative_only"] -= 1

    def warn(self, code: str, message: str, *, section: str | None = None, resource: str | None = None) -> None:
        self.warnings.append(Warning(code, message, section, resource))

    def failed(self, section: str) -> None:
        self.counts.setdefault(section, {"entries": 0, "narrative_only": 0, "failed": 0})["failed"] += 1

    def outcome_of(self, key: str) -> ResourceOutcome | None:
        return self.outcomes.get(key)

    def as_dict(self, order: list[str], document: dict[str, Any]) -> dict[str, Any]:
        """``order``: every resource key of the bundle, in bundle order (the report lists them in that order)."""
        found = list(filter(None, map(self.outcomes.get, order)))  # the recorded ones (an outcome is truthy)
        names = [outcome.outcome for outcome in found]
        # Counted with list.count (a few outcome kinds, hundreds of resources), in order of first appearance.
        outcome_totals = {name: names.count(name) for name in dict.fromkeys(names)}
        return {
            "document": document,
            "counts": {"sections": self.counts, "outcomes": outcome_totals, "resources": len(found)},
            "warnings": list(map(Warning.as_dict, self.warnings)),
            "resources": list(map(ResourceOutcome.as_dict, found)),
        }
