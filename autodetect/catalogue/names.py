"""Seller make/model (or listing title) -> one canonical catalogue class, or a refusal.

``normalize(make, model, title)`` returns a :class:`Label`. The rules, in order:

1. The seller's make field is looked up among make names and aliases ("VW", "Chevy", "Mercedes Benz",
   "Škoda"); extra words after the make ("Mini Cooper", "Range Rover", "Dodge Ram") count as the start of
   the model; a misspelled make ("Toyta", "Chevorlet") is matched with rapidfuzz.
2. The seller's model field is matched within that make: every n-gram of its tokens is looked up
   (spacing, case, hyphens and accents never matter), the longest match at each position wins, trims,
   engines, drivetrains, body words and model years simply match nothing, and model codes are mapped by
   pattern ("328i" -> BMW 3 Series, "C300" -> Mercedes-Benz C-Class). Without a make field, a distinctive
   model name alone ("Camry", "F-150") identifies the make.
3. The title is parsed the same way, within the make the seller named and after every make the title
   itself names ("2019 FORD F-150 XLT SUPERCREW 4X4").
4. Seller fields win when they are consistent: a title that also names the seller's model, or names
   nothing, confirms them. A title may refine them ("Silverado" + "Silverado 2500HD" -> 2500HD; the
   seller's "Ford"/"E-Series Van" + "E-350" -> E-350). A title that names a different car and not the
   seller's is a contradiction -> unknown. When the make field and the title disagree (seller "Chevrolet",
   title "GMC Sierra 1500"), the title's make+model is used if the seller's model agrees with it, and the
   reason says so.
5. Ambiguity is refused: a make alone ("Ford"), two different models ("Mustang or Camaro", "F-150 F-250
   tailgate"), an alias that may mean several classes without a default ("Super Duty"), a model outside
   the catalogue that a shorter name would mislabel ("Porsche Carrera GT" is not a 911), a make field
   outside the catalogue (trailers, motorcycles) unless the title names a catalogue car.
6. Names that are also trim or body words ("GT", "SS", "Sport", "Daytona", "Ranger") count only right
   after the make, and only when nothing stronger is named: "Chevrolet SS" is the SS, "Camaro SS" is a
   Camaro, and a title's trim word never contradicts the seller's model.
7. Only when exact matching finds nothing, and only within a make the listing names, rapidfuzz matches
   misspelled words (one edit for words of 5+ letters, or ratio >= 85 for 7+; digits must agree, so
   "RAV5" is not a "RAV4"), and only when one class is clearly best; its score is the confidence. A
   seller's misspelled model that clearly means another class than the title's is a contradiction.

``method`` is "aspects" (seller fields decided it), "title" (the title named the model), "fuzzy" (a
misspelling was matched) or "unknown"; ``confidence`` is 1.0 when seller fields and title agree, lower
for defaults, make-less titles and disagreements, the fuzzy score for misspellings, 0 for unknown.

Speed: indexes are built once per process (``catalogue.load``); results are cached per distinct
(make, model, title), the seller-field part per distinct (make, model) and tokens per string, and
rapidfuzz runs only as a fallback. About 30,000 distinct listings per CPU-second cold, far more warm.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from autodetect.catalogue.catalogue import Catalogue, Entry, load, tokenize

__all__ = ["Label", "clear_caches", "normalize", "normalize_uncached"]

#: Seller-field values that carry no information.
_EMPTY = frozenset({"", "na", "n", "none", "null", "other", "others", "unknown", "doesnotapply", "notapplicable",
                    "notspecified", "unbranded", "various", "see description", "seedescription", "misc",
                    "miscellaneous", "custom", "tbd", "xx", "x"})
#: Words that are never a misspelled model: listing junk, trims, body and drivetrain words. Only the
#: fuzzy fallback consults this (an exact alias always matches).
_NOT_FUZZY = frozenset("""
clean title reserve must see miles mileage owner runs drives great good excellent condition original rare mint
loaded leather sunroof moonroof navigation automatic manual auto transmission diesel turbo hybrid electric
engine sedan coupe convertible hatchback wagon truck pickup minivan crew cabin extended regular quad double
supercrew supercab crewmax access king doors speed sale with and the premium limited touring sport sports luxury
platinum signature select edition package base custom classic deluxe super duty heavy long short wheel wheels
drive lifted tires black white silver green yellow orange purple offroad trail ultimate prestige elite plus
laramie lariat denali sahara rubicon laredo overland trailhawk titanium trend highline comfortline trendline
avantgarde elegance kompressor quattro xdrive 4matic 4motion bluetec ecoboost cummins duramax powerstroke
vortec coyote supercharged turbocharged replica project parts barn restored restomod survivor estate combi
cabrio cabriolet roadster spyder spider targa fastback hardtop softtop power steering brakes window windows
seats heated cooled camera bluetooth carfax autocheck warranty financing delivery shipping priced price
dealer private seller owned garage kept stored winter summer local trade trades cash offer offers obo firm
""".split())
_MIN_FUZZY_LEN = 5
#: Make names that are also ordinary words ("leather seat", "smart buy"): they do not stop a make-less lookup.
_WORDY_MAKES = frozenset({"seat", "smart", "mini", "eagle", "genesis", "scion", "lotus", "jaguar", "mercury"})
_YEAR = re.compile(r"(19[0-9]{2}|20[0-3][0-9])")


@dataclass(frozen=True)
class Label:
    """The outcome of :func:`normalize`; ``class_name`` is None when the answer is unknown."""
    class_name: str | None
    make: str | None
    model: str | None
    method: str  # "aspects", "title", "fuzzy" or "unknown"
    confidence: float
    reason: str


@dataclass(frozen=True)
class _Hit:
    entry: Entry
    key: str
    pos: int
    n: int
    make: str
    anchored: bool = True  # right after the make (or first in its field): a weak name may count only here


@dataclass(frozen=True)
class _Res:
    cls: str | None  # the class, when the hits name exactly one
    candidates: frozenset[str]  # what the hits may mean (several: ambiguous)
    soft: bool = False  # cls is the default of an ambiguous alias ("Silverado" -> 1500)
    key: str = ""  # the key that named cls
    blocked: str = ""  # the text names a model outside the catalogue (e.g. "Carrera GT"): refuse
    not_with: frozenset[str] = frozenset()  # for a soft default: words that cancel it ("Sierra ... HD")


_NONE = _Res(None, frozenset())


def _meaningful(tokens: list[str]) -> bool:
    return bool(tokens) and "".join(tokens) not in _EMPTY and tokens[0] not in ("other", "others")


def _anchors(cat: Catalogue, tokens: list[str], make: str, start: int = 0) -> frozenset[int]:
    """Positions where a model name directly follows the make: after a mention of it, or first (after a year)."""
    pos = {start}
    if tokens and _YEAR.fullmatch(tokens[start] if start < len(tokens) else ""):
        pos.add(start + 1)
    for cands, _, end in _find_makes(cat, tokens):
        if any(c[0] == make for c in cands):
            pos.add(end)
            if end < len(tokens) and _YEAR.fullmatch(tokens[end]):
                pos.add(end + 1)
    return frozenset(pos)


def _scan(cat: Catalogue, tokens: list[str], make: str, start: int = 0) -> list[_Hit]:
    """Longest-match scan of ``tokens[start:]`` against one make's model keys and model-code patterns.

    At each position the key grows token by token while it is still the prefix of some model key
    (model codes such as "c 300" may also grow through up to three tokens); the longest name found wins
    and the scan resumes after it."""
    idx = cat.model_index.get(make)
    if not idx:
        return []
    pat = make in cat.patterns
    prefixes = cat.key_prefixes[make]
    hits: list[_Hit] = []
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
            hits.append(_Hit(e, k, i, n, make, i in anchors))
        else:
            hits.append(_Hit(e, k, i, n, make))
        i += n
    return hits


def _scan_global(cat: Catalogue, tokens: list[str]) -> list[_Hit]:
    """Scan for distinctive model names of any make (no make named)."""
    hits: list[_Hit] = []
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
                best = _Hit(Entry(cls), k, i, j - i + 1, "")
            elif k not in prefixes:
                break
        if best:
            hits.append(best)
            i += best.n
        else:
            i += 1
    return hits


def _resolve(hits: list[_Hit]) -> _Res:
    """What a set of hits names: one class, several (ambiguous) or nothing."""
    if not hits:
        return _NONE
    strong = [h for h in hits if not h.entry.weak]
    blocked = [h for h in strong if h.entry.blocked]
    if blocked:
        return _Res(None, frozenset(), blocked=blocked[0].key)
    use = strong or [h for h in hits if h.anchored]
    if not use:
        return _NONE
    definite: dict[str, str] = {}
    sets: list[_Hit] = []
    for h in use:
        if len(h.entry.classes) == 1:
            definite.setdefault(next(iter(h.entry.classes)), h.key)
        else:
            sets.append(h)
    if len(definite) == 1:
        (cls, key), = definite.items()
        if all(cls in h.entry.classes for h in sets):
            return _Res(cls, frozenset([cls]), key=key)
        return _Res(None, frozenset(definite).union(*(h.entry.classes for h in sets)))
    if len(definite) > 1:
        return _Res(None, frozenset(definite))
    inter = frozenset.intersection(*(h.entry.classes for h in sets))
    if len(inter) == 1:
        return _Res(next(iter(inter)), inter, key=sets[0].key)
    defaults = {h.entry.default for h in sets}
    if len(defaults) == 1:
        d = defaults.pop()
        if d is not None and d in inter:
            return _Res(d, inter, soft=True, key=sets[0].key,
                        not_with=frozenset().union(*(h.entry.not_with for h in sets)))
    return _Res(None, inter or frozenset().union(*(h.entry.classes for h in sets)))


def _find_makes(cat: Catalogue, tokens: list[str]) -> list[tuple[tuple[tuple[str, tuple[str, ...]], ...], int, int]]:
    """Make mentions in a token list: (candidates, start, end), longest match first, non-overlapping."""
    return _find_makes_t(cat, tuple(tokens))


@functools.lru_cache(maxsize=4096)
def _find_makes_t(cat: Catalogue, tokens: tuple[str, ...]):
    out = []
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


def _parse_make_field(cat: Catalogue, tokens: list[str]) -> tuple[list[tuple[str, tuple[str, ...]]], list[str], float | None]:
    """Seller make field -> (candidate makes with model prefixes, leftover tokens, fuzzy score or None)."""
    whole = cat.make_keys.get("".join(tokens))
    if whole:
        return list(whole), [], None
    m = _find_makes(cat, tokens)
    if m and m[0][1] == 0:
        cands, _, end = m[0]
        return list(cands), tokens[end:], None
    best = _fuzzy_pick("".join(tokens), cat.fuzzy_make_keys)
    if best:
        key, score = best
        return list(cat.make_keys[key]), [], score
    for t in tokens:  # "Chevorlet Trucks"
        best = _fuzzy_pick(t, cat.fuzzy_make_keys) if t not in _NOT_FUZZY else None
        if best:
            return list(cat.make_keys[best[0]]), [x for x in tokens if x != t], best[1]
    return [], [], None


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _fuzzy_ok(q: str, key: str, score: float) -> float | None:
    """Accept one edit (len >= 5) or a ratio >= 85 (len >= 7); returns the similarity in [0, 100].

    Digits must agree exactly: "Madza3" is a Mazda3, but "RAV5" is not a RAV4 (an X5 is not an X6)."""
    if len(q) < _MIN_FUZZY_LEN or _digits(q) != _digits(key):
        return None
    d = OSA.distance(q, key)
    if d <= 1 or (score >= 85 and len(q) >= 7 and d <= 2) or (key.startswith(q) and len(key) - len(q) <= 2):
        return max(score, 100.0 * (1 - d / max(len(q), len(key))))
    return None


def _fuzzy_pick(q: str, choices: list[str]) -> tuple[str, float] | None:
    if len(q) < _MIN_FUZZY_LEN or not choices:
        return None
    good = []
    for key, score, _ in process.extract(q, choices, scorer=fuzz.ratio, score_cutoff=70, limit=5):
        sim = _fuzzy_ok(q, key, score)
        if sim is not None:
            good.append((sim, key))
    if not good:
        return None
    good.sort(reverse=True)
    if len(good) > 1 and good[1][0] > good[0][0] - 3 and good[1][1] != good[0][1]:
        return None  # two spellings equally close: refuse
    return good[0][1], good[0][0]


def _fuzzy_model(cat: Catalogue, tokens: list[str], make: str) -> tuple[str, float, str, bool] | None:
    """Misspelled model words of one make: (class, score, how, whether the matched name means only that
    class), only if one class is clearly best."""
    idx = cat.model_index.get(make)
    choices = cat.fuzzy_model_keys.get(make)
    if not idx or not choices:
        return None
    scores: dict[str, tuple[float, str, bool]] = {}
    skip = -1

    def best_of(q: str) -> dict[str, tuple[float, str, bool]]:
        got: dict[str, tuple[float, str, bool]] = {}
        for key, score, _ in process.extract(q, choices, scorer=fuzz.ratio, score_cutoff=70, limit=5):
            sim = _fuzzy_ok(q, key, score)
            if sim is None:
                continue
            e = idx[key]
            cls = next(iter(e.classes)) if len(e.classes) == 1 else e.default
            if cls and sim > got.get(cls, (0.0, "", False))[0]:
                got[cls] = (sim, f"{q}~{key}", len(e.classes) == 1)
        return got

    for i, t in enumerate(tokens):
        if i == skip or sum(c.isalpha() for c in t) < 4 or t in _NOT_FUZZY or t in idx:
            continue  # (an exact name, even a weak one, is never a misspelling of another)
        single = best_of(t)
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        pair = best_of(t + nxt) if nxt and nxt not in _NOT_FUZZY and t + nxt not in idx else {}
        if pair and single and set(pair) != set(single):
            # "mustange mach" ~ "Mustang Mach-E" but "mustange" ~ "Mustang": the words disagree
            got = {**pair, **single}
            for cls, v in got.items():
                scores[cls] = max(scores.get(cls, (0.0, "", False)), (v[0] - 50, v[1], v[2]))
            continue
        if pair:
            skip = i + 1  # the pair explains both words ("grand cherokke")
        for cls, v in (pair or single).items():
            if v[0] > scores.get(cls, (0.0, "", False))[0]:
                scores[cls] = v
    scores = {c: v for c, v in scores.items() if v[0] > 0}
    if not scores:
        return None
    ranked = sorted(scores.items(), key=lambda kv: -kv[1][0])
    if len(ranked) > 1 and ranked[1][1][0] > ranked[0][1][0] - 5:
        return None
    cls, (sim, how, definite) = ranked[0]
    return cls, sim, how, definite


def _label(cat: Catalogue, cls: str, method: str, conf: float, reason: str) -> Label:
    c = cat.classes[cls]
    return Label(cls, c.make, c.model, method, round(conf, 3), reason[:200])


def _unknown(reason: str) -> Label:
    return Label(None, None, None, "unknown", 0.0, reason[:200])


def _q(text: str | None) -> str:
    """Seller text quoted in a reason, shortened."""
    text = " ".join((text or "").split())
    return text if len(text) <= 40 else text[:37] + "..."


def _fmt(classes) -> str:
    return ", ".join(sorted(classes)[:4]) + ("..." if len(classes) > 4 else "")


def _title_hits(cat: Catalogue, tokens: list[str], own_makes: list[str], mentions) -> tuple[list[_Hit], list[_Hit]]:
    """Title hits for the seller's makes (whole title) and for other makes the title names (after them)."""
    own = [h for mk in own_makes for h in _scan(cat, tokens, mk)]
    other: list[_Hit] = []
    for cands, _, end in mentions:
        for mk, _prefix in cands:
            if mk not in own_makes:
                other.extend(_scan(cat, tokens, mk, end))
    return own, other


