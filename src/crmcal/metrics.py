"""Prometheus metrics: syncs, calendar-service requests, and the queue (F26).

The server answers them at ``GET /metrics``; a worker, which serves no HTTP, on
``crmcal worker --metrics-port N``. Counters live in each process (scrape every
worker); the queue's depth and age are read from the database at scrape time, so
any one server shows them for the whole installation. Labels are kinds and
reasons, never connection ids or accounts: a series per connection would not
scale to thousands.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate

SYNCS = Counter(
    "crmcal_syncs", "Syncs run, by provider kind and outcome (ok, error).", ["provider", "outcome"]
)
SYNC_ERRORS = Counter(
    "crmcal_sync_errors", "Failed syncs by provider kind and reason.", ["provider", "reason"]
)
SYNC_SECONDS = Histogram(
    "crmcal_sync_duration_seconds",
    "How long a sync took, lease to release.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
PROVIDER_REQUESTS = Counter(
    "crmcal_provider_requests",
    "Requests to calendar services, by service and answer class (2xx … 5xx, error).",
    ["service", "status"],
)
PROVIDER_THROTTLED = Counter(
    "crmcal_provider_throttled", "Answers asking crmcal to slow down (429, rate-limit 403).",
    ["service"],
)  # fmt: skip
PROVIDER_RETRIES = Counter(
    "crmcal_provider_retries", "Requests sent again after a failure or throttling.", ["service"]
)
QUEUE_JOBS = Gauge("crmcal_queue_jobs", "Jobs in the queue by queue and status.",
                   ["queue", "status"])  # fmt: skip
QUEUE_OLDEST = Gauge(
    "crmcal_queue_oldest_waiting_seconds",
    "Age of the oldest job waiting to run (due, not yet started), by queue.",
    ["queue"],
)


def request_done(service: str, status: int | None) -> None:
    PROVIDER_REQUESTS.labels(service, f"{status // 100}xx" if status else "error").inc()


def sync_done(provider: str, seconds: float, reason: str | None) -> None:
    """Record one sync; ``reason`` is None when it succeeded."""
    SYNCS.labels(provider, "ok" if reason is None else "error").inc()
    SYNC_SECONDS.labels(provider).observe(seconds)
    if reason is not None:
        SYNC_ERRORS.labels(provider, reason).inc()


_QUEUE_SQL = """
SELECT j.queue_name, j.status::text, count(*),
       max(extract(epoch FROM now() - coalesce(j.scheduled_at, e.at)))
         FILTER (WHERE j.status = 'todo' AND coalesce(j.scheduled_at, e.at) <= now())
FROM procrastinate_jobs j
LEFT JOIN procrastinate_events e ON e.job_id = j.id AND e.type = 'deferred'
WHERE j.status IN ('todo', 'doing')
GROUP BY 1, 2
"""


async def read_queue(connection: Any) -> None:
    """Set the queue gauges from the database (``connection``: an async SQLAlchemy one)."""
    from sqlalchemy import text

    rows = (await connection.execute(text(_QUEUE_SQL))).all()
    QUEUE_JOBS.clear()
    QUEUE_OLDEST.clear()
    # An empty queue shows zeros, so alerts on these series never see them vanish.
    for queue in ("sync", "periodic"):
        QUEUE_OLDEST.labels(queue).set(0)
        for status in ("todo", "doing"):
            QUEUE_JOBS.labels(queue, status).set(0)
    for queue, status, count, oldest in rows:
        QUEUE_JOBS.labels(queue, status).set(count)
        if status == "todo":
            QUEUE_OLDEST.labels(queue).set(float(oldest or 0))


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    return _generate(REGISTRY), CONTENT_TYPE_LATEST
