"""Which writes make a series' occurrences in Google what crmcal's series says.

Google keeps a changed or cancelled occurrence as an exception of its own, an
instance ``{id}_{start}``: a changed occurrence is a PATCH of its instance, a
cancelled one a DELETE of it, and an exception the series no longer has is the
series' own occurrence again (patched back to the master's fields, or deleted when
the series leaves the date out). Occurrences already as wanted are not written. This
module plans those writes; sending them is ``google_series``'.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from crmcal.model import CalendarEvent, changed_fields, moment_key
from crmcal.providers import google_batch, google_events
from crmcal.providers.occurrences import occurrence_event

__all__ = ["OccurrenceCalls"]


class OccurrenceCalls:
    """The writes that make one series' occurrences in Google what an event says, each
    a call of its instance (``{id}_{start}``) with whether it names the series' etag
    rather than its own."""

    def __init__(
        self,
        path: str,
        params: dict[str, str],
        master: dict[str, Any],
        exceptions: list[dict[str, Any]],
        zone: str,
        changed: frozenset[str] | None,
    ) -> None:
        """``changed`` limits the writes to the changed occurrences ("overrides") and
        the cancelled ones ("recurrence"); None writes both."""
        self._live_too = changed is None or "overrides" in changed
        self._cancels_too = changed is None or "recurrence" in changed
        self._path = path
        self._params = params
        self._master = master
        self._zone = zone
        self._series = google_events.parse(master, default_zone=zone)
        assert self._series.recurrence is not None
        # The starts the series shows no occurrence at: its EXDATEs and the
        # occurrences cancelled (Google keeps those as exceptions of their own).
        self._left_out = {moment_key(m) for m in self._series.recurrence.exdates}
        self._existing: dict[str, dict[str, Any]] = {}
        for item in exceptions:
            if item.get("originalStartTime"):
                original = google_events.parse_moment(item["originalStartTime"], zone)
                self._existing[moment_key(original)] = item
                if item.get("status") == "cancelled":
                    self._left_out.add(moment_key(original))
        self._calls: list[tuple[google_batch.Call, bool]] = []

    def planned(self, event: CalendarEvent) -> list[tuple[google_batch.Call, bool]]:
        """The writes for ``event``: its overrides first, then the exceptions Google
        has that it no longer names."""
        wanted = {
            moment_key(o.recurrence_id): o for o in event.overrides if o.recurrence_id is not None
        }
        for key, override in wanted.items():
            if override.cancelled:
                if self._cancels_too:
                    self._cancel(key, override)
            elif self._live_too:
                self._change(event, key, override)
        exdates = {moment_key(m) for m in (event.recurrence.exdates if event.recurrence else ())}
        for key, there in self._existing.items():
            if key not in wanted and there.get("status") != "cancelled":
                self._restore(event, there, key in exdates)
        return self._calls

    def _cancel(self, key: str, override: CalendarEvent) -> None:
        """A cancelled occurrence: deleted, unless the series shows none there already."""
        assert override.recurrence_id is not None
        there = self._existing.get(key)
        live = there is not None and there.get("status") != "cancelled"
        if key not in self._left_out or live:
            self._delete(override.recurrence_id)

    def _change(self, event: CalendarEvent, key: str, override: CalendarEvent) -> None:
        """A changed occurrence: patched where Google does not have it so already (a
        cancelled one is brought back)."""
        assert override.recurrence_id is not None
        occurrence = occurrence_event(event, override)
        there = self._existing.get(key)
        if there is None or there.get("status") == "cancelled":
            fresh = {**google_events.body(occurrence), "status": "confirmed"}
            self._patch(override.recurrence_id, fresh)
            return
        read = google_events.parse(there, default_zone=self._zone)
        if read.content_hash() != occurrence.content_hash():
            groups = changed_fields(read, occurrence) - {"recurrence"}
            self._patch(override.recurrence_id, google_events.patch_body(occurrence, there, groups))

    def _restore(self, event: CalendarEvent, there: dict[str, Any], left_out: bool) -> None:
        """An exception the series no longer has: deleted where the series leaves its
        date out, else patched back to the series' own occurrence."""
        original = google_events.parse_moment(there["originalStartTime"], self._zone)
        if not google_events.makes(self._series, original):
            # Left behind at a start the series no longer makes (its times moved):
            # Google would show it on its own; its occurrence is at the new times.
            self._delete(original)
        elif left_out:
            if self._cancels_too:
                self._delete(original)
        elif self._live_too:
            own = occurrence_event(event, None, original)
            self._patch(original, google_events.body(own, there))

    def _expected(self, original: dt.datetime | dt.date) -> dict[str, str]:
        # Each write names the occurrence's version as read: an exception's own etag,
        # or, for an occurrence that is no exception (whose own etag crmcal has not
        # read), the series' (see ``Series._under_own_etags`` when Google wants the
        # instance's). One edited meanwhile by someone else (an exception since, or
        # changed again) answers 412 and is not written over.
        there = self._existing.get(moment_key(original))
        etag = there.get("etag") if there is not None else self._master.get("etag")
        return {"If-Match": str(etag)} if etag else {}

    def _write(self, method: str, original: dt.datetime | dt.date, body: Any) -> None:
        instance = google_events.instance_id(str(self._master["id"]), original)
        target = f"{self._path}/{quote(instance, safe='')}"
        named = self._existing.get(moment_key(original)) is None and bool(self._master.get("etag"))
        call = google_batch.Call(method, target, self._params, body, self._expected(original))
        self._calls.append((call, named))

    def _delete(self, original: dt.datetime | dt.date) -> None:
        self._write("DELETE", original, None)

    def _patch(self, original: dt.datetime | dt.date, body: dict[str, Any]) -> None:
        self._write("PATCH", original, {k: v for k, v in body.items() if k != "recurrence"})
