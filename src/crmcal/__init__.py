"""crmcal: two-way calendar sync for a CRM's activities."""

__version__ = "0.1.0"
