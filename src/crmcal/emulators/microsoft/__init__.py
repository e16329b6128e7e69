"""An emulator of the Microsoft Graph v1.0 calendar API (calendars, events, delta).

Run it with ``crmcal emulator microsoft --port N``; see ``docs/emulators.md``.
"""

from crmcal.emulators.microsoft.app import create_app
from crmcal.emulators.microsoft.store import MicrosoftState

__all__ = ["MicrosoftState", "create_app"]
