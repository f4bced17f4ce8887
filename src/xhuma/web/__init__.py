"""The operator side: the admin API (``/api/*``, bearer auth) and the operator console (``/console``)."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    from xhuma.web.api import router as api_router
    from xhuma.web.console import router as console_router

    app.include_router(api_router)
    app.include_router(console_router)
