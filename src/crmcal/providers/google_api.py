"""Google Calendar API v3 on the wire for one account: the request every call makes,
the paths of a calendar's events, batch requests, and the time zone each calendar
answered (an all-day or floating time is read in it). A listing that is led back to a
page token it already followed stops with an error instead of reading it for ever.

Rate limits (403 ``rateLimitExceeded``/``userRateLimitExceeded``, 429) and 5xx are
retried with truncated exponential backoff and jitter, then reported as
``Unreachable``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from crmcal.model import CalendarEvent
from crmcal.providers import google_batch
from crmcal.providers.api_client import ApiClient, ClientSettings, TokenSource, next_in_listing
from crmcal.providers.base import ProviderError
from crmcal.providers.kept_http import REPEATABLE

__all__ = ["BATCH_SIZE", "PAGE_SIZE", "GoogleApi", "next_page", "reason", "send_updates"]

PAGE_SIZE = 2500
# Calls per batch request: Google takes up to 1,000 but advises against large
# batches (each call still counts against the quota, and big ones get 429s).
BATCH_SIZE = 50
_RATE_LIMITS = {"rateLimitExceeded", "userRateLimitExceeded"}


class GoogleApi:
    """One account's requests to Google Calendar, through an ``ApiClient`` (``api``)."""

    def __init__(
        self,
        tokens: TokenSource,
        *,
        api_url: str,
        settings: ClientSettings,
    ) -> None:
        self.root = api_url.rstrip("/")
        self.base = self.root + "/calendar/v3"
        self.api = ApiClient(
            tokens, base_url=self.base, owner="Google", service="Google Calendar",
            reason=reason, retryable=_retryable, settings=settings,
        )  # fmt: skip
        # Each calendar's time zone, as its listing or the calendar list answered it.
        self.zones: dict[str, str] = {}

    def zone(self, calendar_id: str) -> str:
        return self.zones.get(calendar_id, "UTC")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        url: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        return await self.api.send(
            method, url or self.base + path, params=params, json=json, content=content,
            headers=headers, extensions=extensions,
        )  # fmt: skip

    @staticmethod
    def events(calendar_id: str, event_id: str | None = None) -> str:
        """The path of a calendar's events (or of one of them) below the API's base."""
        path = f"/calendars/{quote(calendar_id, safe='@.')}/events"
        return path + (f"/{quote(event_id, safe='')}" if event_id is not None else "")

    @staticmethod
    def call_path(calendar_id: str, event_id: str | None = None) -> str:
        """``events`` as a call of a batch names it: from the API's root."""
        return "/calendar/v3" + GoogleApi.events(calendar_id, event_id)

    async def send_all(
        self, calls: list[google_batch.Call]
    ) -> list[httpx.Response | ProviderError]:
        """Every call's answer, sent in batch requests of ``BATCH_SIZE`` (see
        ``ApiClient.send_parts``); a single call goes alone, without an envelope."""
        if len(calls) == 1:
            (call,) = calls
            repeatable = {REPEATABLE: _insert_with_id(call)}
            response = await self.request(call.method, "", url=self.root + call.path,
                                          params=call.params, json=call.body,
                                          headers=call.headers, extensions=repeatable)  # fmt: skip
            return [response]
        return await self.api.send_parts(calls, self._batch, size=BATCH_SIZE)

    async def _batch(self, calls: list[google_batch.Call]) -> list[httpx.Response | None]:
        content_type, body = google_batch.encode(calls)
        # Each call of a batch counts against the quotas as if sent alone.
        response = await self.api.send(
            "POST",
            self.root + "/batch/calendar/v3",
            content=body,
            headers={"Content-Type": content_type},
            cost=len(calls),
            extensions={REPEATABLE: all(_insert_with_id(call) for call in calls)},
        )
        if response.status_code != 200:
            raise self.api.failure(response, "sending a batch")
        return google_batch.decode(response, len(calls))

    async def close(self) -> None:
        await self.api.close()


def _retryable(response: httpx.Response) -> bool:
    if response.status_code in (429, 500, 502, 503, 504):
        return True
    return response.status_code == 403 and reason(response) in _RATE_LIMITS


def reason(response: httpx.Response) -> str:
    """The reason Google gave for an error (``error.errors[0].reason``), or ""."""
    try:
        errors = response.json()["error"]["errors"]
        return str(errors[0]["reason"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def next_page(data: Any, seen: set[str]) -> str | None:
    """The ``nextPageToken`` of a page (None at the end); one that comes back is an
    error, not a loop (``next_in_listing``)."""
    looping = "Google answered page tokens that lead back to each other"
    return next_in_listing(data, "nextPageToken", seen, looping)


def send_updates(event: CalendarEvent) -> dict[str, str]:
    """Whether Google mails the attendees of a write: only when the event asks for it."""
    return {"sendUpdates": "all" if event.notify_attendees else "none"}


def _insert_with_id(call: google_batch.Call) -> bool:
    """Whether ``call`` is an ``events.insert`` with a client-chosen id: sent twice, the
    second is answered 409 ``duplicate``, never a second event."""
    return (
        call.method == "POST"
        and call.path.split("?", 1)[0].endswith("/events")
        and isinstance(call.body, dict)
        and bool(call.body.get("id"))
    )
