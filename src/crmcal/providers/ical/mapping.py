"""How ``CalendarEvent``'s fields are spelt in iCalendar: crmcal's own properties,
attendees' PARTSTAT words, the one-second end of an event without one, and which
VEVENT and VCALENDAR properties crmcal owns (everything else belongs to whoever
wrote it and is kept)."""

from __future__ import annotations

import datetime as dt

from crmcal.model import ResponseStatus

PRODID = "-//crmcal//crmcal//EN"
CRM_ID_PROPERTY = "X-CRMCAL-ACTIVITY-ID"
CRM_TYPE_PROPERTY = "X-CRMCAL-TYPE"


ONE_DAY = dt.timedelta(days=1)
# A timed event without an end is written lasting this long: strict servers (Cyrus,
# that is Fastmail) refuse DTEND = DTSTART, DURATION:PT0S and a timed event with
# neither. Read back, an event this short (or shorter) has no end.
NO_END = dt.timedelta(seconds=1)


PARTSTAT_IN: dict[str, ResponseStatus] = {
    "NEEDS-ACTION": "needs_action",
    "ACCEPTED": "accepted",
    "DECLINED": "declined",
    "TENTATIVE": "tentative",
}
PARTSTAT_OUT = {v: k for k, v in PARTSTAT_IN.items()}


# Properties of a VEVENT that crmcal writes; everything else on an existing event
# belongs to someone else and is kept. CLASS and STATUS are partly kept (see build).
OWNED_PROPERTIES = frozenset(
    {"UID", "DTSTAMP", "LAST-MODIFIED", "SEQUENCE", "SUMMARY", "DTSTART", "DTEND", "DURATION",
     "LOCATION", "DESCRIPTION", "CLASS", "TRANSP", "STATUS", "ATTENDEE", "ORGANIZER", "RRULE",
     "RDATE", "EXDATE", "RECURRENCE-ID", CRM_ID_PROPERTY, CRM_TYPE_PROPERTY}
)  # fmt: skip
# Calendar-level properties never copied from an existing resource (CalDAV
# forbids METHOD in stored resources; PRODID and VERSION are ours).
OWNED_CALENDAR_PROPERTIES = frozenset({"PRODID", "VERSION", "METHOD"})
