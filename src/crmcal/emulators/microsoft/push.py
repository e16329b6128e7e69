"""Change notifications as Graph sends them: ``/v1.0/subscriptions`` and webhooks.

A subscription watches the events of a whole mailbox (``/me/events``,
``/users/{id or address}/events``) or of one calendar (``/me/calendar/events``,
``/me/calendars/{id}/events`` and their ``/users/...`` forms) for the change
types it names. Before it is made, its ``notificationUrl`` (and its
``lifecycleNotificationUrl``) is validated as Graph does: a POST to
``?validationToken=<url-encoded token>`` that must be answered 200,
``text/plain``, with the decoded token as the body, within ten seconds; else
the create answers 400 ``ValidationError`` and nothing is made.

Every event change (the state's listeners) becomes a change notification for
each live subscription it matches, POSTed as ``{"value": [...]}``: the
resource (``Users/{user id}/Events/{id}``), ``resourceData`` with the id and
``@odata.etag``, the ``clientState`` and the tenant. Ids are immutable ones when
the subscription was created with ``Prefer: IdType="ImmutableId"``, as at
Graph. A 2xx answer delivers; anything else, or no answer within three seconds,
is tried again after a doubling pause, and after the last attempt given up on —
then a ``missed`` lifecycle notification follows when the subscription has a
lifecycle URL. Each subscription delivers in order on queues of its own (one
for change, one for lifecycle notifications), so an address that does not
answer holds up nothing else. Notifications waiting together go in one POST
(ten at most), as Graph batches them.

Subscriptions live at most 10,080 minutes (further answers 400 with Graph's
"Subscription expiration can only be 10080 minutes in the future."; under 45
minutes is raised to 45), are renewed with ``PATCH``, and once expired deliver
nothing and are gone. Lifecycle notifications (``missed``,
``reauthorizationRequired``, ``subscriptionRemoved``) are also sent on demand
through the admin API. Unlike Graph, plain ``http://`` addresses on loopback are
accepted, for the demo and tests; timeouts, attempts and pauses are settings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmcal.emulators.microsoft import times
from crmcal.emulators.microsoft.calls import answer, body_of, call, client_id, state_of
from crmcal.emulators.microsoft.errors import GraphError, bad_request
from crmcal.emulators.microsoft.model import Change, Mailbox
from crmcal.emulators.microsoft.store import TENANT_ID, MicrosoftState
from crmcal.tasks import cancel_all_and_wait
from crmcal.tls import tls

V1 = "/v1.0"
MAX_LIFETIME = dt.timedelta(minutes=10_080)
MIN_LIFETIME = dt.timedelta(minutes=45)
MAX_CLIENT_STATE = 128
MAX_PER_MAILBOX = 1000  # active Outlook subscriptions per mailbox, all apps together
MAX_PER_POST = 10
MAX_RECORDS = 10_000  # deliveries kept for the admin API, the newest
CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("missed", "reauthorizationRequired", "subscriptionRemoved")
TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Every property msgraph-sdk's Subscription model has: others make the body unreadable.
_PROPERTIES = frozenset(
    {
        "@odata.type",
        "id",
        "applicationId",
        "changeType",
        "clientState",
        "creatorId",
        "encryptionCertificate",
        "encryptionCertificateId",
        "expirationDateTime",
        "includeResourceData",
        "latestSupportedTlsVersion",
        "lifecycleNotificationUrl",
        "notificationQueryOptions",
        "notificationUrl",
        "notificationUrlAppId",
        "resource",
        "vapidPublicKey",
        "webPushEncryptionP256dhPublicKey",
        "webPushEncryptionSecret",
    }
)
_RESOURCE = re.compile(
    r"/?(?:me|users/(?P<user>[^/()']+)|users\('(?P<quoted_user>[^']+)'\))"
    r"(?:/(?P<default>calendar)|/calendars/(?P<calendar>[^/()']+)"
    r"|/calendars\('(?P<quoted_calendar>[^']+)'\))?/events/?",
    re.IGNORECASE,
)
_SETTINGS = {
    # name: (default, minimum, maximum, integer?)
    "validation_timeout": (10.0, 0.01, 60.0, False),
    "notification_timeout": (3.0, 0.01, 60.0, False),
    "notification_attempts": (4, 1, 20, True),
    "notification_backoff": (0.5, 0.0, 600.0, False),
}


# --- errors, as Graph words them -----------------------------------------------------


def invalid_request(message: str) -> GraphError:
    return GraphError(400, "InvalidRequest", message)


def unreadable() -> GraphError:
    return invalid_request(
        "Could not process subscription creation payload. Are all property names spelled "
        "and camelCased properly?"
    )


def extension_error(operation: str, status: int, reason: str) -> GraphError:
    """Outlook's errors behind ``/subscriptions`` come wrapped this way."""
    name = http.HTTPStatus(status).phrase.replace(" ", "")
    return GraphError(
        status,
        "ExtensionError",
        f"Operation: {operation}; Exception: [Status Code: {name}; Reason: {reason}]",
    )


