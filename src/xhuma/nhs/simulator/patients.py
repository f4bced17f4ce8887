"""Built-in patients of the simulator: one per fault, each with a valid Modulus 11 NHS number.

The numbers are fixed (documented in docs/nhs.md) because other capabilities' tests and the demo use them::

    from xhuma.nhs.simulator.patients import FAULT_PATIENTS, Fault, fault_patient
    fault_patient(Fault.NO_CONSENT)  # "9990000107"
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEMO_PATIENT = "9690937286"  # rich UCLH record (allergies, problems, medication, immunisations, investigations)
NO_ENDPOINT_PRACTICE = "Y90001"  # in PDS, absent from SDS (practice not enabled for GP Connect structured)
AMBIGUOUS_PRACTICE = "Y90002"  # SDS lists two structured-record endpoints for it


class Fault(StrEnum):
    # PDS
    RESTRICTED = "restricted"  # PDS meta.security R: no address, telecom or GP
    DECEASED = "deceased"  # PDS deceasedDateTime; GP Connect answers PATIENT_NOT_FOUND
    SUPERSEDED = "superseded"  # PDS returns the replacement record (the demo patient)
    NOT_FOUND = "not-found"  # PDS 404 RESOURCE_NOT_FOUND
    INVALIDATED = "invalidated"  # PDS 404 INVALIDATED_RESOURCE
    PDS_FLAKY = "pds-flaky"  # PDS 503 for the first two attempts of each X-Request-ID, then the record
    PDS_UNAVAILABLE = "pds-unavailable"  # PDS 500 every time
    PDS_TIMEOUT = "pds-timeout"  # PDS holds the request longer than any sane read timeout
    # SDS
    NO_ENDPOINT = "no-endpoint"  # registered at a practice without an SDS endpoint
    AMBIGUOUS_ENDPOINT = "ambiguous-endpoint"  # registered at a practice with two endpoints
    # GP Connect
    NO_CONSENT = "no-consent"  # 403 NO_PATIENT_CONSENT
    ACCESS_DENIED = "access-denied"  # 403 ACCESS DENIED
    GPC_INTERNAL_ERROR = "gpc-500"  # 500 INTERNAL_SERVER_ERROR
    GPC_UNAVAILABLE = "gpc-503"  # 503 every time
    GPC_TIMEOUT = "gpc-timeout"  # provider holds the request longer than any sane read timeout
    MALFORMED_JSON = "malformed-json"  # 200 with a truncated body
    GPC_FLAKY = "gpc-flaky"  # 502 for the first two attempts of each Ssp-TraceID, then a record
    DEMOGRAPHICS_MISMATCH = "demographics-mismatch"  # GP Connect Patient's birth date differs from PDS
    AREA_NOT_SUPPORTED = "area-not-supported"  # 200 with an OperationOutcome warning (investigations disabled)
    GPC_GZIP_BOMB = "gpc-gzip-bomb"  # 200, gzip that inflates to twice what the gateway accepts


@dataclass(frozen=True, slots=True)
class FaultPatient:
    nhs_number: str
    fault: Fault
    family: str
    given: str
    birth_date: str
    gender: str
    description: str


def _patient(nhs_number: str, fault: Fault, given: str, birth_date: str, gender: str, description: str) -> FaultPatient:
    return FaultPatient(nhs_number, fault, "XHUMA-" + fault.value.upper(), given, birth_date, gender, description)


_DEFINITIONS = [
    _patient("9990000018", Fault.RESTRICTED, "Rachel", "1980-01-01", "female", "PDS restricted (R)"),
    _patient("9990000026", Fault.DECEASED, "David", "1931-02-02", "male", "PDS deceased"),
    _patient("9990000034", Fault.SUPERSEDED, "Simon", "1925-04-21", "male", f"PDS superseded by {DEMO_PATIENT}"),
    _patient("9990000042", Fault.NOT_FOUND, "Nora", "1970-03-03", "female", "PDS 404 RESOURCE_NOT_FOUND"),
    _patient("9990000050", Fault.INVALIDATED, "Ivan", "1960-04-04", "male", "PDS 404 INVALIDATED_RESOURCE"),
    _patient("9990000069", Fault.PDS_FLAKY, "Fiona", "1990-05-05", "female", "PDS 503 twice, then the record"),
    _patient("9990000077", Fault.PDS_UNAVAILABLE, "Uma", "1991-06-06", "female", "PDS 500"),
    _patient("9990000085", Fault.PDS_TIMEOUT, "Tom", "1992-07-07", "male", "PDS never answers in time"),
    _patient("9990000093", Fault.NO_ENDPOINT, "Edna", "1950-08-08", "female", "practice without an SDS endpoint"),
    _patient("9990000107", Fault.NO_CONSENT, "Connie", "1955-09-09", "female", "GP Connect NO_PATIENT_CONSENT"),
    _patient("9990000115", Fault.ACCESS_DENIED, "Dennis", "1956-10-10", "male", "GP Connect ACCESS DENIED"),
    _patient("9990000123", Fault.GPC_INTERNAL_ERROR, "Erin", "1957-11-11", "female", "GP Connect 500"),
    _patient("9990000131", Fault.GPC_UNAVAILABLE, "Ursula", "1958-12-12", "female", "GP Connect 503"),
    _patient("9990000158", Fault.GPC_TIMEOUT, "Tim", "1959-01-13", "male", "GP Connect never answers in time"),
    _patient("9990000166", Fault.MALFORMED_JSON, "Mal", "1961-02-14", "male", "GP Connect 200 with malformed JSON"),
    _patient("9990000174", Fault.GPC_FLAKY, "Flora", "1962-03-15", "female", "GP Connect 502 twice, then a record"),
    _patient("9990000182", Fault.DEMOGRAPHICS_MISMATCH, "Mark", "1963-04-16", "male", "GP Connect Patient != PDS"),
    _patient("9990000190", Fault.AREA_NOT_SUPPORTED, "Wendy", "1964-05-17", "female", "investigations disabled"),
    _patient("9990000204", Fault.AMBIGUOUS_ENDPOINT, "Amber", "1965-06-18", "female", "practice with two endpoints"),
    _patient("9990000212", Fault.GPC_GZIP_BOMB, "Gus", "1966-07-19", "male", "GP Connect answers a gzip bomb"),
]

FAULT_PATIENTS: dict[str, FaultPatient] = {patient.nhs_number: patient for patient in _DEFINITIONS}
FAULT_NUMBERS: dict[Fault, str] = {patient.fault: patient.nhs_number for patient in _DEFINITIONS}


@dataclass(frozen=True, slots=True)
class SearchPatient:
    """A synthetic patient for the PDS demographic search (docs/ihe.md): invented names, test-range NHS numbers,
    postcodes of real districts and Ofcom drama-range telephone numbers (01632 960xxx)."""

    nhs_number: str
    family: str
    given: str
    birth_date: str
    gender: str
    postcode: str
    phone: str
    previous_postcode: str | None = None  # a home address that ended (matched by a search with history only)


class SearchCase(StrEnum):
    UNIQUE = "unique"  # one patient: a search with family name, given name, birth date and postcode finds it
    PAIR = "pair"  # two patients sharing family name and birth date: told apart by given name, gender or postcode
    TOO_MANY = "too-many"  # three sharing every demographic but the telephone number: TOO_MANY_MATCHES without it
    MOVED = "moved"  # found by a previous postcode: a partial match, scored below 1


SEARCH_PATIENTS: dict[SearchCase, tuple[SearchPatient, ...]] = {
    SearchCase.UNIQUE: (SearchPatient("9990000220", "XHUMA-SEARCH", "Sally", "1975-03-14", "female", "LS2 9JT",
                                      "01632960001"),),
    SearchCase.PAIR: (
        SearchPatient("9990000239", "XHUMA-PAIR", "Alex", "1988-08-08", "male", "LS6 1AA", "01632960002"),
        SearchPatient("9990000247", "XHUMA-PAIR", "Sam", "1988-08-08", "female", "LS6 2BB", "01632960003"),
    ),
    SearchCase.TOO_MANY: tuple(
        SearchPatient(number, "XHUMA-TRIPLET", "Jo", "2001-01-01", "female", "LS7 3CC", f"0163296001{index}")
        for index, number in enumerate(("9990000255", "9990000263", "9990000271"), start=1)
    ),
    SearchCase.MOVED: (SearchPatient("9990000298", "XHUMA-MOVED", "Morgan", "1969-09-09", "male", "LS8 4DD",
                                     "01632960004", previous_postcode="LS1 1ZZ"),),
}


def fault_patient(fault: Fault) -> str:
    """The NHS number of the built-in patient for ``fault``."""
    return FAULT_NUMBERS[fault]


__all__ = [
    "AMBIGUOUS_PRACTICE",
    "DEMO_PATIENT",
    "FAULT_NUMBERS",
    "FAULT_PATIENTS",
    "NO_ENDPOINT_PRACTICE",
    "SEARCH_PATIENTS",
    "Fault",
    "FaultPatient",
    "SearchCase",
    "SearchPatient",
    "fault_patient",
]
