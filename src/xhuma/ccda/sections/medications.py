"""Medications (SPEC §8.4.2): List 933361000000108 → one Medication Activity per MedicationStatement.

Each authorisation (MedicationStatement) becomes a Medication Activity (4.16) with Medication Information (4.23),
Free Text Sig (4.147), Instruction (4.20) for the patient instruction, and a Medication Supply Order (4.17,
moodCode INT) from the plan MedicationRequest — the authorisation, not an administration (LESSONS 23). Issue
MedicationRequests (intent order) are summarised in the narrative, never emitted as separate activities (they
would duplicate repeats). Route comes from ``dosage.route`` only, never ``dosage.method`` (LESSONS 23).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from xhuma.ccda import templates as T
from xhuma.ccda.context import DmdFacts, ProductCoding
from xhuma.ccda.fhir import (
    JSON_OBJECT,
    as_list,
    concept_text,
    extension,
    extensions,
    first,
    json_object,
    mapping,
    readable_date,
    string,
    sub_extension,
    sub_extension_values,
)
from xhuma.ccda.hl7 import (
    Coded,
    cd_markup,
    coded,
    fixed_code,
    format_number,
    pq_markup,
    reference_markup,
    template_id,
    template_markup,
    ts_markup,
)
from xhuma.ccda.memo import memo
from xhuma.ccda.narrative import Row
from xhuma.ccda.observation import sct_codes
from xhuma.ccda.participation import assigned_author, author_at, author_label
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.ucum import UCUM_SYSTEM, dose_unit
from xhuma.ccda.xmlwriter import (
    SLOT,
    el,
    element,
    fragment,
    frame,
    leaf,
    leaf_markup,
    markup,
    one_attr,
    start_tag,
)

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["medications"]

# HL7 Pharmacy WG mapping of MedicationStatement.status (SPEC §8.4.2).
STATUS = {"active": "active", "completed": "completed", "stopped": "aborted", "on-hold": "suspended",
          "intended": "active", "entered-in-error": "nullified"}
STATUS_TEXT = {"active": "Active", "completed": "Completed", "aborted": "Stopped", "suspended": "On hold",
               "nullified": "Entered in error"}
PRESCRIPTION_TYPE = {"acute": "Acute", "repeat": "Repeat", "repeat-dispensing": "Repeat dispensing",
                     "delayed-prescribing": "Delayed prescribing"}
UCUM_TIME = {"s": "s", "min": "min", "h": "h", "d": "d", "wk": "wk", "mo": "mo", "a": "a"}
HEADERS = ("Medication", "Dose and directions", "Type", "Status", "Started", "Ended", "Last issued",
           "Supply", "Notes")


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    lists = section.use_lists(T.LIST_MEDICATIONS) + section.use_secondary_lists("medications")
    lists += section.use_uncoded_lists("MedicationStatement")
    seen: set[int] = set()
    statements: list[Resource] = []
    for lst in lists:
        for statement in section.members(lst, "MedicationStatement"):
            if id(statement) not in seen:
                seen.add(id(statement))
                statements.append(statement)
    statements += section.unlisted("MedicationStatement")
    # Current before past, most recently started first.
    statements.sort(key=_start, reverse=True)
    statements.sort(key=lambda s: STATUS.get(str(s.get("status")), "active") != "active")
    issues = _issues_by_plan(state)
    table = section.table(HEADERS)
    section.convert_each(statements, lambda s: MedicationActivity(section, table.row(), s, issues).build())
    _orphan_requests(section)


def _orphan_requests(section: SectionWriter) -> None:
    """MedicationRequests no converted MedicationStatement explains (a plan without its statement, an issue
    without its plan): narrative rows, so that no prescription disappears (LESSONS 24)."""
    index = section.index
    key, outcome_of = index.key, section.report.outcome_of  # (asked of every request and medication)
    orphans = [r for r in index.of_type("MedicationRequest") if outcome_of(key(r)) is None]
    if orphans:
        orphans.sort(key=lambda r: str(r.get("authoredOn") or ""), reverse=True)
        table = section.table(("Medication", "Prescription", "Authored", "Dose and directions", "Status"),
                              caption="Prescriptions without a medication statement")

        def row_for(request: Resource) -> None:
            medication = index.resolve(request.get("medicationReference"))
            row = table.row()
            row.cell(concept_text(mapping(medication).get("code"), "Medication not recorded"))
            row.cell("Authorisation" if request.get("intent") == "plan" else "Issue")
            row.cell(readable_date(request.get("authoredOn")))
            row.cell(string(mapping(first(request.get("dosageInstruction"))).get("text")) or "")
            row.cell(str(request.get("status") or ""))
            section.narrative_only(request, "prescription with no MedicationStatement: no Medication Activity")
            section.supporting(medication, "medication of a prescription shown in the narrative")

        section.convert_each(orphans, row_for)
    for medication in index.of_type("Medication"):
        medication_key = key(medication)
        if outcome_of(medication_key) is None:
            section.report.record(medication_key, "Medication", "not-mapped", reason="medication definition that no "
                                  "medication statement or prescription refers to; nothing clinical to show")


@memo(maxsize=1024)
def _counted_quantity_markup(number: str, text: str) -> str:
    """A dispense quantity counted in a unit text ("28" "tablet"): ``pq`` writes the text as UCUM or keeps it
    (ucum.py). A record repeats a few such pairs across its prescriptions."""
    return pq_markup("quantity", {"value": number, "unit": text})


NO_DMD = DmdFacts()


def _snomed_markup(name: str, concept: tuple[str, str]) -> str:
    """A SNOMED CT coded element from a dm+d fact (code, display)."""
    code, display = concept
    return leaf_markup(name, {"code": code, "codeSystem": T.SNOMED_OID, "codeSystemName": "SNOMED CT",
                              "displayName": display})


_ACTIVITY_HEAD: Final = start_tag("substanceAdministration", {"classCode": "SBADM", "moodCode": "EVN"}) + \
    template_markup(T.MEDICATION_ACTIVITY)
_STATUS_CODE: Final = {code: leaf_markup("statusCode", {"code": code}) for code in (*STATUS.values(), "completed")}
_UNCODED_PRN: Final = start_tag("value", {"nullFlavor": "NI", "xsi:type": "CD"}) + \
    leaf_markup("originalText", text="As required") + "</value>"
# The effectiveTime intervals (the activity's, the supply order's): IVL_TS written as ``ivl_ts_markup`` writes it.
_IVL_TS_START: Final = start_tag("effectiveTime", {"xsi:type": "IVL_TS"})
_PIVL_TS_START: Final = start_tag("effectiveTime", {"operator": "A", "institutionSpecified": "true",
                                                    "xsi:type": "PIVL_TS"})
# The activity's high when the statement has no end: NI when open-ended (active), else UNK (``ts_markup`` of None).
_NO_HIGH: Final = {True: ts_markup("high", None, "NI"), False: ts_markup("high", None, "UNK")}
_UNKNOWN_DOSE: Final = leaf_markup("doseQuantity", {"nullFlavor": "UNK"})


@memo()
def _free_text_sig_frame() -> tuple[str, str]:
    relationship = element("entryRelationship", {"typeCode": "COMP"})
    sig = el(relationship, "substanceAdministration", {"classCode": "SBADM", "moodCode": "EVN"})
    template_id(sig, T.MEDICATION_FREE_TEXT_SIG)
    fixed_code(sig, "code", T.FREE_TEXT_SIG)
    fragment(sig, SLOT)  # text/reference → the sig line of the narrative row
    leaf(el(el(sig, "consumable"), "manufacturedProduct"), "manufacturedLabeledDrug", {"nullFlavor": "NA"})
    return frame(relationship)


@memo()
def _instruction_frame() -> tuple[str, str]:
    relationship = element("entryRelationship", {"typeCode": "SUBJ", "inversionInd": "true"})
    act = el(relationship, "act", {"classCode": "ACT", "moodCode": "INT"})
    template_id(act, T.INSTRUCTION)
    fixed_code(act, "code", T.MEDICATION_INSTRUCTION)
    fragment(act, SLOT)  # text: the patient instruction
    leaf(act, "statusCode", {"code": "completed"})
    return frame(relationship)


@memo()
def _product_frame() -> tuple[str, str]:
    consumable = element("consumable")
    product = el(consumable, "manufacturedProduct", {"classCode": "MANU"})
    template_id(product, T.MEDICATION_INFORMATION)
    fragment(el(product, "manufacturedMaterial"), SLOT)  # code: the medication, originalText → the row
    return frame(consumable)


@memo()
def _precondition_frame() -> tuple[str, str]:
    precondition = element("precondition", {"typeCode": "PRCN"})
    criterion = el(precondition, "criterion")
    template_id(criterion, T.PRECONDITION)  # the templateId sits on criterion (CONF:1098-31883)
    fixed_code(criterion, "code", T.ASSERTION, xsi_type="CD")
    fragment(criterion, SLOT)  # value: the condition
    return frame(precondition)


@memo()
def _supply_order_frame() -> tuple[str, str]:
    relationship = element("entryRelationship", {"typeCode": "REFR"})
    supply = el(relationship, "supply", {"classCode": "SPLY", "moodCode": "INT"})
    template_id(supply, T.MEDICATION_SUPPLY_ORDER)
    fragment(supply, SLOT)  # ids, statusCode, effectiveTime, … of the authorisation
    return frame(relationship)


def _issues_by_plan(state: ConversionState) -> dict[int, list[Resource]]:
    """Issue MedicationRequests (intent order, includePrescriptionIssues) keyed by their plan's identity."""
    out: dict[int, list[Resource]] = {}
    for request in state.index.of_type("MedicationRequest"):
        if request.get("intent") != "order":
            continue
        for reference in as_list(request.get("basedOn")):
            plan = state.index.resolve(reference)
            if plan is not None:
                out.setdefault(id(plan), []).append(request)
    return out


