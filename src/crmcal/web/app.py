"""The FastAPI application: REST API, health check, and background jobs of the embedded server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from crmcal import __version__, metrics
from crmcal.config import Settings
from crmcal.db import Database
from crmcal.jobs import maintenance
from crmcal.jobs.scheduler import Scheduler
from crmcal.providers import api_client
from crmcal.tasks import cancel_all_and_wait
from crmcal.vault import vault_for
from crmcal.web import access_log, docs, errors, oauth, openapi, ui, webhooks
from crmcal.web.api import router as api_router
from crmcal.web.limits import BodySizeLimit, NulInUrl
from crmcal.web.throttle import FailedSignIns

log = logging.getLogger(__name__)

DESCRIPTION = """Two-way calendar sync for a CRM. Every endpoint under `/api/v1` needs
`Authorization: Bearer <token>`; every refusal answers an `Error`:
`{"detail": "...", "errors": [{"loc": [...], "msg": "..."}]}` (`errors` for 422 only)."""


class Health(BaseModel):
    status: str = Field(description="`ok`, or `error` when the database does not answer.")
    version: str = Field(default="", description="The crmcal version (when `ok`).")
    detail: str = Field(default="", description="Why not (when `error`).")


Jobs = Literal["embedded", "queue", "queue+worker"]


def create_app(
    settings: Settings | None = None, *, background_jobs: bool = True, jobs: Jobs = "embedded"
) -> FastAPI:
    """The app. ``jobs`` says where syncs run: ``embedded`` in this process (the
    scheduler), ``queue`` on the distributed queue's workers (PostgreSQL; this
    process only enqueues), ``queue+worker`` the same with a worker in this process."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.for_settings(settings)
        app.state.db = db
        app.state.vault = vault = vault_for(settings)
        app.state.scheduler = None
        tasks = []
        queue_app = None
        if background_jobs and jobs == "embedded":
            tasks.append(asyncio.create_task(maintenance.run_forever(db)))
            if vault is not None:
                app.state.scheduler = Scheduler(db, vault, settings)
                await app.state.scheduler.start()
        elif background_jobs:
            from crmcal.jobs import queue
            from crmcal.jobs.enqueue import Enqueuer
            from crmcal.sync import limits

            queue_app = queue.queue_app(settings.database_url)
            await queue_app.open_async()
            # The API's own provider calls keep to the limits the workers share.
            shared = limits.for_settings(db, settings)
            limits.install(shared)
            app.state.scheduler = Enqueuer(db, queue_app)
            await app.state.scheduler.start()
            if jobs == "queue+worker" and vault is not None:
                runtime = queue.Runtime(db, vault, settings, queue_app, shared)
                tasks.append(
                    asyncio.create_task(queue.run_worker(runtime, install_signal_handlers=False))
                )
        try:
            yield
        finally:
            if app.state.scheduler is not None:
                await app.state.scheduler.stop()
            await cancel_all_and_wait(tasks)
            if queue_app is not None:
                from crmcal.sync import limits

                limits.install(None)
                await queue_app.close_async()
            # The HTTP connections syncs kept open to Google and Microsoft.
            await api_client.close_shared()
            await db.dispose()

    app = FastAPI(
        title="crmcal",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.failed_signins = FailedSignIns()
    errors.install(app)
    access_log.install()
    openapi.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(NulInUrl)
    app.include_router(api_router)
    app.include_router(oauth.router)
    app.include_router(webhooks.router)
    docs.install(app)
    ui.install(app)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"}},
    )
    async def metrics_page(request: Request) -> Response:
        """Prometheus metrics of this process; with the queue, its depth and age too."""
        db: Database = request.app.state.db
        if not db.sqlite:
            try:
                async with db.engine.connect() as connection:
                    await metrics.read_queue(connection)
            except Exception:  # no queue schema yet: the rest still answers
                metrics.QUEUE_JOBS.clear()
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get(
        "/healthz", tags=["operations"], response_model=Health, responses={503: {"model": Health}}
    )
    async def healthz(request: Request) -> JSONResponse:
        """200 when the database answers, 503 otherwise."""
        try:
            async with request.app.state.db.read() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            # The driver's message names hosts, users and paths: it goes to the log only.
            log.warning("health check: the database does not answer: %s", exc)
            return JSONResponse(
                {"status": "error", "detail": "database unavailable"}, status_code=503
            )
        return JSONResponse({"status": "ok", "version": __version__})

    return app
