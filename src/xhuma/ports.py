"""Ports: the interfaces the use cases (``xhuma.records``) run against, and the data that crosses them.

Adapters live in ``xhuma.nhs`` (PDS, SDS, GP Connect) and ``xhuma.store`` (cache, audit). Only
``xhuma.app`` knows which adapter is plugged in. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from xhuma import ids


# --- identities --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who is asking, from the verified XUA assertion (or unverified when SAML_VERIFY=optional)."""

    user_id: str | None = None  # subject-id / NameID
    user_name: str | None = None  # subject-id display form, e.g. "Family, Given"
    role_code: str | None = None
    role_display: str | None = None
    organization: str | None = None
    organization_id: str | None = None
    home_community_id: str | None = None
    purpose_of_use: str | None = None
    resource_id: str | None = None
    verified: bool = False
    client_cert_subject: str | None = None
    client_address: str | None = None


# --- PDS ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Address:
    lines: tuple[str, ...] = ()
    city: str | None = None
    postcode: str | None = None
    use: str | None = None


@dataclass(frozen=True, slots=True)
class PdsPatient:
    """The PDS record of one patient, reduced to what Xhuma uses (SPEC §5.4)."""

    nhs_number: str
    family: str | None = None
    given: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()
    gender: str | None = None  # FHIR administrative gender: male | female | other | unknown
    birth_date: str | None = None  # YYYY-MM-DD (or YYYY / YYYY-MM)
    addresses: tuple[Address, ...] = ()
    telecom: tuple[tuple[str, str], ...] = ()  # (system, value)
    gp_ods_code: str | None = None
    security: str = "U"  # U unrestricted | R restricted | V very restricted | REDACTED
    deceased: str | None = None  # deceasedDateTime when present
    requested_nhs_number: str | None = None  # differs from nhs_number when superseded

    @property
    def restricted(self) -> bool:
        return self.security in ("R", "V", "REDACTED")

    @property
    def superseded(self) -> bool:
        return self.requested_nhs_number is not None and self.requested_nhs_number != self.nhs_number


@dataclass(frozen=True, slots=True)
class PdsSearchQuery:
    """A PDS ``GET /Patient`` demographic search (PDS FHIR API, search-patient). Dates are ``YYYY-MM-DD``; gender is
    FHIR's male | female | other | unknown. ``mode``: non-fuzzy (with history) | fuzzy | exact."""

    family: str
    birth_date: str
    given: str | None = None
    gender: str | None = None
    postcode: str | None = None
    phone: str | None = None
    email: str | None = None
    mode: str = "non-fuzzy"


@dataclass(frozen=True, slots=True)
class PdsSearchMatch:
    patient: PdsPatient
    score: float  # PDS entry.search.score: 1.0 an exact match, less a partial one


@dataclass(frozen=True, slots=True)
class PdsSearchResult:
    """The matches, best first; ``too_many`` when PDS answered TOO_MANY_MATCHES (application-restricted access
    returns a patient only when the match is unique)."""

    matches: tuple[PdsSearchMatch, ...] = ()
    too_many: bool = False


# --- SDS ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SdsRoute:
    """Where a practice's GP Connect structured record lives (SPEC §6)."""

    ods_code: str
    asid: str
    party_key: str | None
    endpoint_url: str  # FHIR service root URL


# --- GP Connect ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StructuredRecord:
    """A GP Connect Access Record: Structured response (FHIR STU3 Bundle) and how it was obtained."""

    bundle: Mapping[str, Any]
    ods_code: str
    asid: str
    trace_id: str
    retrieved_at: datetime
    warnings: tuple[str, ...] = ()  # OperationOutcome warnings inside a 200 bundle (codes)
    terminology: Any = None  # xhuma.ccda.context.TerminologyFacts resolved before conversion (issue 13), if any


