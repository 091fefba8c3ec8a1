"""Text -> lookup tokens: how seller fields, titles and catalogue names are cut into comparable words.

Tokens are lower-case, accent-free and alphanumeric; decimal numbers stay one token; a number followed by a
unit ("6-speed", "4 dr") is dropped. A name's *key* is its tokens concatenated, so "F-150", "F 150" and
"f150" all give ``f150``."""
from __future__ import annotations

import functools
import re
import unicodedata

#: A model-year token (1900-2039).
YEAR = re.compile(r"(19[0-9]{2}|20[0-3][0-9])")
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_NON_ALNUM = re.compile(r"[^a-z0-9\x00]+")
#: Units after a number: "6-speed", "4 door", "7 seats", "1 owner", "3rd row" are never a model.
_UNITS = frozenset("""speed speeds spd sp door doors dr cyl cylinder cylinders passenger passengers pass seat seats
seater owner owners valve mpg k km miles mi mile inch ft wd wb hp kw kwh ah ton tons gal litre liter row st nd rd th
cc bhp ps yr years year gear""".split())
_ATTACHED_UNIT = re.compile(r"^\d+(?:speed|spd|door|dr|cyl|mpg|k|km|hp|kw|kwh|ah|wd|st|nd|rd|th|x\d|owner|valve)$")


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


@functools.lru_cache(maxsize=65536)
def _tokenize(text: str) -> tuple[str, ...]:
    return tuple(_tokenize_uncached(text))


def tokenize(text: str | None) -> list[str]:
    """Lower-case, accent-free alphanumeric tokens (see ``_tokenize_uncached``); cached per string."""
    return list(_tokenize(text)) if text else []


def _tokenize_uncached(text: str | None) -> list[str]:
    """Lower-case, accent-free alphanumeric tokens; decimal numbers ("2.0", "5.7") stay one token.

    Hyphens, slashes and other punctuation separate tokens; apostrophes vanish ("cee'd" -> "ceed");
    "&" becomes "and". Numbers followed by a unit ("6-speed", "4 dr", "1 owner") are dropped.
    """
    if not text:
        return []
    text = _strip_accents(text).lower()
    if "&" in text:
        text = text.replace("&", " and ")
    if "'" in text or "\u2019" in text or "ß" in text:
        text = text.replace("'", "").replace("\u2019", "").replace("ß", "ss")
    if "." in text:
        text = _DECIMAL.sub("\x00", text)
        raw = _NON_ALNUM.sub(" ", text).replace("\x00", ".").split()
    else:
        raw = _NON_ALNUM.sub(" ", text).split()
    out: list[str] = []
    skip = False
    last = len(raw) - 1
    for i, t in enumerate(raw):
        if skip:
            skip = False
            continue
        if t[0].isdigit():
            if t.isdigit():
                if i < last and raw[i + 1] in _UNITS:
                    skip = True
                    continue
            elif _ATTACHED_UNIT.match(t):
                continue
        out.append(t)
    return out


def key_of(text: str) -> str:
    """The lookup key of a name: its tokens concatenated ("Mercedes-Benz" -> "mercedesbenz")."""
    return "".join(tokenize(text))