def _narrow(res: _Res, hits: list[_Hit], model_key: str) -> _Res:
    """An ambiguous title narrowed by the seller's (unrecognized) model text: "CJ" + "CJ7 Renegade" -> CJ-7."""
    if res.cls or not model_key or len(res.candidates) < 2:
        return res
    keep = {c for h in hits for c in h.entry.classes if c in res.candidates and h.key.startswith(model_key)}
    if len(keep) == 1:
        c = keep.pop()
        return _Res(c, frozenset([c]), key=model_key)
    return res


@dataclass(frozen=True)
class _Seller:
    """What the seller's make and model fields say (cached per distinct pair: they repeat a lot)."""
    mk_tokens: tuple[str, ...]
    md_tokens: tuple[str, ...]
    make_cands: tuple[tuple[str, tuple[str, ...]], ...]
    make_fuzzy: float | None
    make_note: str
    aspect: _Res
    aspect_make: str | None
    make_names: tuple[str, ...]
    refusal: str = ""  # the fields alone already make the answer unknown


@functools.lru_cache(maxsize=65536)
def _seller(make: str, model: str) -> _Seller:
    cat = load()
    mk_tokens = tokenize(make)
    md_tokens = tokenize(model)
    if not _meaningful(mk_tokens):
        mk_tokens = []
    if not _meaningful(md_tokens):
        md_tokens = []
    make_cands, leftover, make_fuzzy = _parse_make_field(cat, mk_tokens) if mk_tokens else ([], [], None)
    make_note = f"make '{_q(make)}'~{make_cands[0][0]} ({make_fuzzy:.0f})" if make_fuzzy else ""
    aspect = _NONE
    aspect_make = None
    refusal = ""
    if make_cands:
        tried = []
        for mk, prefix in make_cands:
            variants = [leftover + md_tokens] if leftover else [md_tokens]
            if prefix:
                variants.append(list(prefix) + md_tokens)
            for toks in variants:
                toks = _strip_make_words(cat, toks, mk)
                if not toks:
                    continue
                res = _resolve(_scan(cat, toks, mk))
                if res.cls or res.candidates or res.blocked:
                    tried.append((mk, res))
                    break
        definite = [t for t in tried if t[1].cls]
        if len({t[1].cls for t in definite}) == 1:
            aspect_make, aspect = definite[0]
        elif len(tried) == 1:
            aspect_make, aspect = tried[0]
        elif len(definite) > 1:
            refusal = f"make '{_q(make)}' is ambiguous: {_fmt({t[1].cls for t in definite})}"
    elif md_tokens and not mk_tokens:
        aspect = _resolve(_scan_global(cat, md_tokens))
        if aspect.cls:
            aspect_make = cat.classes[aspect.cls].make
    if aspect.blocked:
        refusal = f"seller model '{_q(model)}' names '{aspect.blocked}', a model outside the catalogue"
    return _Seller(tuple(mk_tokens), tuple(md_tokens), tuple(make_cands), make_fuzzy, make_note, aspect,
                   aspect_make, tuple(mk for mk, _ in make_cands), refusal)


