"""The sync engine: the only package that sees both the CRM and the calendar providers.

It reconciles two change sets (the CRM's change feed and a provider's change
listing) through a link table that remembers what each side looked like at the
last sync, in the manner of vdirsyncer's status database.
"""
