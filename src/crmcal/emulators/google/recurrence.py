"""Recurring events in the Google Calendar emulator: a series' instances and their ids.

Google stores a series as one event with ``recurrence`` lines and each changed
or cancelled occurrence as an exception event of its own (``recurringEventId``,
``originalStartTime``). Instances are computed, never stored: their ids are the
series id and the original start (``{id}_20261201T090000Z``, all-day
``{id}_20261201``), the form Google uses, so an instance can be read, changed or
deleted by id before it was ever an exception.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import rrule

from crmcal.emulators.google import events
from crmcal.emulators.google.errors import invalid

# How far an endless series is expanded (Google stops somewhere, too).
MAX_INSTANCES = 730


def is_series(event: dict[str, Any]) -> bool:
    return bool(event.get("recurrence")) and event.get("status") != "cancelled"


def _local_start(master: dict[str, Any]) -> dt.datetime | dt.date:
    start = events.moment(master["start"], "start")
    zone = master["start"].get("timeZone")
    if isinstance(start, dt.datetime) and zone:
        return start.astimezone(ZoneInfo(zone))
    return start


def _rules(master: dict[str, Any]) -> tuple[rrule.rruleset, bool]:
    """The series' rule set (anchored at its local start) and whether it is all-day."""
    start = _local_start(master)
    all_day = not isinstance(start, dt.datetime)
    anchor = dt.datetime.combine(start, dt.time()) if all_day else start
    try:
        rules = rrule.rrulestr(
            "\n".join(master.get("recurrence") or []), dtstart=anchor, forceset=True
        )
    except (ValueError, TypeError):
        raise invalid("Invalid recurrence rule.", location="recurrence") from None
    return rules, all_day


def occurrences(
    master: dict[str, Any], after: dt.datetime | None = None
) -> Iterator[dt.datetime | dt.date]:
    """The original starts of a series, in order: from its start, or from the first one
    at or after ``after`` (a window read by ``timeMin``), at most ``MAX_INSTANCES``."""
    rules, all_day = _rules(master)
    found: Iterator[dt.datetime] = iter(rules)
    if after is not None:
        # A day earlier: an all-day or long occurrence that started before still overlaps.
        since = after - dt.timedelta(days=1)
        found = rules.xafter(since.replace(tzinfo=None) if all_day else since, inc=True)
    for moment in itertools.islice(found, MAX_INSTANCES):
        yield moment.date() if all_day else moment


def instance_id(master_id: str, original: dt.datetime | dt.date) -> str:
    if isinstance(original, dt.datetime):
        return f"{master_id}_{original.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    return f"{master_id}_{original:%Y%m%d}"


def split_id(event_id: str) -> tuple[str, str] | None:
    """(series id, instance suffix) of an instance id, or None."""
    master_id, underscore, suffix = event_id.rpartition("_")
    return (master_id, suffix) if underscore and master_id and suffix else None


def _time(moment: dt.datetime | dt.date, zone: str | None) -> dict[str, str]:
    if isinstance(moment, dt.datetime):
        return {"dateTime": moment.isoformat(), "timeZone": zone or "UTC"}
    return {"date": moment.isoformat()}


def instance(master: dict[str, Any], original: dt.datetime | dt.date) -> dict[str, Any]:
    """The occurrence of ``master`` that starts at ``original``, as Google shows it."""
    start = _local_start(master)
    end = events.moment(master["end"], "end")
    duration = (end - start) if type(end) is type(start) else dt.timedelta()
    zone = master["start"].get("timeZone")
    body = {k: v for k, v in master.items() if k != "recurrence"}
    body["id"] = instance_id(master["id"], original)
    body["etag"] = instance_etag(master["etag"], body["id"])
    body["recurringEventId"] = master["id"]
    body["originalStartTime"] = _time(original, zone)
    body["start"] = _time(original, zone)
    body["end"] = _time(original + duration, master["end"].get("timeZone") or zone)
    return body


def instance_etag(series_etag: str, event_id: str) -> str:
    """The etag of an occurrence that is no exception: its own, not its series' (Google
    gives every instance one), and a new one whenever the series changes."""
    digest = hashlib.sha256(f"{series_etag}/{event_id}".encode()).digest()
    return f'"{int.from_bytes(digest[:7], "big")}"'


def find_instance(master: dict[str, Any], event_id: str) -> dict[str, Any] | None:
    """The generated instance of ``master`` with ``event_id``, if the series has it — any
    of its instances, however far from its start (Google reads each one by id)."""
    parts = split_id(event_id)
    if parts is None or parts[0] != master["id"]:
        return None
    suffix = parts[1]
    rules, all_day = _rules(master)
    try:
        if all_day:
            wanted: dt.datetime = dt.datetime.strptime(suffix, "%Y%m%d")
        else:
            wanted = dt.datetime.strptime(suffix, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    found = next(iter(rules.xafter(wanted, inc=True)), None)
    if found is None or found != wanted:
        return None
    return instance(master, found.date() if all_day else found)