def validation_error(message: str | None = None) -> GraphError:
    return GraphError(
        400,
        "ValidationError",
        message
        or "Subscription validation request failed. Notification endpoint must respond with "
        "200 OK to validation request.",
    )


def missing() -> GraphError:
    return GraphError(404, "ResourceNotFound", "The object was not found.")


# --- subscriptions --------------------------------------------------------------------


@dataclass
class Subscription:
    id: str
    resource: str  # as the client wrote it
    mailbox: str  # the address
    user_id: str
    calendar_id: str | None  # None: every calendar of the mailbox
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: dt.datetime
    application_id: str | None  # the token's client id: subscriptions belong to an app
    tls_version: str
    immutable_ids: bool  # created with Prefer: IdType="ImmutableId"
    notification_url_app_id: str | None = None
    reauthorization_required: bool = False

    def body(self) -> dict[str, Any]:
        """The subscription as Graph answers it."""
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": times.timestamp(self.expiration),
            "creatorId": self.user_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": self.tls_version,
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": self.notification_url_app_id,
        }


@dataclass
class _Queue:
    """What one subscription has waiting for one address, and the task sending it."""

    url: str
    messages: deque[dict[str, Any]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


def _address(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid_request(f"{name} is a required property for subscription creation.")
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or not parts.hostname:
        raise invalid_request(f"{name} is not a valid URL: {url}")
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK):
        return url
    raise invalid_request(f"{name} must use the HTTPS protocol: {url}")


def _change_types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, str) or not value.strip():
        raise invalid_request("changeType is a required property for subscription creation.")
    found: list[str] = []
    for piece in value.split(","):
        name = piece.strip()
        if name not in CHANGE_TYPES:
            raise invalid_request(
                f"'{name}' is not a valid changeType: use created, updated and deleted, "
                "separated by commas."
            )
        if name not in found:
            found.append(name)
    return tuple(found)


def _instant(value: Any, operation: str) -> dt.datetime:
    if not isinstance(value, str) or not value.strip():
        what = "creation" if operation == "Create" else "update"
        raise invalid_request(f"expirationDateTime is a required property for subscription {what}.")
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise unreadable() from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


