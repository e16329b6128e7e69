"""Graph's change notifications for one mailbox: a subscription to a calendar's event
changes made, renewed and removed, and the subscriptions a create whose answer was lost
may have made found again and removed (Graph cannot tell a second POST of the same
subscription from a new one)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from urllib.parse import quote

from crmcal.providers.base import AnswerLost, EventNotFound, ProviderError
from crmcal.providers.kept_http import ONCE
from crmcal.providers.microsoft_graph import Graph, iso
from crmcal.providers.timestamps import parse_timestamp

__all__ = ["SUBSCRIPTION_LIFETIME", "Subscriptions"]

log = logging.getLogger(__name__)
# Below Graph's limit for event subscriptions (10,080 minutes); renewed a day ahead.
SUBSCRIPTION_LIFETIME = dt.timedelta(days=6)


class Subscriptions:
    """The subscriptions of one mailbox, through its ``Graph``."""

    def __init__(self, graph: Graph) -> None:
        self._graph = graph
        self._api = graph.api

    async def subscribe(
        self, calendar_id: str, address: str, client_state: str, expires: dt.datetime
    ) -> tuple[str, dt.datetime]:
        """A subscription to the calendar's event changes: (its id, its expiry)."""
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": address,
            "lifecycleNotificationUrl": address,
            "resource": f"/me/calendars/{calendar_id}/events",
            "expirationDateTime": iso(expires),
            "clientState": client_state,
        }
        # Graph cannot tell a second POST of the same subscription from a new one: one
        # whose answer was lost, or was a 5xx (Graph, or a gateway before it, may fail
        # after making it), is not sent again blindly. The subscription it may have
        # made (known by its clientState, a secret of its own) is removed, then one more
        # is asked for.
        for attempt in range(2):
            try:
                response = await self._graph.request(
                    "POST", "/subscriptions", json=body, extensions={ONCE: True}
                )
            except AnswerLost:
                await self._remove_unseen(body)
                if attempt:
                    raise
                continue
            if response.status_code not in (200, 201):
                raise self._api.failure(response, "subscribing to changes")
            data = self._api.json(response)
            return str(data["id"]), _parse_time(data["expirationDateTime"])
        raise AnswerLost("no answer to subscribing to changes")  # pragma: no cover

    async def _remove_unseen(self, body: dict[str, Any]) -> None:
        """Delete the subscriptions a POST of ``body`` whose answer was lost made."""
        url: str | None = "/subscriptions"
        unseen: list[str] = []
        seen: set[str] = set()
        while url:
            response = await self._graph.request("GET", url)
            if response.status_code != 200:
                raise self._api.failure(response, "listing subscriptions")
            data = self._api.json(response)
            for item in data.get("value") or []:
                if (
                    isinstance(item, dict)
                    and item.get("clientState") == body["clientState"]
                    and item.get("notificationUrl") == body["notificationUrl"]
                ):
                    unseen.append(str(item["id"]))
            url = self._graph.next_link(data, seen)
        for subscription_id in unseen:
            log.info("removing the subscription %s whose creation was not answered",
                     subscription_id)  # fmt: skip
            await self.unsubscribe(subscription_id)

    async def renew(self, subscription_id: str, expires: dt.datetime) -> dt.datetime:
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        response = await self._graph.request(
            "PATCH", path, json={"expirationDateTime": iso(expires)}
        )
        if response.status_code == 404:
            raise EventNotFound(f"the subscription {subscription_id} is gone")
        if response.status_code != 200:
            raise self._api.failure(response, "renewing a subscription")
        return _parse_time(self._api.json(response)["expirationDateTime"])

    async def unsubscribe(self, subscription_id: str) -> None:
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        response = await self._graph.request("DELETE", path)
        if response.status_code not in (200, 204, 404):
            raise self._api.failure(response, "removing a subscription")


def _parse_time(text: Any) -> dt.datetime:
    found = parse_timestamp(text)
    if found is None:
        raise ProviderError(f"Microsoft Graph answered an unreadable time {text!r}")
    return found
