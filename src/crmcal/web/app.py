"""The FastAPI application: REST API, health check, and background jobs of the embedded server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from crmcal import __version__
from crmcal.config import Settings
from crmcal.db import Database
from crmcal.jobs import maintenance
from crmcal.jobs.scheduler import Scheduler
from crmcal.vault import vault_for
from crmcal.web import errors, oauth, openapi, webhooks
from crmcal.web.api import router as api_router
from crmcal.web.limits import BodySizeLimit, NulInUrl

DESCRIPTION = """Two-way calendar sync for a CRM. Every endpoint under `/api/v1` needs
`Authorization: Bearer <token>`; every refusal answers an `Error`:
`{"detail": "...", "errors": [{"loc": [...], "msg": "..."}]}` (`errors` for 422 only)."""


class Health(BaseModel):
    status: str = Field(description="`ok`, or `error` when the database does not answer.")
    version: str = Field(default="", description="The crmcal version (when `ok`).")
    detail: str = Field(default="", description="Why not (when `error`).")


def create_app(settings: Settings | None = None, *, background_jobs: bool = True) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        app.state.db = db
        app.state.vault = vault = vault_for(settings)
        app.state.scheduler = None
        tasks = []
        if background_jobs:
            tasks.append(asyncio.create_task(maintenance.run_forever(db)))
            if vault is not None:
                app.state.scheduler = Scheduler(db, vault, settings)
                await app.state.scheduler.start()
        try:
            yield
        finally:
            if app.state.scheduler is not None:
                await app.state.scheduler.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await db.dispose()

    app = FastAPI(
        title="crmcal",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.settings = settings
    errors.install(app)
    openapi.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(NulInUrl)
    app.include_router(api_router)
    app.include_router(oauth.router)
    app.include_router(webhooks.router)

    @app.get(
        "/healthz", tags=["operations"], response_model=Health, responses={503: {"model": Health}}
    )
    async def healthz(request: Request) -> JSONResponse:
        """200 when the database answers, 503 otherwise."""
        try:
            async with request.app.state.db.read() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse({"status": "error", "detail": str(exc)[:200]}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    return app
