"""The fallback for misspellings: rapidfuzz over make and model keys, accepted only when one name is clearly best.

A word matches a key with one edit (5+ letters), or a ratio >= 85 and at most two edits (7+ letters), or as
a prefix short of at most two letters; digits must agree exactly ("Madza3" is a Mazda3, "RAV5" is not a
RAV4). Two equally close spellings, or two equally close classes, are a refusal (None)."""
from __future__ import annotations

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from autodetect.catalogue.catalogue import Catalogue

#: Words that are never a misspelled model: listing junk, trims, body and drivetrain words. Only the
#: fuzzy fallback consults this (an exact alias always matches).
NOT_FUZZY = frozenset("""
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


def fuzzy_pick(q: str, choices: list[str]) -> tuple[str, float] | None:
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


def fuzzy_model(cat: Catalogue, tokens: list[str], make: str) -> tuple[str, float, str, bool] | None:
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
        if i == skip or sum(c.isalpha() for c in t) < 4 or t in NOT_FUZZY or t in idx:
            continue  # (an exact name, even a weak one, is never a misspelling of another)
        single = best_of(t)
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        pair = best_of(t + nxt) if nxt and nxt not in NOT_FUZZY and t + nxt not in idx else {}
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
