"""The built-in CRM: users, activity types, activities, persons, organizations, deals.

Nothing in this package knows about calendars or providers; the sync engine reads
the CRM through the change feed and writes it through the same repositories the
REST API uses.
"""
