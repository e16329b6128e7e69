"""The interface every calendar provider implements, and the errors it may raise.

Providers speak in ``crmcal.model`` types. Writes carry preconditions so that a
retry after a crash can never duplicate or overwrite blindly: ``create`` is
idempotent for a given ``key`` (the provider derives the event's id or UID from
it), ``update`` and ``delete`` name the version they expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from crmcal.model import CalendarEvent, CalendarInfo, ChangeListing, RemoteRef


class ProviderError(Exception):
    """Base class; ``str(error)`` is fit to show to the user."""


class AuthenticationFailed(ProviderError):
    """The credentials are wrong, expired or revoked: the user must act."""


class Unreachable(ProviderError):
    """The server could not be reached or answered with a server error; retry later."""


class NotACalendarServer(ProviderError):
    """The server answered, but not as a calendar server of this protocol."""


class CalendarNotFound(ProviderError):
    pass


class PreconditionFailed(ProviderError):
    """The event changed (or exists) since the version the write named."""


class EventNotFound(ProviderError):
    pass


class Provider(Protocol):
    """One account at one calendar service, bound to credentials."""

    async def list_calendars(self) -> list[CalendarInfo]:
        """Every calendar of the account, with whether the account may write it."""
        ...

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        """Events changed since ``cursor``; a full listing when it is None or expired.

        Items may come without content (``RemoteRef.event`` None): fetch those
        whose version differs from the one already known. ``with_contents`` says
        the caller will need nearly every item (a first import): a provider that
        can list contents as cheaply as versions should then include them.
        """
        ...

    async def fetch(self, calendar_id: str, ids: Sequence[str]) -> list[RemoteRef]:
        """The current content of events, batched; ids that no longer exist are left out."""
        ...

    async def get_by_key(self, calendar_id: str, key: str) -> RemoteRef | None:
        """The event ``create`` made for ``key``, if it exists."""
        ...

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        """Create the event whose identity derives from ``key``.

        Raises PreconditionFailed when that event exists already.
        """
        ...

    async def update(
        self, calendar_id: str, event_id: str, etag: str, event: CalendarEvent
    ) -> RemoteRef:
        """Replace the event if it is still at ``etag``; returns its new version."""
        ...

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        """Delete the event if it is still at ``etag`` (any version when None).

        An event that is already gone is not an error.
        """
        ...

    async def close(self) -> None: ...


# Errors that say the whole account or server is unusable right now, not one event.
FATAL = (AuthenticationFailed, Unreachable, NotACalendarServer, CalendarNotFound)


async def create_many(
    provider: Provider, calendar_id: str, items: Sequence[tuple[str, CalendarEvent]]
) -> list[RemoteRef | ProviderError]:
    """Create many events: in batch requests where the provider has them (a
    ``create_many`` method of the same shape), one by one otherwise.

    Each item answers on its own with its event or its error; after an error of the
    ``FATAL`` kinds the remaining items are not tried and answer that error.
    """
    batched = getattr(provider, "create_many", None)
    if batched is not None:
        return list(await batched(calendar_id, items))
    results: list[RemoteRef | ProviderError] = []
    for key, event in items:
        try:
            results.append(await provider.create(calendar_id, key, event))
        except FATAL as failure:
            return results + [failure] * (len(items) - len(results))
        except ProviderError as failure:
            results.append(failure)
    return results