def normalize_uncached(make: str | None, model: str | None, title: str | None = None) -> Label:
    """:func:`normalize` without the per-listing cache."""
    cat = load()
    sel = _seller(make or "", model or "")
    if sel.refusal:
        return _unknown(sel.refusal)
    ti_tokens = tokenize(title)
    mentions = _find_makes(cat, ti_tokens)
    mk_tokens, md_tokens = list(sel.mk_tokens), list(sel.md_tokens)
    make_fuzzy, make_note, aspect, aspect_make = sel.make_fuzzy, sel.make_note, sel.aspect, sel.aspect_make
    make_names = list(sel.make_names)
    model_key = "".join(md_tokens)
    fuzzy_score = make_fuzzy

    if mk_tokens and not make_names:
        # a make outside the catalogue (motorcycle, trailer, coachbuilder): only the title can tell
        label = _from_title(cat, ti_tokens, mentions, [], "")
        if label.class_name:
            return Label(label.class_name, label.make, label.model, label.method, min(label.confidence, 0.6),
                         f"seller make '{_q(make)}' not in catalogue; {label.reason}"[:200])
        return _unknown(f"seller make '{_q(make)}' not in catalogue; {label.reason}")

    if aspect.cls:
        return _with_aspect(cat, aspect, aspect_make, ti_tokens, mentions, model, fuzzy_score, make_note,
                            bool(make_names))

    # 3. the seller's model is ambiguous, unrecognized or empty: the title decides (narrowed by the model)
    if make_names:
        own, other = _title_hits(cat, ti_tokens, make_names, mentions)
        res = _resolve(own)
        if aspect.candidates and len(aspect.candidates) > 1:
            narrowed = frozenset(c for c in (res.candidates if res.candidates else ()) if c in aspect.candidates)
            if len(narrowed) == 1:
                c = next(iter(narrowed))
                return _label(cat, c, "fuzzy" if fuzzy_score else "title", 0.85,
                              f"seller model '{_q(model)}' may be {_fmt(aspect.candidates)}; title says {c}")
            if res.cls and res.cls not in aspect.candidates:
                return _unknown(f"seller model '{_q(model)}' ({_fmt(aspect.candidates)}) disagrees with title ({res.cls})")
            return _unknown(f"seller model '{_q(model)}' is ambiguous: {_fmt(aspect.candidates)}")
        if res.blocked:
            return _unknown(f"title names '{res.blocked}', a model outside the catalogue")
        res = _narrow(res, own, model_key)
        if res.cls and md_tokens:
            # the seller's model is unrecognized: if it is a misspelling of another model, they disagree
            fz = next(filter(None, (_fuzzy_model(cat, md_tokens, mk) for mk in make_names)), None)
            if fz and fz[3] and fz[0] != res.cls:
                return _unknown(f"seller model '{_q(model)}' (~{fz[0]}) disagrees with title ({res.cls})")
        if res.cls:
            how = "default" if res.soft else "title"
            return _label(cat, res.cls, "fuzzy" if fuzzy_score else "title", 0.8 if res.soft else 0.9,
                          f"seller make {make_names[0]}{', ' + make_note if make_note else ''}; model from title"
                          f" ({how}: '{res.key}')")
        if res.candidates:
            return _unknown(f"title names several models: {_fmt(res.candidates)}")
        ores = _resolve(other)
        if ores.blocked:
            return _unknown(f"title names '{ores.blocked}', a model outside the catalogue")
        if ores.cls:
            omake = cat.classes[ores.cls].make
            agrees = (not md_tokens or ores.cls in _resolve(_scan(cat, md_tokens, omake)).candidates
                      or any(omake == c[0] for c in cat.make_keys.get(model_key, ())))
            if agrees:
                return _label(cat, ores.cls, "title", 0.7,
                              f"seller make '{_q(make)}' disagrees with title make {omake}; title make+model used"
                              + (f" (seller model '{_q(model)}' agrees)" if md_tokens else ""))
            return _unknown(f"seller '{_q(make)}'/'{_q(model)}' disagrees with title ({ores.cls})")
        if ores.candidates:
            return _unknown(f"title names several models: {_fmt(ores.candidates)}")
        # 4. misspellings, within the seller's make
        for mk in make_names:
            region = ti_tokens
            for cands, _, end in mentions:
                if any(c[0] == mk for c in cands):
                    region = ti_tokens[end:]
                    break
            fz = _fuzzy_model(cat, md_tokens, mk) if md_tokens else None
            src = "seller model"
            if not fz:
                fz, src = _fuzzy_model(cat, region, mk), "title"
            if fz:
                cls, score, how, _ = fz
                return _label(cat, cls, "fuzzy", score / 100 * (1 if not make_fuzzy else make_fuzzy / 100),
                              f"{src} misspelled: {how}{'; ' + make_note if make_note else ''}")
        return _unknown(f"seller make {make_names[0]} but no model in model field or title")

    return _from_title(cat, ti_tokens, mentions, md_tokens, model or "")


