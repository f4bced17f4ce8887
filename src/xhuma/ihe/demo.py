"""``xhuma demo``: play the hospital EHR against a running Xhuma (or one started in-process on the embedded
defaults): ITI-55 → ITI-38 → ITI-39, printing what happened at each step and saving the retrieved CCD.

The requests are shaped like Epic Care Everywhere's: ``s:``/``a:`` prefixes, WS-Addressing, and ITI-39 sent as
MTOM even though it carries no attachment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
import typer
from lxml import etree

from xhuma.cli import EXIT_CONFIGURATION, EXIT_USAGE, app, fail, settings_or_exit
from xhuma.ihe.soap import SOAP12, WSA, XOP, content_type_params, split_multipart
from xhuma.ihe.xca_query import FIND_DOCUMENTS, QUERY, RIM, RS
from xhuma.ihe.xca_retrieve import XDSB
from xhuma.ihe.xcpd import HL7
from xhuma.nhs.nhs_number import NHS_NUMBER_OID, normalise
from xhuma.records import DemographicQuery

EHR_DEVICE = "1.2.840.114350.1.13.999.567"
EHR_COMMUNITY = "1.2.840.114350.1.13.999.1"
DEFAULT_PATIENT = "9690937286"


# --- the EHR's requests -------------------------------------------------------------------------------------------
def _envelope(action: str, body: etree._Element) -> tuple[bytes, str]:
    message_id = f"urn:uuid:{uuid.uuid4()}"
    envelope = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={"s": SOAP12, "a": WSA})
    header = etree.SubElement(envelope, f"{{{SOAP12}}}Header")
    action_element = etree.SubElement(header, f"{{{WSA}}}Action")
    action_element.set(f"{{{SOAP12}}}mustUnderstand", "1")
    action_element.text = action
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = message_id
    reply_to = etree.SubElement(header, f"{{{WSA}}}ReplyTo")
    etree.SubElement(reply_to, f"{{{WSA}}}Address").text = f"{WSA}/anonymous"
    etree.SubElement(envelope, f"{{{SOAP12}}}Body").append(body)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"), message_id


def iti55_request(nhs_number: str, demographics: DemographicQuery) -> etree._Element:
    def sub(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
        return etree.SubElement(parent, f"{{{HL7}}}{tag}", attributes)

    message = etree.Element(f"{{{HL7}}}PRPA_IN201305UV02", {"ITSVersion": "XML_1.0"}, nsmap={None: HL7})
    sub(message, "id", root=EHR_DEVICE, extension=uuid.uuid4().hex[:12])
    sub(message, "creationTime", value="20250101120000")
    sub(message, "interactionId", root="2.16.840.1.113883.1.6", extension="PRPA_IN201305UV02")
    sub(message, "processingCode", code="P")
    sub(message, "processingModeCode", code="T")
    sub(message, "acceptAckCode", code="AL")
    sub(sub(sub(message, "receiver", typeCode="RCV"), "device", classCode="DEV", determinerCode="INSTANCE"), "id",
        root="2.16.840.1.113883.3.9999.1.3")
    sender = sub(sub(message, "sender", typeCode="SND"), "device", classCode="DEV", determinerCode="INSTANCE")
    sub(sender, "id", root=EHR_DEVICE)
    organisation = sub(sub(sender, "asAgent", classCode="AGNT"), "representedOrganization", classCode="ORG",
                       determinerCode="INSTANCE")
    sub(organisation, "id", root=EHR_COMMUNITY)
    control = sub(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(control, "code", code="PRPA_TE201305UV02", codeSystem="2.16.840.1.113883.1.6")
    query = sub(control, "queryByParameter")
    sub(query, "queryId", root=EHR_DEVICE, extension=uuid.uuid4().hex[:12])
    sub(query, "statusCode", code="new")
    sub(query, "responseModalityCode", code="R")
    sub(query, "responsePriorityCode", code="I")
    parameters = sub(query, "parameterList")
    if demographics.gender:
        parameter = sub(parameters, "livingSubjectAdministrativeGender")
        sub(parameter, "value", code=demographics.gender)
        sub(parameter, "semanticsText").text = "LivingSubject.administrativeGender"
    if demographics.birth_date:
        parameter = sub(parameters, "livingSubjectBirthTime")
        sub(parameter, "value", value=demographics.birth_date)
        sub(parameter, "semanticsText").text = "LivingSubject.birthTime"
    parameter = sub(parameters, "livingSubjectId")
    sub(parameter, "value", root=NHS_NUMBER_OID, extension=nhs_number)
    sub(parameter, "semanticsText").text = "LivingSubject.id"
    if demographics.family or demographics.given:
        parameter = sub(parameters, "livingSubjectName")
        value = sub(parameter, "value")
        for given in demographics.given:
            sub(value, "given").text = given
        if demographics.family:
            sub(value, "family").text = demographics.family
        sub(parameter, "semanticsText").text = "LivingSubject.name"
    return message


def iti38_request(patient_cx: str, home: str) -> etree._Element:
    request = etree.Element(f"{{{QUERY}}}AdhocQueryRequest", nsmap={"query": QUERY, "rim": RIM})
    etree.SubElement(request, f"{{{QUERY}}}ResponseOption", returnType="LeafClass", returnComposedObjects="true")
    query = etree.SubElement(request, f"{{{RIM}}}AdhocQuery", id=FIND_DOCUMENTS, home=home)
    for name, value in (("$XDSDocumentEntryPatientId", f"'{patient_cx}'"),
                        ("$XDSDocumentEntryStatus", "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')")):
        value_list = etree.SubElement(etree.SubElement(query, f"{{{RIM}}}Slot", name=name), f"{{{RIM}}}ValueList")
        etree.SubElement(value_list, f"{{{RIM}}}Value").text = value
    return request


def iti39_request(home: str, repository: str, unique_id: str) -> etree._Element:
    request = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
    item = etree.SubElement(request, f"{{{XDSB}}}DocumentRequest")
    etree.SubElement(item, f"{{{XDSB}}}HomeCommunityId").text = home
    etree.SubElement(item, f"{{{XDSB}}}RepositoryUniqueId").text = repository
    etree.SubElement(item, f"{{{XDSB}}}DocumentUniqueId").text = unique_id
    return request


def mtom(envelope: bytes) -> tuple[bytes, str]:
    """Wrap an envelope as Epic does for ITI-39: multipart/related, one root part, no attachment."""
    boundary = f"uuid:{uuid.uuid4()}"
    root = f"<root.message@{uuid.uuid4().hex}>"
    body = b"\r\n".join([
        f"--{boundary}".encode(),
        b'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"',
        b"Content-Transfer-Encoding: binary",
        f"Content-ID: {root}".encode(),
        b"",
        envelope,
        f"--{boundary}--".encode(),
        b"",
    ])
    content_type = (f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; start="{root}"; '
                    'start-info="application/soap+xml"')
    return body, content_type


# --- reading answers ------------------------------------------------------------------------------------------------
def soap_parts(response: httpx.Response) -> tuple[etree._Element, dict[str, bytes]]:
    """The response envelope and its MTOM attachments by Content-ID; an answer that is not SOAP (a wrong URL
    path, a proxy's error page) is a DemoFailed line naming the status and the address, never a traceback."""
    mime_type, params = content_type_params(response.headers.get("content-type", ""))
    try:
        if mime_type == "multipart/related":
            parts = split_multipart(response.content, params["boundary"])
            start = params.get("start", "").strip("<>")
            root = next((part for part in parts if part.content_id == start), parts[0])
            attachments = {part.content_id: part.content for part in parts if part is not root and part.content_id}
            return etree.fromstring(root.content), attachments
        return etree.fromstring(response.content), {}
    except (etree.XMLSyntaxError, KeyError, IndexError, ValueError):
        hint = " (is --url the gateway's base address?)" if response.status_code == 404 else ""
        raise DemoFailed(f"{response.request.method} {response.request.url} answered HTTP {response.status_code}"
                         f" {mime_type or 'without a content type'}, not SOAP{hint}") from None


def xcpd_reason(message: etree._Element) -> str:
    """An ITI-55 answer's reason in words: the XCPD error code (reasonOf/detectedIssueEvent, ITI TF-2
    3.55.4.2.2.7), the acknowledgementDetail code and text, or the attributes an NF asks for."""
    h = f"{{{HL7}}}"
    parts = []
    issue = message.find(f"{h}controlActProcess/{h}reasonOf/{h}detectedIssueEvent")
    if issue is not None:
        code = issue.find(f"{h}mitigatedBy/{h}detectedIssueManagement/{h}code")
        if code is not None:
            parts.append(f"XCPD {code.get('code') or '?'}")
        requested = [c.get("code") for c in issue.iterfind(f"{h}triggerFor/{h}actOrderRequired/{h}code")]
        if requested:
            parts.append(f"more demographics requested: {', '.join(filter(None, requested))}")
    for detail in message.iterfind(f"{h}acknowledgement/{h}acknowledgementDetail"):
        code = detail.find(f"{h}code")
        text = (detail.findtext(f"{h}text") or "").strip()
        parts.append(" ".join(filter(None, [f"acknowledgementDetail {code.get('code')}" if code is not None else None,
                                            f'"{text}"' if text else None])))
    return "; ".join(p for p in parts if p)


def registry_errors(message: etree._Element) -> str:
    """An XDS answer's RegistryErrors in words: code, codeContext and location of each (ITI TF-3 4.2.4)."""
    described = []
    for error in message.iter(f"{{{RS}}}RegistryError"):
        severity = (error.get("severity") or "").rsplit(":", 1)[-1]
        where = f" at {error.get('location')}" if error.get("location") else ""
        context = error.get("codeContext") or ""
        described.append(f"{error.get('errorCode') or '?'}{where}"
                         + (f" ({severity})" if severity and severity != "Error" else "")
                         + (f": {context}" if context else ""))
    return "; ".join(described)


def _body(envelope: etree._Element) -> etree._Element:
    body = envelope.find(f"{{{SOAP12}}}Body")
    if body is None or not len(body):
        raise DemoFailed("the answer has no SOAP Body")
    payload = body[0]
    if etree.QName(payload).localname == "Fault":
        reason = payload.findtext(f"{{{SOAP12}}}Reason/{{{SOAP12}}}Text") or "no reason given"
        codes = [c.text for c in payload.iter(f"{{{SOAP12}}}Value") if c.text]
        raise DemoFailed(f"SOAP Fault {' / '.join(codes)}: {reason}" if codes else f"SOAP Fault: {reason}")
    return payload


def _save(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


class DemoFailed(Exception):
    pass


@dataclass
class DemoOutcome:
    steps: list[str] = field(default_factory=list)
    unique_id: str | None = None
    ccd_path: Path | None = None
    ccd: bytes | None = None


async def run_demo(
    url: str,
    nhs_number: str,
    demographics: DemographicQuery,
    out: Path,
    *,
    echo: Callable[[str], None] = print,
    client: httpx.AsyncClient | None = None,
) -> DemoOutcome:
    """ITI-55 → ITI-38 → ITI-39 against ``url``; raises DemoFailed with a one-line reason when a step fails."""
    outcome = DemoOutcome()

    def step(text: str) -> None:
        outcome.steps.append(text)
        echo(text)

    own_client = client is None
    http = client or httpx.AsyncClient(base_url=url, timeout=60)
    try:
        home, patient_cx = await _demo_discover(http, nhs_number, demographics, step)
        offered = await _demo_query(http, patient_cx, home, step)
        outcome.unique_id = offered.unique_id
        ccd = await _demo_retrieve(http, offered, home, step)
        await asyncio.to_thread(_save, out, ccd)
        outcome.ccd = ccd
        outcome.ccd_path = out
        step(f"   saved the CCD to {out}")
        if ccd_digest(ccd) != offered.slots.get("hash"):
            raise DemoFailed("the retrieved document is not the one ITI-38 described")
        from xhuma.ccda.validate import validate_bytes

        checked = await asyncio.to_thread(validate_bytes, ccd)
        step(f"4. C-CDA R2.1 validation: {len(checked.schema_errors)} CDA schema errors, "
             f"{len(checked.schematron_errors)} schematron errors")
        return outcome
    finally:
        if own_client:
            await http.aclose()


@dataclass(frozen=True, slots=True)
class _OfferedDocument:
    """The first document entry ITI-38 offered."""

    entry: etree._Element
    unique_id: str
    slots: dict[str | None, str | None]


def ccd_digest(ccd: bytes) -> str:
    """The SHA-1 ITI-38 states as the entry's ``hash`` slot (XDS metadata, not a security use)."""
    return hashlib.sha1(ccd, usedforsecurity=False).hexdigest()


async def _demo_discover(
    http: httpx.AsyncClient, nhs_number: str, demographics: DemographicQuery, step: Callable[[str], None]
) -> tuple[str, str]:
    """ITI-55: the responding community and the patient's CX, or DemoFailed."""
    envelope, _ = _envelope("urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery",
                            iti55_request(nhs_number, demographics))
    response = await http.post("/SOAP/iti55", content=envelope,
                               headers={"content-type": "application/soap+xml; charset=UTF-8"})
    message = _body(soap_parts(response)[0])
    h = f"{{{HL7}}}"
    ack = message.find(f"{h}acknowledgement/{h}typeCode")
    code = message.find(f"{h}controlActProcess/{h}queryAck/{h}queryResponseCode")
    ack_code = ack.get("code") if ack is not None else "?"
    response_code = code.get("code") if code is not None else "?"
    step(f"1. ITI-55 patient discovery: HTTP {response.status_code}, {ack_code}/{response_code}")
    if response_code != "OK":
        reason = xcpd_reason(message)
        if response_code == "NF":
            raise DemoFailed(f"ITI-55: no match for this patient ({ack_code}/NF{f'; {reason}' if reason else ''})")
        raise DemoFailed(f"ITI-55 failed ({ack_code}/{response_code}): {reason or 'no reason given'}")
    patient_id = message.find(f".//{h}subject1/{h}patient/{h}id")
    custodian = message.find(f".//{h}custodian/{h}assignedEntity/{h}id")
    if patient_id is None or custodian is None:
        raise DemoFailed("the match has no patient id or custodian")
    home = f"urn:oid:{custodian.get('root')}"
    step(f"   matched; responding community {home}")
    return home, f"{patient_id.get('extension')}^^^&{patient_id.get('root')}&ISO"


async def _demo_query(
    http: httpx.AsyncClient, patient_cx: str, home: str, step: Callable[[str], None]
) -> _OfferedDocument:
    """ITI-38 FindDocuments: the first document offered, or DemoFailed."""
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayQuery", iti38_request(patient_cx, home))
    response = await http.post("/SOAP/iti38", content=envelope,
                               headers={"content-type": "application/soap+xml; charset=UTF-8"})
    message = _body(soap_parts(response)[0])
    entries = message.findall(f"{{{RIM}}}RegistryObjectList/{{{RIM}}}ExtrinsicObject")
    errors = registry_errors(message)
    status = (message.get("status") or "").rsplit(":", 1)[-1]
    step(f"2. ITI-38 find documents: HTTP {response.status_code}, {status}, {len(entries)} document(s)"
         + (f", errors {errors}" if errors else ""))
    if not entries:
        # A plain Success without documents is how the gateway answers a record that is not shared (no
        # consent, no GP Connect endpoint; docs/ihe.md): the reason is in its audit trail, not the answer.
        raise DemoFailed(f"ITI-38 offered no document: {errors}" if errors else
                         "ITI-38 offered no document and gave no error (Success with an empty list: the GP record"
                         " is not shared, e.g. no consent or no GP Connect endpoint; the audit trail has why)")
    entry = entries[0]
    slots = {slot.get("name"): slot.findtext(f"{{{RIM}}}ValueList/{{{RIM}}}Value")
             for slot in entry.iterfind(f"{{{RIM}}}Slot")}
    unique_id = next(e.get("value") for e in entry.iterfind(f"{{{RIM}}}ExternalIdentifier")
                     if e.get("identificationScheme") == "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab")
    step(f"   uniqueId {unique_id}, {slots.get('size')} bytes, sha1 {slots.get('hash')}")
    return _OfferedDocument(entry, str(unique_id), slots)


async def _demo_retrieve(
    http: httpx.AsyncClient, offered: _OfferedDocument, home: str, step: Callable[[str], None]
) -> bytes:
    """ITI-39 (MTOM, as Epic sends it): the document's bytes, or DemoFailed."""
    repository = offered.slots.get("repositoryUniqueId") or ""
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayRetrieve",
                            iti39_request(offered.entry.get("home") or home, repository, offered.unique_id))
    body, content_type = mtom(envelope)
    response = await http.post("/SOAP/iti39", content=body, headers={"content-type": content_type})
    envelope_element, attachments = soap_parts(response)
    message = _body(envelope_element)
    document = message.find(f"{{{XDSB}}}DocumentResponse/{{{XDSB}}}Document")
    if document is None:
        raise DemoFailed(f"ITI-39 returned no document: {registry_errors(message) or 'no RegistryError given'}")
    include = document.find(f"{{{XOP}}}Include")
    if include is not None:
        ccd = attachments[include.get("href", "")[4:]]
        packaging = "MTOM/XOP attachment"
    else:
        import base64

        ccd = base64.b64decode(document.text or "")
        packaging = "inline base64"
    matches = ccd_digest(ccd) == offered.slots.get("hash")
    step(f"3. ITI-39 retrieve: HTTP {response.status_code}, {len(ccd)} bytes as {packaging}, "
         f"hash {'matches' if matches else 'DOES NOT match'} ITI-38")
    return ccd


# --- in-process Xhuma ------------------------------------------------------------------------------------------
def _quiet_server_class() -> type:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without signal handling: the demo process owns the signals."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


@asynccontextmanager
async def embedded_xhuma(overrides: dict[str, object] | None = None) -> AsyncIterator[str]:
    """Xhuma on the embedded defaults (simulator profile, in-process cache, SQLite audit) on a loopback port."""
    import uvicorn

    from xhuma.app import create_app
    from xhuma.observability import configure_logging

    settings = settings_or_exit(**(overrides or {}))
    configure_logging(settings.log_level, settings.log_format)  # as `xhuma serve` does
    if not settings.uses_simulator:
        raise fail("without --url the demo starts Xhuma on the embedded simulator; set XHUMA_PROFILE=simulator",
                   EXIT_CONFIGURATION)
    application = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(application, log_config=None, access_log=False, lifespan="on")
    server = _quiet_server_class()(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.02)
        if not server.started:
            raise DemoFailed("the in-process Xhuma did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def demo_demographics(nhs_number: str) -> DemographicQuery:
    """What the EHR knows about its patient; for the simulator's patients, their PDS demographics."""
    try:
        from xhuma.nhs.simulator.records import load
    except ImportError:  # pragma: no cover
        return DemographicQuery()
    simulated = load(None).patients.get(nhs_number)
    record = simulated.pds if simulated is not None else None
    if not record:
        return DemographicQuery()
    names = record.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "usual"), names[0])
    gender = {"male": "M", "female": "F"}.get(str(record.get("gender", "")).lower(), "UN")
    return DemographicQuery(
        family=name.get("family"), given=tuple(name.get("given") or ())[:1],
        birth_date=str(record.get("birthDate") or "").replace("-", "") or None, gender=gender,
    )


