"""Test support for the IHE layer: small in-test NHS ports (honest stand-ins for PDS/SDS/GP Connect, whose real
clients are tested elsewhere) and a harness that serves the real router over ASGI with a real audit store (SQLite
file) and a real cache.

The SOAP message builders and response parsers live in tests.support.soap and the keys in tests.support.pki; they
are re-exported here so that ``from tests.ihe.support import ...`` keeps working for every module that uses it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from lxml import etree
from tests.support.pki import SigningKey, new_signing_key
from tests.support.soap import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    DEMO_NHS,
    FIND_DOCUMENTS,
    GET_DOCUMENTS,
    HL7,
    NHS_OID,
    NS,
    QUERY,
    RIM,
    RS,
    SAML2,
    SOAP12,
    SOAP_CT,
    UNIQUE_ID_SCHEME,
    WSA,
    WSSE,
    XDSB,
    XOP,
    assertion,
    attachments,
    body_of,
    cx,
    envelope,
    epic_statement,
    iti38_body,
    iti39_body,
    iti55_body,
    mtom_wrap,
    parse_response,
    retrieved_document,
    security_header,
    slot_value,
    soap_parts,
    unique_id_of,
)

from xhuma.audit import Auditor
from xhuma.config import Settings
from xhuma.errors import PatientNotFound, UpstreamError
from xhuma.ihe.endpoints import SoapEndpoints
from xhuma.ihe.gateway import IheGateway
from xhuma.ports import (
    Address,
    Cache,
    CallerIdentity,
    PdsPatient,
    PdsSearchQuery,
    PdsSearchResult,
    SdsRoute,
    StructuredRecord,
)
from xhuma.records import ConvertedDocument, Records
from xhuma.store.audit import SqlAuditStore
from xhuma.store.cache import MemoryCache
from xhuma.store.keys import CacheKeys

__all__ = [  # the re-exported message and key helpers, then this module's own
    "ACTION_38",
    "ACTION_39",
    "ACTION_55",
    "CREATED",
    "DECEASED_NHS",
    "DEMO_NHS",
    "FIND_DOCUMENTS",
    "GET_DOCUMENTS",
    "HL7",
    "NHS_OID",
    "NS",
    "OTHER_NHS",
    "QUERY",
    "RESTRICTED_NHS",
    "RIM",
    "RS",
    "SAML2",
    "SOAP12",
    "SOAP_CT",
    "SUPERSEDED_NHS",
    "UNIQUE_ID_SCHEME",
    "UNKNOWN_NHS",
    "WSA",
    "WSSE",
    "XDSB",
    "XOP",
    "FailingAuditSink",
    "GpConnect",
    "Harness",
    "Pds",
    "Sds",
    "SigningKey",
    "UpstreamDown",
    "assertion",
    "attachments",
    "body_of",
    "cx",
    "envelope",
    "epic_statement",
    "iti38_body",
    "iti39_body",
    "iti55_body",
    "make_harness",
    "mtom_wrap",
    "new_signing_key",
    "now_minus",
    "parse_response",
    "patient",
    "retrieved_document",
    "security_header",
    "slot_value",
    "small_converter",
    "soap_parts",
    "unique_id_of",
]

OTHER_NHS = "9434765919"
RESTRICTED_NHS = "9000000025"
DECEASED_NHS = "9000000009"
SUPERSEDED_NHS = "9000000033"
UNKNOWN_NHS = "9449306060"


# --- in-test NHS ports --------------------------------------------------------------------------------------------
def patient(nhs: str = DEMO_NHS, **overrides: Any) -> PdsPatient:
    values: dict[str, Any] = {
        "nhs_number": nhs,
        "family": "Smith",
        "given": ("Jane",),
        "prefix": ("Mrs",),
        "gender": "female",
        "birth_date": "1952-05-31",
        "addresses": (Address(("1 Station Road",), "Leeds", "LS1 1AA"),),
        "telecom": (("phone", "0113 496 0000"),),
        "gp_ods_code": "B82617",
    }
    values.update(overrides)
    return PdsPatient(**values)


class Pds:
    def __init__(self, patients: Mapping[str, PdsPatient] | None = None, error: Exception | None = None) -> None:
        self.patients = (
            dict(patients)
            if patients is not None
            else {
                DEMO_NHS: patient(),
                OTHER_NHS: patient(OTHER_NHS, family="Jones", given=("Tom",), gender="male", birth_date="1980-01-02"),
                RESTRICTED_NHS: patient(RESTRICTED_NHS, security="R", addresses=(), gp_ods_code=None),
                DECEASED_NHS: patient(DECEASED_NHS, deceased="2020-01-01T00:00:00+00:00"),
                SUPERSEDED_NHS: patient(OTHER_NHS, requested_nhs_number=SUPERSEDED_NHS),
            }
        )
        self.error = error
        self.calls = 0
        self.search_result = PdsSearchResult()  # what a demographic search answers (tests set it)
        self.searches: list[PdsSearchQuery] = []

    async def get_patient(self, nhs_number: str, *, correlation_id: str | None = None) -> PdsPatient:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if nhs_number not in self.patients:
            raise PatientNotFound()
        return self.patients[nhs_number]

    async def search_patients(self, query: PdsSearchQuery) -> PdsSearchResult:
        self.searches.append(query)
        if self.error is not None:
            raise self.error
        return self.search_result


class Sds:
    async def gp_connect_route(self, ods_code: str) -> SdsRoute:
        return SdsRoute(ods_code, "918999198993", "R8008-0000806", f"https://gp.example/{ods_code}/fhir")


class GpConnect:
    def __init__(self, latency: float = 0.0, error: Exception | None = None) -> None:
        self.latency = latency
        self.error = error
        self.calls = 0
        self.callers: list[CallerIdentity] = []

    async def get_structured_record(
        self, nhs_number: str, route: SdsRoute, caller: CallerIdentity, *, pds_patient: PdsPatient | None = None
    ) -> StructuredRecord:
        self.calls += 1
        self.callers.append(caller)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.error is not None:
            raise self.error
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Organization",
                        "name": "The Trevelyan Practice",
                        "identifier": [
                            {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": route.ods_code}
                        ],
                    }
                }
            ],
        }
        return StructuredRecord(bundle, route.ods_code, route.asid, "trace-1", datetime.now(UTC))


CREATED = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)


def small_converter(record: StructuredRecord, pds_patient: PdsPatient, settings: Settings) -> ConvertedDocument:
    """A converter stand-in producing a tiny ClinicalDocument (the real converter is tested in tests/ccda)."""
    document = etree.Element(f"{{{HL7}}}ClinicalDocument", nsmap={None: HL7})
    etree.SubElement(document, f"{{{HL7}}}id", root=str(uuid.uuid5(uuid.NAMESPACE_OID, pds_patient.nhs_number)))
    etree.SubElement(document, f"{{{HL7}}}title").text = "GP Connect record summary"
    xml = etree.tostring(document, xml_declaration=True, encoding="UTF-8")
    return ConvertedDocument(
        xml=xml,
        document_id=None,
        title="GP Connect record summary",
        effective_time=CREATED,
        service_start=datetime(2019, 1, 1, tzinfo=UTC),
        service_stop=CREATED,
    )



# --- harness ----------------------------------------------------------------------------------------------------------
class FailingAuditSink:
    async def record(self, event: Any) -> None:
        from xhuma.errors import AuditUnavailable

        raise AuditUnavailable("the audit trail could not be written")


@dataclass
class Harness:
    settings: Settings
    gateway: IheGateway
    records: Records
    pds: Pds
    gpconnect: GpConnect
    cache: Cache
    audit: SqlAuditStore
    client: httpx.AsyncClient
    app: FastAPI
    keys: CacheKeys = field(default_factory=lambda: CacheKeys(lambda n: f"h{n[::-1]}"))

    async def post(self, path: str, content: bytes, content_type: str = SOAP_CT) -> httpx.Response:
        return await self.client.post(path, content=content, headers={"content-type": content_type})

    async def answered(
        self, path: str, action: str, body: etree._Element, **envelope_options: Any
    ) -> tuple[httpx.Response, etree._Element, etree._Element]:
        """POST ``body`` in an envelope; it must be answered 200. Returns the response, its envelope and the
        message in its Body."""
        response = await self.post(path, envelope(action, body, **envelope_options))
        assert response.status_code == 200, response.text
        env = parse_response(response)
        return response, env, body_of(env)

    async def events(self, **filters: Any) -> list[dict[str, Any]]:
        return list(await self.audit.query(**filters))


async def make_harness(
    settings: Settings,
    *,
    database_url: str,
    pds: Pds | None = None,
    gpconnect: GpConnect | None = None,
    cache: Cache | None = None,
    audit_sink: Any = None,
    converter: Callable[..., ConvertedDocument] = small_converter,
) -> Harness:
    audit = SqlAuditStore(database_url)
    await audit.migrate()
    pds = pds or Pds()
    gpconnect = gpconnect or GpConnect()
    cache = cache or MemoryCache()
    keys = CacheKeys(lambda n: f"h{n[::-1]}")
    records = Records(settings, pds=pds, sds=Sds(), gpconnect=gpconnect, cache=cache, keys=keys, converter=converter)
    auditor = Auditor(audit_sink or audit, hmac_key=b"test-audit-key")
    gateway = IheGateway(settings, records, auditor)
    app = FastAPI()
    app.add_middleware(SoapEndpoints, gateway=gateway)
    app.state.settings = settings
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://xhuma.test")
    return Harness(settings, gateway, records, pds, gpconnect, cache, audit, client, app, keys)


def now_minus(seconds: int) -> datetime:
    return datetime.now(UTC) - dt.timedelta(seconds=seconds)


class UpstreamDown(UpstreamError):
    """A stand-in upstream 503 whose text must never reach the caller."""

    code = "UpstreamUnavailable"
