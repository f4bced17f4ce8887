"""The use cases behind the three IHE transactions, run against the ports (SPEC §0):

* ``discover_patient`` (ITI-55): PDS lookup, restricted/deceased/superseded rules, demographic cross-check.
* ``query_documents`` (ITI-38): the patient's cached CCD, else PDS → SDS → GP Connect → convert → store.
  One pipeline per patient at a time (single flight; LESSONS 6): in this process, and across replicas under a
  lease per patient (``xhuma.store.lease``; docs/operations.md). Stored under the document's uniqueId for
  ``ttl_document_seconds`` (LESSONS 11).
* ``retrieve_content`` (ITI-39): the stored bytes, exactly those whose hash and size were advertised
  (``retrieve_document``: the whole stored document, for GetDocuments and the console).

Nothing here knows about SOAP or XML; errors are ``xhuma.errors`` classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
import struct
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NamedTuple, Protocol

import orjson
import structlog

from xhuma import patient_search, tracing
from xhuma.config import Settings
from xhuma.errors import (
    CacheError,
    ConversionError,
    DemographicsMismatch,
    DocumentNotFound,
    InvalidNhsNumber,
    NoEndpoint,
    PatientDeceased,
    PatientRestricted,
    PatientSuperseded,
    RecordBusy,
    XhumaError,
)
from xhuma.nhs.nhs_number import is_valid_nhs_number
from xhuma.ports import (
    Cache,
    CallerIdentity,
    GpConnectClient,
    PdsClient,
    PdsPatient,
    SdsClient,
    StoredDocument,
    StructuredRecord,
)
from xhuma.store.keys import CacheKeys
from xhuma.store.lease import Leases, MemoryLeases

log = structlog.get_logger(__name__)

UUID_NAMESPACE = uuid.UUID("6f1c5d3e-7b0a-5c39-9a55-2f4d8e0b6a11")
LARGE_BUNDLE_ENTRIES = 50  # conversions of bundles bigger than this run in a worker thread
LEASE_POLL_FIRST_SECONDS = 0.025  # a query waiting on another replica's pipeline looks for its result this soon,
LEASE_POLL_MAX_SECONDS = 0.25  # then backs off to this interval


# --- ITI-55 ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DemographicQuery:
    """Demographics in the XCPD query (each optional). ``birth_date`` is HL7 ``YYYY[MM[DD]]``; gender M/F/UN."""

    family: str | None = None
    given: tuple[str, ...] = ()
    birth_date: str | None = None
    gender: str | None = None
    postcode: str | None = None  # used by the demographic search only (xhuma.patient_search)
    telecom: tuple[str, ...] = ()  # tel: / mailto: URLs, idem

    @property
    def empty(self) -> bool:
        return not (self.family or self.given or self.birth_date or self.gender)


def _fold(text: str) -> str:
    """Case-, diacritic-, space- and punctuation-insensitive form of a name."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if ch.isalnum()).casefold()


_GENDER = {"male": "M", "female": "F", "other": "UN", "unknown": "UN"}


def _is_hl7_date(value: str) -> bool:
    """HL7 TS date precision ``YYYY``, ``YYYYMM`` or ``YYYYMMDD``, and a real calendar date."""
    if len(value) not in (4, 6, 8) or not (value.isascii() and value.isdigit()):
        return False
    try:
        date(int(value[:4]), int(value[4:6] or 1), int(value[6:8] or 1))
    except ValueError:
        return False
    return True