def _has_request(error: httpx.HTTPError) -> bool:
    try:
        error.request  # noqa: B018 - httpx raises RuntimeError when the error has no request
    except RuntimeError:
        return False
    return True


@app.command()
def demo(
    nhs_number: Annotated[str, typer.Option("--nhs-number", help="patient to look up")] = DEFAULT_PATIENT,
    url: Annotated[str | None, typer.Option(help="a running Xhuma (default: start one in-process)")] = None,
    out: Annotated[Path, typer.Option(help="where to save the retrieved CCD")] = Path("xhuma-demo-ccd.xml"),
    family: Annotated[str | None, typer.Option(help="family name the EHR holds")] = None,
    given: Annotated[str | None, typer.Option(help="given name the EHR holds")] = None,
    birth_date: Annotated[str | None, typer.Option(help="birth date the EHR holds, YYYYMMDD")] = None,
    gender: Annotated[str | None, typer.Option(help="M | F | UN")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="show the in-process gateway's log lines")] = False,
) -> None:
    """Play the hospital EHR: ITI-55 → ITI-38 → ITI-39 against Xhuma, and save the CCD it returns."""
    if not verbose and not os.environ.get("XHUMA_LOG_LEVEL"):
        from xhuma.observability import configure_logging

        configure_logging("ERROR")  # the steps are the output
    nhs_number = normalise(nhs_number)
    known = demo_demographics(nhs_number)
    demographics = DemographicQuery(
        family=family or known.family, given=(given,) if given else known.given,
        birth_date=birth_date or known.birth_date, gender=gender or known.gender,
    )

    async def play() -> DemoOutcome:
        if url:
            typer.echo(f"EHR → Xhuma at {url}")
            return await run_demo(url, nhs_number, demographics, out, echo=typer.echo)
        # The steps are the demo's output; the in-process gateway's own log lines only with --verbose.
        quiet: dict[str, object] = {} if verbose or os.environ.get("XHUMA_LOG_LEVEL") else {"log_level": "ERROR"}
        async with embedded_xhuma(quiet) as base:
            typer.echo(f"EHR → Xhuma started in-process at {base} (simulator profile)")
            return await run_demo(base, nhs_number, demographics, out, echo=typer.echo)

    try:
        asyncio.run(play())
    except DemoFailed as error:
        raise fail(f"demo stopped: {error}") from None
    except httpx.InvalidURL as error:
        raise fail(f"--url {url}: {error}", EXIT_USAGE) from None
    except httpx.HTTPError as error:
        where = f" at {error.request.url}" if _has_request(error) else ""
        cause = str(error).splitlines()[0] if str(error) else "no answer"
        raise fail(f"demo could not reach Xhuma{where}: {type(error).__name__}: {cause}") from None
    typer.echo("done: the EHR found the patient, listed the GP record and retrieved the CCD")
