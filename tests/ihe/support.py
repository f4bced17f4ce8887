"""Test support for the IHE layer: small in-test NHS ports (honest stand-ins for PDS/SDS/GP Connect, whose real
clients are tested elsewhere), request builders for the three transactions, SAML signing, and a harness that
serves the real router over ASGI with a real audit store (SQLite file) and a real cache.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from lxml import etree
from signxml import XMLSigner

from xhuma.audit import Auditor
from xhuma.config import Settings
from xhuma.errors import PatientNotFound, UpstreamError
from xhuma.ihe.gateway import IheGateway
from xhuma.ihe.router import get_gateway, router
from xhuma.ports import Address, Cache, CallerIdentity, PdsPatient, SdsRoute, StructuredRecord
from xhuma.records import ConvertedDocument, Records
from xhuma.store.audit import SqlAuditStore
from xhuma.store.cache import MemoryCache
from xhuma.store.keys import CacheKeys

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
HL7 = "urn:hl7-org:v3"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
XOP = "http://www.w3.org/2004/08/xop/include"
NS = {
    "env": SOAP12,
    "wsa": WSA,
    "hl7": HL7,
    "query": QUERY,
    "rim": RIM,
    "rs": RS,
    "xdsb": XDSB,
    "xop": XOP,
    "wsse": WSSE,
}

NHS_OID = "2.16.840.1.113883.2.1.4.1"
DEMO_NHS = "9690937286"
OTHER_NHS = "9434765919"
RESTRICTED_NHS = "9000000025"
DECEASED_NHS = "9000000009"
SUPERSEDED_NHS = "9000000033"
UNKNOWN_NHS = "9449306060"
ACTION_55 = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
ACTION_38 = "urn:ihe:iti:2007:CrossGatewayQuery"
ACTION_39 = "urn:ihe:iti:2007:CrossGatewayRetrieve"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"


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

    async def get_patient(self, nhs_number: str, *, correlation_id: str | None = None) -> PdsPatient:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if nhs_number not in self.patients:
            raise PatientNotFound()
        return self.patients[nhs_number]


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


# --- SAML -----------------------------------------------------------------------------------------------------------
@dataclass
class SigningKey:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def new_signing_key(name: str = "Epic Care Everywhere Test") -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return SigningKey(key, cert)


EPIC_ATTRIBUTES = None  # filled lazily from tests/data/ihe/epic-saml-attributes.xml


def epic_statement(data_dir: Any, *, resource_id: str | None = None, purpose: str | None = None) -> etree._Element:
    statement = etree.parse(str(data_dir / "ihe" / "epic-saml-attributes.xml")).getroot()
    if resource_id is not None:
        for attribute in statement:
            if attribute.get("Name") == "urn:oasis:names:tc:xacml:2.0:resource:resource-id":
                attribute[0].text = resource_id
    if purpose is not None:
        for element in statement.iter("{urn:hl7-org:v3}PurposeForUse"):
            element.set("code", purpose)
    return statement


def assertion(
    statement: etree._Element | None,
    *,
    not_before: datetime | None = None,
    not_on_or_after: datetime | None = None,
    audience: str | None = None,
    signer: SigningKey | None = None,
    name_id: str = "epic-user-1234",
) -> etree._Element:
    now = datetime.now(UTC)
    element = etree.Element(
        f"{{{SAML2}}}Assertion",
        nsmap={"saml2": SAML2},
        ID=f"_{uuid.uuid4().hex}",
        Version="2.0",
        IssueInstant=now.isoformat(),
    )
    etree.SubElement(element, f"{{{SAML2}}}Issuer").text = "CN=Epic Care Everywhere Test"
    subject = etree.SubElement(element, f"{{{SAML2}}}Subject")
    etree.SubElement(subject, f"{{{SAML2}}}NameID").text = name_id
    conditions = etree.SubElement(
        element,
        f"{{{SAML2}}}Conditions",
        NotBefore=(not_before or now - timedelta(minutes=1)).isoformat(),
        NotOnOrAfter=(not_on_or_after or now + timedelta(minutes=5)).isoformat(),
    )
    if audience is not None:
        restriction = etree.SubElement(conditions, f"{{{SAML2}}}AudienceRestriction")
        etree.SubElement(restriction, f"{{{SAML2}}}Audience").text = audience
    if statement is not None:
        element.append(etree.fromstring(etree.tostring(statement)))
    if signer is None:
        return element
    signed = XMLSigner(
        signature_algorithm="rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    ).sign(element, key=signer.key_pem, cert=[signer.cert], reference_uri=element.get("ID"))
    return signed


def security_header(saml: etree._Element | None) -> etree._Element:
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    security.set(f"{{{SOAP12}}}mustUnderstand", "true")
    if saml is not None:
        security.append(saml)
    return security


# --- request builders -----------------------------------------------------------------------------------------------
def envelope(
    action: str | None,
    body: etree._Element,
    *,
    message_id: str | None = "auto",
    security: etree._Element | None = None,
    reply_to: str | None = None,
    soap_prefix: str = "s",
    wsa_prefix: str = "a",
    pretty: bool = False,
) -> bytes:
    env = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={soap_prefix: SOAP12, wsa_prefix: WSA})
    header = etree.SubElement(env, f"{{{SOAP12}}}Header")
    if action is not None:
        action_element = etree.SubElement(header, f"{{{WSA}}}Action")
        action_element.set(f"{{{SOAP12}}}mustUnderstand", "1")
        action_element.text = action
    if message_id is not None:
        etree.SubElement(header, f"{{{WSA}}}MessageID").text = (
            f"urn:uuid:{uuid.uuid4()}" if message_id == "auto" else message_id
        )
    if reply_to is not None:
        etree.SubElement(etree.SubElement(header, f"{{{WSA}}}ReplyTo"), f"{{{WSA}}}Address").text = reply_to
    etree.SubElement(env, f"{{{SOAP12}}}Body").append(body)
    if security is None:
        return etree.tostring(env, xml_declaration=True, encoding="UTF-8", pretty_print=pretty)
    # The signed assertion travels byte for byte as signed (pretty-printing it would break its digest).
    etree.SubElement(header, "security-marker")
    raw = etree.tostring(env, xml_declaration=True, encoding="UTF-8", pretty_print=pretty)
    return raw.replace(b"<security-marker/>", etree.tostring(security))


def iti55_body(
    ids: list[list[tuple[str, str]]] | None = None,
    *,
    family: str | None = "Smith",
    given: str | None = "Jane",
    birth: str | None = "19520531",
    gender: str | None = "F",
    priority: str = "I",
) -> etree._Element:
    """PRPA_IN201305UV02; ``ids`` is a list of livingSubjectId elements, each a list of (root, extension)."""
    if ids is None:
        ids = [[(NHS_OID, DEMO_NHS)]]
    E = lambda tag, parent=None, **attrs: (  # noqa: E731
        etree.SubElement(parent, f"{{{HL7}}}{tag}", attrs)
        if parent is not None
        else etree.Element(
            f"{{{HL7}}}{tag}", attrs, nsmap={None: HL7, "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
        )
    )
    message = E("PRPA_IN201305UV02", ITSVersion="XML_1.0")
    E("id", message, root="1.2.840.114350.1.13.0.1.7.1.1", extension="35423")
    E("creationTime", message, value="20250301120000")
    E("interactionId", message, root="2.16.840.1.113883.1.6", extension="PRPA_IN201305UV02")
    E("processingCode", message, code="P")
    E("processingModeCode", message, code="T")
    E("acceptAckCode", message, code="AL")
    device = E("device", E("receiver", message, typeCode="RCV"), classCode="DEV", determinerCode="INSTANCE")
    E("id", device, root="2.16.840.1.113883.3.9999.1.3")
    sender = E("device", E("sender", message, typeCode="SND"), classCode="DEV", determinerCode="INSTANCE")
    E("id", sender, root="1.2.840.114350.1.13.999.567")
    organisation = E(
        "representedOrganization", E("asAgent", sender, classCode="AGNT"), classCode="ORG", determinerCode="INSTANCE"
    )
    E("id", organisation, root="1.2.840.114350.1.13.525.3.7.3.688884.100")
    control = E("controlActProcess", message, classCode="CACT", moodCode="EVN")
    E("code", control, code="PRPA_TE201305UV02", codeSystem="2.16.840.1.113883.1.6")
    query = E("queryByParameter", control)
    E("queryId", query, root="1.2.840.114350.1.13.28.1.18.5.999", extension="18204")
    E("statusCode", query, code="new")
    E("responseModalityCode", query, code="R")
    E("responsePriorityCode", query, code=priority)
    parameters = E("parameterList", query)
    if gender:
        E("value", E("livingSubjectAdministrativeGender", parameters), code=gender)
        parameters[-1].append(_semantics("LivingSubject.administrativeGender"))
    if birth:
        E("value", E("livingSubjectBirthTime", parameters), value=birth)
        parameters[-1].append(_semantics("LivingSubject.birthTime"))
    for values in ids:
        element = E("livingSubjectId", parameters)
        for root, extension in values:
            E("value", element, root=root, extension=extension)
        element.append(_semantics("LivingSubject.id"))
    if family or given:
        name = E("livingSubjectName", parameters)
        value = E("value", name)
        if given:
            E("given", value).text = given
        if family:
            E("family", value).text = family
        name.append(_semantics("LivingSubject.name"))
    return message


def _semantics(text: str) -> etree._Element:
    element = etree.Element(f"{{{HL7}}}semanticsText")
    element.text = text
    return element


def iti38_body(
    slots: Mapping[str, list[str]] | None = None,
    *,
    query_id: str = FIND_DOCUMENTS,
    return_type: str = "LeafClass",
    home: str | None = None,
    nhs: str = DEMO_NHS,
) -> etree._Element:
    if slots is None:
        slots = {
            "$XDSDocumentEntryPatientId": [f"'{nhs}^^^&{NHS_OID}&ISO'"],
            "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"],
        }
    request = etree.Element(f"{{{QUERY}}}AdhocQueryRequest", nsmap={"query": QUERY, "rim": RIM})
    etree.SubElement(request, f"{{{QUERY}}}ResponseOption", returnType=return_type, returnComposedObjects="true")
    query = etree.SubElement(request, f"{{{RIM}}}AdhocQuery", id=query_id)
    if home is not None:
        query.set("home", home)
    for name, values in slots.items():
        value_list = etree.SubElement(etree.SubElement(query, f"{{{RIM}}}Slot", name=name), f"{{{RIM}}}ValueList")
        for value in values:
            etree.SubElement(value_list, f"{{{RIM}}}Value").text = value
    return request


def iti39_body(requests: list[tuple[str | None, str | None, str | None]]) -> etree._Element:
    body = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
    for home, repository, unique_id in requests:
        item = etree.SubElement(body, f"{{{XDSB}}}DocumentRequest")
        for local, value in (
            ("HomeCommunityId", home),
            ("RepositoryUniqueId", repository),
            ("DocumentUniqueId", unique_id),
        ):
            if value is not None:
                etree.SubElement(item, f"{{{XDSB}}}{local}").text = value
    return body


def mtom_wrap(
    envelope_bytes: bytes, *, boundary: str = "uuid:0f8d7e6a-epic", line_end: bytes = b"\r\n", start: bool = True
) -> tuple[bytes, str]:
    """An Epic-style MTOM request: multipart/related with the envelope as the root part and no attachment."""
    root_id = "<root.message@cxf.apache.org>"
    body = line_end.join(
        [
            b"--" + boundary.encode(),
            b'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"',
            b"Content-Transfer-Encoding: binary",
            b"Content-ID: " + root_id.encode(),
            b"",
            envelope_bytes,
            b"--" + boundary.encode() + b"--",
            b"",
        ]
    )
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        + (f'start="{root_id}"; ' if start else "")
        + 'start-info="application/soap+xml"; action="urn:ihe:iti:2007:CrossGatewayRetrieve"'
    )
    return body, content_type


SOAP_CT = "application/soap+xml; charset=UTF-8"


def parse_response(response: httpx.Response) -> etree._Element:
    """The SOAP envelope of a response (the root part of an MTOM package, or the whole body)."""
    content_type = response.headers["content-type"]
    if content_type.startswith("multipart/related"):
        from xhuma.ihe.soap import content_type_params, split_multipart

        _, params = content_type_params(content_type)
        parts = split_multipart(response.content, params["boundary"])
        start = params["start"].strip("<>")
        root = next(part for part in parts if part.content_id == start)
        return etree.fromstring(root.content)
    return etree.fromstring(response.content)


def attachments(response: httpx.Response) -> dict[str, bytes]:
    from xhuma.ihe.soap import content_type_params, split_multipart

    _, params = content_type_params(response.headers["content-type"])
    return {part.content_id or "": part.content for part in split_multipart(response.content, params["boundary"])}


def body_of(env: etree._Element) -> etree._Element:
    return env.find(f"{{{SOAP12}}}Body")[0]


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
    app.include_router(router)
    app.state.settings = settings
    app.dependency_overrides[get_gateway] = lambda: gateway
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://xhuma.test")
    return Harness(settings, gateway, records, pds, gpconnect, cache, audit, client, app, keys)


def now_minus(seconds: int) -> datetime:
    return datetime.now(UTC) - dt.timedelta(seconds=seconds)


def cx(nhs: str = DEMO_NHS) -> str:
    return f"{nhs}^^^&{NHS_OID}&ISO"


class UpstreamDown(UpstreamError):
    """A stand-in upstream 503 whose text must never reach the caller."""

    code = "UpstreamUnavailable"
