"""The languages of the web pages: which one a request gets, its gettext catalogue, and
dates and numbers written the way that locale writes them.

A request speaks the signed-in user's chosen language, else the best match of the
browser's ``Accept-Language``, else English. The REST API, logs and CLI never pass
through here: they stay English for the programs and operators that read them.

Catalogues are the ``.po`` files under ``web/locale``; they are compiled in memory on
first use, so an installed package needs no build step and never serves a stale ``.mo``.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from babel import Locale, dates, numbers
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import LazyProxy, NullTranslations, Translations
from starlette.types import ASGIApp, Receive, Scope, Send

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DEFAULT = "en"
# Each language named in itself, as a user looking for theirs reads it.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "de": "Deutsch",
    "sv": "Svenska",
    "cs": "Čeština",
    "sk": "Slovenčina",
    "id": "Bahasa Indonesia",
}

_current: ContextVar[str] = ContextVar("crmcal_language", default=DEFAULT)


@functools.cache
def translations(language: str) -> NullTranslations:
    po = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if language not in LANGUAGES or not po.is_file():
        return NullTranslations()
    with po.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled)


def language() -> str:
    return _current.get()


def use(code: str | None) -> None:
    """Makes ``code`` the language of the rest of this request (ignored if unknown)."""
    if code in LANGUAGES:
        _current.set(code)


def gettext(message: str) -> str:
    return translations(language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(language()).ngettext(singular, plural, n)


def _(message: str) -> Any:
    """Marks a user-facing message; it is translated when used, into the request's language
    (so module-level labels follow each request, not the language at import)."""
    return LazyProxy(gettext, message, enable_cache=False)


def from_accept_language(header: str | None) -> str:
    """The best of our languages for an ``Accept-Language`` header, else English."""
    wanted: list[tuple[float, int, str]] = []
    for n, part in enumerate((header or "")[:1000].split(",")):
        tag, _sep, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        if tag and q > 0:
            wanted.append((-q, n, tag.strip().lower()))
    for _q, _n, tag in sorted(wanted):
        base = tag.split("-")[0].split("_")[0]
        if base == "in":  # the retired code some browsers still send for Indonesian
            base = "id"
        if base in LANGUAGES:
            return base
    return DEFAULT


class LanguageMiddleware:
    """Sets the language of every HTTP request from ``Accept-Language``; a signed-in
    user's own choice overrides it when the page looks the user up."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or []).get(b"accept-language", b"")
            _current.set(from_accept_language(header.decode("latin-1")))
        await self.app(scope, receive, send)


# --- dates and numbers -------------------------------------------------------------


def locale() -> Locale:
    return Locale.parse(language())


def first_week_day() -> int:
    """0 = Monday, as ``date.weekday()`` counts."""
    return locale().first_week_day


def format_date(day: dt.date, pattern: str = "medium") -> str:
    return dates.format_date(day, pattern, locale=language())


def format_time(moment: dt.datetime | dt.time) -> str:
    # English keeps the 24-hour clock the pages always showed.
    pattern = "HH:mm" if language() == DEFAULT else "short"
    return dates.format_time(moment, pattern, locale=language())


def format_datetime(moment: dt.datetime, zone: dt.tzinfo) -> str:
    return dates.format_datetime(moment.astimezone(zone), "medium", locale=language())


def format_number(value: float) -> str:
    return numbers.format_decimal(value, locale=language())


def month_title(day: dt.date) -> str:
    return dates.format_date(day, "LLLL y", locale=language())