def _strip_make_words(cat: Catalogue, tokens: list[str], make: str) -> list[str]:
    """Drop a leading mention of the same make from a model field ("Mercedes-Benz C-Class" -> "C-Class")."""
    m = _find_makes(cat, tokens)
    if m and m[0][1] == 0 and any(c[0] == make and not c[1] for c in m[0][0]):
        rest = tokens[m[0][2]:]
        # keep "Mazda 3" / "Polestar 2": if the rest alone is weak and the whole is a known key, keep whole
        idx = cat.model_index.get(make, {})
        if "".join(tokens) in idx and not idx["".join(tokens)].weak:
            return tokens
        return rest
    return tokens


def _with_aspect(cat: Catalogue, aspect: _Res, aspect_make: str, ti_tokens, mentions, model, fuzzy_score,
                 make_note, had_make: bool) -> Label:
    """The seller's fields name a class A; check the title agrees (or refines, or contradicts)."""
    a = aspect.cls
    method = "fuzzy" if fuzzy_score else "aspects"
    conf_scale = (fuzzy_score / 100) if fuzzy_score else 1.0
    src = "seller make+model" if had_make else "seller model"
    note = f"; {make_note}" if make_note else ""
    if not ti_tokens:
        return _label(cat, a, method, (0.85 if aspect.soft else 0.95) * conf_scale,
                      f"{src} -> {a}{' (default)' if aspect.soft else ''}{note}")
    own, other = _title_hits(cat, ti_tokens, [aspect_make], mentions)
    hits = own + other
    strong = [h for h in hits if not h.entry.weak]
    tres = _resolve(hits)
    if tres.blocked:
        return _unknown(f"{src} -> {a} but title names '{tres.blocked}', a model outside the catalogue")
    if not strong:  # the title names nothing, or only words that are also trims ("GT", "Sport"): A stands
        agrees = any(a in h.entry.classes for h in hits)
        return _label(cat, a, method, (0.85 if aspect.soft else (1.0 if agrees else 0.95)) * conf_scale,
                      f"{src} -> {a}{' (default)' if aspect.soft else ''}; "
                      f"{'title agrees' if agrees else 'title names no model'}{note}")
    named = {c for h in strong if len(h.entry.classes) == 1 for c in h.entry.classes}
    # refinement: the seller's name is a soft default or a prefix of what the title names
    if tres.cls and tres.cls != a and cat.classes[tres.cls].make == cat.classes[a].make and (
            (aspect.soft and tres.cls in aspect.candidates) or (tres.key.startswith(aspect.key) and a not in named)):
        return _label(cat, tres.cls, "fuzzy" if fuzzy_score else "title", 0.9 * conf_scale,
                      f"title '{tres.key}' refines seller model '{_q(model)}'{note}")
    if aspect.soft and aspect.not_with and any(t in aspect.not_with for t in ti_tokens):
        return _unknown(f"seller model '{_q(model)}' may be {_fmt(aspect.candidates)}; the title's "
                        f"'{next(t for t in ti_tokens if t in aspect.not_with)}' rules out the default {a}")
    if a in named or (not named and all(a in h.entry.classes for h in strong)):
        others = named - {a}
        extra = f"; title also names {_fmt(others)}" if others else "; title agrees"
        return _label(cat, a, method, (0.8 if others else (0.9 if aspect.soft else 1.0)) * conf_scale,
                      f"{src} -> {a}{' (default)' if aspect.soft else ''}{extra}{note}")
    if not named:  # the title only has ambiguous names that exclude A
        return _unknown(f"{src} -> {a} but title suggests {_fmt(tres.candidates)}")
    return _unknown(f"{src} -> {a} contradicts title ({_fmt(named)})")


