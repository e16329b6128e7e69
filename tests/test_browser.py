"""The pages driven in a real Chromium (Debian's /usr/bin/chromium through Playwright):
sign-in, connecting CalDAV (Radicale) and Google (through the emulator's consent page),
choosing before the first sync, auto-saved options, stop and reconnect, the calendar
and list views with sync state and badges, activities travelling both ways, CSRF, no
console errors. One crmcal, Radicale, Google emulator and browser for the module.

Screenshots of the main pages go to a temporary directory, or to docs/screenshots
when CRMCAL_SAVE_SCREENSHOTS=1 (how the ones in the README are made).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from crmcal import migrations
from crmcal.config import Settings
from crmcal.tls import tls
from crmcal.web.app import create_app
from crmcal.web.ui import i18n
from tests import plain
from tests.conftest import create_user_in
from tests.conftest import run as run_here
from tests.google_emulator import GoogleEmulator
from tests.providers.harness import CalDAVHarness, CalDAVServer
from tests.served import bound_socket, served_app, wait_for

playwright_api = pytest.importorskip("playwright.sync_api")
# Assertions wait as long as actions may (Playwright's default is 5 s): on a busy machine
# a page is slow to change, not wrong.
playwright_api.expect.set_options(timeout=30_000)
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PASSWORD = "browser-pass"
GOOGLE_ACCOUNT = "ann.browser@example.com"
SHOTS = Path(__file__).parent.parent / "docs" / "screenshots"


@dataclass
class Site:
    url: str
    page: Any
    caldav: CalDAVHarness
    google: GoogleEmulator
    shots: Path
    console: list[str] = field(default_factory=list)
    ann_token: str = ""
    bob_token: str = ""

    def go(self, path: str) -> Any:
        return self.page.goto(self.url + path)

    def shot(self, name: str, *, full_page: bool = True) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=full_page)

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(verify=tls(), base_url=self.url + "/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, radicale: CalDAVServer,
    google_emulator: GoogleEmulator,
) -> Iterator[Site]:  # fmt: skip
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    root = tmp_path_factory.mktemp("browser")
    db_url = f"sqlite:///{root / 'crmcal.db'}"
    migrations.upgrade(db_url)
    _ann, ann_token = run_here(create_user_in(db_url, email="ann@crm.test", name="Ann",
                                         password=PASSWORD, is_admin=True))  # fmt: skip
    _bob, bob_token = run_here(create_user_in(db_url, email="bob@crm.test", name="Bob",
                                         password=PASSWORD))  # fmt: skip
    google_emulator.state.create_account(GOOGLE_ACCOUNT)
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(
        database_url=db_url, secret_key="browser-test-key", base_url=url, poll_seconds=2,
        allow_private_networks=True, google_api_url=google_emulator.url,
        google_oauth_url=google_emulator.url, google_client_id="crmcal-browser-test",
        google_client_secret="s", retry_backoff=0,
    )  # fmt: skip
    shots = SHOTS if os.environ.get("CRMCAL_SAVE_SCREENSHOTS") == "1" else root / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    caldav = CalDAVHarness(radicale)
    with served_app(create_app(settings), sock), playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)
        page = context.new_page()
        found = Site(url, page, caldav, google_emulator, shots, ann_token=ann_token,
                     bob_token=bob_token)  # fmt: skip
        page.on("console", lambda m: found.console.append(f"{m.type}: {m.text} ({page.url})")
                if m.type == "error" else None)  # fmt: skip
        page.on("pageerror", lambda e: found.console.append(f"pageerror: {e} ({page.url})"))
        try:
            yield found
        finally:
            browser.close()
            run(caldav.close())


def run(coro: Any) -> Any:
    """A coroutine run to its end on a thread of its own: Playwright's synchronous API
    keeps an event loop running on this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run_here, coro).result()


