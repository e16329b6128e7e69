"""Provider tests: the iCalendar codec and one contract suite run against every provider."""
