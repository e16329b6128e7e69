"""Who imports (``sync/import_fields.Importer``), as it travels to the parse pool, and
what the pool computes for it."""

from __future__ import annotations

import pickle

from crmcal.crm.activities import (
    Checked,
    WrittenParticipant,
    as_written,
    check_new,
    new_row,
    participants_as_given,
    read_as_written,
)
from crmcal.crm.schemas import ActivityCreate, ParticipantIn
from crmcal.crm.tables import Activity, User, utcnow
from crmcal.providers import parse_pool
from crmcal.sync.import_fields import Importer, compute_beside, import_fields
from crmcal.sync.mapping import activity_to_event
from crmcal.sync.options import SyncOptions
from tests.bulk_import import realistic


def test_an_importer_is_pickled_the_same_before_and_after_its_memo_name_is_read() -> None:
    """The parse pool's feeder thread pickles the importer with each chunk while the
    event loop reads its memo name: reading it must not change what is pickled (a
    dict that grows while it is pickled fails the pickle, and the chunk with it)."""
    importer = Importer(7, "owner@crm.test", "Europe/Berlin", SyncOptions(), frozenset({"a@x"}))
    before = pickle.dumps(importer)
    assert importer.memo_name.startswith("import_fields:7:owner@crm.test:Europe/Berlin:")
    assert pickle.dumps(importer) == before
    assert pickle.loads(before).memo_name == importer.memo_name  # noqa: S301  # pickled here


def _checked(n: int) -> Checked:
    people = [
        ParticipantIn(email=f"p{n}.{k}@x.example", name=f"P {k}" if k else None,
                      status="accepted" if k else None)
        for k in range(n % 3)
    ]  # fmt: skip
    data = ActivityCreate(
        type="meeting", subject=f"Meeting {n}", timezone=("Europe/Berlin", "UTC")[n % 2],
        start="2027-04-28" if n % 4 == 3 else f"2027-04-28T0{n}:30:00",
        end=None if n % 4 in (2, 3) else f"2027-04-28T0{n}:45:00",
        location="Room" if n % 2 else None, reminder_minutes=15 if n % 2 else None,
        note="Agenda" if n % 3 else None, visibility="owner" if n == 5 else None,
        participants=people,
    )  # fmt: skip
    return check_new(data, "America/New_York", from_calendar=True)


def _slots(participant: object) -> list[object]:
    return [getattr(participant, name) for name in WrittenParticipant.__slots__]


def test_an_activity_read_as_written_is_the_orm_one_without_its_state() -> None:
    """``read_as_written`` (what the pool derives a new event's link from) holds every
    attribute ``as_written``'s ORM object holds, and maps to the same event."""
    owner = User(id=3, email="o@crm.test", timezone="America/New_York")
    for n in range(8):
        row = new_row(_checked(n).columns, f"uid{n}", 3, "org@x.example", utcnow())
        people = participants_as_given(_checked(n).participants)
        orm = as_written([row], [people], [40 + n])[0]
        plain = read_as_written(row, people, 40 + n)
        for column in Activity.__table__.columns:
            assert getattr(plain, column.key) == getattr(orm, column.key), column.key
        assert list(map(_slots, plain.participants)) == list(map(_slots, orm.participants))
        for options in (SyncOptions(), SyncOptions(private_events="everyone")):
            assert activity_to_event(plain, owner, options) == activity_to_event(
                orm, owner, options
            )


def test_what_the_pool_sends_back_holds_an_event_s_note_once() -> None:
    """The CRM's fields of a new event share the event's own text where they equal it:
    the pickle the pool's process sends back holds its note once, not twice."""
    note = "The agenda, long enough to be found: " + "pipeline review " * 20
    text = realistic("once", 1).replace("DESCRIPTION:Deal #1\\nAgenda", f"DESCRIPTION:{note}")
    importer = Importer(7, "owner@crm.test", "Europe/Berlin", SyncOptions(), frozenset())
    sent = parse_pool.parse_chunk([text], None, (), [(compute_beside, importer)])
    event = sent[0].event
    assert event is not None
    fields = import_fields(event, importer)
    assert isinstance(fields.data, Checked)
    assert fields.data.columns["note"] == note
    assert pickle.dumps(sent).count(note.encode()) == 1
