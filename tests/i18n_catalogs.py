"""Extracts the web pages' messages with Babel (the templates and the ui modules) and
reads the catalogues, for the translation tests and for updating the ``.po`` files:

    python -m tests.i18n_catalogs      # merges new messages into every catalogue
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from crmcal.web.ui import i18n

WEB = Path(i18n.__file__).resolve().parent.parent
METHODS = [("ui/**.py", "python"), ("templates/**.html", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "true",
                                 "lstrip_blocks": "true"}}  # fmt: skip


def extract() -> Catalog:
    catalog = Catalog(project="crmcal", charset="utf-8")
    for filename, lineno, message, comments, context in extract_from_dir(
        WEB, METHODS, OPTIONS, keywords={"_": None, "gettext": None, "ngettext": (1, 2)}
    ):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def po_path(language: str) -> Path:
    return i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"


def read(language: str) -> Catalog:
    with po_path(language).open("rb") as source:
        return read_po(source, locale=language)


def update() -> None:
    template = extract()
    for language in i18n.LANGUAGES:
        path = po_path(language)
        if path.exists():
            catalog = read(language)
        else:
            catalog = Catalog(locale=language, project="crmcal", charset="utf-8")
        catalog.update(template, no_fuzzy_matching=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            write_po(out, catalog, omit_header=False, sort_output=True, no_location=True,
                     ignore_obsolete=True, width=100)  # fmt: skip


if __name__ == "__main__":
    update()
