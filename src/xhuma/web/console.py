"""The operator console: one static page and its script, no build step.

The page itself holds no data, so a browser can load it; everything it shows comes from ``/api/*`` with the
admin bearer token, which the operator types into the page. The script keeps the token in ``sessionStorage``
and sends it only as an ``Authorization`` header, never in a URL. A strict Content-Security-Policy allows
scripts and styles from this origin only.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

router = APIRouter(tags=["console"], include_in_schema=False)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8",
          "document.css": "text/css; charset=utf-8"}  # document.css: the rendered CCD (xhuma.web.documents)


def _asset(name: str) -> str:
    return resources.files("xhuma.web").joinpath("static", name).read_text(encoding="utf-8")


@router.get("/console")
async def console() -> HTMLResponse:
    return HTMLResponse(_asset("console.html"), headers=SECURITY_HEADERS)


@router.get("/console/static/{name}")
async def console_asset(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(404)
    return Response(_asset(name), media_type=ASSETS[name], headers=SECURITY_HEADERS)