class Subscriptions:
    """Every subscription of a state, their deliveries, and the settings for both."""

    def __init__(self, state: MicrosoftState) -> None:
        self.state = state
        self.by_id: dict[str, Subscription] = {}
        # Every validation request and delivery attempt, oldest first, for the admin API.
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self.validation_timeout = float(_SETTINGS["validation_timeout"][0])
        self.notification_timeout = float(_SETTINGS["notification_timeout"][0])
        self.notification_attempts = int(_SETTINGS["notification_attempts"][0])
        self.notification_backoff = float(_SETTINGS["notification_backoff"][0])
        # (subscription id, "change" | "lifecycle") -> its queue, while it has one.
        self._queues: dict[tuple[str, str], _Queue] = {}

    # --- settings (an extension of the state's) ---------------------------------------

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SETTINGS}

    def check(self, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            _, low, high, integer = _SETTINGS[name]
            kinds = int if integer else int | float
            if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
                kind = "an integer" if integer else "seconds"
                raise bad_request(f"{name}: {kind} from {low:g} to {high:g}")

    def apply(self, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            setattr(self, name, value if _SETTINGS[name][3] else float(value))

    # --- the API's operations --------------------------------------------------------

    def prepared(
        self, mailbox: Mailbox, client_id: str | None, immutable_ids: bool, raw: Any
    ) -> Subscription:
        """A new subscription from a POST body, checked but neither validated nor kept."""
        if not isinstance(raw, dict) or set(raw) - _PROPERTIES:
            raise unreadable()
        for name, value in raw.items():
            if name != "includeResourceData" and value is not None and not isinstance(value, str):
                raise unreadable()
        if raw.get("includeResourceData") not in (None, False):
            raise invalid_request(
                "The emulator sends no resource data: includeResourceData must be false."
            )
        change_types = _change_types(raw.get("changeType"))
        notification_url = _address(raw.get("notificationUrl"), "notificationUrl")
        lifecycle = raw.get("lifecycleNotificationUrl")
        lifecycle_url = _address(lifecycle, "lifecycleNotificationUrl") if lifecycle else None
        resource = raw.get("resource")
        if not isinstance(resource, str) or not resource.strip():
            raise invalid_request("resource is a required property for subscription creation.")
        calendar_id = self._calendar(mailbox, resource.strip())
        expiration = self._expiration(raw.get("expirationDateTime"), "Create")
        client_state = raw.get("clientState")
        if client_state is not None and len(client_state) > MAX_CLIENT_STATE:
            raise invalid_request(
                f"clientState must be at most {MAX_CLIENT_STATE} characters long."
            )
        tls = raw.get("latestSupportedTlsVersion") or "v1_2"
        if tls not in TLS_VERSIONS:
            raise invalid_request(
                f"latestSupportedTlsVersion must be one of {', '.join(TLS_VERSIONS)}."
            )
        self.drop_expired()
        if sum(s.mailbox == mailbox.email for s in self.by_id.values()) >= MAX_PER_MAILBOX:
            raise extension_error(
                "Create",
                403,
                f"The mailbox has reached its limit of {MAX_PER_MAILBOX} active subscriptions.",
            )
        return Subscription(
            id=str(uuid.uuid4()),
            resource=resource.strip(),
            mailbox=mailbox.email,
            user_id=mailbox.user_id,
            calendar_id=calendar_id,
            change_types=change_types,
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            client_state=client_state,
            expiration=expiration,
            application_id=client_id,
            tls_version=tls,
            immutable_ids=immutable_ids,
            notification_url_app_id=raw.get("notificationUrlAppId"),
        )

    def _calendar(self, mailbox: Mailbox, resource: str) -> str | None:
        """The calendar a resource path names (None: all of the mailbox's), or Graph's 400."""
        match = _RESOURCE.fullmatch(resource)
        if match is None:
            raise extension_error(
                "Create", 400, f"The resource '{resource}' is not supported for subscriptions."
            )
        user = match.group("user") or match.group("quoted_user")
        if user is not None and user.lower() not in (mailbox.user_id.lower(), mailbox.email):
            # Delegated access reaches only the signed-in user's mailbox.
            raise extension_error(
                "Create", 403, "Access is denied. Check credentials and try again."
            )
        if match.group("default"):
            return mailbox.default_calendar.id
        calendar_id = match.group("calendar") or match.group("quoted_calendar")
        if calendar_id is None:
            return None
        if calendar_id not in mailbox.calendars:
            raise extension_error("Create", 404, "The specified object was not found in the store.")
        return calendar_id

    def _expiration(self, value: Any, operation: str) -> dt.datetime:
        wanted = _instant(value, operation)
        now = self.state.clock()
        if wanted - now > MAX_LIFETIME:
            minutes = int(MAX_LIFETIME.total_seconds() // 60)
            raise GraphError(
                400,
                "ExtensionError",
                f"Subscription expiration can only be {minutes} minutes in the future.",
            )
        return max(wanted, now + MIN_LIFETIME)

    async def validate(self, url: str, subscription_id: str) -> None:
        """Graph's handshake: the address must echo the token, as plain text, in time."""
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()}"
        )
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token, safe='')}"
        status: int | None = None
        error: str | None = None
        try:
            async with httpx.AsyncClient(timeout=self.validation_timeout, verify=tls()) as client:
                response = await client.post(
                    target, headers={"Content-Type": "text/plain; charset=utf-8"}, content=b""
                )
            status = response.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        self._record("validation", subscription_id, url, 1, status, error, [])
        if error == "timeout":
            raise validation_error("Subscription validation request timed out.")
        if status is None:
            raise validation_error()
        if status != 200:
            try:
                name = http.HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
            except ValueError:
                name = str(status)
            raise validation_error(
                f"Subscription validation request failed. HTTP status code is '{name}'. "
                "Notification endpoint must respond with 200 OK to validation request."
            )
        plain = response.headers.get("content-type", "").split(";")[0].strip() == "text/plain"
        if not plain or response.text != token:
            raise validation_error()

    def add(self, subscription: Subscription) -> None:
        self.by_id[subscription.id] = subscription

    def mine(self, mailbox: Mailbox, client_id: str | None) -> list[Subscription]:
        """The live subscriptions this app made for this user (what Graph lists)."""
        self.drop_expired()
        return [
            s
            for s in self.by_id.values()
            if s.mailbox == mailbox.email and s.application_id == client_id
        ]

    def one(self, mailbox: Mailbox, client_id: str | None, subscription_id: str) -> Subscription:
        for subscription in self.mine(mailbox, client_id):
            if subscription.id == subscription_id:
                return subscription
        raise missing()

    def renew(self, subscription: Subscription, raw: Any) -> None:
        """A PATCH: only ``expirationDateTime`` changes, within the same limits."""
        if not isinstance(raw, dict):
            raise unreadable()
        others = sorted(set(raw) - {"expirationDateTime", "@odata.type"})
        if others:
            raise invalid_request(
                f"Only expirationDateTime can be updated, not {', '.join(others)}."
            )
        subscription.expiration = self._expiration(raw.get("expirationDateTime"), "Update")
        subscription.reauthorization_required = False  # renewing reauthorizes, as at Graph

    def remove(self, subscription: Subscription) -> None:
        """Gone: what it has waiting is never sent (lifecycle notifications still are)."""
        self.by_id.pop(subscription.id, None)

    def drop_expired(self) -> None:
        now = self.state.clock()
        for subscription in list(self.by_id.values()):
            if subscription.expiration <= now:
                self.remove(subscription)

    # --- notifications ---------------------------------------------------------------

    def changed(self, change: Change) -> None:
        """The listener: a change notification for each live subscription it matches."""
        now = self.state.clock()
        for subscription in list(self.by_id.values()):
            if subscription.mailbox != change.mailbox:
                continue
            if subscription.expiration <= now:
                self.remove(subscription)  # expired: Graph stops sending and deletes it
                continue
            if subscription.calendar_id not in (None, change.calendar_id):
                continue
            if change.change_type not in subscription.change_types:
                continue
            self._enqueue(
                subscription.id,
                "change",
                subscription.notification_url,
                self._notification(subscription, change),
            )

    def _notification(self, subscription: Subscription, change: Change) -> dict[str, Any]:
        event_id = change.event_id if subscription.immutable_ids else change.regular_id
        resource = f"Users/{subscription.user_id}/Events/{event_id}"
        data: dict[str, Any] = {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": resource,
        }
        if change.event.get("changeKey"):
            data["@odata.etag"] = f'W/"{change.event["changeKey"]}"'
        data["id"] = event_id
        return {
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": times.timestamp(subscription.expiration),
            "changeType": change.change_type,
            "resource": resource,
            "resourceData": data,
            "clientState": subscription.client_state,
            "tenantId": TENANT_ID,
        }

    def lifecycle(self, subscription: Subscription, event: str) -> dict[str, Any]:
        """A lifecycle notification, queued for the subscription's lifecycle URL."""
        if event not in LIFECYCLE_EVENTS:
            raise bad_request(f"event: one of {', '.join(LIFECYCLE_EVENTS)}")
        if subscription.lifecycle_url is None:
            raise bad_request(
                "the subscription has no lifecycleNotificationUrl, and Graph sends lifecycle "
                "notifications only there"
            )
        message = {
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": times.timestamp(subscription.expiration),
            "tenantId": TENANT_ID,
            "clientState": subscription.client_state,
            "lifecycleEvent": event,
        }
        self._enqueue(subscription.id, "lifecycle", subscription.lifecycle_url, message)
        if event == "reauthorizationRequired":
            subscription.reauthorization_required = True
        elif event == "subscriptionRemoved":
            self.remove(subscription)
        return message

    def _enqueue(self, subscription_id: str, channel: str, url: str, message: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # the state driven directly, with no server: nothing to deliver with
        key = (subscription_id, channel)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(url)
        queue.messages.append(message)
        worker = queue.worker
        if worker is None or worker.done() or worker.get_loop().is_closed():
            queue.worker = loop.create_task(self._drain(key, queue))

    async def _drain(self, key: tuple[str, str], queue: _Queue) -> None:
        """Send a queue's messages in order, a POST at a time, until it is empty."""
        subscription_id, channel = key
        async with httpx.AsyncClient(verify=tls()) as client:
            while True:
                subscription = self.by_id.get(subscription_id)
                if channel == "change" and subscription is None:
                    queue.messages.clear()  # deleted or expired: what waits is never sent
                if not queue.messages:
                    # No await between this look and leaving: a later message finds the
                    # queue gone (or the task done) and starts another.
                    if self._queues.get(key) is queue:
                        del self._queues[key]
                    return
                count = min(MAX_PER_POST, len(queue.messages))
                value = [queue.messages.popleft() for _ in range(count)]
                delivered = await self._post(client, key, queue.url, value)
                # Given up on: a live subscription says so where it hears of its life.
                if (
                    not delivered
                    and channel == "change"
                    and subscription is not None
                    and subscription.lifecycle_url
                    and subscription.id in self.by_id
                ):
                    self.lifecycle(subscription, "missed")

    async def _post(
        self, client: httpx.AsyncClient, key: tuple[str, str], url: str, value: list[Any]
    ) -> bool:
        """One POST of ``{"value": [...]}``, tried again until a 2xx or the last attempt."""
        subscription_id, channel = key
        kind = "notification" if channel == "change" else "lifecycle"
        content = httpx.Request("POST", url, json={"value": value}).content
        headers = {"Content-Type": "application/json; charset=utf-8"}
        for attempt in range(1, self.notification_attempts + 1):
            if channel == "change" and subscription_id not in self.by_id:
                return True  # deleted meanwhile: nothing is owed any more
            status: int | None = None
            error: str | None = None
            try:
                response = await client.post(
                    url, content=content, headers=headers, timeout=self.notification_timeout
                )
                status = response.status_code
            except httpx.TimeoutException:
                error = "timeout"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            self._record(kind, subscription_id, url, attempt, status, error, value)
            if status is not None and 200 <= status < 300:
                return True
            if attempt < self.notification_attempts:
                await asyncio.sleep(self.notification_backoff * 2 ** (attempt - 1))
        return False

    def _record(
        self,
        kind: str,
        subscription_id: str,
        url: str,
        attempt: int,
        status: int | None,
        error: str | None,
        value: list[Any],
    ) -> None:
        self.deliveries.append(
            {
                "kind": kind,
                "subscription_id": subscription_id,
                "url": url,
                "attempt": attempt,
                "status": status,
                "error": error,
                "value": value,
                "at": times.timestamp(self.state.clock()),
            }
        )

    async def close(self) -> None:
        """Stop the deliveries running on this event loop (the app shuts down)."""
        loop = asyncio.get_running_loop()
        workers = [
            q.worker
            for q in self._queues.values()
            if q.worker is not None and not q.worker.done() and q.worker.get_loop() is loop
        ]
        await cancel_all_and_wait(workers)

    def admin_view(self) -> dict[str, Any]:
        self.drop_expired()
        return {
            "subscriptions": [
                s.body()
                | {
                    "mailbox": s.mailbox,
                    "calendar_id": s.calendar_id,
                    "immutable_ids": s.immutable_ids,
                    "reauthorization_required": s.reauthorization_required,
                }
                for s in self.by_id.values()
            ],
            "deliveries": list(self.deliveries),
            # What is still to be sent: a queue lives while it has messages or one is on
            # its way, so an empty list means every notification so far was delivered or
            # given up on.
            "sending": [
                {
                    "subscription_id": subscription_id,
                    "kind": "notification" if channel == "change" else "lifecycle",
                    "waiting": len(queue.messages),
                }
                for (subscription_id, channel), queue in self._queues.items()
            ],
        }


def subscriptions_of(state: MicrosoftState) -> Subscriptions:
    """The state's subscriptions (made, and listening, on first use)."""
    found = state.extensions.get("push")
    if not isinstance(found, Subscriptions):
        found = Subscriptions(state)
        state.extensions["push"] = found
        state.listeners.append(found.changed)
    return found


def _subscriptions(request: Request) -> Subscriptions:
    return subscriptions_of(state_of(request))


router = APIRouter()


@router.post(V1 + "/subscriptions")
async def create(request: Request) -> Response:
    subscriptions = _subscriptions(request)
    found = call(request, "subscriptions.create")
    made = subscriptions.prepared(
        found.mailbox, client_id(request), found.prefs.immutable_ids, await body_of(request)
    )
    await subscriptions.validate(made.notification_url, made.id)
    if made.lifecycle_url is not None:
        await subscriptions.validate(made.lifecycle_url, made.id)
    subscriptions.add(made)
    body = {"@odata.context": found.context("subscriptions/$entity"), **made.body()}
    return answer(found, body, 201)


@router.get(V1 + "/subscriptions")
async def listing(request: Request) -> Response:
    subscriptions = _subscriptions(request)
    found = call(request, "subscriptions.list")
    items = [s.body() for s in subscriptions.mine(found.mailbox, client_id(request))]
    return answer(found, {"@odata.context": found.context("subscriptions"), "value": items})


@router.get(V1 + "/subscriptions/{subscription_id}")
async def get(request: Request, subscription_id: str) -> Response:
    subscriptions = _subscriptions(request)
    found = call(request, "subscriptions.get")
    one = subscriptions.one(found.mailbox, client_id(request), subscription_id)
    return answer(found, {"@odata.context": found.context("subscriptions/$entity"), **one.body()})


@router.patch(V1 + "/subscriptions/{subscription_id}")
async def update(request: Request, subscription_id: str) -> Response:
    subscriptions = _subscriptions(request)
    found = call(request, "subscriptions.update")
    one = subscriptions.one(found.mailbox, client_id(request), subscription_id)
    subscriptions.renew(one, await body_of(request))
    return answer(found, {"@odata.context": found.context("subscriptions/$entity"), **one.body()})


@router.delete(V1 + "/subscriptions/{subscription_id}")
async def delete(request: Request, subscription_id: str) -> Response:
    subscriptions = _subscriptions(request)
    found = call(request, "subscriptions.delete")
    subscriptions.remove(subscriptions.one(found.mailbox, client_id(request), subscription_id))
    return Response(status_code=204)


@router.post(V1 + "/subscriptions/{subscription_id}/reauthorize")
async def reauthorize(request: Request, subscription_id: str) -> Response:
    subscriptions = _subscriptions(request)
    found = call(request, "subscriptions.reauthorize")
    one = subscriptions.one(found.mailbox, client_id(request), subscription_id)
    one.reauthorization_required = False
    return Response(status_code=204)


# --- the admin API -----------------------------------------------------------------


@router.get("/_emulator/subscriptions")
async def admin_list(request: Request) -> Any:
    """Every live subscription, and every validation request and delivery attempt
    with the status it was answered (``null`` and an ``error`` when none)."""
    return _subscriptions(request).admin_view()


def _admin_one(request: Request, subscription_id: str) -> Subscription:
    subscriptions = _subscriptions(request)
    subscriptions.drop_expired()
    found = subscriptions.by_id.get(subscription_id)
    if found is None:
        raise missing()
    return found


@router.post("/_emulator/subscriptions/{subscription_id}/lifecycle")
async def admin_lifecycle(request: Request, subscription_id: str) -> Any:
    """``{"event": "missed"|"reauthorizationRequired"|"subscriptionRemoved"}``: that
    lifecycle notification goes to the subscription's lifecycle URL (which it must
    have); ``subscriptionRemoved`` removes the subscription too."""
    body = await body_of(request)
    event = body.get("event") if isinstance(body, dict) else None
    return _subscriptions(request).lifecycle(_admin_one(request, subscription_id), str(event))


@router.post("/_emulator/subscriptions/{subscription_id}/expire")
async def admin_expire(request: Request, subscription_id: str) -> Response:
    """The subscription expires now: it sends nothing more and is gone."""
    _subscriptions(request).remove(_admin_one(request, subscription_id))
    return Response(status_code=204)
