"""Undoing an HTTP answer's content coding without letting it grow past a cap.

A few kilobytes of gzip can inflate to gigabytes (a "zip bomb"); every transport
crmcal reads calendar servers through decodes with this, so the bound on an answer
holds for what it becomes, not only for what was sent.
"""

from __future__ import annotations

import zlib

# What crmcal asks servers for in ``Accept-Encoding``: the codings decoded here.
ACCEPTED = "gzip, deflate"


class CodingRefused(ValueError):
    """The answer's coding is unknown, or its body does not decode."""


class DecodedTooLarge(CodingRefused):
    """The decoded body is over the cap."""


def decoded(raw: bytes, coding: str | None, cap: int) -> bytes:
    """``raw`` without its content ``coding`` (the header's value), at most ``cap``
    bytes once decoded."""
    coding = (coding or "identity").strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding not in ("gzip", "deflate", "x-gzip"):
        raise CodingRefused(f"unsupported content encoding {coding[:40]!r}")
    wbits = 16 + zlib.MAX_WBITS if "gzip" in coding else zlib.MAX_WBITS
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(raw, cap + 1)
    except zlib.error as error:
        raise CodingRefused(f"the {coding} body is corrupt: {error}") from None
    if len(out) > cap or decoder.unconsumed_tail:
        raise DecodedTooLarge(f"the answer is larger than {cap:,} bytes once decoded")
    return out
