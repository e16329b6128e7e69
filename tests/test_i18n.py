"""The web pages in their users' languages: complete catalogues, every page rendered in
every language with no English left, the language chosen by the user's profile, else
the browser's Accept-Language, else English, and dates written for the locale."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from babel.messages.mofile import write_mo
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.web.app import create_app
from crmcal.web.ui import i18n
from tests.caldav_servers import closed_port
from tests.conftest import Api, client_of, new_user
from tests.i18n_catalogs import extract, read
from tests.web_session import PASSWORD, sign_in

LANGUAGES = list(i18n.LANGUAGES)
PLACEHOLDER = re.compile(r"\{\w*\}")


def singular(msgid: str | tuple[str, ...] | list[str]) -> str:
    """crmcal's messages have no plural forms: each id is one string."""
    assert isinstance(msgid, str), msgid
    return msgid


def test_catalogues_hold_every_message_translated_and_not_fuzzy() -> None:
    wanted = {singular(m.id) for m in extract() if m.id}
    assert len(wanted) > 150  # the extraction found the templates and the ui modules
    for language in LANGUAGES:
        catalog = read(language)
        have = {m.id: m for m in catalog if m.id}
        missing = sorted(wanted - set(have))
        assert not missing, f"{language}: missing {missing[:10]}"
        for msgid in wanted:
            message = have[msgid]
            assert message.string, f"{language}: {msgid!r} is not translated"
            assert not message.fuzzy, f"{language}: {msgid!r} is fuzzy"
            placeholders = sorted(PLACEHOLDER.findall(msgid))
            assert sorted(PLACEHOLDER.findall(str(message.string))) == placeholders, msgid
        compiled = io.BytesIO()
        write_mo(compiled, catalog, use_fuzzy=False)
        assert compiled.tell() > 1000, language


# --- every page in every language -------------------------------------------------


