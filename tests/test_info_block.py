"""The deal and contact block of event descriptions (F11): added, and cut out again."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crmcal.sync.info_block import BEGIN, END, LinkedRecords, render, with_block, without_block

RECORDS = LinkedRecords(deal="Renewal", person="Ann", person_email="ann@acme.test",
                        person_phone="+49 30 1", organization="ACME")  # fmt: skip
URL = "https://crm.example/activities/7"
notes = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r"), max_size=80)


@given(notes.filter(lambda n: BEGIN not in n) | st.none())
def test_the_block_comes_off_exactly_as_it_went_on(note: str | None) -> None:
    assert without_block(with_block(note, RECORDS, URL)) == (note or None)


def test_the_block_lists_what_is_linked_and_the_activity() -> None:
    assert render(RECORDS, URL).splitlines() == [
        BEGIN, "Deal: Renewal", "Person: Ann, ann@acme.test, +49 30 1", "Organization: ACME",
        f"Activity: {URL}", END,
    ]  # fmt: skip
    assert render(LinkedRecords(), URL).splitlines() == [BEGIN, f"Activity: {URL}", END]


def test_what_calendars_do_to_text_does_not_keep_the_block() -> None:
    written = with_block("Agenda\nline 2", RECORDS, URL)
    assert without_block(written.replace("\n", "\r\n")) == "Agenda\r\nline 2"
    assert without_block(written.replace(END, "  " + END + "  ")) == "Agenda\nline 2"
    # Text a user typed after the block is theirs; text inside it is not.
    assert without_block(written + "\nPS: bring slides") == "Agenda\nline 2\n\nPS: bring slides"
    assert without_block(written.replace("Deal: Renewal", "Deal: (edited)")) == "Agenda\nline 2"
    # A block whose end marker was deleted runs to the end.
    assert without_block(written.replace(END, "")) == "Agenda\nline 2"
    # Two blocks (pasted twice) both go.
    assert without_block(written + "\n\n" + render(RECORDS, URL)) == "Agenda\nline 2"
    assert without_block(render(RECORDS, URL)) is None
    assert without_block("no block here") == "no block here"