def demographics_conflict(query: DemographicQuery, patient: PdsPatient, strictness: str) -> str | None:
    """The PHI-free reason the query's demographics do not fit the PDS record, or None (LESSONS 3).

    strict: family name and birth date must be in the query and agree; given name and gender agree when sent.
    lenient: whatever the query sends must agree (an identifier-only query is accepted).
    off: no check.
    """
    if strictness == "off":
        return None
    if strictness == "strict" and (not query.family or not query.birth_date):
        return "DemographicsMissing"
    if query.family and _fold(query.family) != _fold(patient.family or ""):
        return "FamilyNameMismatch"
    if query.given:
        pds_given = {_fold(name) for name in patient.given}
        if not any(_fold(name) in pds_given for name in query.given if name):
            return "GivenNameMismatch"
    if query.birth_date:
        if not _is_hl7_date(query.birth_date):
            return "BirthDateInvalid"  # '1' or '19' would otherwise be a prefix of most birth dates
        pds_birth = (patient.birth_date or "").replace("-", "")
        if not pds_birth or not (pds_birth.startswith(query.birth_date) or query.birth_date.startswith(pds_birth)):
            return "BirthDateMismatch"
    if query.gender and query.gender != "UN":
        pds_gender = _GENDER.get((patient.gender or "").lower())
        if pds_gender and pds_gender != "UN" and pds_gender != query.gender:
            return "GenderMismatch"
    return None


# --- conversion port ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConvertedDocument:
    """What the converter gives back: the CCD bytes and the metadata the DocumentEntry needs."""

    xml: bytes
    document_id: str | None  # ClinicalDocument/id as root or root^extension (becomes the XDS uniqueId)
    title: str
    effective_time: datetime
    service_start: datetime | None = None
    service_stop: datetime | None = None
    confidentiality_code: str = "N"
    language_code: str = "en-GB"
    report: Any = None


class Converter(Protocol):
    def __call__(self, record: StructuredRecord, patient: PdsPatient, settings: Settings) -> ConvertedDocument: ...


class TerminologyResolver(Protocol):
    """Resolves the terminology facts of a bundle before conversion (xhuma.nhs.terminology.TerminologyClient)."""

    async def facts_for(self, bundle: Mapping[str, Any]) -> Any: ...


# --- stored document (de)serialisation -----------------------------------------------------------------------
_MAGIC = b"XDOC1"


