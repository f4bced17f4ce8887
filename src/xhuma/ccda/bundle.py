"""Index of a GP Connect structured-record Bundle: resources by id, reference resolution, Lists by code.

GP Connect bundles carry no ``fullUrl``; references are ``Type/id`` against the bundle and ``#id`` against the
referring resource's ``contained`` (ended allergies are contained in their List) — SPEC §7.4. Entry order is not
meaningful. Malformed input (entries without resource, duplicate ids, unknown types) never raises: it is noted as
an ``IndexProblem`` that the conversion report carries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, codings

Resource = Mapping[str, Any]
_UNSEEN: Any = object()

# Resource types a GP Connect structured record may contain (SPEC §7.4). Anything else is reported.
KNOWN_TYPES = frozenset(
    {
        "Patient", "Organization", "Practitioner", "PractitionerRole", "Location", "List", "AllergyIntolerance",
        "MedicationStatement", "MedicationRequest", "Medication", "Condition", "Immunization", "Observation",
        "DiagnosticReport", "Specimen", "ProcedureRequest", "ReferralRequest", "Encounter", "DocumentReference",
        "OperationOutcome", "QuestionnaireResponse", "Device", "Appointment", "Schedule", "Slot",
    }
)
STRUCTURED_RECORD_PROFILE = "GPConnect-StructuredRecord-Bundle-1"


@dataclass(frozen=True, slots=True)
class IndexProblem:
    code: str
    message: str
    resource: str | None = None


def is_structured_record(bundle: object) -> tuple[bool, str]:
    """Whether ``bundle`` is a GP Connect structured record; the reason when not (one line, for the CLI)."""
    if not isinstance(bundle, JSON_OBJECT):
        return False, "input is not a JSON object"
    if bundle.get("resourceType") != "Bundle":
        return False, f"input is not a FHIR Bundle (resourceType {bundle.get('resourceType')!r})"
    meta = bundle.get("meta")
    profiles = as_list(meta.get("profile")) if isinstance(meta, JSON_OBJECT) else []
    # Some supplier bundles carry a mangled profile URL ("https: //fhir.nhs.uk/..."): match on the profile name.
    if any(isinstance(p, str) and STRUCTURED_RECORD_PROFILE in p for p in profiles):
        return True, ""
    entries = as_list(bundle.get("entry"))
    types = {
        e["resource"].get("resourceType")
        for e in entries
        if isinstance(e, JSON_OBJECT) and isinstance(e.get("resource"), JSON_OBJECT)
    }
    if bundle.get("type") == "collection" and types & {"List", "Patient"}:
        return True, ""
    return False, "bundle is not a GP Connect structured record (no structured-record profile, Patient or List)"


class BundleIndex:
    """Resources of one bundle, addressable by ``Type/id`` and by object identity (for report keys)."""

    def __init__(self, bundle: Mapping[str, Any]) -> None:
        self.bundle = bundle
        self.problems: list[IndexProblem] = []
        self._by_ref: dict[str, Resource] = {}
        self._keys: dict[int, str] = {}
        self._contained: dict[int, dict[str, Resource]] = {}
        self.resources: list[tuple[str, Resource]] = []  # every top-level resource, in bundle order, with its key
        self.contained: list[tuple[str, Resource]] = []  # every contained resource, with its key
        self._lists_by_code: dict[str, list[Resource]] = {}
        self._by_type: dict[str, list[Resource]] = {}  # top-level resources per resourceType, in bundle order
        self._resolved: dict[str, Resource | None] = {}  # reference string → resolve() result (the index is fixed)
        self._by_bare_id: dict[str, Resource | None] | None = None  # id → its only resource (None: several share it)
        self._listed: set[int] | None = None
        # Answers about the bundle's Lists, worked out once (several sections ask, and the index is fixed): the
        # secondary and uncoded Lists, and per List (by identity; the List is kept to check it) its resolved
        # members, its unresolved references and its references by bare id.
        self._secondary: list[Resource] | None = None
        self._uncoded: list[Resource] | None = None
        self._members: dict[int, tuple[Resource, list[Resource], list[str], list[str]]] = {}
        # Text and markup that depend only on resources of this bundle (an author's assignedAuthor and narrative
        # label, an encounter's performer and location), made once per conversion by their writer
        # (participation.py, sections/encounters.py); keys start with the kind of text and hold object ids, valid
        # while the bundle lives.
        self.memo: dict[tuple[object, ...], str] = {}
        self._index()

    # --- construction ------------------------------------------------------------------------------------------
    def _index(self) -> None:
        by_ref, keys, by_type, resources = self._by_ref, self._keys, self._by_type, self.resources
        resolved = self._resolved
        for position, entry in enumerate(as_list(self.bundle.get("entry"))):
            resource = entry.get("resource") if isinstance(entry, JSON_OBJECT) else None
            if not isinstance(resource, JSON_OBJECT):
                self.problems.append(IndexProblem("entry-without-resource", f"entry[{position}] has no resource"))
                continue
            rtype = resource.get("resourceType")
            rid = resource.get("id")
            if isinstance(rtype, str) and isinstance(rid, str) and rid and "/" not in rid and rtype in KNOWN_TYPES \
                    and (key := f"{rtype}/{rid}") not in by_ref:  # a well-formed resource (all of them, mostly)
                # Its reference "Type/id" resolves to it: known to ``resolve`` at once (no parsing).
                by_ref[key] = resolved[key] = resource
            else:
                key = self._irregular_key(position, rtype, rid, resource)
            keys[id(resource)] = key
            resources.append((key, resource))
            if isinstance(rtype, str):
                same_type = by_type.get(rtype)
                if same_type is None:
                    by_type[rtype] = [resource]
                else:
                    same_type.append(resource)
            if "contained" in resource:
                self._index_contained(key, resource)
            if rtype == "List":
                for code in self._list_codes(resource):
                    self._lists_by_code.setdefault(code, []).append(resource)

    def _irregular_key(self, position: int, rtype: object, rid: object, resource: Resource) -> str:
        """The key of a resource without id, with a repeated id, with "/" in its id or of an unknown type, and its
        problems."""
        rtype_s = rtype if isinstance(rtype, str) else "Unknown"
        if isinstance(rid, str) and rid:
            key = f"{rtype_s}/{rid}"
            if key in self._by_ref:
                self.problems.append(
                    IndexProblem(
                        "duplicate-id",
                        f"entry[{position}] repeats the id {key}; references resolve to the first occurrence",
                        key,
                    )
                )
                key = f"{key}#entry{position}"
            else:
                self._by_ref[key] = resource
        else:
            key = f"{rtype_s}#entry{position}"
            self.problems.append(IndexProblem("missing-id", f"entry[{position}] ({rtype_s}) has no id", key))
        if rtype_s not in KNOWN_TYPES:
            self.problems.append(
                IndexProblem("unknown-resource-type", f"resource type {rtype_s} is not converted", key)
            )
        return key

    def _index_contained(self, key: str, resource: Resource) -> None:
        contained = as_list(resource.get("contained"))
        if not contained:
            return
        local: dict[str, Resource] = {}
        for inner in contained:
            if not isinstance(inner, JSON_OBJECT):
                continue
            inner_id = inner.get("id")
            inner_key = f"{key}/#{inner_id if isinstance(inner_id, str) else len(local)}"
            if isinstance(inner_id, str):
                local.setdefault(inner_id, inner)
            self._keys[id(inner)] = inner_key
            self.contained.append((inner_key, inner))
        self._contained[id(resource)] = local

    def list_codes(self, resource: Resource) -> list[str]:
        return self._list_codes(resource)

    def unlisted(self, rtype: str) -> list[Resource]:
        """Top-level resources of ``rtype`` that no List references (GP systems sometimes return items outside
        their area List; they must still be shown — issue 3 "never drop silently")."""
        if self._listed is None:
            listed: set[int] = set()
            for lst in self.of_type("List"):
                listed.update(map(id, self._list_entries(lst)[1]))
            self._listed = listed
        keys = self._keys
        return [r for r in self._by_type.get(rtype, ()) if id(r) not in self._listed and "#entry" not in keys[id(r)]]

    def secondary_lists(self) -> list[Resource]:
        if self._secondary is None:
            self._secondary = [lst for lst in self.of_type("List")
                               if any(c.get("system") == T.SECONDARY_LIST_SYSTEM for c in codings(lst.get("code")))]
        return list(self._secondary)

    def uncoded_lists(self) -> list[Resource]:
        """Lists with no recognised primary, consultation-structure or secondary code."""
        if self._uncoded is None:
            out = []
            for lst in self.of_type("List"):
                if any(c.get("system") == T.SECONDARY_LIST_SYSTEM for c in codings(lst.get("code"))):
                    continue
                if not any(code in T.KNOWN_LIST_CODES for code in self._list_codes(lst)):
                    out.append(lst)
            self._uncoded = out
        return list(self._uncoded)

    @staticmethod
    def _list_codes(resource: Resource) -> list[str]:
        return [
            str(c["code"])
            for c in codings(resource.get("code"))
            if c.get("system") in (T.SNOMED_URI, T.SECONDARY_LIST_SYSTEM) and isinstance(c.get("code"), str)
        ]

    # --- look-up -----------------------------------------------------------------------------------------------
    def key(self, resource: Resource) -> str:
        """Stable report key of a resource of this bundle (``Type/id``, ``List/x/#y`` for contained ones)."""
        return self._keys.get(id(resource)) or f"{resource.get('resourceType', 'Unknown')}/?"

    def get(self, rtype: str, rid: str) -> Resource | None:
        return self._by_ref.get(f"{rtype}/{rid}")

    def resolve(self, reference: object, container: Resource | None = None) -> Resource | None:
        """Resolve a Reference (mapping) or reference string; ``#id`` against ``container.contained``."""
        if reference is None:  # absent (common): skip the Mapping ABC check
            return None
        ref = reference.get("reference") if isinstance(reference, JSON_OBJECT) else reference
        if not isinstance(ref, str):
            return None
        found = self._resolved.get(ref, _UNSEEN)  # never holds a "#id" (nor "")
        if found is _UNSEEN:
            if not ref:
                return None
            if ref.startswith("#"):
                if container is None:
                    return None
                return self._contained.get(id(container), {}).get(ref[1:])
            found = None
            parts = ref.rstrip("/").split("/")
            if len(parts) >= 2:
                # Absolute URLs and versioned references end in Type/id[/_history/v].
                if len(parts) >= 4 and parts[-2] == "_history":
                    parts = parts[:-2]
                found = self._by_ref.get(f"{parts[-2]}/{parts[-1]}")
            elif ":" not in ref:
                found = self._bare(ref)
            self._resolved[ref] = found
        return found

    def _bare(self, rid: str) -> Resource | None:
        """A reference that is a bare id (some suppliers' Lists write ``Obs-1`` for ``Observation/Obs-1``, against
        FHIR's ``Type/id``): the bundle's resource with that id when exactly one has it, else nothing (never a guess
        between two types)."""
        if self._by_bare_id is None:
            by_id: dict[str, Resource | None] = {}
            for key, resource in self.resources:
                if "#" in key:
                    continue
                bare = key.split("/", 1)[1]
                by_id[bare] = None if bare in by_id else resource
            self._by_bare_id = by_id
        return self._by_bare_id.get(rid)

    def untyped_references(self, lst: Resource) -> list[str]:
        """Entries of a List that name a resource by bare id (resolved by ``_bare``): the report says so."""
        return list(self._list_entries(lst)[3])

    def of_type(self, rtype: str) -> Iterator[Resource]:
        return iter(self._by_type.get(rtype, ()))

    def lists(self, code: str) -> list[Resource]:
        """Lists whose ``code`` is this SNOMED or secondary-list code (never matched by title: LESSONS 20)."""
        return self._lists_by_code.get(code, [])

    def list_members(self, lst: Resource) -> tuple[list[Resource], list[str]]:
        """Resolved members of a List, de-duplicated by identity, and the references that did not resolve."""
        _, members, unresolved, _ = self._list_entries(lst)
        return list(members), list(unresolved)

    def _list_entries(self, lst: Resource) -> tuple[Resource, list[Resource], list[str], list[str]]:
        """``lst``, its resolved members, its unresolved references and its entries that name their item by bare
        id (``untyped_references``), from one pass over its entries, made on the first question about that List
        (the answers are shared: callers get copies)."""
        known = self._members.get(id(lst))
        if known is not None and known[0] is lst:
            return known
        members: list[Resource] = []
        seen: set[int] = set()
        unresolved: list[str] = []
        untyped: list[str] = []
        known_refs = self._resolved
        for entry in as_list(lst.get("entry")):
            item = entry.get("item") if isinstance(entry, JSON_OBJECT) else None
            ref = item.get("reference") if isinstance(item, JSON_OBJECT) else None
            # A "Type/id" of the bundle (almost every entry) is answered by resolve's cache without the call.
            resolved = known_refs.get(ref) if ref.__class__ is str else None
            if resolved is None:
                resolved = self.resolve(item, lst)
            if resolved is None:
                display = item.get("display") if isinstance(item, JSON_OBJECT) else None
                unresolved.append(str(ref or display or "an entry without reference"))
                continue
            if isinstance(ref, str) and "/" not in ref and ":" not in ref and not ref.startswith("#"):
                untyped.append(ref)
            if id(resolved) not in seen:
                seen.add(id(resolved))
                members.append(resolved)
        known = self._members[id(lst)] = (lst, members, unresolved, untyped)
        return known

    # --- well-known resources ----------------------------------------------------------------------------------
    @property
    def patient(self) -> Resource | None:
        return next(self.of_type("Patient"), None)

    @property
    def practice(self) -> Resource | None:
        """The registered practice: ``Patient.managingOrganization``; else the only Organization (SPEC §7.4)."""
        patient = self.patient
        if patient is not None:
            found = self.resolve(patient.get("managingOrganization"))
            if found is not None and found.get("resourceType") == "Organization":
                return found
        organisations = list(self.of_type("Organization"))
        return organisations[0] if len(organisations) == 1 else None

    @property
    def usual_gp(self) -> Resource | None:
        patient = self.patient
        if patient is None:
            return None
        for reference in as_list(patient.get("generalPractitioner")):
            found = self.resolve(reference)
            if found is not None and found.get("resourceType") == "Practitioner":
                return found
        return None
