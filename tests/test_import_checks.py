"""The checks of a first import's new events made without the CRM's input model, and
a series' rule read once: the same acceptance, values and messages as before.

``schemas.create_values`` answers ``ActivityCreate(**fields).model_dump()`` for the
plain fields it can vouch for and None for anything else (the model decides then):
compared with the model on valid and invalid inputs of every kind. ``times.parse_rule``
reads a rule's text once a process: compared with dateutil reading it each time.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrule, rrulestr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from crmcal.crm import activities, schemas, times
from crmcal.crm.recurrence import Rule
from crmcal.crm.schemas import ActivityCreate, create_values
from crmcal.model import CalendarEvent
from crmcal.providers import parse_pool
from crmcal.sync import import_fields as import_fields_module
from crmcal.sync.import_fields import Importer, ImportFields, import_fields
from crmcal.sync.options import SyncOptions
from tests.bulk_import import realistic

LENGTHS = (0, 1, 2, 39, 40, 41, 63, 64, 65, 199, 200, 201, 254, 255, 256, 319, 320, 321,
           499, 500, 501, 999, 1000, 1001, 65536, 65537)  # fmt: skip
TAILS = ("", "\x00", "\ud800", "\n", " ", "é", "Z", "💡")


def _long(n: int, char: str, tail: str) -> str:
    return char * n + tail


texts = st.one_of(
    st.builds(_long, st.sampled_from(LENGTHS), st.sampled_from("aZé -_9"), st.sampled_from(TAILS)),
    st.text(max_size=12),
    st.sampled_from(["meeting", "call", "Meeting", "meet ing", "-x", "x-", "x_1", "2027-04-28",
                     "2027-04-28T10:00:00", "2027-04-28T10:00:00+01:00", "2027-02-30", "owner",
                     "everyone", "accepted", "needs_action", "maybe", "Europe/Berlin",
                     "FREQ=WEEKLY;COUNT=10"]),
)  # fmt: skip
numbers = st.one_of(
    st.sampled_from([0, 1, -1, 15, 40320, 40321, 2**31 - 1, 2**31, 5.0, 1.5, "5", True, False]),
    st.integers(),
)
emails = st.one_of(
    st.sampled_from(["a@b.example", " A.B@Example.ORG ", "a@b", "not an e-mail", "a@-b.example",
                     "a@b.example\n", "", "a\x00b@c.example", "a@b..example", 5, None]),
    st.builds(lambda n, host: "x" * n + "@" + host, st.sampled_from([1, 64, 65, 300]),
              st.sampled_from(["b.example", "b" * 63 + ".example", "b" * 260 + ".example"])),
)  # fmt: skip
participant_keys = st.sampled_from(["email", "name", "person_id", "status", "role"])
participant = st.dictionaries(
    participant_keys,
    st.one_of(emails, texts, numbers, st.sampled_from(["accepted", "declined", "Accepted"])),
    max_size=4,
)
anything = st.one_of(st.none(), texts, numbers, st.booleans(), st.lists(texts, max_size=3))
FIELDS = list(ActivityCreate.model_fields)


def _value(name: str) -> st.SearchStrategy[Any]:
    if name == "participants":
        lists = st.lists(participant, max_size=3)
        return st.one_of(
            st.none(), lists, lists.map(tuple), st.just([{"email": "a@b.example"}] * 5001)
        )
    if name in ("exdates", "rdates"):
        return st.one_of(st.none(), st.lists(texts, max_size=3), st.just(["2027-04-28"] * 1001))
    return st.one_of(anything, texts, numbers)


REQUIRED = ("type", "subject", "start")
fields_strategy = st.one_of(
    st.fixed_dictionaries(
        {"type": st.one_of(texts, st.just("meeting")), "subject": texts, "start": texts},
        optional={name: _value(name) for name in (*FIELDS, "unknown") if name not in REQUIRED},
    ),
    st.fixed_dictionaries({}, optional={name: _value(name) for name in (*FIELDS, "unknown")}),
)


def _by_the_model(fields: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return ActivityCreate(**fields).model_dump()
    except ValidationError:
        return None


def _same(fast: dict[str, Any] | None, fields: dict[str, Any]) -> None:
    model = _by_the_model(fields)
    if fast is None:
        return  # the model decides, as before
    assert model is not None, "accepted without the model, refused by it"
    assert list(fast.items()) == list(model.items())
    assert [list(p.items()) for p in fast["participants"] or ()] == [
        list(p.items()) for p in model["participants"] or ()
    ]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(fields_strategy)
def test_the_values_made_without_the_model_are_the_model_s(fields: dict[str, Any]) -> None:
    _same(create_values(fields), fields)


def _plain(**changed: Any) -> dict[str, Any]:
    fields = {
        "type": "meeting", "subject": "Review", "start": "2027-04-28T10:00:00+02:00",
        "end": "2027-04-28T11:00:00+02:00", "all_day": False, "timezone": "Europe/Berlin",
        "location": "Room 1", "note": "Agenda", "busy": True, "visibility": "everyone",
        "reminder_minutes": 15,
        "participants": [{"email": "guest@customer.example", "name": "Guest",
                          "status": "accepted"}],
    }  # fmt: skip
    fields.update(changed)
    return {k: v for k, v in fields.items() if v is not ...}


CASES = {
    "plain": {},
    "a title of 255": {"subject": "x" * 255},
    "a title of 256": {"subject": "x" * 256},
    "an empty title": {"subject": ""},
    "no title": {"subject": ...},
    "a NUL in the note": {"note": "a\x00b"},
    "a lone surrogate in the place": {"location": "a\ud800"},
    "a note of 65537": {"note": "n" * 65537},
    "a start of 41": {"start": "2027-04-28T10:00:00.000000+02:00" + "0" * 9},
    "a bad start": {"start": "tomorrow"},
    "a start before its end, as text": {"end": "2027-04-28T09:00:00+02:00"},
    "an unknown type": {"type": "Meeting"},
    "a type with a line break": {"type": "meeting\n"},
    "an unknown visibility": {"visibility": "private"},
    "a reminder too far": {"reminder_minutes": 40321},
    "a reminder as text": {"reminder_minutes": "15"},
    "a reminder as a float": {"reminder_minutes": 15.0},
    "all_day as 1": {"all_day": 1},
    "an unknown field": {"colour": "red"},
    "a participant without anyone": {"participants": [{"name": "Nobody"}]},
    "a participant's bad address": {"participants": [{"email": "nobody"}]},
    "a participant's address in capitals": {"participants": [{"email": " A@B.Example "}]},
    "a participant's unknown answer": {"participants": [{"email": "a@b.example", "status": "ok"}]},
    "a participant's extra field": {"participants": [{"email": "a@b.example", "role": "chair"}]},
    "participants as a tuple": {"participants": ({"email": "a@b.example"},)},
    "a rule": {"recurrence": "FREQ=WEEKLY;COUNT=10", "exdates": ["2027-05-05T10:00:00+02:00"]},
    "a rule too long": {"recurrence": "FREQ=WEEKLY;" + "X" * 1000},
    "too many dates left out": {"recurrence": "FREQ=DAILY", "exdates": ["2027-05-05"] * 1001},
    "an unknown zone": {"timezone": "Mars/Olympus"},
    "an owner id of 0": {"owner_id": 0},
    "a deal id too large": {"deal_id": 2**31},
}


@pytest.mark.parametrize("changed", CASES.values(), ids=CASES.keys())
def test_a_case_is_accepted_and_refused_as_the_model_does(changed: dict[str, Any]) -> None:
    fields = _plain(**changed)
    _same(create_values(fields), fields)


def test_the_plain_fields_of_a_calendar_s_events_need_no_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the import's events make is checked without the model: the values of each
    calendar event (single, series, all-day) come from ``create_values``."""
    importer = Importer(7, "owner@crm.test", "Europe/Berlin", SyncOptions(), frozenset())
    texts = [realistic("plain", n) for n in range(40)]
    assert create_values(_plain()) is not None
    built: list[dict[str, Any]] = []

    class Counted(ActivityCreate):
        def __init__(self, **fields: Any) -> None:
            built.append(fields)
            super().__init__(**fields)

    monkeypatch.setattr(import_fields_module, "ActivityCreate", Counted)
    parsed = parse_pool.parse_here(texts, None)
    found = [import_fields(p.event, importer) for p in parsed if p.event is not None]
    assert len(found) == 40
    assert all(f.refusal is None for f in found)
    assert built == []


