"""No usable seller make: the title (and a bare model field) decide.

In order: a model after a make the title names ("2019 FORD F-150 XLT"); a distinctive model name alone
("2015 Camry SE") when the title names no make; a misspelled model after a named make; a misspelled make
followed by a model ("Toyta Camry"); else unknown.
"""
from __future__ import annotations

from autodetect.catalogue.catalogue import Catalogue
from autodetect.catalogue.fuzzy_match import NOT_FUZZY, fuzzy_model, fuzzy_pick
from autodetect.catalogue.labels import Label, make_label, refuse_if_several, unknown
from autodetect.catalogue.make_match import MakeMention
from autodetect.catalogue.model_match import Hit, narrow_by_model_text, resolve, scan_any_make, scan_make

#: Make names that are also ordinary words ("leather seat", "smart buy"): they do not stop a make-less lookup.
_WORDY_MAKES = frozenset({"seat", "smart", "mini", "eagle", "genesis", "scion", "lotus", "jaguar", "mercury"})


def label_from_title(cat: Catalogue, tokens: list[str], mentions: list[MakeMention], md_tokens: list[str]) -> Label:
    """No usable seller make: the title (and a bare model field) decide."""
    found = (_named_make_and_model(cat, tokens, mentions, md_tokens)
             or _model_without_make(cat, tokens, mentions, md_tokens)
             or _misspelled_model_of_named_make(cat, tokens, mentions, md_tokens)
             or (None if mentions else _misspelled_make(cat, tokens, md_tokens)))
    if found:
        return found
    if mentions:
        (first_make, _), *_ = mentions[0][0]
        return unknown(f"title names make {first_make} but no model")
    return unknown("no make or model found" if tokens or md_tokens else "no make, model or title")


def _named_make_and_model(cat: Catalogue, tokens: list[str], mentions: list[MakeMention],
                          md_tokens: list[str]) -> Label | None:
    """A model after a make the title names (else anywhere in the title and model field)."""
    mention_makes = [mk for cands, _, _ in mentions for mk, _ in cands]
    hits: list[Hit] = []
    for cands, _, end in mentions:
        for mk, prefix in cands:
            hits.extend(scan_make(cat, (list(prefix) if prefix else []) + tokens[end:], mk))
    res = resolve(hits)
    if not res.cls and not res.candidates and mention_makes:
        hits = [h for mk in dict.fromkeys(mention_makes) for h in scan_make(cat, tokens + md_tokens, mk)]
        res = resolve(hits)
    if res.blocked:
        return unknown(f"title names '{res.blocked}', a model outside the catalogue")
    if md_tokens and len(res.candidates) > 1:
        res = narrow_by_model_text(res, hits, "".join(md_tokens))
    if res.cls:
        return make_label(cat, res.cls, "title", 0.8 if res.soft else 0.9,
                          f"title make+model ('{res.key}'{', default' if res.soft else ''})")
    return refuse_if_several(res.candidates, "title names several models")


def _model_without_make(cat: Catalogue, tokens: list[str], mentions: list[MakeMention],
                        md_tokens: list[str]) -> Label | None:
    """No make named: distinctive model names alone ("2015 Camry SE"). A named make that has none of the
    title's models contradicts them ("Honda Integra" is not an Acura), unless the "make" is just a word."""
    real = [(s, e) for cands, s, e in mentions if "".join(tokens[s:e]) not in _WORDY_MAKES]
    if real:
        return None
    masked = [("\x00" if any(s <= i < e for _, s, e in mentions) else t) for i, t in enumerate(tokens)]
    gres = resolve(scan_any_make(cat, masked + md_tokens))
    if gres.cls:
        return make_label(cat, gres.cls, "title", 0.7,
                          f"model '{gres.key}' without make identifies {cat.classes[gres.cls].make}")
    return refuse_if_several(gres.candidates, "model name is ambiguous")


def _misspelled_model_of_named_make(cat: Catalogue, tokens: list[str], mentions: list[MakeMention],
                                    md_tokens: list[str]) -> Label | None:
    """A misspelled model after a make the title names."""
    for cands, _, end in mentions:
        for mk, _p in cands:
            fz = fuzzy_model(cat, tokens[end:] + md_tokens, mk)
            if fz:
                return make_label(cat, fz[0], "fuzzy", fz[1] / 100, f"title make {mk}, model misspelled: {fz[2]}")
    return None


def _misspelled_make(cat: Catalogue, tokens: list[str], md_tokens: list[str]) -> Label | None:
    """A misspelled make in the title (which names none), followed by a model, exact or misspelled."""
    for i, t in enumerate(tokens):
        if t in NOT_FUZZY or not t.isalpha():
            continue
        best = fuzzy_pick(t, cat.fuzzy_make_keys)
        if not best:
            continue
        for mk, _prefix in cat.make_keys[best[0]]:
            rest = tokens[i + 1:]
            r = resolve(scan_make(cat, rest, mk))
            if r.cls:
                return make_label(cat, r.cls, "fuzzy", best[1] / 100 * 0.95,
                                  f"title make misspelled: {t}~{best[0]}; model '{r.key}'")
            fz = fuzzy_model(cat, rest + md_tokens, mk)
            if fz:
                return make_label(cat, fz[0], "fuzzy", best[1] / 100 * fz[1] / 100,
                                  f"title make misspelled: {t}~{best[0]}; model misspelled: {fz[2]}")
    return None