def _start(statement: Resource) -> str:
    period = statement.get("effectivePeriod")
    value = period.get("start") if isinstance(period, JSON_OBJECT) else statement.get("effectiveDateTime")
    return value if isinstance(value, str) else ""


class MedicationActivity:
    """Medication Activity (4.16, moodCode EVN) for one MedicationStatement (an authorisation)."""

    __slots__ = ("agency", "dispense", "dmd", "dosage", "end", "expiry", "index", "instruction", "issues",
                 "last_issue", "medication", "plan", "prescription_type", "quantity", "quantity_number",
                 "quantity_text", "recorder", "repeats_allowed", "repeats_issued", "row", "section", "sig_text",
                 "start", "statement", "status", "status_reason")

    def __init__(self, section: SectionWriter, row: Row, statement: Resource,
                 issues_by_plan: dict[int, list[Resource]]) -> None:
        self.section = section
        index = self.index = section.index
        self.row = row
        self.statement = statement
        self.medication = index.resolve(statement.get("medicationReference"))
        plan = self.plan = self._plan()
        # The plan's facts are read once per statement, each extension list scanned once: the repeat information
        # and the dispense request are used by the supply order and by the narrative's supply cell, the plan's
        # recorder authors the activity and the supply order.
        repeat: Mapping[str, Any] | None = None
        self.prescription_type: Mapping[str, Any] | None = None
        self.status_reason: Mapping[str, Any] | None = None
        self.issues: list[Resource] = []
        self.recorder: str | None = None
        self.dispense: Mapping[str, Any] = {}
        if plan is not None:
            repeat, self.prescription_type, self.status_reason = extensions(
                plan, "MedicationRepeatInformation-1", "PrescriptionType-1", "MedicationStatusReason-1")
            self.issues = issues_by_plan.get(id(plan), [])
            self.recorder = assigned_author(index, plan.get("recorder"))
            self.dispense = mapping(plan.get("dispenseRequest"))
        self.repeats_allowed, self.repeats_issued, self.expiry = sub_extension_values(
            repeat, ("numberOfRepeatPrescriptionsAllowed", "valuePositiveInt"),
            ("numberOfRepeatPrescriptionsIssued", "valueUnsignedInt"), ("authorisationExpiryDate", "valueDateTime"))
        self.agency, self.last_issue = extensions(statement, "PrescribingAgency-1",
                                                  "MedicationStatementLastIssueDate-1")
        self.quantity = json_object(self.dispense.get("quantity")) or None
        self.quantity_number: str | None = None
        self.quantity_text: str | None = None
        if self.quantity is not None:
            self.quantity_number = format_number(self.quantity.get("value"))
            # GP Connect puts the unit ("tablet", "pack of 40 gram(s)") in the MedicationQuantityText extension.
            self.quantity_text = string(mapping(extension(self.quantity, "MedicationQuantityText-1")).get(
                "valueString"))
        # The dosage texts are read once: by the narrative's dosage cell and by the sig and the instruction.
        dosage = self.dosage = json_object(first(statement.get("dosage"))) or {}
        self.sig_text = string(dosage.get("text"))
        self.instruction = string(dosage.get("patientInstruction"))
        period = json_object(statement.get("effectivePeriod"))
        self.start = period.get("start") if period else statement.get("effectiveDateTime")
        self.end = period.get("end") if period else None
        self.status = STATUS.get(str(statement.get("status")), "completed" if self.end else "active")
        dmd = section.context.terminology.dmd
        self.dmd: DmdFacts = NO_DMD
        if dmd and self.medication:  # (no dm+d facts without a terminology source)
            self.dmd = next((dmd[c] for c in sct_codes(self.medication.get("code")) if c in dmd), NO_DMD)

    def _plan(self) -> Resource | None:
        for reference in as_list(self.statement.get("basedOn")):
            found = self.index.resolve(reference)
            if found is not None and found.get("resourceType") == "MedicationRequest":
                return found
        return None

    def build(self) -> None:
        """The Medication Activity, joined at once from markup (nothing is added to it afterwards)."""
        statement = self.statement
        concept = self.medication.get("code") if self.medication else None
        primary = () if self.section.context.product_coding is ProductCoding.TRANSLATION else T.PRIMARY_SYSTEMS
        product = coded("code", concept, primary_systems=primary)  # its text for the row, its CD for the entry
        medication_ref, sig_ref = self._narrative(product)
        # An open-ended authorisation's high is NI (HL7 examples); an ended one's is its end, else unknown.
        open_ended = self.status == "active" and not self.end
        parts = [
            _ACTIVITY_HEAD,
            self.section.state.ids_markup(statement),
            reference_markup(self.row.reference),
            _STATUS_CODE[self.status],
            _IVL_TS_START,
            ts_markup("low", self.start),
            ts_markup("high", self.end) if self.end else _NO_HIGH[open_ended],  # (an end: not open-ended)
            "</effectiveTime>",
            self._frequency(),
            self._route(),
        ]
        site = json_object(self.dosage.get("site"))
        if site is not None:
            parts.append(cd_markup("approachSiteCode", site))
        parts.append(self._dose())
        if self.dmd.form is not None and not self._dose_has_unit():
            # A countable dose ("1") is counted in the product's dose form (dm+d): the administration unit.
            parts.append(_snomed_markup("administrationUnitCode", self.dmd.form))
        head, tail = _product_frame()
        parts += (head, product.markup(medication_ref), tail)
        if self.recorder is not None:
            parts.append(author_at(self.recorder, statement.get("dateAsserted")))
        if sig_ref:
            parts.append(self._free_text_sig(sig_ref))
        if self.instruction:
            parts.append(self._instruction(self.instruction))
        if self.plan is not None:
            parts.append(self._supply_order(self.plan))
        if self.dosage.get("asNeededBoolean") is True or json_object(
                self.dosage.get("asNeededCodeableConcept")) is not None:
            parts.append(self._as_needed())
        parts.append("</substanceAdministration>")
        fragment(self.section.entry(), "".join(parts))
        self.section.mapped(statement, T.MEDICATION_ACTIVITY)
        self.section.supporting(self.medication, "Medication Information of a Medication Activity")
        self.section.supporting(self.plan, "Medication Supply Order (authorisation) of a Medication Activity")
        for issue in self.issues:
            self.section.supporting(issue, "prescription issue summarised in the Medication Activity narrative")

    def _route(self) -> str:
        """routeCode: ``dosage.route``, else dm+d's route of the product where GP Connect sends none (issue 13),
        else none, with a warning saying why."""
        route = json_object(self.dosage.get("route"))
        if route is not None:
            return cd_markup("routeCode", route)
        if self.dmd.route is not None:
            return _snomed_markup("routeCode", self.dmd.route)
        if not self.section.context.terminology.available:
            self.section.warn("dmd-unavailable", "no route from GP Connect and no terminology for dm+d's: routeCode "
                              "omitted (docs/mapping/medications.md, dm+d)", self.statement)
        elif self.dmd is NO_DMD:
            self.section.warn("dmd-code-unknown", "no route from GP Connect and the product is not known to the "
                              "terminology source's dm+d: routeCode omitted (docs/mapping/medications.md, dm+d)",
                              self.statement)
        return ""

    def _frequency(self) -> str:
        """dosage.timing.repeat frequency/period → PIVL_TS operator A (SPEC §8.4.2); "" when there is none."""
        timing = json_object(self.dosage.get("timing"))
        repeat = json_object(timing.get("repeat")) if timing is not None else None
        if repeat is None:
            return ""
        period = repeat.get("period")
        unit = UCUM_TIME.get(str(repeat.get("periodUnit")))
        frequency = repeat.get("frequency") or 1
        if not isinstance(period, int | float) or isinstance(period, bool) or unit is None:
            return ""
        if not isinstance(frequency, int | float) or isinstance(frequency, bool) or frequency <= 0 or period <= 0:
            return ""
        interval = period / frequency
        if unit == "d" and interval != int(interval):
            interval, unit = interval * 24, "h"
        value = format_number(round(interval, 4) if interval != int(interval) else int(interval))
        if value is None:
            return ""
        return f"{_PIVL_TS_START}{leaf_markup('period', {'value': value, 'unit': unit})}</effectiveTime>"

    def _dose_has_unit(self) -> bool:
        dose = json_object(self.dosage.get("doseQuantity"))
        return dose is not None and dose_unit(dose) is not None

    def _dose(self) -> str:
        """doseQuantity SHALL (CONF:1098-7516): UCUM unit when given; countable forms carry no unit (the unit is
        the product's form); free-text-only dosage → nullFlavor UNK (SPEC §8.4.2)."""
        dose = json_object(self.dosage.get("doseQuantity"))
        number = format_number(dose.get("value")) if dose is not None else None
        if number is None or dose is None:
            return _UNKNOWN_DOSE
        attrib = {"value": number}
        unit = dose_unit(dose)
        if unit is not None:
            attrib["unit"] = unit
        return leaf_markup("doseQuantity", attrib)

    # The Free Text Sig, the Instruction, the Supply Order start, the product and the PRN precondition are fixed
    # structures around one part (the sig reference, the instruction text, the authorisation's ids and times, the
    # medication code, the condition): built once with the builders (``_free_text_sig_frame``,
    # ``_instruction_frame``, ``_supply_order_frame``, ``_product_frame``, ``_precondition_frame``), then written
    # as markup around that part.
    def _free_text_sig(self, sig_ref: str) -> str:
        """The dosage text as literal text (what consumers read) and its narrative reference (issue 13)."""
        head, tail = _free_text_sig_frame()
        return f"{head}<text>{markup(self.sig_text or '')}<reference{one_attr('value', sig_ref)}/></text>{tail}"

    def _instruction(self, instruction: str) -> str:
        head, tail = _instruction_frame()
        return f"{head}<text>{markup(instruction)}</text>{tail}"  # (leaf_markup's text element)

    def _supply_order(self, plan: Resource) -> str:
        """Medication Supply Order (4.17, moodCode INT) from the authorisation (plan MedicationRequest)."""
        validity = mapping(self.dispense.get("validityPeriod"))
        head, tail = _supply_order_frame()
        parts = [
            head,
            self.section.state.ids_markup(plan),
            _STATUS_CODE[STATUS.get(str(plan.get("status")), "completed")],
            _IVL_TS_START,
            ts_markup("low", validity.get("start") or plan.get("authoredOn")),
        ]
        high = self.expiry or validity.get("end")
        parts.append("</effectiveTime>" if high is None else f"{ts_markup('high', high)}</effectiveTime>")
        allowed_value = self.repeats_allowed
        if isinstance(allowed_value, int) and not isinstance(allowed_value, bool) and allowed_value >= 0:
            parts.append(f'<repeatNumber value="{allowed_value}"/>')  # digits: nothing to escape
        if self.quantity is not None and self.quantity_number is not None:
            parts.append(self._supply_quantity(self.quantity, self.quantity_number))
        author = self.recorder if plan.get("recorder") else assigned_author(self.index, plan.get("requester"))
        if author is not None:
            parts.append(author_at(author, plan.get("authoredOn")))
        parts.append(tail)
        return "".join(parts)

    def _supply_quantity(self, quantity: Mapping[str, Any], number: str) -> str:
        """The dispense quantity with its unit text (``quantity_text``); with neither that text nor a unit, dm+d's
        unit of measure of the product names what is counted (issue 13)."""
        text = self.quantity_text
        if text is None and self.dmd.unit is not None and not string(quantity.get("unit")) \
                and not string(quantity.get("code")):
            text = self.dmd.unit[1]
        if text is None or (quantity.get("system") == UCUM_SYSTEM and string(quantity.get("code"))):
            return pq_markup("quantity", quantity)
        return _counted_quantity_markup(number, text)

    def _as_needed(self) -> str:
        """PRN: Precondition for Substance Administration (4.25); the condition when coded, else nullFlavor."""
        head, tail = _precondition_frame()
        reason = self.dosage.get("asNeededCodeableConcept")
        if isinstance(reason, JSON_OBJECT):
            return head + cd_markup("value", reason, xsi_type="CD") + tail
        return head + _UNCODED_PRN + tail

    # --- narrative ---------------------------------------------------------------------------------------------
    def _narrative(self, product: Coded) -> tuple[str | None, str | None]:
        row = self.row
        medication_ref = row.cell(product.text("Medication not recorded"), content="drug")
        sig_ref = self._dosage_cell()
        row.cell(self._type_lines())
        row.cell(self._status_cell())
        row.cell(readable_date(self.start))
        row.cell(readable_date(self.end))
        last_issue = self.last_issue
        row.cell(readable_date((last_issue or {}).get("valueDateTime")))
        row.cell(self._supply_text())
        row.cell(self._note_lines())
        return medication_ref, sig_ref

    def _dosage_cell(self) -> str | None:
        """The dosage cell; its reference when there is dosage text (the free-text sig points at it)."""
        dosage = self.dosage
        sig_text = self.sig_text
        lines = [sig_text] if sig_text else []  # (the cell drops empty lines: an instruction without text)
        additional = dosage.get("additionalInstruction")
        if additional:
            lines += [string(i.get("text")) or concept_text(i) for i in as_list(additional)
                      if isinstance(i, JSON_OBJECT)]
        if dosage.get("asNeededBoolean") is True:
            lines.append("As required (PRN)")
        route = json_object(dosage.get("route"))
        if route is not None:
            lines.append(f"Route: {concept_text(route)}")
        if self.instruction:
            lines.append(f"Patient instruction: {self.instruction}")
        if sig_text:
            return self.row.cell(lines, content="sig")
        self.row.cell(lines)
        return None

    def _type_lines(self) -> list[str]:
        prescription_type = self.prescription_type
        type_code = None
        if prescription_type is not None:
            concept = prescription_type.get("valueCodeableConcept")
            for coding in as_list(concept.get("coding") if concept else None):
                if isinstance(coding, JSON_OBJECT):
                    type_code = str(coding.get("code"))
                    break
        agency = self.agency
        agency_text = concept_text(agency.get("valueCodeableConcept")) if agency is not None else ""
        return [PRESCRIPTION_TYPE.get(type_code or "", type_code or ""), agency_text]

    def _status_cell(self) -> str | list[str]:
        """The status (never empty: a one-line cell), then the plan's status reason and its date when given."""
        status = STATUS_TEXT.get(self.status, self.status)
        reason = self.status_reason
        if reason is None:
            return status
        why = concept_text((sub_extension(reason, "statusReason") or {}).get("valueCodeableConcept"))
        when = readable_date((sub_extension(reason, "statusChangeDate") or {}).get("valueDateTime"))
        return [status, " ".join(p for p in (why, when) if p)]

    def _note_lines(self) -> list[str]:
        statement = self.statement
        notes: list[str] = []
        for note in as_list(statement.get("note")):  # (a loop: a comprehension is a call of its own)
            if isinstance(note, JSON_OBJECT) and isinstance(text := note.get("text"), str):
                notes.append(text)
        recorder = author_label(self.index, self.plan.get("recorder")) if self.plan is not None else ""
        if recorder:
            notes.append(f"Authorised by {recorder}")
        if self.section.is_confidential(statement):
            notes.append("Not for disclosure to the patient (NOPAT)")
        return notes

    def _supply_text(self) -> list[str]:
        """Quantity (value and/or quantity text — never "None 28", LESSONS 23), duration, repeats, issues."""
        lines: list[str] = []
        quantity = self.quantity
        if quantity is not None:
            amount = " ".join(filter(None, (self.quantity_number, self.quantity_text or string(quantity.get("unit")))))
            if amount:
                lines.append(f"Quantity: {amount}")
        duration = json_object(self.dispense.get("expectedSupplyDuration"))
        if duration is not None and (length := format_number(duration.get("value"))):
            lines.append(f"Duration: {length} {duration.get('unit') or ''}".strip())
        allowed, issued, expiry = self.repeats_allowed, self.repeats_issued, self.expiry
        if allowed is not None and issued is not None:
            lines.append(f"Repeats: {issued} of {allowed} issued")
        elif allowed is not None:
            lines.append(f"Repeats allowed: {allowed}")
        elif issued is not None:
            lines.append(f"Repeats issued: {issued}")
        if expiry:
            lines.append(f"Review/expiry: {readable_date(expiry)}")
        if self.issues:
            lines.append(f"Issues in this record: {len(self.issues)}")
        return lines
