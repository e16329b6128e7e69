"""Push notifications as Google sends them: ``events.watch`` channels and their messages.

A channel watches one calendar and POSTs an empty body to its address: first a
``sync`` message (number 1), then ``exists`` on every change, with the
``X-Goog-*`` headers Google sends (channel id and token, resource id, state,
message number, expiration). Channels expire (at most a week, as Google caps
them) and ``channels.stop`` ends one. Delivery runs in the background and never
holds up the API call that caused it. As at Google, a 500, 502, 503 or 504 answer
is tried again with exponential backoff, and so is an address that cannot be
reached or does not answer (within a minute: a busy receiver is not a failing
one); any other answer ends the message's delivery.
Unlike Google, plain ``http://`` addresses on loopback are accepted, for the
demo and tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx

from crmcal.emulators.google.errors import GoogleError, invalid, not_found
from crmcal.tasks import cancel_all_and_wait
from crmcal.tls import tls

MAX_LIFETIME = dt.timedelta(days=7)
# A message's delivery: this many tries, the first pause DELIVERY_BACKOFF seconds and
# each next one twice as long, each try given DELIVERY_TIMEOUT seconds to be answered.
DELIVERY_ATTEMPTS = 6
DELIVERY_BACKOFF = 0.5
DELIVERY_TIMEOUT = 60.0
RETRIED = frozenset({500, 502, 503, 504})


@dataclass
class Channel:
    id: str
    resource_id: str
    calendar_id: str
    account: str
    address: str
    token: str | None
    expiration: dt.datetime
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))


class Channels:
    def __init__(self) -> None:
        self.by_id: dict[str, Channel] = {}
        self.delivered: list[dict[str, Any]] = []  # what was POSTed, for tests
        # Messages waiting, by channel, each channel with a worker of its own while it
        # has some: a channel's messages go out in order (their numbers say so), and
        # an address that does not answer holds up no other channel, as at Google.
        self._pending: dict[str, list[str]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def watch(
        self, body: dict[str, Any], *, calendar_id: str, account: str, now: dt.datetime,
        resource_uri: str,
    ) -> dict[str, Any]:  # fmt: skip
        channel_id = body.get("id")
        if not isinstance(channel_id, str) or not 1 <= len(channel_id) <= 64:
            raise invalid("Channel id must be 1 to 64 characters.", location="id")
        if channel_id in self.by_id:
            raise GoogleError(400, "channelIdNotUnique", "Channel id not unique.")
        if body.get("type") not in ("web_hook", "webhook"):
            raise invalid("Unsupported channel type.", location="type")
        address = body.get("address")
        if not isinstance(address, str) or not address.startswith(("https://", "http://")):
            raise invalid("WebHook callback must be HTTPS.", location="address")
        expiration = now + MAX_LIFETIME
        if body.get("expiration"):
            try:
                wanted = dt.datetime.fromtimestamp(int(body["expiration"]) / 1000, dt.UTC)
            except (TypeError, ValueError, OverflowError):
                raise invalid("Invalid expiration.", location="expiration") from None
            expiration = min(expiration, wanted)
        channel = Channel(
            id=channel_id,
            resource_id=secrets.token_urlsafe(18),
            calendar_id=calendar_id,
            account=account,
            address=address,
            token=body.get("token") if isinstance(body.get("token"), str) else None,
            expiration=expiration,
        )
        self.by_id[channel_id] = channel
        self._send(channel, "sync")
        answer = {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": resource_uri,
            "expiration": str(int(channel.expiration.timestamp() * 1000)),
        }
        if channel.token is not None:
            answer["token"] = channel.token
        return answer

    def stop(self, body: dict[str, Any], account: str) -> None:
        channel = self.by_id.get(str(body.get("id")))
        if channel is None or channel.resource_id != body.get("resourceId"):
            raise not_found()
        if channel.account != account:
            raise GoogleError(403, "forbidden", "Channel belongs to another user.")
        del self.by_id[channel.id]

    def changed(self, calendar_id: str, now: dt.datetime) -> None:
        """A change in ``calendar_id``: an ``exists`` message on each live channel watching it."""
        for channel in list(self.by_id.values()):
            if channel.calendar_id != calendar_id:
                continue
            if channel.expiration <= now:
                del self.by_id[channel.id]  # expired: Google just stops sending
                continue
            self._send(channel, "exists")

    def _send(self, channel: Channel, state: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (state driven directly): nothing to deliver with
        self._pending.setdefault(channel.id, []).append(state)
        worker = self._workers.get(channel.id)
        if worker is None or worker.done():
            self._workers[channel.id] = loop.create_task(self._deliver_pending(channel))

    async def _deliver_pending(self, channel: Channel) -> None:
        async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT, verify=tls()) as http:
            while True:
                waiting = self._pending.get(channel.id)
                if not waiting:
                    # No await between this look and leaving: a later message finds
                    # no worker and starts one.
                    self._pending.pop(channel.id, None)
                    self._workers.pop(channel.id, None)
                    return
                await self._deliver(http, channel, waiting.pop(0))

    async def _deliver(self, http: httpx.AsyncClient, channel: Channel, state: str) -> None:
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Message-Number": str(next(channel.numbers)),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": state,
            "X-Goog-Resource-URI": f"https://www.googleapis.com/calendar/v3/calendars/"
            f"{channel.calendar_id}/events?alt=json",
            "X-Goog-Channel-Expiration": email.utils.format_datetime(
                channel.expiration, usegmt=True
            ),
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            status: int | None = None
            error: str | None = None
            try:
                response = await http.post(channel.address, headers=headers, content=b"")
                status = response.status_code
            except httpx.TimeoutException:
                error = "timeout"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            self.delivered.append({"channel": channel.id, "state": state, "status": status,
                                   "attempt": attempt, "error": error})  # fmt: skip
            if status is not None and status not in RETRIED:
                return
            if attempt < DELIVERY_ATTEMPTS:
                await asyncio.sleep(DELIVERY_BACKOFF * 2 ** (attempt - 1))

    async def close(self) -> None:
        workers = list(self._workers.values())
        await cancel_all_and_wait(workers)
