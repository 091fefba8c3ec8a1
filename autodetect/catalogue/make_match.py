"""Finding the make: make names and aliases in a token list, and the seller's make field.

Make keys may carry the start of a model ("Range Rover" -> Land Rover, "range rover"), and one key may
mean several makes ("Merc"). A misspelled make field falls back to :func:`fuzzy_pick`."""
from __future__ import annotations

import functools

from autodetect.catalogue.catalogue import Catalogue
from autodetect.catalogue.fuzzy_match import NOT_FUZZY, fuzzy_pick

#: One make mention: the makes it may mean, each with its model-prefix tokens; then its start and end.
MakeMention = tuple[tuple[tuple[str, tuple[str, ...]], ...], int, int]


def find_makes(cat: Catalogue, tokens: list[str]) -> list[MakeMention]:
    """Make mentions in a token list: (candidates, start, end), longest match first, non-overlapping."""
    return _find_makes_cached(cat, tuple(tokens))


@functools.lru_cache(maxsize=4096)
def _find_makes_cached(cat: Catalogue, tokens: tuple[str, ...]) -> list[MakeMention]:
    out: list[MakeMention] = []
    i = 0
    prefixes = cat.make_prefixes
    while i < len(tokens):
        if tokens[i] not in prefixes:
            i += 1
            continue
        for n in range(min(cat.max_make_ngram, len(tokens) - i), 0, -1):
            c = cat.make_keys.get("".join(tokens[i:i + n]))
            if c:
                out.append((c, i, i + n))
                i += n
                break
        else:
            i += 1
    return out


def parse_make_field(cat: Catalogue, tokens: list[str]) -> tuple[list[tuple[str, tuple[str, ...]]], list[str], float | None]:
    """Seller make field -> (candidate makes with model prefixes, leftover tokens, fuzzy score or None)."""
    whole = cat.make_keys.get("".join(tokens))
    if whole:
        return list(whole), [], None
    m = find_makes(cat, tokens)
    if m and m[0][1] == 0:
        cands, _, end = m[0]
        return list(cands), tokens[end:], None
    best = fuzzy_pick("".join(tokens), cat.fuzzy_make_keys)
    if best:
        key, score = best
        return list(cat.make_keys[key]), [], score
    for t in tokens:  # "Chevorlet Trucks"
        best = fuzzy_pick(t, cat.fuzzy_make_keys) if t not in NOT_FUZZY else None
        if best:
            return list(cat.make_keys[best[0]]), [x for x in tokens if x != t], best[1]
    return [], [], None


def strip_make_words(cat: Catalogue, tokens: list[str], make: str) -> list[str]:
    """Drop a leading mention of the same make from a model field ("Mercedes-Benz C-Class" -> "C-Class")."""
    m = find_makes(cat, tokens)
    if m and m[0][1] == 0 and any(c[0] == make and not c[1] for c in m[0][0]):
        rest = tokens[m[0][2]:]
        # keep "Mazda 3" / "Polestar 2": if the rest alone is weak and the whole is a known key, keep whole
        idx = cat.model_index.get(make, {})
        if "".join(tokens) in idx and not idx["".join(tokens)].weak:
            return tokens
        return rest
    return tokens
