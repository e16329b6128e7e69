"""The HTTP side of crmcal: the REST API (``api/``), and later the UI, OAuth and webhooks."""
