"""Reading the seller's make and model fields, before the title is looked at (cached per distinct pair)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from autodetect.catalogue.catalogue import Catalogue, load, tokenize
from autodetect.catalogue.labels import fmt_classes, quote
from autodetect.catalogue.make_match import parse_make_field, strip_make_words
from autodetect.catalogue.model_match import NOTHING, Resolved, resolve, scan_any_make, scan_make

#: Seller-field values that carry no information.
_EMPTY = frozenset({"", "na", "n", "none", "null", "other", "others", "unknown", "doesnotapply", "notapplicable",
                    "notspecified", "unbranded", "various", "see description", "seedescription", "misc",
                    "miscellaneous", "custom", "tbd", "xx", "x"})


def _meaningful(tokens: list[str]) -> bool:
    return bool(tokens) and "".join(tokens) not in _EMPTY and tokens[0] not in ("other", "others")


@dataclass(frozen=True)
class SellerFields:
    """What the seller's make and model fields say (cached per distinct pair: they repeat a lot)."""
    mk_tokens: tuple[str, ...]
    md_tokens: tuple[str, ...]
    make_cands: tuple[tuple[str, tuple[str, ...]], ...]
    make_fuzzy: float | None
    make_note: str
    aspect: Resolved
    aspect_make: str | None
    make_names: tuple[str, ...]
    refusal: str = ""  # the fields alone already make the answer unknown


@functools.lru_cache(maxsize=65536)
def read_seller_fields(make: str, model: str) -> SellerFields:
    """The make field -> candidate makes (exact, or misspelled); the model field -> a class within them, or,
    without a make field, a distinctive model name of any make; or a refusal the fields alone justify."""
    cat = load()
    mk_tokens = tokenize(make)
    md_tokens = tokenize(model)
    if not _meaningful(mk_tokens):
        mk_tokens = []
    if not _meaningful(md_tokens):
        md_tokens = []
    make_cands, leftover, make_fuzzy = parse_make_field(cat, mk_tokens) if mk_tokens else ([], [], None)
    make_note = f"make '{quote(make)}'~{make_cands[0][0]} ({make_fuzzy:.0f})" if make_fuzzy else ""
    aspect = NOTHING
    aspect_make = None
    refusal = ""
    if make_cands:
        aspect_make, aspect, refusal = _pick_make(_model_within_makes(cat, make_cands, leftover, md_tokens), make)
    elif md_tokens and not mk_tokens:
        aspect = resolve(scan_any_make(cat, md_tokens))
        if aspect.cls:
            aspect_make = cat.classes[aspect.cls].make
    if aspect.blocked:
        refusal = f"seller model '{quote(model)}' names '{aspect.blocked}', a model outside the catalogue"
    return SellerFields(tuple(mk_tokens), tuple(md_tokens), tuple(make_cands), make_fuzzy, make_note, aspect,
                        aspect_make, tuple(mk for mk, _ in make_cands), refusal)


def _model_within_makes(cat: Catalogue, make_cands: list[tuple[str, tuple[str, ...]]], leftover: list[str],
                        md_tokens: list[str]) -> list[tuple[str, Resolved]]:
    """For each candidate make, what the model field names: after the make field's extra words if any ("Mini
    Cooper" + "S"), then after the make key's model start ("Range Rover" + "Sport"); the first reading that
    names anything counts, and makes that neither names anything in are left out."""
    tried = []
    for mk, prefix in make_cands:
        variants = [leftover + md_tokens] if leftover else [md_tokens]
        if prefix:
            variants.append(list(prefix) + md_tokens)
        for toks in variants:
            toks = strip_make_words(cat, toks, mk)
            if not toks:
                continue
            res = resolve(scan_make(cat, toks, mk))
            if res.cls or res.candidates or res.blocked:
                tried.append((mk, res))
                break
    return tried


def _pick_make(tried: list[tuple[str, Resolved]], make: str) -> tuple[str | None, Resolved, str]:
    """(make, what its model names, refusal): the one class the candidate makes agree on, or the only
    candidate make that names anything; several classes are a refusal."""
    definite = [t for t in tried if t[1].cls]
    if len({t[1].cls for t in definite}) == 1:
        return *definite[0], ""
    if len(tried) == 1:
        return *tried[0], ""
    if len(definite) > 1:
        return None, NOTHING, f"make '{quote(make)}' is ambiguous: {fmt_classes({t[1].cls for t in definite})}"
    return None, NOTHING, ""
