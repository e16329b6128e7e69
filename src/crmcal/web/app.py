"""The FastAPI application: REST API, health check, and background jobs of the embedded server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

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

if TYPE_CHECKING:
    import procrastinate

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
    app = FastAPI(
        title="crmcal",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(jobs if background_jobs else None),
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
    _add_operations(app)
    return app


@dataclass
class _Background:
    """What the app runs beside its requests: tasks, and the queue's app when syncs go
    through the queue (PostgreSQL)."""

    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    queue_app: procrastinate.App | None = None


def _lifespan(jobs: Jobs | None) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's start and end: its database, its vault and, unless ``jobs`` is None,
    its background jobs, all from the settings in ``app.state`` as the app starts (the
    ones every request reads), so that an app started again on other settings (the
    tests build the app once a process) runs on those alone."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings
        db = Database.for_settings(settings)
        app.state.db = db
        app.state.vault = vault_for(settings)
        app.state.scheduler = None
        background = _Background()
        if jobs == "embedded":
            await _start_embedded(app, settings, background)
        elif jobs is not None:
            await _start_queued(app, settings, background, with_worker=jobs == "queue+worker")
        try:
            yield
        finally:
            await _stop(app, background)

    return lifespan


async def _start_embedded(app: FastAPI, settings: Settings, background: _Background) -> None:
    """Syncs and maintenance in this process: the scheduler (when credentials can be
    read) and the maintenance loop."""
    db, vault = app.state.db, app.state.vault
    background.tasks.append(asyncio.create_task(maintenance.run_forever(db)))
    if vault is not None:
        app.state.scheduler = Scheduler(db, vault, settings)
        await app.state.scheduler.start()


async def _start_queued(
    app: FastAPI, settings: Settings, background: _Background, *, with_worker: bool
) -> None:
    """Syncs through the queue: this process enqueues them, and with ``with_worker``
    runs a worker too (when credentials can be read)."""
    from crmcal.jobs import queue
    from crmcal.jobs.enqueue import Enqueuer
    from crmcal.sync import limits

    db, vault = app.state.db, app.state.vault
    background.queue_app = queue_app = queue.queue_app(settings.database_url)
    await queue_app.open_async()
    # The API's own provider calls keep to the limits the workers share.
    shared = limits.for_settings(db, settings)
    limits.install(shared)
    app.state.scheduler = Enqueuer(db, queue_app)
    await app.state.scheduler.start()
    if with_worker and vault is not None:
        runtime = queue.Runtime(db, vault, settings, queue_app, shared)
        background.tasks.append(
            asyncio.create_task(queue.run_worker(runtime, install_signal_handlers=False))
        )


async def _stop(app: FastAPI, background: _Background) -> None:
    """Everything the app started, ended, the database last."""
    if app.state.scheduler is not None:
        await app.state.scheduler.stop()
    await cancel_all_and_wait(background.tasks)
    if background.queue_app is not None:
        from crmcal.sync import limits

        limits.install(None)
        await background.queue_app.close_async()
    # The HTTP connections syncs kept open to Google and Microsoft.
    await api_client.close_shared()
    await app.state.db.dispose()


def _add_operations(app: FastAPI) -> None:
    """The endpoints for whoever runs crmcal: metrics and the health check."""

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
