"""Where calendar providers push: ``POST /webhooks/google`` and ``/webhooks/microsoft``.

A notification only says "something changed": it is checked (our channel, its
secret), turned into a sync request for that connection (on the distributed
queue: a stored job, one per connection however many notifications come) and
answered; the sync runs elsewhere. Duplicate or
out-of-order notifications cost at most one extra incremental sync.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from crmcal.sync import push
from crmcal.web.deps import database, enqueue_sync

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post(
    "/google",
    status_code=200,
    name="google_webhook",
    response_class=Response,
    responses={404: {"description": "Not a channel of crmcal's (any more)."}},
)
async def google(request: Request) -> Response:
    """Google Calendar push notifications (watch channels)."""
    channel_id = request.headers.get("x-goog-channel-id", "")
    token = request.headers.get("x-goog-channel-token")
    state = request.headers.get("x-goog-resource-state", "")
    resource_id = request.headers.get("x-goog-resource-id", "")
    # crmcal's channel ids are 32 hex digits, Google's resource ids and states short
    # words: anything else is no notification of ours, refused before any lookup (a NUL
    # would even fail the database's text comparison). X-Goog-Message-Number is unused.
    if not (_plain(channel_id, 64) and _plain(state, 64) and _plain(resource_id, 500)):
        return Response(status_code=400)
    connection_id = await push.connection_for(
        database(request), "google", channel_id, token, resource_id
    )
    if connection_id is None:
        # Not a channel of ours (any more): Google stops retrying on a 4xx.
        return Response(status_code=404)
    if state != "sync":  # the first message only confirms the channel
        await enqueue_sync(request, connection_id)
    return Response(status_code=200)


# Printable ASCII without spaces: what ids and tokens of either service are made of.
_PLAIN = re.compile(r"[!-~]*")


def _plain(value: str, limit: int) -> bool:
    return len(value) <= limit and _PLAIN.fullmatch(value) is not None


MAX_NOTIFICATION_BYTES = 1_000_000
# Graph's validation tokens are a few hundred characters; a longer one is not Graph's.
MAX_VALIDATION_TOKEN = 1000
# The echo is data, never a page: no browser may sniff it into HTML or run it.
_ECHO_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}
# Graph batches at most a few hundred notifications per request.
MAX_NOTIFICATIONS = 1000
NOTIFICATIONS = {
    "type": "object",
    "required": ["value"],
    "properties": {"value": {"type": "array", "items": {}}},
    "description": "Graph's change notifications; without `validationToken` only.",
}


@router.post(
    "/microsoft",
    status_code=202,
    name="microsoft_webhook",
    response_class=Response,
    responses={
        200: {
            "description": "With `validationToken`: the token, echoed.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        400: {
            "description": "The body is not JSON with a `value` list, or the "
            "`validationToken` is longer than 1000 characters."
        },
        413: {"description": "The body is larger than the limit, or has too many items."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": NOTIFICATIONS}},
        }
    },
)
async def microsoft(request: Request) -> Response:
    """Microsoft Graph change and lifecycle notifications (subscriptions).

    Graph first checks the address with ``?validationToken=``, which is answered
    with the token as plain text (never sniffed as a page; a token too long to be
    Graph's is refused). A notification counts only when its
    ``clientState`` is the subscription's secret. ``missed`` asks for a sync (the
    delta finds what was missed); ``reauthorizationRequired`` has the next sync
    renew the subscription; ``subscriptionRemoved`` has it subscribe again.
    """
    token = request.query_params.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN:
            return Response(status_code=400)
        return PlainTextResponse(token, status_code=200, headers=_ECHO_HEADERS)
    raw = await request.body()
    if len(raw) > MAX_NOTIFICATION_BYTES:
        return Response(status_code=413)
    try:
        items: Any = json.loads(raw).get("value")
    except (ValueError, AttributeError, RecursionError):  # deep nesting: RecursionError
        return Response(status_code=400)
    if not isinstance(items, list):
        return Response(status_code=400)
    if len(items) > MAX_NOTIFICATIONS:
        return Response(status_code=413)
    # Duplicates collapse: one lookup for every (subscription, secret), one action each.
    events = _by_subscription(items)
    db = database(request)
    found = await push.connections_by_resource(db, "microsoft", set(events))
    for key, connection_id in found.items():
        if "subscriptionRemoved" in events[key]:
            await push.renew_soon(db, connection_id, gone=True)
        elif "reauthorizationRequired" in events[key]:
            await push.renew_soon(db, connection_id)
        await enqueue_sync(request, connection_id)
    return Response(status_code=202)


def _by_subscription(items: list[Any]) -> dict[tuple[str, str], set[str]]:
    """The notifications' lifecycle events by (subscription id, clientState). An item
    without a subscription id that could be one (a string of printable characters, as
    long as a stored one at most) is skipped: it names no subscription of crmcal's."""
    events: dict[tuple[str, str], set[str]] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        subscription, secret = item.get("subscriptionId"), item.get("clientState")
        if not isinstance(subscription, str) or not _plain(subscription, 500):
            continue
        key = (subscription, secret if isinstance(secret, str) else "")
        event = item.get("lifecycleEvent")
        events.setdefault(key, set()).add(event if isinstance(event, str) else "")
    return events
