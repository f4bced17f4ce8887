"""The simulator's data: patients (PDS record + GP Connect bundle), practices (SDS entries) and faults.

Every GP Connect bundle found under the data directory becomes a patient keyed by the NHS number in its Patient
resource. Several bundles for one NHS number are merged (the specification examples are one file per clinical
area). The PDS record is a PDS fixture with the same NHS number when there is one (packaged ``pds/`` or any
``Patient`` resource in the data directory), otherwise it is synthesised from the bundle's Patient, registered at
the bundle's managing organisation (or the default practice). Each practice gets a synthesised SDS Device and
Endpoint. Files that cannot be used are listed in ``skipped`` with the reason (never with patient data).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

from xhuma.nhs.nhs_number import NHS_NUMBER_SYSTEM, is_valid_nhs_number, normalise
from xhuma.nhs.simulator.patients import (
    AMBIGUOUS_PRACTICE,
    DEMO_PATIENT,
    FAULT_PATIENTS,
    NO_ENDPOINT_PRACTICE,
    SEARCH_PATIENTS,
    Fault,
    FaultPatient,
    SearchPatient,
)

log = structlog.get_logger(__name__)

ODS_ORGANIZATION_CODE = "https://fhir.nhs.uk/Id/ods-organization-code"
ODS_SITE_CODE = "https://fhir.nhs.uk/Id/ods-site-code"
PROVIDER_BASE = "https://gpconnect.simulator.xhuma.invalid"  # never resolved: the simulated SSP routes it


def packaged_data_dir() -> Path:
    return Path(str(resources.files("xhuma.nhs.simulator") / "data"))


def provider_root(ods: str) -> str:
    """The provider FHIR service root URL registered in SDS for a practice (SPEC §6.3 Endpoint.address)."""
    return f"{PROVIDER_BASE}/{ods}/STU3/1/gpconnect/structured/fhir"


@dataclass(slots=True)
class SimulatedPatient:
    nhs_number: str
    pds: dict[str, Any] | None  # PDS R4 Patient (None: PDS 404)
    bundle: dict[str, Any] | None  # GP Connect STU3 Bundle (None: synthesised on demand)
    practice_ods: str | None
    fault: Fault | None = None
    sources: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Practice:
    ods: str
    asid: str
    party_key: str
    endpoints: tuple[str, ...]


@dataclass(slots=True)
class SimulatorData:
    patients: dict[str, SimulatedPatient] = field(default_factory=dict)
    practices: dict[str, Practice] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    default_ods: str = "B82617"

    def practice_for_endpoint(self, address: str) -> Practice | None:
        address = address.rstrip("/")
        for practice in self.practices.values():
            if address in practice.endpoints:
                return practice
        return None

    def practice_for_asid(self, asid: str) -> Practice | None:
        return next((practice for practice in self.practices.values() if practice.asid == asid), None)


def synthetic_asid(ods: str) -> str:
    digest = int(hashlib.sha256(f"asid:{ods}".encode()).hexdigest(), 16)
    return "9" + str(digest % 10**11).zfill(11)


def synthetic_party_key(ods: str) -> str:
    digest = int(hashlib.sha256(f"party:{ods}".encode()).hexdigest(), 16)
    return f"{ods}-{digest % 10**6:06d}"


def _resources(bundle: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, dict):
            yield resource


def bundle_patient(bundle: Mapping[str, Any]) -> dict[str, Any] | None:
    return next((r for r in _resources(bundle) if r.get("resourceType") == "Patient"), None)


def nhs_number_of(patient: Mapping[str, Any]) -> str | None:
    for identifier in patient.get("identifier") or []:
        if not isinstance(identifier, Mapping):
            continue
        if identifier.get("system") == NHS_NUMBER_SYSTEM and identifier.get("value"):
            return normalise(str(identifier["value"]))
    return None


def managing_ods(bundle: Mapping[str, Any], patient: Mapping[str, Any]) -> str | None:
    reference = (patient.get("managingOrganization") or {}).get("reference")
    if not isinstance(reference, str) or "/" not in reference:
        return None
    resource_type, resource_id = reference.split("/", 1)
    for resource in _resources(bundle):
        if resource.get("resourceType") == resource_type and resource.get("id") == resource_id:
            for identifier in resource.get("identifier") or []:
                if identifier.get("system") in (ODS_ORGANIZATION_CODE, ODS_SITE_CODE) and identifier.get("value"):
                    return str(identifier["value"]).upper()
    return None


def pds_practice(pds: Mapping[str, Any]) -> str | None:
    for practitioner in pds.get("generalPractitioner") or []:
        value = (practitioner.get("identifier") or {}).get("value")
        if value:
            return str(value).upper()
    return None


def synthesise_pds(patient: Mapping[str, Any], nhs_number: str, ods: str | None) -> dict[str, Any]:
    """A PDS R4 Patient from a GP Connect STU3 CareConnect Patient (same demographics, SPEC §5.4 shape)."""
    names = []
    for name in patient.get("name") or []:
        item = {key: name[key] for key in ("family", "given", "prefix", "suffix") if name.get(key)}
        item["use"] = "usual" if name.get("use") in (None, "official", "usual") else name["use"]
        names.append(item)
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": nhs_number,
        "meta": {
            "versionId": "1",
            "security": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                "code": "U",
                "display": "unrestricted",
            }],
        },
        "identifier": [{
            "system": NHS_NUMBER_SYSTEM,
            "value": nhs_number,
            "extension": [{
                "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
                "valueCodeableConcept": {"coding": [{
                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus",
                    "code": "01",
                    "display": "Number present and verified",
                }]},
            }],
        }],
        "name": names,
    }
    for key in ("gender", "birthDate", "deceasedDateTime"):
        if patient.get(key):
            resource[key] = patient[key]
    addresses = [
        {key: address[key] for key in ("use", "line", "city", "district", "postalCode") if address.get(key)}
        for address in patient.get("address") or []
    ]
    if addresses:
        resource["address"] = addresses
    telecom = [
        {key: item[key] for key in ("system", "value", "use") if item.get(key)}
        for item in patient.get("telecom") or []
        if item.get("value")
    ]
    if telecom:
        resource["telecom"] = telecom
    if ods:
        resource["generalPractitioner"] = [
            {"type": "Organization", "identifier": {"system": ODS_ORGANIZATION_CODE, "value": ods}}
        ]
    return resource


def fault_pds(fault_patient: FaultPatient, ods: str) -> dict[str, Any]:
    stu3_patient = {
        "name": [{"family": fault_patient.family, "given": [fault_patient.given], "use": "official"}],
        "gender": fault_patient.gender,
        "birthDate": fault_patient.birth_date,
        "address": [{"use": "home", "line": ["1 Simulator Street"], "city": "Leeds", "postalCode": "LS1 4AP"}],
    }
    resource = synthesise_pds(stu3_patient, fault_patient.nhs_number, ods)
    if fault_patient.fault is Fault.RESTRICTED:
        # SPEC §5.5: R removes address, telecom and generalPractitioner.
        resource["meta"]["security"] = [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
            "code": "R",
            "display": "restricted",
        }]
        for key in ("address", "telecom", "generalPractitioner"):
            resource.pop(key, None)
    if fault_patient.fault is Fault.DECEASED:
        resource["deceasedDateTime"] = "2024-01-15T10:00:00+00:00"
    return resource


def search_pds(patient: SearchPatient, ods: str) -> dict[str, Any]:
    """The PDS record of a synthetic search patient (its previous home address ended, as PDS keeps history)."""
    addresses: list[dict[str, Any]] = [
        {"use": "home", "line": ["2 Simulator Road"], "city": "Leeds", "postalCode": patient.postcode}
    ]
    if patient.previous_postcode:
        addresses.append({"use": "home", "line": ["9 Former Lane"], "city": "Leeds",
                          "postalCode": patient.previous_postcode, "period": {"end": "2020-06-30"}})
    stu3_patient = {
        "name": [{"family": patient.family, "given": [patient.given], "use": "official"}],
        "gender": patient.gender,
        "birthDate": patient.birth_date,
        "address": addresses,
        "telecom": [{"system": "phone", "value": patient.phone, "use": "home"}],
    }
    resource = synthesise_pds(stu3_patient, patient.nhs_number, ods)
    resource["address"] = addresses  # with their periods, which synthesise_pds does not carry
    return resource


def _load_json(path: Path) -> Any:
    with path.open("rb") as handle:
        return json.load(handle)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> bool:
    """Add ``extra``'s resources to ``base`` (first wins per resourceType/id); refuse another person's bundle."""
    base_patient, extra_patient = bundle_patient(base), bundle_patient(extra)
    if base_patient and extra_patient and base_patient.get("birthDate") != extra_patient.get("birthDate"):
        return False
    seen = {(r.get("resourceType"), r.get("id")) for r in _resources(base)}
    for resource in _resources(extra):
        key = (resource.get("resourceType"), resource.get("id"))
        if resource.get("resourceType") == "Patient" or (key[1] is not None and key in seen):
            continue
        base.setdefault("entry", []).append({"resource": resource})
        seen.add(key)
    return True


def load(data_dir: Path | None, *, default_ods: str = "B82617") -> SimulatorData:
    """Load the bundles of ``data_dir`` (default: the packaged sample set) plus the built-in fault patients."""
    packaged = packaged_data_dir()
    data_dir = data_dir or packaged
    data = SimulatorData(default_ods=default_ods.upper())
    pds_records: dict[str, dict[str, Any]] = {}
    bundles: dict[str, SimulatedPatient] = {}

    files = sorted((packaged / "pds").glob("*.json")) if data_dir != packaged else []
    files += sorted(path for path in data_dir.rglob("*.json") if path.is_file())
    for path in files:
        skipped = _read_file(path, pds_records, bundles)
        if skipped:
            data.skipped.append((path.name, skipped))
    _add_data_patients(data, bundles, pds_records)
    _add_fault_patients(data)
    _add_search_patients(data)
    _add_practices(data)

    for label, reason in data.skipped:
        log.info("simulator_file_skipped", file=label, reason=reason)
    log.info("simulator_data_loaded", patients=len(data.patients), practices=len(data.practices),
             skipped=len(data.skipped))
    return data


def _read_file(
    path: Path, pds_records: dict[str, dict[str, Any]], bundles: dict[str, SimulatedPatient]
) -> str | None:
    """File a PDS Patient record or a GP Connect bundle by NHS number; the reason when the file is skipped."""
    try:
        document = _load_json(path)
    except (OSError, ValueError) as error:
        return f"not JSON ({type(error).__name__})"
    if not isinstance(document, dict):
        return "not a FHIR resource"
    if document.get("resourceType") == "Patient":
        number = normalise(str(document.get("id") or "")) or nhs_number_of(document)
        if number and is_valid_nhs_number(number):
            pds_records[number] = document
            return None
        return "PDS Patient without a valid NHS number"
    if document.get("resourceType") != "Bundle":
        return f"not a Bundle ({document.get('resourceType')})"
    return _add_bundle(path.name, document, bundles)


def _add_bundle(label: str, document: dict[str, Any], bundles: dict[str, SimulatedPatient]) -> str | None:
    patient = bundle_patient(document)
    if patient is None:
        return "Bundle without a Patient"
    number = nhs_number_of(patient)
    if not number:
        return "Patient without an NHS number"
    if not is_valid_nhs_number(number):
        return "NHS number fails the Modulus 11 check"
    existing = bundles.get(number)
    if existing is None:
        bundles[number] = SimulatedPatient(number, None, document, managing_ods(document, patient), sources=[label])
    elif existing.bundle is not None and _merge(existing.bundle, document):
        existing.sources.append(label)
    else:
        return "another patient's bundle with the same NHS number"
    return None


def _add_data_patients(
    data: SimulatorData, bundles: dict[str, SimulatedPatient], pds_records: Mapping[str, dict[str, Any]]
) -> None:
    """Each bundle's patient with its PDS record: the file's when one was given, else one made from the bundle."""
    for number, simulated in bundles.items():
        fixture = pds_records.get(number)
        if fixture is not None:
            simulated.pds = fixture
            simulated.practice_ods = pds_practice(fixture) or simulated.practice_ods or data.default_ods
        else:
            simulated.practice_ods = simulated.practice_ods or data.default_ods
            source = bundle_patient(simulated.bundle or {}) or {}
            simulated.pds = synthesise_pds(source, number, simulated.practice_ods)
        data.patients[number] = simulated


def _add_fault_patients(data: SimulatorData) -> None:
    """Built-in fault patients (they win over a data file with the same number: their behaviour is the contract)."""
    for number, definition in FAULT_PATIENTS.items():
        ods = {
            Fault.NO_ENDPOINT: NO_ENDPOINT_PRACTICE,
            Fault.AMBIGUOUS_ENDPOINT: AMBIGUOUS_PRACTICE,
        }.get(definition.fault, data.default_ods)
        pds: dict[str, Any] | None = fault_pds(definition, ods)
        if definition.fault in (Fault.NOT_FOUND, Fault.INVALIDATED):
            pds = None
        if definition.fault is Fault.SUPERSEDED:
            replacement = data.patients.get(DEMO_PATIENT)
            pds = replacement.pds if replacement is not None else pds
        data.patients[number] = SimulatedPatient(number, pds, None, ods, fault=definition.fault)


def _add_search_patients(data: SimulatorData) -> None:
    """Synthetic patients for the PDS demographic search (patients.SEARCH_PATIENTS), at the default practice."""
    for group in SEARCH_PATIENTS.values():
        for search_patient in group:
            data.patients[search_patient.nhs_number] = SimulatedPatient(
                search_patient.nhs_number, search_pds(search_patient, data.default_ods), None, data.default_ods
            )


def _add_practices(data: SimulatorData) -> None:
    """A practice (SDS entries) for every patient's practice and the default one."""
    practices = {patient.practice_ods for patient in data.patients.values() if patient.practice_ods}
    practices.add(data.default_ods)
    for ods in sorted(practices):
        if ods == NO_ENDPOINT_PRACTICE:
            continue
        endpoints: tuple[str, ...] = (provider_root(ods),)
        if ods == AMBIGUOUS_PRACTICE:
            endpoints = (provider_root(ods), provider_root(ods + "B"))
        data.practices[ods] = Practice(ods, synthetic_asid(ods), synthetic_party_key(ods), endpoints)


__all__ = [
    "PROVIDER_BASE",
    "Practice",
    "SimulatedPatient",
    "SimulatorData",
    "bundle_patient",
    "load",
    "packaged_data_dir",
    "provider_root",
    "synthesise_pds",
]
