"""The operator side: the admin API (``/api/*``, bearer auth) and the operator console (``/console``)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


async def validation_error(_request: Request, error: Exception) -> JSONResponse:
    """422 naming what is wrong, never echoing what was sent: FastAPI's default repeats each bad input (an NHS
    number typed into the wrong field) and fails with a bare 500 on a non-finite number such as ``1e400``."""
    problems = error.errors() if isinstance(error, RequestValidationError) else []
    detail = [{"type": str(problem.get("type", "")), "loc": [str(part) for part in problem.get("loc", ())],
               "msg": str(problem.get("msg", ""))} for problem in problems]
    return JSONResponse({"detail": detail}, status_code=422)


def mount(app: FastAPI) -> None:
    from xhuma.web.api import router as api_router
    from xhuma.web.console import router as console_router
    from xhuma.web.documents import router as documents_router
    from xhuma.web.exchanges import router as exchanges_router
    from xhuma.web.upstreams import router as upstreams_router

    app.include_router(api_router)
    app.include_router(documents_router)
    app.include_router(exchanges_router)
    app.include_router(upstreams_router)
    app.include_router(console_router)
    app.add_exception_handler(RequestValidationError, validation_error)
