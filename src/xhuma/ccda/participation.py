"""People and organisations: Author Participation, names, addresses, telecoms (SPEC §8.3 authorship)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from xhuma.ccda import templates as T
from xhuma.ccda.bundle import BundleIndex
from xhuma.ccda.fhir import JSON_OBJECT, as_list, string
from xhuma.ccda.hl7 import identifier_ii, template_markup, ts_markup
from xhuma.ccda.xmlwriter import Element, el, element, fragment, leaf, markup_of, null

Resource = Mapping[str, Any]

_TELECOM_USE = {"home": "HP", "work": "WP", "mobile": "MC", "temp": "TMP"}
_ADDRESS_USE = {"home": "HP", "work": "WP", "temp": "TMP", "old": "OLD"}


def human_name(resource: Resource | None) -> Mapping[str, Any] | None:
    """The official (else usual, else first) HumanName of a Patient or Practitioner."""
    if resource is None:
        return None
    names = [n for n in as_list(resource.get("name")) if isinstance(n, JSON_OBJECT)]
    for use in ("official", "usual"):
        for name in names:
            if name.get("use") == use:
                return name
    return names[0] if names else None


def name_text(name: Mapping[str, Any] | None) -> str:
    if name is None:
        return ""
    text = string(name.get("text"))
    if text:
        return text
    parts = [p for p in as_list(name.get("prefix")) + as_list(name.get("given")) if isinstance(p, str)]
    family = string(name.get("family"))
    return " ".join([*parts, family] if family else parts)


def person_name(parent: Element, name: Mapping[str, Any] | None, *, fielded: bool = False) -> Element:
    """PN. ``fielded``: US Realm Person Name — family and at least one given, else nullFlavor (CONF:81-9371)."""
    element = el(parent, "name")
    if name is None:
        element.set("nullFlavor", "UNK")
        return element
    if name.get("use") in ("official", "usual"):
        element.set("use", "L")
    given = [g.strip() for g in as_list(name.get("given")) if isinstance(g, str) and g.strip()]
    family = string(name.get("family"))
    prefixes = [p.strip() for p in as_list(name.get("prefix")) if isinstance(p, str) and p.strip()]
    if not given and not family:
        text = string(name.get("text"))
        if fielded or not text:
            element.unset("use")
            element.set("nullFlavor", "UNK")
        else:
            element.text = text
        return element
    for prefix in prefixes:
        leaf(element, "prefix", text=prefix)
    if given:
        for part in given:
            leaf(element, "given", text=part)
    elif fielded:
        leaf(element, "given", {"nullFlavor": "UNK"})
    if family:
        leaf(element, "family", text=family)
    elif fielded:
        leaf(element, "family", {"nullFlavor": "UNK"})
    return element


def address(parent: Element, addresses: object, *, required: bool = True) -> None:
    """US Realm Address from FHIR Address: 1–4 lines, city (town: ``city``, else last line), postcode, GB."""
    found = [a for a in as_list(addresses) if isinstance(a, JSON_OBJECT)]
    home = next((a for a in found if a.get("use") == "home"), found[0] if found else None)
    if home is None:
        if required:
            null(parent, "addr", "UNK")
        return
    lines = [str(line).strip() for line in as_list(home.get("line")) if isinstance(line, str) and line.strip()]
    city = string(home.get("city"))
    if city is None and len(lines) > 1:
        city = lines.pop()  # PDS/GP systems often put the town in the last line (SPEC §8.1)
    addr = el(parent, "addr")
    use = _ADDRESS_USE.get(str(home.get("use")))
    if use:
        addr.set("use", use)
    for line in lines[:4]:
        leaf(addr, "streetAddressLine", text=line)
    if not lines:
        leaf(addr, "streetAddressLine", {"nullFlavor": "UNK"})
    if city:
        leaf(addr, "city", text=city)
    else:
        leaf(addr, "city", {"nullFlavor": "UNK"})
    district = string(home.get("district"))
    if district:
        leaf(addr, "county", text=district)
    postcode = string(home.get("postalCode"))
    if postcode:
        leaf(addr, "postalCode", text=postcode)
    else:
        leaf(addr, "postalCode", {"nullFlavor": "UNK"})
    leaf(addr, "country", text=string(home.get("country")) or "GB")


def telecoms(parent: Element, values: object, *, required: bool = True) -> None:
    """FHIR ContactPoint → TEL (``tel:``, ``mailto:``, ``fax:``) with use; none → nullFlavor when required."""
    written = 0
    for point in as_list(values):
        if not isinstance(point, JSON_OBJECT):
            continue
        value = string(point.get("value"))
        if value is None:
            continue
        system = point.get("system")
        scheme = {"phone": "tel:", "email": "mailto:", "fax": "fax:"}.get(str(system), "tel:")
        compact = value.replace(" ", "") if scheme != "mailto:" else value
        attrib = {"value": f"{scheme}{compact}"}
        use = _TELECOM_USE.get(str(point.get("use")))
        if use:
            attrib["use"] = use
        leaf(parent, "telecom", attrib)
        written += 1
    if written == 0 and required:
        null(parent, "telecom", "UNK")


def ods_code(organisation: Resource | None) -> str | None:
    if organisation is None:
        return None
    for identifier in as_list(organisation.get("identifier")):
        # (a str test first: a set lookup of an unhashable JSON value raises)
        if isinstance(identifier, JSON_OBJECT) and isinstance(system := identifier.get("system"), str) \
                and system in T.ODS_SYSTEMS:
            return string(identifier.get("value"))
    return None


def organisation_ids(parent: Element, organisation: Resource | None) -> None:
    written = 0
    if organisation is not None:
        for identifier in as_list(organisation.get("identifier")):
            if isinstance(identifier, JSON_OBJECT) and identifier_ii(parent, identifier) is not None:
                written += 1
    if written == 0:
        null(parent, "id", "UNK")


def represented_organisation(parent: Element, organisation: Resource | None, name: str = "representedOrganization",
                             *, full: bool = False) -> Element:
    """An Organization element; ``full`` adds the telecom and addr that header organisations SHALL carry."""
    element = el(parent, name)
    organisation_ids(element, organisation)
    label = string(organisation.get("name")) if organisation is not None else None
    if label:
        leaf(element, "name", text=label)
    elif full:
        null(element, "name", "UNK")
    if full:
        telecoms(element, organisation.get("telecom") if organisation else None)
        address(element, organisation.get("address") if organisation else None)
    return element


def practitioner_of(index: BundleIndex, reference: object) -> tuple[Resource | None, Resource | None]:
    """(Practitioner, Organization) behind a reference to a Practitioner, PractitionerRole or Organization."""
    resource = index.resolve(reference)
    if resource is None:
        return None, None
    rtype = resource.get("resourceType")
    if rtype == "Practitioner":
        return resource, None
    if rtype == "PractitionerRole":
        person = index.resolve(resource.get("practitioner"))
        organisation = index.resolve(resource.get("organization"))
        return person, organisation
    if rtype == "Organization":
        return None, resource
    return None, None


def author_participation(parent: Element, index: BundleIndex, reference: object, time: object) -> str | None:
    """Author Participation (4.119) for a recorder/asserter/requester, written as markup (nothing is added to
    it afterwards); None when nothing resolves."""
    xml = author_markup(index, reference, time)
    return None if xml is None else fragment(parent, xml)


def author_markup(index: BundleIndex, reference: object, time: object) -> str | None:
    """The markup ``author_participation`` writes, without writing it."""
    assigned = assigned_author(index, reference)
    return None if assigned is None else author_at(assigned, time)


def assigned_author(index: BundleIndex, reference: object) -> str | None:
    """The assignedAuthor markup of a recorder/asserter/requester; None when nothing resolves. For an entry whose
    one author is written at several times (``author_at``): resolved once."""
    ref = _reference_string(reference)
    if ref is None:
        return None
    # A record's entries are authored by a handful of practitioners: the assignedAuthor behind each reference is
    # resolved and built once per conversion ("" when nothing resolves), then written as markup.
    key = ("assignedAuthor", ref)
    assigned = index.memo.get(key)
    if assigned is None:
        person, organisation = practitioner_of(index, ref)
        assigned = index.memo[key] = "" if person is None and organisation is None \
            else markup_of(_assigned_author(person, organisation))
    return assigned or None


def _reference_string(reference: object) -> str | None:
    """The reference string of a Reference (or of a reference string): what ``BundleIndex.resolve`` resolves, the
    same resource each time within one conversion; None when it is not a string (nothing resolves)."""
    ref = reference.get("reference") if isinstance(reference, JSON_OBJECT) else reference
    return ref if isinstance(ref, str) else None


def author_at(assigned: str, time: object) -> str:
    """Author Participation (4.119) of an ``assigned_author`` at ``time``."""
    return f"{_AUTHOR_HEAD}{ts_markup('time', time)}{assigned}</author>"


_AUTHOR_HEAD: Final = "<author>" + template_markup(T.AUTHOR_PARTICIPATION)  # and its templateIds


def assigned_party(assigned: Element, person: Resource | None, organisation: Resource | None) -> None:
    """The ids (the person's, else the organisation's; ``nullFlavor="UNK"`` when none maps) and the
    assignedPerson of an assignedAuthor or assignedEntity."""
    written = 0
    for identifier in as_list((person or organisation or {}).get("identifier")):
        if isinstance(identifier, JSON_OBJECT) and identifier_ii(assigned, identifier) is not None:
            written += 1
    if written == 0:
        null(assigned, "id", "UNK")
    if person is not None:
        person_name(el(assigned, "assignedPerson"), human_name(person))


def _assigned_author(person: Resource | None, organisation: Resource | None) -> Element:
    assigned = element("assignedAuthor")
    assigned_party(assigned, person, organisation)
    if organisation is not None:
        represented_organisation(assigned, organisation)
    return assigned


def author_label(index: BundleIndex, reference: object) -> str:
    """Narrative label of a recorder: "Dr A Smith (Practice)"; else the reference's display."""
    ref = _reference_string(reference)
    label = ""
    if ref is not None:
        key = ("author_label", ref)  # a handful of authors label most rows: resolved once per conversion
        cached = index.memo.get(key)
        if cached is None:
            person, organisation = practitioner_of(index, ref)
            cached = index.memo[key] = _label(person, organisation)
        label = cached
    if label:
        return label
    if isinstance(reference, JSON_OBJECT):
        return string(reference.get("display")) or ""
    return ""


def _label(person: Resource | None, organisation: Resource | None) -> str:
    name = name_text(human_name(person))
    org = string(organisation.get("name")) if organisation is not None else None
    if name and org:
        return f"{name} ({org})"
    return name or org or ""
