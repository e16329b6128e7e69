"""The interface every calendar provider implements, and the errors it may raise.

Providers speak in ``crmcal.model`` types. Writes carry preconditions so that a
retry after a crash can never duplicate or overwrite blindly: ``create`` is
idempotent for a given ``key`` (the provider derives the event's id or UID from
it), ``update`` and ``delete`` name the version they expect.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, cast

from crmcal.model import CalendarEvent, CalendarInfo, ChangeListing, RemoteRef


class ProviderError(Exception):
    """Base class; ``str(error)`` is fit to show to the user."""


class AuthenticationFailed(ProviderError):
    """The credentials are wrong, expired or revoked: the user must act."""


class Unreachable(ProviderError):
    """The server could not be reached or answered with a server error; retry later."""


class AnswerLost(Unreachable):
    """A request that makes something was sent, but its answer was lost: the service
    may have made it. Raised for requests the caller asked not to be repeated."""


class NotACalendarServer(ProviderError):
    """The server answered, but not as a calendar server of this protocol."""


class CalendarNotFound(ProviderError):
    pass


class PreconditionFailed(ProviderError):
    """The event changed (or exists) since the version the write named."""


class EventNotFound(ProviderError):
    pass


class WritesRefused(ProviderError):
    """The server refuses every write made over the version it gave (an unchanged
    event's update refused as changed): nothing can be changed there safely, so the
    sync stops and says why instead of taking each refusal for another client's edit."""


class ItemRefused(ProviderError):
    """The server refused this one item's write for good (a 400 to what was sent, a 403
    on that event, a CalDAV precondition such as ``valid-calendar-data``): the same
    write gets the same answer, so it is not sent again until something changes."""


class SeriesInCalendar(ProviderError):
    """The event is a recurring series in the calendar now: a write of a single event
    would flatten it, so none is made (until series are synced)."""


# Every part an RFC 5545 RRULE may have, and its frequencies.
RULE_PARTS = frozenset((
    "FREQ", "UNTIL", "COUNT", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY",
    "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST",
))  # fmt: skip
FREQUENCIES = frozenset(("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"))


@dataclass(frozen=True)
class Capabilities:
    """What a kind of calendar service can do: callers read this instead of probing
    a provider for methods or branching on its name."""

    # A series is one series there (a master with its rule, plus exceptions).
    series: bool = True
    # crmcal sends a CRM series there as one series (its master, with the trashed
    # occurrences as EXDATEs). Off, series are skipped and counted, never flattened.
    syncs_series: bool = False
    # The RRULE parts and frequencies it can hold, and the other series lines.
    rule_parts: frozenset[str] = RULE_PARTS
    frequencies: frozenset[str] = FREQUENCIES
    rdates: bool = True
    exrules: bool = True
    several_rrules: bool = True
    # One value per BYMONTHDAY / BYMONTH / BYSETPOS (Graph's patterns have one).
    single_day_of_month: bool = False
    # The most occurrences a numbered series may have.
    max_count: int | None = None
    # A cancelled occurrence of a series can be brought back (Graph cannot: a deleted
    # occurrence stays in the master's cancelledOccurrences).
    restores_occurrences: bool = True
    # It e-mails every attendee written to an event (no way to write them silently).
    mails_attendees: bool = False
    # Creates go out in batch requests (``create_many``).
    batch_creates: bool = False
    # Updates and deletes go out in batch requests (``update_many``, ``delete_many``).
    batch_changes: bool = False
    # A full listing with contents comes in parts as the server delivers them
    # (``list_changes_in_parts``), so that the caller can write the first while later
    # ones are still on their way.
    lists_in_parts: bool = False
    # It pushes change notifications (``watch`` / ``stop_watching``), and can renew a
    # channel in place (``renew_watch``) instead of opening another.
    push: bool = False
    renews_push: bool = False
    # What names a connection's account: the server's URL (CalDAV), the mailbox
    # address ``discover()`` answers (Microsoft), the primary calendar's id (Google).
    account_name: Literal["url", "mailbox", "primary_calendar"] = "url"


@dataclass(frozen=True)
class Update:
    """One update of ``update_many``: the arguments of ``Provider.update``."""

    event_id: str
    etag: str
    event: CalendarEvent
    changed: frozenset[str] | None = None
    # The caller saw the event at ``etag`` as a single event (not a series): a write
    # that names that version cannot land on a series, so no read need guard it.
    single: bool = False


class Provider(Protocol):
    """One account at one calendar service, bound to credentials."""

    capabilities: ClassVar[Capabilities]

    async def discover(self) -> str | None:
        """Check that the account answers; its mailbox address where
        ``capabilities.account_name`` is ``"mailbox"``, else None."""
        ...

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
        """The current content of events, batched; ids that no longer exist are left out.

        An id the service did not answer for (left out of a batch's answer, or
        answered with an error of its own) comes back with an ``error`` and ``retry``:
        not read is not gone.
        """
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
        self,
        calendar_id: str,
        event_id: str,
        etag: str,
        event: CalendarEvent,
        *,
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        """Change the event if it is still at ``etag``; returns its new version.

        Only the field groups named in ``changed`` (``model.FIELD_GROUPS``; all when
        None) are written: everything else stays as the calendar has it. Raises
        SeriesInCalendar when the event is a series and ``event`` is not.
        """
        ...

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        """Delete the event if it is still at ``etag`` (any version when None).

        An event that is already gone is not an error.
        """
        ...

    async def close(self) -> None: ...


class BatchCreating(Protocol):
    """What a provider whose capabilities say ``batch_creates`` has besides Provider's."""

    async def create_many(
        self, calendar_id: str, items: Sequence[tuple[str, CalendarEvent]]
    ) -> Sequence[RemoteRef | ProviderError]: ...


class BatchChanging(Protocol):
    """What a provider whose capabilities say ``batch_changes`` has besides Provider's."""

    async def update_many(
        self, calendar_id: str, items: Sequence[Update]
    ) -> Sequence[RemoteRef | ProviderError]: ...

    async def delete_many(
        self, calendar_id: str, items: Sequence[tuple[str, str | None]]
    ) -> Sequence[ProviderError | None]: ...


class ListingInParts(Protocol):
    """What a provider whose capabilities say ``lists_in_parts`` has besides Provider's."""

    def list_changes_in_parts(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> AsyncGenerator[ChangeListing, None]: ...


# Errors that say the whole account or server is unusable right now, not one event.
FATAL = (AuthenticationFailed, Unreachable, NotACalendarServer, CalendarNotFound, WritesRefused)


def findings(provider: object) -> tuple[str, ...] | None:
    """What a provider found out of its server in this run that the connection's user
    should know (shown as warnings of its status), by its ``findings()`` where it has
    one; None: nothing found out, so that what earlier runs said stands, and () when
    it found all well."""
    found = getattr(provider, "findings", None)
    return found() if callable(found) else None


async def create_many(
    provider: Provider, calendar_id: str, items: Sequence[tuple[str, CalendarEvent]]
) -> list[RemoteRef | ProviderError]:
    """Create many events: in batch requests where the provider has them (its
    capabilities say ``batch_creates``: a ``create_many`` method of the same shape),
    one by one otherwise.

    Each item answers on its own with its event or its error; after an error of the
    ``FATAL`` kinds the remaining items are not tried and answer that error.
    """
    if provider.capabilities.batch_creates:
        return list(await cast(BatchCreating, provider).create_many(calendar_id, items))
    results: list[RemoteRef | ProviderError] = []
    for key, event in items:
        try:
            results.append(await provider.create(calendar_id, key, event))
        except FATAL as failure:
            return results + [failure] * (len(items) - len(results))
        except ProviderError as failure:
            results.append(failure)
    return results


async def list_changes_in_parts(
    provider: Provider, calendar_id: str, cursor: str | None, *, with_contents: bool = False
) -> AsyncGenerator[ChangeListing, None]:
    """``Provider.list_changes`` in parts, each a ``ChangeListing`` of some of the items.

    Every part says the same ``full`` and ``cursor`` (a position read before any of
    the contents, so that what changes meanwhile is listed again next time); its
    ``changed`` and ``deleted`` are that part's items, and together the parts are
    one listing. An item is whole in its part (a series with its overrides, as
    ``list_changes`` gives it): a provider that assembles series across its pages
    delivers one part. A provider whose capabilities say ``lists_in_parts`` delivers parts
    as they arrive, with a bounded number on their way (a caller that stops reading
    stops the listing); any other answers its whole listing as one part.
    """
    if provider.capabilities.lists_in_parts:
        parts = cast(ListingInParts, provider).list_changes_in_parts(
            calendar_id, cursor, with_contents=with_contents
        )
        async with contextlib.aclosing(parts):
            async for part in parts:
                yield part
    else:
        yield await provider.list_changes(calendar_id, cursor, with_contents=with_contents)


async def update_many(
    provider: Provider, calendar_id: str, items: Sequence[Update]
) -> list[RemoteRef | ProviderError]:
    """Update many events: in batch requests where the provider has them (its
    capabilities say ``batch_changes``), one by one otherwise. Each item answers on
    its own, as ``create_many``'s do."""
    if provider.capabilities.batch_changes:
        return list(await cast(BatchChanging, provider).update_many(calendar_id, items))
    results: list[RemoteRef | ProviderError] = []
    for item in items:
        try:
            results.append(
                await provider.update(
                    calendar_id, item.event_id, item.etag, item.event, changed=item.changed
                )
            )
        except FATAL as failure:
            return results + [failure] * (len(items) - len(results))
        except ProviderError as failure:
            results.append(failure)
    return results


async def delete_many(
    provider: Provider, calendar_id: str, items: Sequence[tuple[str, str | None]]
) -> list[ProviderError | None]:
    """Delete many events (event id, expected version): in batch requests where the
    provider has them, one by one otherwise. Each item answers None or its error."""
    if provider.capabilities.batch_changes:
        return list(await cast(BatchChanging, provider).delete_many(calendar_id, items))
    results: list[ProviderError | None] = []
    for event_id, etag in items:
        try:
            await provider.delete(calendar_id, event_id, etag)
            results.append(None)
        except FATAL as failure:
            return results + [failure] * (len(items) - len(results))
        except ProviderError as failure:
            results.append(failure)
    return results
