"""What the EHR received: a cached document rendered for a clinician, and its conversion report (admin API).

* ``GET /api/documents/{uniqueId}/rendered``: the CCD as an HTML page (``cda.xsl``, XSLT 1.0 of Xhuma's own:
  everything escaped, no attribute of the document copied, no script), served under a Content-Security-Policy
  that allows nothing but this origin's stylesheet.
* ``GET /api/documents/{uniqueId}/report``: the conversion report stored with the document (the JSON of
  ``xhuma convert --report``: every resource of the bundle with its outcome).

Every look is a disclosure of patient data to the admin: it is audited (``ADMIN``, ``success``, the document's
uniqueId and patient pseudonym, the admin's identity) before anything is sent, and nothing is sent when the
event could not be committed. An unknown or expired document is 404; the cache or the audit trail failing is
503, never "not found".
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from lxml import etree

from xhuma.errors import AuditUnavailable, CacheError, DocumentNotFound
from xhuma.ports import CallerIdentity, StoredDocument
from xhuma.security.admin import AdminPrincipal, require_admin

router = APIRouter(prefix="/api/documents", tags=["admin"], dependencies=[Depends(require_admin)])

RENDERED_HEADERS = {
    # The page has no script and needs none; its only resource is the document stylesheet of this origin.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'; sandbox"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_UNIQUE_ID = 128  # the audit column's length; XDS uniqueIds are at most 64 characters (ITI TF-3 4.2.3.2.26)


@cache
def _stylesheet() -> etree.XSLT:
    source = resources.files("xhuma.web").joinpath("cda.xsl").read_bytes()
    # Our own stylesheet: no access to files or the network from within it.
    access = etree.XSLTAccessControl.DENY_ALL
    return etree.XSLT(etree.fromstring(source, etree.XMLParser(resolve_entities=False, no_network=True)),
                      access_control=access)


def render_document(content: bytes) -> bytes:
    """The CCD as an HTML page. The document is ours (converted here), still parsed without entities or network."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    tree = etree.fromstring(content, parser)
    return bytes(_stylesheet()(tree))


def _runtime(request: Request) -> Any:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None or runtime.auditor is None:
        raise HTTPException(503, "the service is starting")
    return runtime


def _records(request: Request) -> Any:
    from xhuma.ihe.endpoints import gateway_of

    return gateway_of(request.app).records


async def _stored(request: Request, unique_id: str) -> StoredDocument:
    _runtime(request)
    if not unique_id or len(unique_id) > MAX_UNIQUE_ID:
        raise HTTPException(404, "no such document (unknown or expired)")
    try:
        document: StoredDocument = await _records(request).retrieve_document(unique_id)
    except DocumentNotFound:
        raise HTTPException(404, "no such document (unknown or expired)") from None
    except CacheError:
        raise HTTPException(503, "the document cache could not answer; try again") from None
    return document


async def _audit_look(request: Request, document: StoredDocument, principal: AdminPrincipal, view: str) -> None:
    """Commit the admin's look at the document to the audit trail, or refuse to show it (503)."""
    try:
        await _runtime(request).auditor.record(
            "ADMIN", "success", nhs_number=document.nhs_number, reason=f"document-{view}",
            caller=CallerIdentity(user_id=principal.subject), document_unique_id=document.unique_id,
            details={"action": "document-view", "view": view, "by": principal.subject, "method": principal.method},
            client_address=request.client.host if request.client else None,
        )
    except AuditUnavailable:
        raise HTTPException(503, "the audit trail is unavailable, so the document cannot be shown") from None


@router.get("/{unique_id}/rendered")
async def rendered(request: Request, unique_id: str, principal: AdminPrincipal = Depends(require_admin)) -> Response:
    document = await _stored(request, unique_id)
    try:
        page = render_document(document.content)
    except etree.LxmlError:
        raise HTTPException(503, "the stored document could not be rendered") from None
    await _audit_look(request, document, principal, "rendered")
    return Response(page, media_type="text/html; charset=utf-8", headers=RENDERED_HEADERS)


@router.get("/{unique_id}/report")
async def report(request: Request, unique_id: str, principal: AdminPrincipal = Depends(require_admin)) -> Any:
    document = await _stored(request, unique_id)
    try:
        found = await _records(request).document_report(document.unique_id)
    except CacheError:
        raise HTTPException(503, "the document cache could not answer; try again") from None
    if found is None:
        raise HTTPException(404, "no conversion report is held for this document")
    await _audit_look(request, document, principal, "report")
    return JSONResponse(found, headers={"Cache-Control": "no-store"})