def _events() -> list[CalendarEvent]:
    texts = [realistic("same", n) for n in range(40)]
    texts += [
        realistic("odd", 1).replace("SUMMARY:Review 1", "SUMMARY:" + "t" * 400),
        realistic("odd", 2).replace("RRULE", "X-NONE").replace("LOCATION:Room 2", "RRULE:FREQ=BAD"),
        realistic("odd", 3, rule="FREQ=WEEKLY;BYDAY=MO;UNTIL=20270101"),
        realistic("odd", 4, rule="FREQ=MONTHLY;BYMONTHDAY=31;COUNT=4"),
        realistic("odd", 5, rule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"),
        # Refused by the model (a rule over 1,000 characters), by the CRM's checks (an
        # unknown part, a start before 1900): the refusal's message, or the model sent on.
        realistic("odd", 6, rule="FREQ=WEEKLY;" + "BYHOUR=9;" * 120 + "COUNT=3"),
        realistic("odd", 7, rule="FREQ=WEEKLY;X-FOO=1"),
        realistic("odd", 8).replace("DTSTART;TZID=Europe/Berlin:2", "DTSTART;TZID=Europe/Berlin:1"),
    ]
    parsed = parse_pool.parse_here(texts, None)
    return [p.event for p in parsed if p.event is not None]


def _comparable(found: ImportFields) -> tuple[object, ...]:
    data = found.data
    if isinstance(data, activities.Checked):
        # A series' starts computed ahead hold the moment they were computed.
        data = activities.Checked(**{**vars(data), "ahead": None})
    link = found.link
    return (data, found.refusal, found.uid, found.organizer, found.cut,
            link and (link.named, link.crm_hash, link.field_hashes))  # fmt: skip


def test_an_import_s_fields_are_those_the_model_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event's CRM fields (checked data, refusal and its message, link hashes) as
    they were when the model checked every event."""
    importer = Importer(7, "owner@crm.test", "Europe/Berlin", SyncOptions(), frozenset())
    fast = [_comparable(import_fields(event, importer)) for event in _events()]
    monkeypatch.setattr(import_fields_module, "create_values", lambda fields: None)
    by_model = [_comparable(import_fields(event, importer)) for event in _events()]
    assert fast == by_model
    refusals = [refusal for _, refusal, *_ in fast if refusal]
    assert refusals == ["the series cannot be stored: recurrence: String should have at most "
                        "1000 characters"]  # fmt: skip
    assert sum(isinstance(data, ActivityCreate) for data, *_ in fast) >= 2


def test_a_rule_s_text_is_read_once_for_the_series_that_share_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An import's series share a few rules: each text is read by dateutil once, not
    once for each check and expansion of each series."""
    read: list[str] = []

    def counted(text: str, **kwargs: Any) -> object:
        read.append(text)
        return rrulestr(text, **kwargs)

    monkeypatch.setattr(times, "rrulestr", counted)
    times._read.cache_clear()
    importer = Importer(7, "owner@crm.test", "Europe/Berlin", SyncOptions(), frozenset())
    texts = [realistic("once", n, rule="FREQ=WEEKLY;COUNT=6") for n in range(0, 100, 10)]
    chunk = parse_pool.parse_chunk(
        texts, None, (), [(import_fields_module.compute_beside, importer)]
    )
    found = [import_fields(p.event, importer) for p in chunk if p.event is not None]
    assert len(found) == 10
    assert all(f.link is not None for f in found)
    assert read == ["FREQ=WEEKLY;COUNT=6"]


def test_a_series_import_fields_build_no_orm_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new series' link hashes are derived from plain values, without the ORM's
    object of its first occurrence (``Written.activity``)."""

    def refused(*args: object) -> None:
        raise AssertionError("an ORM object was built")

    monkeypatch.setattr(activities, "as_written", refused)
    importer = Importer(7, "owner@crm.test", "Europe/Berlin", SyncOptions(), frozenset())
    (parsed,) = parse_pool.parse_here([realistic("plain", 10)], None)
    assert parsed.event is not None
    assert parsed.event.recurring
    assert import_fields(parsed.event, importer).link is not None


RULE_TEXTS = [
    "FREQ=WEEKLY", "FREQ=WEEKLY;COUNT=10", "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE,FR",
    "FREQ=MONTHLY", "FREQ=MONTHLY;BYDAY=-1FR;COUNT=5", "FREQ=MONTHLY;BYMONTHDAY=31",
    "FREQ=YEARLY", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", "FREQ=DAILY;UNTIL=20270301T090000Z",
    "FREQ=DAILY;UNTIL=20270301", "FREQ=DAILY;UNTIL=20270301T090000",
    "FREQ=WEEKLY;WKST=SU;BYDAY=SU,MO",
    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "FREQ=HOURLY;BYHOUR=9,17;COUNT=8",
    "FREQ=WEEKLY;COUNT=3;UNTIL=20270301T000000Z", "FREQ=NEVER", "FREQ=WEEKLY;BYDAY=XX",
    "FREQ=MONTHLY;BYSETPOS=400;BYDAY=MO", "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO",
    # Texts dateutil reads with more than a rule's parts: read whole, as ever.
    "RRULE:FREQ=DAILY;COUNT=3", "rrule:freq=daily;count=3", " FREQ=DAILY;COUNT=3 ",
    "FREQ=WEEKLY;COUNT=4 DTSTART:20200106T080000", "DTSTART:20200106T080000\nRRULE:FREQ=DAILY",
    "FREQ=DAILY;COUNT=3\nRDATE:20270101T000000Z", "FREQ=DAILY FREQ=WEEKLY", "X-FOO:FREQ=DAILY", "",
]  # fmt: skip
BERLIN = ZoneInfo("Europe/Berlin")
STARTS = [
    dt.datetime(2027, 1, 4, 9, tzinfo=BERLIN), dt.datetime(2027, 3, 31, 23, 30, tzinfo=BERLIN),
    dt.datetime(2027, 2, 28, 9, tzinfo=dt.UTC), dt.datetime(2027, 6, 15, 0, 0),
    dt.datetime(2028, 2, 29, 12, tzinfo=ZoneInfo("America/New_York")),
]  # fmt: skip


def _fresh(rule: str, dtstart: dt.datetime, tz: dt.tzinfo) -> Any:
    """``parse_rule`` as it was: dateutil reading the text for each start."""
    found = rrulestr(times.until_like_start(rule, dtstart, tz), dtstart=dtstart)
    if not isinstance(found, rrule):
        raise ValueError("not a single RRULE value")
    return found


def _outcome(make: Any) -> tuple[str, object]:
    try:
        rule = make()
        return str(rule), list(itertools.islice(rule, 40))
    except (ValueError, TypeError, OverflowError, IndexError) as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.filterwarnings("ignore:Using both 'count' and 'until':DeprecationWarning")
@pytest.mark.parametrize("rule", RULE_TEXTS)
def test_a_rule_read_once_makes_the_rule_read_each_time(rule: str) -> None:
    """For every start (aware in several zones, naive), what ``parse_rule`` makes of a
    rule is what dateutil makes of its text read for that start: the same rule, the
    same occurrences, or the same error."""
    for dtstart, tz in itertools.product(STARTS, (dt.UTC, BERLIN)):
        fresh = _outcome(lambda: _fresh(rule, dtstart, tz))  # noqa: B023
        assert _outcome(lambda: times.parse_rule(rule, dtstart, tz)) == fresh  # noqa: B023


@pytest.mark.filterwarnings("ignore:Using both 'count' and 'until':DeprecationWarning")
@pytest.mark.parametrize("rule", RULE_TEXTS)
def test_a_series_starts_are_those_of_its_rule_read_each_time(rule: str) -> None:
    """``Rule.starts``, which makes its rule once for its start and window, finds the
    starts it found reading the rule and then bounding it."""
    for first, all_day in ((dt.datetime(2027, 1, 4, 8, tzinfo=dt.UTC), False),
                           (dt.date(2027, 1, 4), True)):  # fmt: skip
        series = Rule(rule, BERLIN, all_day, first, exdates=(first,) if all_day else ())
        after, before = (
            dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
            dt.datetime(2027, 9, 1, tzinfo=dt.UTC),
        )
        dtstart = series._dtstart()
        try:
            expected: object = _starts_read_each_time(series, dtstart, after, before)
        except Exception as exc:  # compared with what starts raises
            expected = type(exc).__name__
        try:
            found: object = series.starts(after, before, 50)
        except Exception as exc:
            found = type(exc).__name__
        assert found == expected


def _starts_read_each_time(
    series: Rule, dtstart: dt.datetime, after: dt.datetime, before: dt.datetime
) -> list[object]:
    """What ``Rule.starts`` answered before it read a rule once: read, then bounded."""
    import warnings

    from crmcal.crm.errors import Invalid

    try:
        rule = _fresh(series.rrule, dtstart, series.tz)
    except (ValueError, TypeError, OverflowError, IndexError):
        raise Invalid("recurrence") from None
    if series.all_day:
        lo = after.astimezone(series.tz).replace(tzinfo=None) - dt.timedelta(days=1)
        hi = before.astimezone(series.tz).replace(tzinfo=None) + dt.timedelta(days=1)
    else:
        lo, hi = after.astimezone(series.tz), before.astimezone(series.tz)
    until = getattr(rule, "_until", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rule = rule.replace(until=hi if until is None else min(until, hi))
    found: dict[dt.datetime, object] = {}
    for value in rule.xafter(lo, inc=True):
        moment = value.date() if series.all_day else value.astimezone(dt.UTC)
        found[series.instant(moment)] = moment
        if len(found) > 52:
            break
    for moment in (series.first, *series.rdates):
        found[series.instant(moment)] = moment
    left_out = {series.instant(m) for m in series.exdates}
    return [
        found[i]
        for i in sorted(found)
        if after <= i < before and i not in left_out and i >= series.instant(series.first)
    ][:50]


def test_an_address_is_read_once_and_as_before() -> None:
    """An import reads the same attendees' addresses in event after event: each is
    checked once a process, with the same answer (and the same refusal) every time."""
    from crmcal.crm import schemas

    schemas._remembered_email.cache_clear()
    for _ in range(3):
        assert schemas.normalise_email(" Anna.Weber@Example.ORG ") == "anna.weber@example.org"
        with pytest.raises(ValueError, match="is not an e-mail address"):
            schemas.normalise_email("anna weber")
    assert schemas._remembered_email.cache_info().hits == 2
    long = "a" * 500 + "@example.org"
    with pytest.raises(ValueError, match="is not an e-mail address"):
        schemas.normalise_email(long)
    assert schemas._remembered_email.cache_info().currsize == 1


def test_the_checks_without_the_model_are_read_from_the_model() -> None:
    """The bounds ``create_values`` checks are the model's own (one place to change)."""
    assert schemas._TEXTS == {
        "subject": (1, 255), "start": (1, 40), "end": (1, 40), "timezone": (1, 64),
        "location": (0, 500), "note": (0, 65536), "recurrence": (1, 1000),
    }  # fmt: skip
    assert {"all_day", "done", "busy", "notify_participants"} == schemas._BOOLEANS
    assert schemas._NUMBERS == {
        "owner_id": (1, schemas.MAX_ID), "deal_id": (1, schemas.MAX_ID),
        "person_id": (1, schemas.MAX_ID), "organization_id": (1, schemas.MAX_ID),
        "reminder_minutes": (0, 40320),
    }  # fmt: skip

    class Other(BaseModel):
        title: Annotated[str, schemas.Text(80, 2)]
        place: Annotated[str, schemas.Text(10)] | None = None
        kind: Annotated[str, StringConstraints(max_length=5, pattern="^[a-z]+$")]
        flag: bool | None = None
        count: Annotated[int, Field(ge=3, le=9)] | None = None
        minutes: int | None = Field(default=None, ge=0, le=60)
        names: list[str] | None = None

    texts, flags, numbers = schemas._plain_checks(Other)
    assert texts == {"title": (2, 80), "place": (0, 10)}  # a pattern's text is checked apart
    assert flags == {"flag"}
    assert numbers == {"count": (3, 9), "minutes": (0, 60)}