class _Text(HTMLParser):
    """The text a user reads or hears on a page: text nodes and the attributes that
    become labels, hints or messages."""

    SPOKEN = {"aria-label", "title", "placeholder", "data-confirm", "data-never",
              "data-saving-text", "data-saved-text", "data-failed-text"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs:
            if value and (name in self.SPOKEN or name.startswith("data-label-")):
                self.chunks.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.chunks.append(" ".join(data.split()))


def texts(html: str) -> list[str]:
    parser = _Text()
    parser.feed(html)
    return parser.chunks


PAGES = ["/calendar", "/calendar?view=month", "/activities", "/activities/new",
         "/settings/calendar-sync", "/settings/calendar-sync?add=caldav", "/admin/users",
         "/profile"]  # fmt: skip
DATA = {"crmcal", "Ann", "Bob", "Google", "Microsoft 365 / Outlook", "CalDAV", "Pitch to ACME",
        "Lunch with Bob", "UTC", "Europe/Prague", "API", "CRM", "OK", "Admin", "Deal", "Person",
        "Start", "Status", "Profil", "Filter", "Typ", "Role", "E-mail", "Email"}  # fmt: skip


@pytest.fixture
def client(db_url: str, admin: Api) -> Iterator[TestClient]:
    ann = new_user(admin, "ann@crm.test", password=PASSWORD, timezone="Europe/Prague",
                   is_admin=True, name="Ann")  # fmt: skip
    start = dt.datetime.now(dt.UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    for subject in ("Pitch to ACME", "Lunch with Bob"):
        made = ann.post("/api/v1/activities", json={
            "type": "meeting", "subject": subject, "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=1)).isoformat()})  # fmt: skip
        assert made.status_code == 201, made.text
    with client_of(Settings(database_url=db_url)) as tc:
        yield tc


def _english_left(html: str, language: str, types: set[str]) -> list[str]:
    """Chunks of the page that are English messages this language translates."""
    translated = {singular(m.id): str(m.string) for m in read(language) if m.id}
    own = " | ".join(translated.values())
    english = [
        msgid for msgid, text in translated.items()
        if text != msgid and not re.search(rf"(?<!\w){re.escape(msgid)}(?!\w)", own)
    ]  # fmt: skip
    left = []
    for chunk in texts(html):
        if chunk in DATA or chunk in types or "@" in chunk:
            continue
        for msgid in english:
            if re.search(rf"(?<!\w){re.escape(msgid)}(?!\w)", chunk):
                left.append(f"{msgid!r} in {chunk!r}")
    return left


def test_every_page_in_every_language_leaves_no_english(client: TestClient) -> None:
    types = {t["name"] for t in client.get("/api/v1/activity-types").json().get("items", [])}
    signed_out = {lang: client.get("/login", headers={"Accept-Language": lang}).text
                  for lang in LANGUAGES}  # fmt: skip
    assert sign_in(client, "ann@crm.test").status_code == 303
    edit = re.search(r'href="(/activities/\d+/edit)', client.get("/activities").text)
    assert edit
    pages = [*PAGES, edit.group(1)]
    for language in LANGUAGES[1:]:
        assert f'<html lang="{language}">' in signed_out[language]
        found = _english_left(signed_out[language], language, types)
        for path in pages:
            page = client.get(path, headers={"Accept-Language": language})
            assert page.status_code == 200, (path, page.status_code)
            assert f'<html lang="{language}">' in page.text, path
            found += [f"{path}: {left}" for left in _english_left(page.text, language, types)]
        assert not found, f"{language}: English left: {found[:15]}"
    english = client.get("/settings/calendar-sync", headers={"Accept-Language": "en"}).text
    assert "Add new account" in english


# --- which language, and dates for the locale ------------------------------------------


def test_language_follows_profile_then_accept_language_then_english(
    client: TestClient,
) -> None:
    assert sign_in(client, "ann@crm.test").status_code == 303

    def heading(accept: str | None) -> str:
        headers = {"Accept-Language": accept} if accept is not None else {}
        found = re.search(r"<h1>([^<]+)</h1>", client.get("/settings/calendar-sync",
                                                           headers=headers).text)  # fmt: skip
        assert found
        return found.group(1)

    assert heading(None) == "Calendar sync"
    assert heading("fr-FR, fr;q=0.9") == "Calendar sync"
    assert heading("fr;q=1, sv-SE;q=0.8, de;q=0.5") == "Kalendersynkronisering"
    assert heading("cs-CZ") == "Synchronizace kalendáře"
    assert heading("in-ID") == "Sinkronisasi kalender"  # Indonesian's old code

    profile = client.get("/profile").text
    token = re.search(r'name="csrf-token" content="([^"]+)"', profile)
    assert token
    assert 'id="language"' in profile
    bad = client.post("/profile", data={"csrf_token": token.group(1), "language": "xx"})
    assert bad.status_code == 400
    saved = client.post("/profile", data={"csrf_token": token.group(1), "language": "sk",
                                          "timezone": "Europe/Bratislava"},
                        follow_redirects=False)  # fmt: skip
    assert saved.status_code == 303
    assert heading("de") == "Synchronizácia kalendára"  # the profile beats the browser
    assert heading(None) == "Synchronizácia kalendára"
    # the REST API stays English whatever the user chose
    missing = client.get("/api/v1/activities/999999", headers={"Accept-Language": "sk"})
    assert missing.status_code == 404
    assert re.search(r"[Nn]ot found|does not exist|no activity", missing.text), missing.text

    back = client.post("/profile", data={"csrf_token": token.group(1), "language": ""},
                       follow_redirects=False)  # fmt: skip
    assert back.status_code == 303
    assert heading("de") == "Kalendersynchronisierung"


def test_calendar_writes_dates_for_the_locale(client: TestClient) -> None:
    assert sign_in(client, "ann@crm.test").status_code == 303
    monday = "2031-03-03"
    month = client.get("/calendar", params={"view": "month", "date": monday},
                       headers={"Accept-Language": "de"}).text  # fmt: skip
    assert "März 2031" in month
    week = client.get("/calendar", params={"date": monday},
                      headers={"Accept-Language": "cs"}).text  # fmt: skip
    assert 'aria-label="pondělí 2031-03-03"' in week
    assert "Týden od 3. 3. 2031" in week
    english = client.get("/calendar", params={"view": "month", "date": monday}).text
    assert "March 2031" in english
    assert 'aria-label="Monday 2031-03-03"' in english


def test_a_failed_caldav_connection_is_explained_in_the_users_language(
    db_url: str, client: TestClient
) -> None:
    settings = Settings(database_url=db_url, secret_key="i18n-test-key",
                        allow_private_networks=True)  # fmt: skip
    with closed_port() as port, TestClient(create_app(settings, background_jobs=False)) as tc:
        assert sign_in(tc, "ann@crm.test").status_code == 303
        page = tc.get("/settings/calendar-sync?add=caldav").text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert token
        failed = tc.post("/settings/calendar-sync/caldav", headers={"Accept-Language": "de"},
                         data={"csrf_token": token.group(1), "url": f"http://127.0.0.1:{port}/",
                               "username": "ann", "password": "secret"})  # fmt: skip
    assert failed.status_code == 422, failed.text
    assert "Der Kalenderserver ist nicht erreichbar." in failed.text
    assert "Prüfen Sie die Server-URL" in failed.text
