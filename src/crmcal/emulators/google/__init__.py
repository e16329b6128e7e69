"""An emulator of the Google Calendar API v3 (calendarList, calendars, events).

Run it with ``crmcal emulator google --port N``; see ``docs/emulators.md``.
"""

from crmcal.emulators.google.app import create_app
from crmcal.emulators.google.store import GoogleState

__all__ = ["GoogleState", "create_app"]