# --- documents ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A converted CCD and the metadata its XDS DocumentEntry is built from."""

    unique_id: str  # OID-style document uniqueId
    entry_uuid: str  # urn:uuid:...
    nhs_number: str
    content: bytes
    mime_type: str
    hash_sha1: str
    size: int
    creation_time: datetime
    service_start: datetime | None
    service_stop: datetime | None
    title: str
    source_ods: str
    patient: PdsPatient | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


# --- ports ----------------------------------------------------------------------------------------------------
@runtime_checkable
class PdsClient(Protocol):
    async def get_patient(self, nhs_number: str, *, correlation_id: str | None = None) -> PdsPatient:
        """Return the patient, or raise PatientNotFound / InvalidNhsNumber / UpstreamError subclasses.

        Restricted, deceased and superseded patients are returned (flags on PdsPatient); the use case decides.
        """
        ...

    async def search_patients(self, query: PdsSearchQuery) -> PdsSearchResult:
        """PDS demographic search; UpstreamError subclasses when PDS could not answer (never "no match")."""
        ...


@runtime_checkable
class SdsClient(Protocol):
    async def gp_connect_route(self, ods_code: str) -> SdsRoute:
        """ASID, party key and FHIR base for the practice; raises NoEndpoint / AmbiguousEndpoint."""
        ...


@runtime_checkable
class GpConnectClient(Protocol):
    async def get_structured_record(
        self, nhs_number: str, route: SdsRoute, caller: CallerIdentity, *, pds_patient: PdsPatient | None = None
    ) -> StructuredRecord:
        """POST $gpc.getstructuredrecord; raise typed errors for OperationOutcomes.

        The bundle's Patient is cross-checked against ``pds_patient`` (looked up when not given) and a mismatch
        raises DemographicsMismatch (SCAL GEN-07)."""
        ...


@runtime_checkable
class Cache(Protocol):
    """Bytes in, bytes out, with a TTL. Implementations raise CacheError; callers log and bypass."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...

    async def add(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        """Set ``key`` only when it is absent, atomically (across replicas for a shared cache): True when this
        call stored it, False when the key already existed (SET NX semantics)."""
        ...

    async def delete(self, *keys: str) -> int: ...

    async def keys(self, prefix: str) -> list[str]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


@runtime_checkable
class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None:
        """Commit one event (one database transaction). Raises AuditUnavailable when it cannot, and its subclass
        AuditOutcomeUnknown when the event may still commit (the write was sent, no answer came in time)."""
        ...


# --- audit event ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class AuditEvent:
    """One audited transaction or outbound call (issue: audit trail). Never holds an NHS number in clear:
    ``patient_pseudonym`` is HMAC-SHA256 of it under the audit key."""

    transaction: str  # ITI-55 | ITI-38 | ITI-39 | PDS | SDS | GPC | TERMINOLOGY | ADMIN
    outcome: str  # success | no-match | denied | error | not-disclosed
    occurred_at: datetime
    error_code: str | None = None
    reason: str | None = None  # PHI-free reason (e.g. PatientRestricted)
    patient_pseudonym: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    user_role: str | None = None
    organization: str | None = None
    organization_id: str | None = None
    home_community_id: str | None = None
    purpose_of_use: str | None = None
    saml_verified: bool | None = None
    client_cert_subject: str | None = None
    client_address: str | None = None
    message_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    spine_trace_id: str | None = None
    ssp_from: str | None = None
    ssp_to: str | None = None
    ssp_interaction_id: str | None = None
    jwt_summary: Mapping[str, Any] | None = None
    document_unique_id: str | None = None
    duration_ms: float | None = None
    details: Mapping[str, Any] | None = None
    # Identity of this event, so that a later event can void it; ``voids`` is set on a ``not-disclosed`` event
    # withdrawing a disclosure whose audit write timed out (docs/decisions.md, "The audit trail is exact").
    event_id: str = field(default_factory=ids.uuid4)  # a random version 4 UUID (unique, never secret): xhuma.ids
    voids: str | None = None
