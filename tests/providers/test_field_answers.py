"""Answers that are no multistatus, or come in a coding, through a whole sync.

Radicale and Xandikos serve the calendar; crmcal reaches them through
``tests.caldav_proxy``. A server (or what stands in front of it) may compress its
answers (``gzip``, which crmcal asks for), label them with a coding nobody asked for
(``br``), or answer with an HTML sign-in page and 200 (a single sign-on proxy whose
session ran out). What must hold: compressed answers sync as any; the others fail
the sync with an error that says what came, trash nothing and write nothing, and
once the server answers right again the sync goes on where it was. (Answers too
large, endless, dripping or inflating past the cap: ``tests/test_security_transport.py``.)
"""

from __future__ import annotations

from tests.caldav_proxy import Behaviour
from tests.providers.synced import V1, Proxied


def failed_sync(proxied: Proxied) -> str:
    answer = proxied.user.post(f"{V1}/connections/{proxied.connection_id}/sync")
    assert answer.status_code != 200, answer.text
    return str(answer.json()["detail"])


async def test_compressed_answers_sync_as_any(proxied: Proxied, behaviour: Behaviour) -> None:
    behaviour.content_coding = "gzip"
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Compressed")
    await proxied.harness.retitle(by_title["Compressed"], "Compressed (calendar)")
    proxied.edit_activity(made["id"], location="Room 2")
    assert proxied.sync_with_problems()["problems"] == []
    assert proxied.activity(made["id"])["subject"] == "Compressed (calendar)"
    assert "Room 2" in await proxied.harness.read_raw(by_title["Compressed"])


async def test_a_coding_nobody_asked_for_or_a_sign_in_page_fails_the_sync_saying_so(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    proxied.connect()
    (kept, edited), by_title = await proxied.synced_activities("Kept", "Edited")
    await harness.retitle(by_title["Kept"], "Kept (calendar)")
    proxied.edit_activity(edited["id"], location="Room 3")
    behaviour.content_coding = "br"
    said = failed_sync(proxied)
    assert "'br'" in said
    behaviour.content_coding = None
    behaviour.login_page = {"REPORT", "PROPFIND"}
    behaviour.requests.clear()
    said = failed_sync(proxied)
    assert "a web page (200, HTML: 'Sign in'), not WebDAV" in said
    assert behaviour.count("PUT") + behaviour.count("DELETE") == 0
    assert proxied.activities(deleted=True) == []
    # The server answers right again: the sync goes on where it was.
    behaviour.login_page.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["updated"], counts["deleted"]) == ([], 2, 0)
    assert proxied.activity(kept["id"])["subject"] == "Kept (calendar)"
    assert "Room 3" in await harness.read_raw(by_title["Edited"])
