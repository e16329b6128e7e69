"""Local emulators of the calendar services crmcal cannot reach offline (F25).

They speak the real services' wire formats, closely enough that code which passes
against them works against the real thing: crmcal's own tests and offline demo
use them, and so can anyone testing their own integration. Each runs with
``crmcal emulator <name> --port N`` and has an admin API under ``/_emulator/``.
"""