@pytest.fixture
def signed_in(site: Site) -> Site:
    """The module's browser, signed in as Ann (each test stands on its own: with several
    workers, the tests of this module may run in separate processes)."""
    if not any(c["name"] == "crmcal_session" for c in site.page.context.cookies()):
        sign_in(site)
        playwright_api.expect(site.page.get_by_role("button", name="Sign out")).to_be_visible()
    return site


def forget_connections(site: Site) -> None:
    with site.api(site.ann_token) as api:
        for conn in api.get("/connections").json()["items"]:
            assert api.delete(f"/connections/{conn['id']}").status_code == 204


def saved(site: Site, change: Any) -> None:
    """Make a change on the settings form and wait until the page says it is saved."""
    with site.page.expect_response(
        lambda r: "/api/v1/connections/" in r.url and r.request.method == "PATCH"
    ) as answer:
        change()
    assert answer.value.ok, answer.value.text()
    playwright_api.expect(site.page.get_by_text("Saved", exact=True)).to_be_visible()


def sign_in(site: Site, email: str = "ann@crm.test", password: str = PASSWORD) -> None:
    site.go("/login")
    site.page.get_by_label("E-mail").fill(email)
    site.page.get_by_label("Password").fill(password)
    site.page.get_by_role("button", name="Sign in").click()


def events_in(caldav: CalDAVHarness, calendar_id: str) -> list[str]:
    async def listing() -> list[str]:
        changes = await caldav.provider.list_changes(calendar_id, None)
        fetched = await caldav.provider.fetch(calendar_id, [r.id for r in changes.changed])
        return [r.event.summary or "" for r in fetched if r.event is not None]

    return run(listing())


def google_events(site: Site) -> list[str]:
    calendar = site.google.state.calendars[GOOGLE_ACCOUNT]
    return [s.body.get("summary", "") for s in calendar.events.values()
            if s.body.get("status") != "cancelled"]  # fmt: skip


