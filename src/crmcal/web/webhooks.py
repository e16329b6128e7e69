"""Where calendar providers push: ``POST /webhooks/google``.

A notification only says "something changed": it is checked (our channel, its
secret token), answered at once, and turned into a sync request for that
connection, which the scheduler runs soon and coalesces with others. Duplicate
or out-of-order notifications cost at most one extra incremental sync.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from crmcal.sync import push
from crmcal.web.deps import database, request_sync

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post("/google", status_code=200)
async def google(request: Request) -> Response:
    """Google Calendar push notifications (watch channels)."""
    channel_id = request.headers.get("x-goog-channel-id", "")
    token = request.headers.get("x-goog-channel-token")
    state = request.headers.get("x-goog-resource-state", "")
    connection_id = await push.connection_for(database(request), "google", channel_id, token)
    if connection_id is None:
        # Not a channel of ours (any more): Google stops retrying on a 4xx.
        return Response(status_code=404)
    if state != "sync":  # the first message only confirms the channel
        request_sync(request, connection_id)
    return Response(status_code=200)
