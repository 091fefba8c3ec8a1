"""Matching the model within a make, and resolving what the matches name.

:func:`scan_make` finds a make's model names in a token list (longest match at each position, model codes
by pattern); :func:`scan_any_make` finds distinctive model names of any make. :func:`resolve` turns the
hits into one class, several (ambiguous), a default of an ambiguous alias, or a refusal."""
from __future__ import annotations

from dataclasses import dataclass

from autodetect.catalogue.catalogue import Catalogue, Entry
from autodetect.catalogue.make_match import MakeMention, find_makes
from autodetect.catalogue.tokens import YEAR


@dataclass(frozen=True)
class Hit:
    """One model name found in a token list: ``n`` tokens from ``pos``, looked up within ``make``."""
    entry: Entry
    key: str
    pos: int
    n: int
    make: str
    anchored: bool = True  # right after the make (or first in its field): a weak name may count only here


@dataclass(frozen=True)
class Resolved:
    """What a set of hits names (see :func:`resolve`)."""
    cls: str | None  # the class, when the hits name exactly one
    candidates: frozenset[str]  # what the hits may mean (several: ambiguous)
    soft: bool = False  # cls is the default of an ambiguous alias ("Silverado" -> 1500)
    key: str = ""  # the key that named cls
    blocked: str = ""  # the text names a model outside the catalogue (e.g. "Carrera GT"): refuse
    not_with: frozenset[str] = frozenset()  # for a soft default: words that cancel it ("Sierra ... HD")


NOTHING = Resolved(None, frozenset())


def _anchors(cat: Catalogue, tokens: list[str], make: str, start: int = 0) -> frozenset[int]:
    """Positions where a model name directly follows the make: after a mention of it, or first (after a year)."""
    pos = {start}
    if tokens and YEAR.fullmatch(tokens[start] if start < len(tokens) else ""):
        pos.add(start + 1)
    for cands, _, end in find_makes(cat, tokens):
        if any(c[0] == make for c in cands):
            pos.add(end)
            if end < len(tokens) and YEAR.fullmatch(tokens[end]):
                pos.add(end + 1)
    return frozenset(pos)


def scan_make(cat: Catalogue, tokens: list[str], make: str, start: int = 0) -> list[Hit]:
    """Longest-match scan of ``tokens[start:]`` against one make's model keys and model-code patterns.

    At each position the key grows token by token while it is still the prefix of some model key
    (model codes such as "c 300" may also grow through up to three tokens); the longest name found wins
    and the scan resumes after it."""
    idx = cat.model_index.get(make)
    if not idx:
        return []
    pat = make in cat.patterns
    prefixes = cat.key_prefixes[make]
    hits: list[Hit] = []
    anchors = None
    i, n_tok = start, len(tokens)
    while i < n_tok:
        best: tuple[Entry, str, int] | None = None
        k = ""
        for j in range(i, min(i + 4, n_tok)):
            k += tokens[j]
            e = idx.get(k) if k in prefixes else None
            if e is None and pat and j - i < 3 and any(c.isdigit() for c in k):
                e = cat.pattern_entry(make, k)
            if e is not None:
                best = (e, k, j - i + 1)
            elif k not in prefixes and not (pat and j - i < 2):
                break
        if best is None:
            i += 1
            continue
        e, k, n = best
        if e.not_with and e.default and any(t in e.not_with for t in tokens):
            e = Entry(e.classes, None, e.weak)
        if e.weak:
            if anchors is None:
                anchors = _anchors(cat, tokens, make, start)
            hits.append(Hit(e, k, i, n, make, i in anchors))
        else:
            hits.append(Hit(e, k, i, n, make))
        i += n
    return hits


def scan_any_make(cat: Catalogue, tokens: list[str]) -> list[Hit]:
    """Scan for distinctive model names of any make (no make named)."""
    hits: list[Hit] = []
    prefixes = cat.key_prefixes[""]
    i, n_tok = 0, len(tokens)
    while i < n_tok:
        best = None
        k = ""
        for j in range(i, min(i + 4, n_tok)):
            k += tokens[j]
            cls = cat.global_index.get(k) if k in prefixes else None
            if cls is None and j == i and sum(ch.isdigit() for ch in k) >= 3 and any(ch.isalpha() for ch in k):
                # model codes ("c300", "328i"): every make's patterns; several makes -> ambiguous
                got = set()
                for make in cat.patterns:
                    e = cat.pattern_entry(make, k)
                    if e is not None:
                        got |= e.classes
                cls = frozenset(got) or None
            if cls:
                best = Hit(Entry(cls), k, i, j - i + 1, "")
            elif k not in prefixes:
                break
        if best:
            hits.append(best)
            i += best.n
        else:
            i += 1
    return hits


def resolve(hits: list[Hit]) -> Resolved:
    """What a set of hits names: one class, several (ambiguous) or nothing."""
    if not hits:
        return NOTHING
    strong = [h for h in hits if not h.entry.weak]
    blocked = [h for h in strong if h.entry.blocked]
    if blocked:
        return Resolved(None, frozenset(), blocked=blocked[0].key)
    use = strong or [h for h in hits if h.anchored]
    if not use:
        return NOTHING
    definite: dict[str, str] = {}
    sets: list[Hit] = []
    for h in use:
        if len(h.entry.classes) == 1:
            definite.setdefault(next(iter(h.entry.classes)), h.key)
        else:
            sets.append(h)
    if len(definite) == 1:
        (cls, key), = definite.items()
        if all(cls in h.entry.classes for h in sets):
            return Resolved(cls, frozenset([cls]), key=key)
        return Resolved(None, frozenset(definite).union(*(h.entry.classes for h in sets)))
    if len(definite) > 1:
        return Resolved(None, frozenset(definite))
    inter = frozenset.intersection(*(h.entry.classes for h in sets))
    if len(inter) == 1:
        return Resolved(next(iter(inter)), inter, key=sets[0].key)
    defaults = {h.entry.default for h in sets}
    if len(defaults) == 1:
        d = defaults.pop()
        if d is not None and d in inter:
            return Resolved(d, inter, soft=True, key=sets[0].key,
                            not_with=frozenset().union(*(h.entry.not_with for h in sets)))
    return Resolved(None, inter or frozenset().union(*(h.entry.classes for h in sets)))


def narrow_by_model_text(res: Resolved, hits: list[Hit], model_key: str) -> Resolved:
    """An ambiguous title narrowed by the seller's (unrecognized) model text: "CJ" + "CJ7 Renegade" -> CJ-7."""
    if res.cls or not model_key or len(res.candidates) < 2:
        return res
    keep = {c for h in hits for c in h.entry.classes if c in res.candidates and h.key.startswith(model_key)}
    if len(keep) == 1:
        c = keep.pop()
        return Resolved(c, frozenset([c]), key=model_key)
    return res


def title_hits(cat: Catalogue, tokens: list[str], own_makes: list[str],
               mentions: list[MakeMention]) -> tuple[list[Hit], list[Hit]]:
    """Title hits for the seller's makes (whole title) and for other makes the title names (after them)."""
    own = [h for mk in own_makes for h in scan_make(cat, tokens, mk)]
    other: list[Hit] = []
    for cands, _, end in mentions:
        for mk, _prefix in cands:
            if mk not in own_makes:
                other.extend(scan_make(cat, tokens, mk, end))
    return own, other