def _dt(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def dump_document(document: StoredDocument) -> bytes:
    """``XDOC1`` + 4-byte header length + JSON metadata + the document bytes (hash/size precomputed)."""
    patient = document.patient
    header = {
        "unique_id": document.unique_id,
        "entry_uuid": document.entry_uuid,
        "nhs_number": document.nhs_number,
        "mime_type": document.mime_type,
        "hash_sha1": document.hash_sha1,
        "size": document.size,
        "creation_time": _dt(document.creation_time),
        "service_start": _dt(document.service_start),
        "service_stop": _dt(document.service_stop),
        "title": document.title,
        "source_ods": document.source_ods,
        "metadata": dict(document.metadata),
        "patient": None
        if patient is None
        else {
            "nhs_number": patient.nhs_number,
            "family": patient.family,
            "given": list(patient.given),
            "gender": patient.gender,
            "birth_date": patient.birth_date,
            "gp_ods_code": patient.gp_ods_code,
        },
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return _MAGIC + struct.pack(">I", len(encoded)) + encoded + document.content


class DocumentContent(NamedTuple):
    """A stored document as ITI-39 discloses it: whose it is, its uniqueId and MIME type, and its bytes.

    ``content`` is a read-only view into the decrypted cache value, not a copy of the document (some 140 KB, which
    the MTOM package copies once into the answer). Nothing else of the stored header is decoded: a retrieve never
    reads the patient's demographics or the document's dates (``load_document`` decodes all of it)."""

    unique_id: str
    nhs_number: str
    mime_type: str
    content: memoryview


def _split_document(raw: bytes) -> tuple[dict[str, Any], memoryview]:
    """The stored header (decoded) and a read-only view of the document bytes after it."""
    # A value under a document key that is not a stored document is our trouble, never "not found": answered busy.
    if not raw.startswith(_MAGIC) or len(raw) < 9:
        raise CacheError("the stored document is unreadable")
    (length,) = struct.unpack_from(">I", raw, 5)
    view = memoryview(raw).toreadonly()
    try:
        header = orjson.loads(view[9 : 9 + length])
    except orjson.JSONDecodeError:
        raise CacheError("the stored document's header is unreadable") from None
    return header, view[9 + length :]


def load_content(raw: bytes) -> DocumentContent:
    """What ITI-39 reads of a stored document (``dump_document``'s bytes): see ``DocumentContent``."""
    header, content = _split_document(raw)
    return DocumentContent(header["unique_id"], header["nhs_number"], header["mime_type"], content)


def load_document(raw: bytes) -> StoredDocument:
    header, view = _split_document(raw)
    content = bytes(view)
    patient_data = header.get("patient")
    patient = None
    if patient_data:
        patient = PdsPatient(
            nhs_number=patient_data["nhs_number"],
            family=patient_data.get("family"),
            given=tuple(patient_data.get("given") or ()),
            gender=patient_data.get("gender"),
            birth_date=patient_data.get("birth_date"),
            gp_ods_code=patient_data.get("gp_ods_code"),
        )
    creation_time = _parse_dt(header["creation_time"]) or datetime.now(UTC)
    return StoredDocument(
        unique_id=header["unique_id"],
        entry_uuid=header["entry_uuid"],
        nhs_number=header["nhs_number"],
        content=content,
        mime_type=header["mime_type"],
        hash_sha1=header["hash_sha1"],
        size=header["size"],
        creation_time=creation_time,
        service_start=_parse_dt(header.get("service_start")),
        service_stop=_parse_dt(header.get("service_stop")),
        title=header["title"],
        source_ods=header["source_ods"],
        patient=patient,
        metadata=header.get("metadata") or {},
    )


# --- the use cases ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class QueryResult:
    documents: list[StoredDocument]
    from_cache: bool
    spine: Mapping[str, str | None] = field(default_factory=dict)


class Records:
    def __init__(
        self,
        settings: Settings,
        *,
        pds: PdsClient,
        sds: SdsClient,
        gpconnect: GpConnectClient,
        cache: Cache,
        keys: CacheKeys,
        converter: Converter,
        leases: Leases | None = None,
        clock: Callable[[], datetime] | None = None,
        terminology: TerminologyResolver | None = None,
    ) -> None:
        self.settings = settings
        self._pds = pds
        self._sds = sds
        self._gpconnect = gpconnect
        self._cache = cache
        self._keys = keys
        self._convert = converter
        self._terminology = terminology
        self._leases: Leases = leases if leases is not None else MemoryLeases()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._inflight: dict[str, asyncio.Future[QueryResult]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.pipeline_runs = 0  # how many times the PDS → GP Connect → convert pipeline ran (observability, tests)

    # ITI-55 -------------------------------------------------------------------------------------------------
    async def discover_patient(self, nhs_number: str, demographics: DemographicQuery) -> PdsPatient:
        """The PDS patient for an XCPD match, or a PatientOutcome (answered NF; reason audited only)."""
        if not is_valid_nhs_number(nhs_number):
            raise InvalidNhsNumber()
        patient = await self._pds.get_patient(nhs_number)
        self._check_disclosable(patient)
        reason = demographics_conflict(demographics, patient, self.settings.demographics_match)
        if reason is not None:
            raise DemographicsMismatch(detail=reason)
        return patient

    async def discover_by_demographics(self, demographics: DemographicQuery) -> PdsPatient:
        """The PDS patient found by a demographic search for an XCPD query without an NHS number (docs/ihe.md), or
        a PatientOutcome. The candidate passes the same rules as a patient read by number; a search match must
        never contradict what was sent, so strictness "off" is taken as "lenient" here."""
        patient = await patient_search.find_candidate(self._pds, demographics, self.settings)
        self._check_disclosable(patient)
        strictness = self.settings.demographics_match if self.settings.demographics_match != "off" else "lenient"
        reason = demographics_conflict(demographics, patient, strictness)
        if reason is not None:
            raise DemographicsMismatch(detail=reason)
        return patient

    async def practice_name(self, ods_code: str) -> str | None:
        """The practice's name as ITI-38 gives it (from its last GP Connect record), so that ITI-55 names it the
        same way; None when no record of the practice has been converted yet or the cache cannot say."""
        try:
            value = await self._cache.get(_practice_name_key(ods_code))
        except CacheError:
            return None
        return value.decode() if value else None

    @staticmethod
    def _check_disclosable(patient: PdsPatient) -> None:
        if patient.superseded:
            raise PatientSuperseded()
        if patient.restricted:
            raise PatientRestricted()
        if patient.deceased:
            raise PatientDeceased()

    def prefetch(self, nhs_number: str, caller: CallerIdentity) -> None:
        """Start the ITI-38 pipeline in the background so the query that follows is a cache hit."""

        async def run() -> None:
            try:
                await self.query_documents(nhs_number, caller)
            except XhumaError as error:
                log.info("prefetch_failed", error_code=error.code)
            except Exception as error:  # a background task must never die with an unlogged error
                log.warning("prefetch_failed", error_code=type(error).__name__)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # ITI-38 -------------------------------------------------------------------------------------------------
    async def query_documents(self, nhs_number: str, caller: CallerIdentity) -> QueryResult:
        if not is_valid_nhs_number(nhs_number):
            raise InvalidNhsNumber()
        cached = await self._cached_documents(nhs_number)
        if cached:
            return QueryResult(cached, from_cache=True)
        # Single flight: identical concurrent queries share one pipeline run (LESSONS 6); in this process first,
        # so that one query per process takes part in the lease across replicas.
        running = self._inflight.get(nhs_number)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[QueryResult] = asyncio.get_running_loop().create_future()
        self._inflight[nhs_number] = future
        try:
            result = await self._single_flight_across_replicas(nhs_number, caller)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[nhs_number]

    async def _single_flight_across_replicas(self, nhs_number: str, caller: CallerIdentity) -> QueryResult:
        """The holder of the patient's lease runs the pipeline; a query on another replica waits for the stored
        result, and takes over if the lease is given back (the holder failed) or expires (the holder died)."""
        name = self._keys.pipeline_lease(nhs_number)
        ttl_ms = self.settings.pipeline_lease_seconds * 1000
        deadline = time.monotonic() + self.settings.pipeline_wait_seconds
        delay = LEASE_POLL_FIRST_SECONDS
        while True:
            try:
                token = await self._leases.acquire(name, ttl_ms)
            except CacheError as error:
                # Redis failing: one more pipeline run is better than no answer (docs/operations.md, Replicas).
                log.warning("pipeline_lease_unavailable", error=str(error))
                return await self._fetch_and_convert(nhs_number, caller)
            if token is not None:
                return await self._run_holding_lease(name, token, ttl_ms, nhs_number, caller)
            if time.monotonic() >= deadline:
                raise RecordBusy("another replica is still fetching this record")
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # jitter: waiters do not poll in step
            delay = min(delay * 2, LEASE_POLL_MAX_SECONDS)
            documents = await self._read_cached_documents(nhs_number)
            if documents:
                return QueryResult(documents, from_cache=True)

    async def _run_holding_lease(
        self, name: str, token: str, ttl_ms: int, nhs_number: str, caller: CallerIdentity
    ) -> QueryResult:
        done = asyncio.Event()
        renewal = asyncio.get_running_loop().create_task(self._keep_lease(name, token, ttl_ms, done))
        try:
            # The previous holder may have stored the document between our cache miss and the lease.
            documents = await self._read_cached_documents(nhs_number)
            if documents:
                return QueryResult(documents, from_cache=True)
            return await self._fetch_and_convert(nhs_number, caller)
        finally:
            # The renewal stops when done, not only when cancelled: on Python 3.11 a cancellation that lands as a
            # Redis command completes is lost (asyncio.wait_for in redis-py returns the result instead, CPython
            # gh-86296), and a renewal that missed its cancellation held the lease, and this answer, for ever
            # (docs/benchmarks.md, Scale-out).
            done.set()
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            try:
                await self._leases.release(name, token)
            except CacheError as error:
                log.warning("pipeline_lease_release_failed", error=str(error))  # it expires by itself

    async def _keep_lease(self, name: str, token: str, ttl_ms: int, done: asyncio.Event) -> None:
        """Renew the lease at a third of its time to live while the pipeline runs (slow GP Connect, retries)."""
        while not done.is_set():
            await asyncio.sleep(ttl_ms / 3000)
            if done.is_set():
                return
            try:
                if not await self._leases.renew(name, token, ttl_ms):
                    log.warning("pipeline_lease_lost")
                    return
            except CacheError as error:
                log.warning("pipeline_lease_renewal_failed", error=str(error))

    @staticmethod
    def _count_lookup(found: bool) -> None:
        metrics = tracing.metrics_var.get()  # the request's metrics (xhuma_cache_lookups_total{kind="document"})
        if metrics is not None:
            metrics.child(metrics.cache_lookups, "document", "hit" if found else "miss").inc()

    async def _cached_documents(self, nhs_number: str) -> list[StoredDocument]:
        documents = await self._read_cached_documents(nhs_number)
        self._count_lookup(bool(documents))
        return documents

    async def _read_cached_documents(self, nhs_number: str) -> list[StoredDocument]:
        try:
            index = await self._cache.get(self._keys.patient_documents(nhs_number))
            if not index:
                return []
            try:
                unique_ids = json.loads(index)
            except ValueError:
                return []
            documents = []
            for unique_id in unique_ids:
                raw = await self._cache.get(CacheKeys.document(unique_id))
                if raw is None:
                    return []  # expired underneath the index: rebuild
                documents.append(load_document(raw))
        except CacheError as error:
            # Unknown is not "none": the record is fetched again, and _store decides whether it can be advertised.
            log.warning("documents_unreadable", error=str(error))
            return []
        return documents

    async def _fetch_and_convert(self, nhs_number: str, caller: CallerIdentity) -> QueryResult:
        self.pipeline_runs += 1
        patient = await self._pds.get_patient(nhs_number)
        self._check_disclosable(patient)
        if not patient.gp_ods_code:
            raise NoEndpoint("The patient has no registered GP practice")
        route = await self._sds.gp_connect_route(patient.gp_ods_code)
        record = await self._gpconnect.get_structured_record(patient.nhs_number, route, caller, pds_patient=patient)
        record = await self._with_terminology(record)
        entries = record.bundle.get("entry") or []
        try:
            with tracing.stage(None, "convert"):  # xhuma_stage_seconds{stage="convert"} and a span
                if len(entries) > LARGE_BUNDLE_ENTRIES:
                    converted = await asyncio.to_thread(self._convert, record, patient, self.settings)
                else:
                    converted = self._convert(record, patient, self.settings)
        except XhumaError:
            raise
        except Exception as error:
            log.error("conversion_failed", error_type=type(error).__name__)
            raise ConversionError() from error
        document = self._stored_document(nhs_number, patient, record, converted)
        await self._store(document, report=converted.report)
        spine = {"trace_id": record.trace_id, "to": record.asid}
        return QueryResult([document], from_cache=False, spine=spine)

    async def _with_terminology(self, record: StructuredRecord) -> StructuredRecord:
        """The record with its terminology facts; a terminology failure never fails the query: the conversion
        proceeds with the documented fallbacks and its report names the items that fell back (issue 13)."""
        if self._terminology is None:
            return record
        try:
            facts = await self._terminology.facts_for(record.bundle)  # each call timed and audited itself
        except Exception as error:  # XhumaError from the upstream, or anything unexpected: fall back
            log.warning("terminology_unavailable", error_type=type(error).__name__)
            return record
        return dataclasses.replace(record, terminology=facts)

    def _stored_document(
        self, nhs_number: str, patient: PdsPatient, record: StructuredRecord, converted: ConvertedDocument
    ) -> StoredDocument:
        unique_id = converted.document_id or f"{self.settings.document_oid_root}.{uuid.uuid4().int >> 64}"
        return StoredDocument(
            unique_id=unique_id,
            entry_uuid=f"urn:uuid:{uuid.uuid5(UUID_NAMESPACE, unique_id)}",
            nhs_number=nhs_number,
            content=converted.xml,
            mime_type="text/xml",
            hash_sha1=hashlib.sha1(converted.xml, usedforsecurity=False).hexdigest(),
            size=len(converted.xml),
            creation_time=converted.effective_time,
            service_start=converted.service_start,
            service_stop=converted.service_stop,
            title=converted.title,
            source_ods=record.ods_code,
            patient=patient,
            metadata={
                "confidentiality_code": converted.confidentiality_code,
                "language_code": converted.language_code,
                "practice_name": _practice_name(record),
            },
        )

    async def _store(self, document: StoredDocument, *, report: Mapping[str, Any] | None = None) -> None:
        """Store the document, or raise CacheError: ITI-38 never advertises a document held nowhere (the cache
        holds it in Redis or in this replica's in-process tier; xhuma.store.tiers). Its conversion report is
        stored next to it for the same time (the console's "what did the EHR receive, and what was left out")."""
        ttl = self.settings.ttl_document_seconds
        await self._cache.set(CacheKeys.document(document.unique_id), dump_document(document), ttl)
        if report is not None:
            await self._cache.set(CacheKeys.document_report(document.unique_id), json.dumps(report).encode(), ttl)
        await self._cache.set(CacheKeys.document_entry(document.entry_uuid), document.unique_id.encode(), ttl)
        await self._cache.set(
            self._keys.patient_documents(document.nhs_number), json.dumps([document.unique_id]).encode(), ttl
        )
        practice = document.metadata.get("practice_name")
        if practice:
            # Not patient data (a practice's public name): kept for ITI-55's providerOrganization/name.
            with contextlib.suppress(CacheError):
                await self._cache.set(_practice_name_key(document.source_ods), str(practice).encode(), ttl)

    async def unique_id_for_entry(self, entry_uuid: str) -> str | None:
        """The uniqueId, None when the cache has no such entry; CacheError (busy) when it could not be read."""
        value = await self._cache.get(CacheKeys.document_entry(entry_uuid))
        return value.decode() if value else None

    # ITI-39 -------------------------------------------------------------------------------------------------
    async def retrieve_document(self, unique_id: str) -> StoredDocument:
        """The stored document; DocumentNotFound only when the cache answered that it has none. A read that
        failed raises CacheError, answered as busy (xhuma.ihe.faults): our trouble is never "not found"."""
        raw = await self._cache.get(CacheKeys.document(unique_id))
        self._count_lookup(raw is not None)
        if raw is None:
            raise DocumentNotFound()
        return load_document(raw)

    async def retrieve_content(self, unique_id: str) -> DocumentContent:
        """ITI-39's read of a stored document: what it discloses and nothing more (``DocumentContent``); the same
        answers as ``retrieve_document`` otherwise (DocumentNotFound, CacheError)."""
        raw = await self._cache.get(CacheKeys.document(unique_id))
        self._count_lookup(raw is not None)
        if raw is None:
            raise DocumentNotFound()
        return load_content(raw)

    async def document_report(self, unique_id: str) -> dict[str, Any] | None:
        """The document's conversion report; None when the cache answered that it has none (CacheError when it
        could not be read: our trouble, not "not found")."""
        raw = await self._cache.get(CacheKeys.document_report(unique_id))
        return json.loads(raw) if raw is not None else None


def _practice_name_key(ods_code: str) -> str:
    return f"practice-name:{ods_code.upper()}"


def _practice_name(record: StructuredRecord) -> str | None:
    """The GP practice's name from the bundle's Organization with the record's ODS code (author institution)."""
    for entry in record.bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping) or resource.get("resourceType") != "Organization":
            continue
        for identifier in resource.get("identifier") or []:
            if isinstance(identifier, Mapping) and str(identifier.get("value", "")).upper() == record.ods_code.upper():
                name = resource.get("name")
                return str(name) if name else None
    return None