def soon(days: int, hour: int) -> dt.datetime:
    today = dt.datetime.now(dt.UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return today + dt.timedelta(days=days)


def test_sign_in_and_sign_out(site: Site) -> None:
    expect = playwright_api.expect
    site.go("/calendar")
    assert "/login?next=/calendar" in site.page.url
    site.shot("login")
    sign_in(site, password="wrong password")
    expect(site.page.get_by_role("alert")).to_contain_text("Wrong e-mail or password")
    sign_in(site)
    expect(site.page.get_by_role("heading", level=1)).to_contain_text("Calendar")
    site.page.get_by_role("button", name="Sign out").click()
    expect(site.page.get_by_role("button", name="Sign in")).to_be_visible()
    assert site.page.context.cookies() == [] or all(
        c["name"] != "crmcal_session" for c in site.page.context.cookies()
    )
    # Keyboard only: the fields are labelled and in order, Enter submits.
    site.page.get_by_label("E-mail").focus()
    site.page.keyboard.type("ann@crm.test")
    site.page.keyboard.press("Tab")
    site.page.keyboard.type(PASSWORD)
    site.page.keyboard.press("Enter")
    expect(site.page.get_by_role("heading", level=1)).to_contain_text("Calendar")


def test_forms_and_calls_without_the_csrf_token_are_refused(signed_in: Site) -> None:
    site = signed_in
    site.go("/activities")
    request = site.page.context.request
    form = {"type": "call", "subject": "Forged", "start": "2031-01-01T10:00"}
    refused = request.post(site.url + "/activities/new", form=form)
    assert refused.status == 403
    assert "Form expired" in refused.text()
    forged = {"type": "call", "subject": "Forged", "start": "2031-01-01T10:00:00Z"}
    call = request.post(site.url + "/api/v1/activities", data=forged)
    assert call.status == 403
    token = site.page.locator('meta[name="csrf-token"]').get_attribute("content")
    allowed = request.get(site.url + "/api/v1/me", headers={"X-CSRF-Token": token or ""})
    assert allowed.ok
    with site.api(site.ann_token) as api:
        assert "Forged" not in [a["subject"] for a in api.get("/activities").json()["items"]]


def test_caldav_chosen_before_the_first_sync_options_kept_stop_and_reconnect(
    signed_in: Site,
) -> None:
    site = signed_in
    forget_connections(site)
    expect = playwright_api.expect
    page = site.page
    second = run(site.caldav.make_second_calendar())
    with site.api(site.ann_token) as api:
        start = soon(1, 10)
        end = start + dt.timedelta(hours=1)
        pitch = {"type": "meeting", "subject": "Pitch to ACME", "start": start.isoformat(),
                 "end": end.isoformat()}  # fmt: skip
        api.post("/activities", json=pitch)
    with site.api(site.bob_token) as api:
        start = soon(2, 9)
        private = {"type": "meeting", "subject": "Doctor", "start": start.isoformat(),
                   "visibility": "owner"}  # fmt: skip
        api.post("/activities", json=private)
    site.go("/settings/calendar-sync")
    page.get_by_role("button", name="Add new account").click()
    for name in ("Google", "Microsoft 365 / Outlook", "CalDAV"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
    page.get_by_role("button", name="CalDAV", exact=True).click()
    server = site.caldav.server
    page.get_by_label("Server URL").fill(server.url)
    page.get_by_label("User name").fill(server.username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("alert")).to_contain_text("refused the user name or password")
    page.get_by_label("Password").fill(server.password)
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("button", name="Start sync")).to_be_visible()

    saved(site, lambda: page.get_by_label("Calendar", exact=True).select_option(second))
    saved(site, lambda: page.get_by_label("Sync type").select_option(label="Two-way"))

    def backfill() -> None:
        page.get_by_label("Backfill days").fill("7")
        page.get_by_label("Backfill days").press("Tab")

    saved(site, backfill)
    saved(site, lambda: page.get_by_label("Email", exact=True).uncheck())
    site.shot("settings-choose")
    page.reload()
    expect(page.get_by_label("Backfill days")).to_have_value("7")
    expect(page.get_by_label("Calendar", exact=True)).to_have_value(second)
    expect(page.get_by_label("Email", exact=True)).not_to_be_checked()
    # Nothing was written to either side before "Start sync".
    assert events_in(site.caldav, second) == []
    assert events_in(site.caldav, site.caldav.calendar_id) == []

    page.get_by_role("button", name="Start sync").click()
    wait_for(lambda: "Pitch to ACME" in events_in(site.caldav, second))
    assert events_in(site.caldav, site.caldav.calendar_id) == []
    # The state updates without a reload.
    expect(page.get_by_text("Last synced")).to_be_visible()
    last_synced = page.locator('[data-status="last_sync_at"]')
    expect(last_synced).not_to_have_text("not yet", timeout=60_000)
    site.shot("settings-syncing")
    stop_and_reconnect(site)
    forget_connections(site)


def stop_and_reconnect(site: Site) -> None:
    expect = playwright_api.expect
    page = site.page
    site.go("/settings/calendar-sync")
    page.get_by_role("button", name="Stop sync").click()
    expect(page.get_by_role("heading", name="Previously synced accounts")).to_be_visible()
    site.shot("settings-previous")
    page.get_by_role("button", name="Reconnect").click()
    expect(page.get_by_role("button", name="Stop sync")).to_be_visible()
    expect(page.locator('[data-status="state"]').first).to_have_text(re.compile("ok|syncing"))
    page.get_by_role("button", name="Stop sync").click()
    expect(page.get_by_role("button", name="Add new account")).to_be_visible()


def test_google_through_the_consent_page_activities_both_ways_views_and_badges(
    signed_in: Site,
) -> None:
    site = signed_in
    forget_connections(site)
    expect = playwright_api.expect
    page = site.page
    site.go("/settings/calendar-sync")
    page.get_by_role("button", name="Add new account").click()
    page.get_by_role("button", name="Google", exact=True).click()
    # The emulator's consent page: a click on the account grants access.
    page.get_by_role("button", name=f"Continue as {GOOGLE_ACCOUNT}").click()
    expect(page.get_by_role("button", name="Start sync")).to_be_visible()
    assert google_events(site) == []
    saved(site, lambda: page.get_by_label("Sync type").select_option(label="Two-way"))
    saved(site, lambda: page.get_by_label("Email", exact=True).uncheck())
    page.get_by_role("button", name="Start sync").click()
    expect(page.get_by_role("button", name="Stop sync")).to_be_visible()

    # An activity made in the calendar view reaches Google.
    site.go("/calendar")
    page.get_by_role("link", name="New activity").click()
    page.get_by_label("Type").select_option("call")
    page.get_by_label("Subject").fill("Call Maria")
    start = soon(1, 15)
    page.get_by_label("Start").fill(start.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("End").fill((start + dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Location").fill("Phone")
    page.get_by_label("Note").fill("About the rollout")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Calendar")
    wait_for(lambda: "Call Maria" in google_events(site))

    # An event made in Google appears in the calendar view.
    tokens = site.google.state.create_account(GOOGLE_ACCOUNT)
    begin = soon(2, 11)
    body = {"summary": "Coffee with Hank", "start": {"dateTime": begin.isoformat()},
            "end": {"dateTime": (begin + dt.timedelta(hours=1)).isoformat()}}  # fmt: skip
    made = plain.post(f"{site.google.url}/calendar/v3/calendars/{GOOGLE_ACCOUNT}/events",
                      json=body, headers={"Authorization": f"Bearer {tokens['access_token']}"},
                      timeout=30)  # fmt: skip
    assert made.status_code == 200, made.text

    def arrived() -> bool:
        site.go(f"/calendar?date={begin.date().isoformat()}")
        return "Coffee with Hank" in page.content()

    wait_for(arrived)
    expect(page.get_by_text("Busy").first).to_be_visible()  # Bob's private appointment
    site.shot("calendar-week")
    site.page.goto(site.google.url + "/")
    expect(page.get_by_text("Call Maria")).to_be_visible()
    site.shot("google-emulator")
    views_show_sync_state_and_badges(site)
    edit_done_and_delete_from_the_list(site)


def views_show_sync_state_and_badges(site: Site) -> None:
    expect = playwright_api.expect
    page = site.page
    with site.api(site.ann_token) as api:
        start = soon(3, 9)
        api.post("/activities", json={"type": "email", "subject": "Mail the offer",
                                      "start": start.isoformat()})  # fmt: skip
    site.go("/activities")
    expect(page.get_by_text("Last synced")).to_be_visible()
    expect(page.get_by_text(GOOGLE_ACCOUNT).first).to_be_visible()
    call_row = page.get_by_role("row").filter(has_text="Call Maria")
    expect(call_row.get_by_text("synced", exact=True)).to_be_visible(timeout=60_000)
    # Email is not among the types this connection syncs.
    mail_row = page.get_by_role("row").filter(has_text="Mail the offer")
    expect(mail_row.get_by_text("not synced (type filter)")).to_be_visible()
    page.get_by_label("Type", exact=True).select_option("call")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("row").filter(has_text="Mail the offer")).to_have_count(0)
    expect(page.get_by_role("row").filter(has_text="Call Maria")).to_have_count(1)
    site.shot("activities")
    site.go("/calendar?view=month")
    expect(page.get_by_role("link", name="Month")).to_have_attribute("aria-current", "page")
    site.shot("calendar-month")


def edit_done_and_delete_from_the_list(site: Site) -> None:
    expect = playwright_api.expect
    page = site.page
    site.go("/activities")
    page.get_by_role("link", name="Edit Mail the offer").click()
    page.get_by_label("Subject").fill("Mail the signed offer")
    page.get_by_label("All day").check()
    page.get_by_role("button", name="Save").click()
    row = page.get_by_role("row").filter(has_text="Mail the signed offer")
    expect(row).to_contain_text("all day")
    row.get_by_role("button", name=re.compile("Mark as done")).click()
    expect(page.get_by_role("row").filter(has_text="Mail the signed offer")
           .get_by_role("button", name=re.compile("Mark as not done"))).to_be_visible()  # fmt: skip
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("row").filter(has_text="Mail the signed offer").get_by_role(
        "button", name=re.compile("Delete")).click()  # fmt: skip
    expect(page.get_by_role("row").filter(has_text="Mail the signed offer")).to_have_count(0)


def test_phone_width(signed_in: Site) -> None:
    site = signed_in
    page = site.page
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        for path, name in (("/calendar", "phone-calendar"), ("/settings/calendar-sync", None)):
            site.go(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path} scrolls sideways at phone width ({width} px)"
            if name:
                site.shot(name)
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


# Boxes whose own text is wider than they are (a long word that would not wrap).
SPILLED = """[...document.querySelectorAll('main *, header *')].filter(e => {
  const s = getComputedStyle(e);
  return s.display !== 'inline' && s.overflowX === 'visible' && e.clientWidth > 0
    && e.scrollWidth > e.clientWidth + 1 && e.closest('.scroll') === null;
}).map(e => e.tagName + ': ' + e.textContent.trim().slice(0, 40))"""


@pytest.mark.parametrize("language", ["en", "de", "sv", "cs", "sk", "id"])
def test_pages_in_every_language(site: Site, language: str) -> None:
    """A browser asking for the language signs in and opens the calendar sync settings at
    phone width: the pages speak it, and its long words do not push the page sideways."""
    say = i18n.translations(language).gettext
    expect = playwright_api.expect
    context = site.page.context.browser.new_context(
        locale=language, viewport={"width": 390, "height": 844})  # fmt: skip
    context.set_default_timeout(30_000)
    try:
        page = context.new_page()
        page.goto(site.url + "/login")
        expect(page.locator("html")).to_have_attribute("lang", language)
        expect(page.get_by_role("heading", level=1)).to_have_text(say("Sign in to crmcal"))
        page.get_by_label(say("E-mail")).fill("bob@crm.test")
        page.get_by_label(say("Password")).fill(PASSWORD)
        page.get_by_role("button", name=say("Sign in"), exact=True).click()
        expect(page.get_by_role("button", name=say("Sign out"))).to_be_visible()
        page.get_by_role("link", name=say("Calendar sync"), exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(say("Calendar sync"))
        expect(page.get_by_role("button", name=say("Add new account"))).to_be_visible()
        page.screenshot(path=str(site.shots / f"language-{language}-calendar-sync.png"),
                        full_page=True)  # fmt: skip
        for path in ("/settings/calendar-sync?add=caldav", "/calendar", "/calendar?view=month",
                     "/activities/new", "/profile"):  # fmt: skip
            page.goto(site.url + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{language}: {path} scrolls sideways ({width} px)"
            spilled = page.evaluate(SPILLED)
            assert spilled == [], f"{language}: {path}: text spills out of {spilled}"
    finally:
        context.close()


def test_no_page_logs_a_console_error(signed_in: Site) -> None:
    site = signed_in
    expect = playwright_api.expect
    # Earlier tests were refused on purpose (a wrong password, a form without its token):
    # Chromium logs the status of such a page, and nothing else may have been logged.
    deliberate = re.compile(r"error: Failed to load resource: .* status of (401|403|422) ")
    assert [line for line in site.console if not deliberate.match(line)] == []
    site.console.clear()
    for path in ("/calendar", "/calendar?view=month", "/activities", "/activities/new",
                 "/settings/calendar-sync", "/admin/users"):  # fmt: skip
        site.go(path)
        site.page.wait_for_load_state("networkidle")
    site.go("/docs")
    # Swagger UI rendered the operations from files served by crmcal itself.
    expect(site.page.locator(".swagger-ui .opblock").first).to_be_visible(timeout=60_000)
    site.shot("api-docs", full_page=False)
    site.page.goto(site.google.url + "/")
    site.page.wait_for_load_state("networkidle")
    site.page.context.clear_cookies()
    site.go("/login")
    site.page.wait_for_load_state("networkidle")
    assert site.console == []
