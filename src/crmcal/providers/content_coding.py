"""Undoing an HTTP answer's content coding without letting it grow past a cap.

A few kilobytes of gzip can inflate to gigabytes (a "zip bomb"); every transport
crmcal reads calendar servers through decodes with this, so the bound on an answer
holds for what it becomes, not only for what was sent.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

# What crmcal asks servers for in ``Accept-Encoding``: the codings decoded here.
ACCEPTED = "gzip, deflate"


class CodingRefused(ValueError):
    """The answer's coding is unknown, or its body does not decode."""


class DecodedTooLarge(CodingRefused):
    """The decoded body is over the cap."""


def _decompressor(coding: str) -> zlib._Decompress | None:
    """What undoes ``coding`` (normalised): None for none; an unknown one is refused."""
    if coding in ("", "identity"):
        return None
    if coding not in ("gzip", "deflate", "x-gzip"):
        raise CodingRefused(f"unsupported content encoding {coding[:40]!r}")
    return zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in coding else zlib.MAX_WBITS)


def decoded(raw: bytes, coding: str | None, cap: int) -> bytes:
    """``raw`` without its content ``coding`` (the header's value), at most ``cap``
    bytes once decoded."""
    coding = (coding or "identity").strip().lower()
    decoder = _decompressor(coding)
    if decoder is None:
        return raw
    try:
        out = decoder.decompress(raw, cap + 1)
    except zlib.error as error:
        raise CodingRefused(f"the {coding} body is corrupt: {error}") from None
    if len(out) > cap or decoder.unconsumed_tail:
        raise DecodedTooLarge(f"the answer is larger than {cap:,} bytes once decoded")
    return out


class Decoder:
    """An answer's content coding undone piece by piece as its bytes arrive (an answer
    read as a stream): each piece it gives is at most ``most`` bytes, however much a
    few bytes of gzip inflate to, so whoever reads it bounds what it holds."""

    def __init__(self, coding: str | None, most: int = 256 * 1024) -> None:
        self._coding = (coding or "identity").strip().lower()
        self._most = most
        self._decoder = _decompressor(self._coding)

    def pieces(self, raw: bytes) -> Iterator[bytes]:
        """What ``raw`` (the next bytes of the answer) decodes to, in pieces."""
        if self._decoder is None:
            for start in range(0, len(raw), self._most):
                yield raw[start : start + self._most]
            return
        try:
            while raw:
                out = self._decoder.decompress(raw, self._most)
                raw = self._decoder.unconsumed_tail
                if out:
                    yield out
        except zlib.error as error:
            raise CodingRefused(f"the {self._coding} body is corrupt: {error}") from None