def _from_title(cat: Catalogue, tokens: list[str], mentions, md_tokens: list[str], model: str) -> Label:
    """No usable seller make: the title (and a bare model field) decide."""
    mention_makes = [mk for cands, _, _ in mentions for mk, _ in cands]
    hits: list[_Hit] = []
    for cands, _, end in mentions:
        for mk, prefix in cands:
            hits.extend(_scan(cat, (list(prefix) if prefix else []) + tokens[end:], mk))
    res = _resolve(hits)
    if not res.cls and not res.candidates and mention_makes:
        hits = [h for mk in dict.fromkeys(mention_makes) for h in _scan(cat, tokens + md_tokens, mk)]
        res = _resolve(hits)
    if res.blocked:
        return _unknown(f"title names '{res.blocked}', a model outside the catalogue")
    if md_tokens and len(res.candidates) > 1:
        res = _narrow(res, hits, "".join(md_tokens))
    if res.cls:
        return _label(cat, res.cls, "title", 0.8 if res.soft else 0.9,
                      f"title make+model ('{res.key}'{', default' if res.soft else ''})")
    if res.candidates:
        return _unknown(f"title names several models: {_fmt(res.candidates)}")
    # no make named: distinctive model names alone ("2015 Camry SE"). A named make that has none of the
    # title's models contradicts them ("Honda Integra" is not an Acura), unless the "make" is just a word.
    real = [(s, e) for cands, s, e in mentions if "".join(tokens[s:e]) not in _WORDY_MAKES]
    if not real:
        masked = [("\x00" if any(s <= i < e for _, s, e in mentions) else t) for i, t in enumerate(tokens)]
        gres = _resolve(_scan_global(cat, masked + md_tokens))
        if gres.cls:
            return _label(cat, gres.cls, "title", 0.7,
                          f"model '{gres.key}' without make identifies {cat.classes[gres.cls].make}")
        if gres.candidates:
            return _unknown(f"model name is ambiguous: {_fmt(gres.candidates)}")
    # misspellings: a named make, or a misspelled make in the title
    for cands, _, end in mentions:
        for mk, _p in cands:
            fz = _fuzzy_model(cat, tokens[end:] + md_tokens, mk)
            if fz:
                return _label(cat, fz[0], "fuzzy", fz[1] / 100, f"title make {mk}, model misspelled: {fz[2]}")
    if not mentions:
        for i, t in enumerate(tokens):
            if t in _NOT_FUZZY or not t.isalpha():
                continue
            best = _fuzzy_pick(t, cat.fuzzy_make_keys)
            if not best:
                continue
            for mk, prefix in cat.make_keys[best[0]]:
                rest = tokens[i + 1:]
                r = _resolve(_scan(cat, rest, mk))
                if r.cls:
                    return _label(cat, r.cls, "fuzzy", best[1] / 100 * 0.95,
                                  f"title make misspelled: {t}~{best[0]}; model '{r.key}'")
                fz = _fuzzy_model(cat, rest + md_tokens, mk)
                if fz:
                    return _label(cat, fz[0], "fuzzy", best[1] / 100 * fz[1] / 100,
                                  f"title make misspelled: {t}~{best[0]}; model misspelled: {fz[2]}")
    if mentions:
        return _unknown(f"title names make {mention_makes[0]} but no model")
    return _unknown("no make or model found" if tokens or md_tokens else "no make, model or title")


@functools.lru_cache(maxsize=200_000)
def _cached(make: str, model: str, title: str) -> Label:
    return normalize_uncached(make, model, title)


def normalize(make: str | None, model: str | None, title: str | None = None) -> Label:
    """Normalize a listing's seller make/model (and title) to a catalogue class; see the module docstring."""
    return _cached(make or "", model or "", title or "")


def clear_caches() -> None:
    """Forget every cached result (tests and benchmarks measure cold runs with this)."""
    from autodetect.catalogue import catalogue as _c

    _cached.cache_clear()
    _seller.cache_clear()
    _find_makes_t.cache_clear()
    _c._tokenize.cache_clear()
