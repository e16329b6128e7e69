"""iCalendar codec: one CalDAV resource (a VCALENDAR) <-> one ``CalendarEvent``.

Reading (``read.parse_event``) is the hot path: an initial import parses every
event of a calendar, and a full ``icalendar.Calendar.from_ical`` costs about 2 ms
per typical event (most of it building property objects crmcal never looks at and
interpreting VTIMEZONE blocks that merely restate an IANA zone). So reading uses a
small scanner of its own (``scanner``): it unfolds the text, splits content lines,
keeps the raw lines of VEVENTs and their VALARMs, decodes only the properties
crmcal maps, and resolves each TZID once per process (``zone_names``: IANA names
via ``zoneinfo``, Windows names via icalendar's CLDR table). ``icalendar`` is still
what interprets a VTIMEZONE that names no known zone (``zones``), and it does all
the writing.

Writing (``serialize.serialize_event``, ``patch.patch_event``) builds the resource
with ``icalendar``. Given the resource's current text (``previous``) it keeps
everything crmcal does not own (categories, URLs, foreign X- properties, further
alarms, overridden occurrences) so that an update never strips what another client
stored; ``patch_event`` rewrites only the field groups that changed.

Round trip: ``parse_event(serialize_event(e, uid))`` has the same
``content_hash()`` as ``e`` with ``uid`` set, for events that iCalendar can carry
(second precision, text without carriage returns or other control characters,
all-day events with an end).

The modules, lowest first: ``mapping`` (how fields are spelt), ``text`` (TEXT
escaping), ``scanner``, ``zone_names``, ``zones``, ``read``; ``writing_zones``,
``previous``, ``build``, ``series``, ``serialize``, ``patch``.
"""
