"""A multistatus answer read as RFC 4918 13 says, by the one walk of its responses.

``caldav_wire.members`` walks each response's children once, and ``normalize_href``
skips ``quote``/``unquote`` where they would change nothing; ``caldav._confine_hrefs``
leaves an href that is already a path on the origin alone. Each is held here to what
the plain spelling (``find``/``findtext``, ``quote(unquote(...))``) gives, on answers
shaped as servers shape them and on generated hrefs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from crmcal.providers import caldav, caldav_wire
from crmcal.providers.caldav_wire import DAV, Member, members, normalize_href

D = "DAV:"
C = "urn:ietf:params:xml:ns:caldav"


def plain_members(tree: Any) -> list[Member]:
    """What ``members`` gives, spelt with lxml's ``find``/``findtext``."""
    found = []
    for response in tree.iter(f"{DAV}response"):
        href = response.findtext(f"{DAV}href")
        if not href:
            continue
        status = caldav_wire._status_code(response.findtext(f"{DAV}status"))
        props: dict[str, Any] = {}
        withheld: dict[str, int] = {}
        for propstat in response.findall(f"{DAV}propstat"):
            code = caldav_wire._status_code(propstat.findtext(f"{DAV}status"))
            prop = propstat.find(f"{DAV}prop")
            if prop is None:
                continue
            for child in prop:
                if code == 200:
                    props[child.tag] = child
                else:
                    withheld[child.tag] = code or 0
        found.append(Member(normalize_href(href.strip()), status or 200, props, withheld))
    return found


def seen(found: list[Member]) -> list[tuple[Any, ...]]:
    return [
        (m.href, m.status, {str(k): v.text for k, v in m.props.items()}, m.withheld) for m in found
    ]


ANSWER = f"""<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="{D}" xmlns:C="{C}">
  <D:response>
    <D:href>/cal/a%40b.ics</D:href>
    <D:propstat><D:prop><D:getetag>"1"</D:getetag><C:calendar-data>BEGIN:VCALENDAR
END:VCALENDAR</C:calendar-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
    <D:propstat><D:prop><C:schedule-tag/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status>
    </D:propstat>
  </D:response>
  <D:response><D:href>/cal/gone.ics</D:href><D:status>HTTP/1.1 404 Not Found</D:status>
  </D:response>
  <D:response><D:href>/cal/two.ics</D:href><D:href>/cal/second-href.ics</D:href>
    <!-- a comment among the children -->
    <D:status>HTTP/1.1 507 Insufficient Storage</D:status><D:status>HTTP/1.1 200 OK</D:status>
  </D:response>
  <D:response><D:href></D:href><D:href>/cal/after-an-empty-href.ics</D:href></D:response>
  <D:response><D:status>HTTP/1.1 200 OK</D:status></D:response>
  <D:response>
    <D:href> /cal/x.ics </D:href>
    <D:propstat><D:status>HTTP/1.1 403 Forbidden</D:status><D:prop><C:calendar-data/></D:prop>
      <D:status>HTTP/1.1 200 OK</D:status></D:propstat>
    <D:propstat><D:prop><D:getetag>"a"</D:getetag></D:prop><D:prop><D:getetag>"b"</D:getetag>
      </D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
    <D:propstat><D:prop><D:getetag>"late"</D:getetag></D:prop><D:status>bogus</D:status>
    </D:propstat>
    <D:propstat><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
    <D:propstat><D:prop><D:displayname>no status</D:displayname></D:prop></D:propstat>
  </D:response>
  <D:response><D:href>/cal/unknown-child.ics</D:href><D:responsedescription>x
  </D:responsedescription><D:propstat><D:prop><D:resourcetype/></D:prop>
  <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
</D:multistatus>"""


def test_members_read_as_find_and_findtext_read_them() -> None:
    tree = etree.fromstring(ANSWER.encode(), parser=caldav._XML)
    found = list(members(tree))
    assert seen(found) == seen(plain_members(tree))
    assert [m.href for m in found] == [
        "/cal/a@b.ics", "/cal/gone.ics", "/cal/two.ics", "/cal/x.ics", "/cal/unknown-child.ics"
    ]  # fmt: skip
    assert found[0].withheld == {f"{{{C}}}schedule-tag": 404}
    assert found[2].status == 507  # the first status of a response counts
    assert found[3].withheld == {
        f"{{{C}}}calendar-data": 403, f"{DAV}getetag": 0, f"{DAV}displayname": 0
    }  # fmt: skip


@given(st.text(alphabet=st.sampled_from("/aZ09 %@+~:;=&!$'()*,-._?#ä€\\\x01%C3%A9%2F%40%zz%4"),
               max_size=30))  # fmt: skip
def test_hrefs_normalised_as_quote_of_unquote(href: str) -> None:
    path = href.split("?", 1)[0].split("#", 1)[0]
    assert normalize_href(href) == (quote(unquote(path), safe=caldav_wire._PATH_SAFE) or "/")


@given(st.text(max_size=20))
def test_any_text_as_an_href_normalised_as_quote_of_unquote(href: str) -> None:
    path = urlsplit(href).path if "://" in href else href.split("?", 1)[0].split("#", 1)[0]
    assert normalize_href(href) == (quote(unquote(path), safe=caldav_wire._PATH_SAFE) or "/")


def test_hrefs_off_the_origin_are_dropped_and_paths_kept_as_sent() -> None:
    answer = f"""<D:multistatus xmlns:D="{D}" xmlns:C="{C}">
      <D:response><D:href>/cal/a.ics</D:href></D:response>
      <D:response><D:href>  /cal/spaced.ics  </D:href></D:response>
      <D:response><D:href>http://host:1/cal/absolute.ics</D:href></D:response>
      <D:response><D:href>http://other:1/cal/elsewhere.ics</D:href></D:response>
      <D:response><D:href>/cal/tab\there.ics</D:href></D:response>
      <D:response><D:href>/cal/back\\slash.ics</D:href></D:response>
      <D:response><D:href>//other/cal/x.ics</D:href></D:response>
      <D:response><D:href>/cal/b.ics</D:href><D:propstat><D:prop>
        <C:calendar-user-address-set><D:href>mailto:a@example.com</D:href>
        <D:href> /principals/a </D:href></C:calendar-user-address-set>
        <D:owner><D:href>http://other:1/p/</D:href></D:owner>
      </D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
    </D:multistatus>"""
    tree = etree.fromstring(answer.encode(), parser=caldav._XML)
    caldav._confine_hrefs(tree, "http://host:1/cal/")
    hrefs = [element.text for element in tree.iter(f"{DAV}href")]
    assert hrefs == [
        "/cal/a.ics", "/cal/spaced.ics", "/cal/absolute.ics", "/cal/b.ics",
        "mailto:a@example.com", " /principals/a ",
    ]  # fmt: skip
