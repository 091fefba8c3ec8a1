"""The seller named a make: weighing the seller's fields against the title.

* :func:`confirm_with_title` — the fields name a class: the title confirms it, refines it ("Silverado" +
  "Silverado 2500HD"), names nothing, or contradicts it (-> unknown).
* :func:`model_from_title` — the model field is ambiguous, unrecognized or empty: the title decides within
  the seller's make (narrowed by the model field), then a make+model the title names instead, then
  misspellings within the seller's make.
"""
from __future__ import annotations

from autodetect.catalogue.catalogue import Catalogue
from autodetect.catalogue.fuzzy_match import fuzzy_model
from autodetect.catalogue.labels import Label, fmt_classes, make_label, quote, refuse_if_several, unknown
from autodetect.catalogue.make_match import MakeMention
from autodetect.catalogue.model_match import Hit, Resolved, narrow_by_model_text, resolve, scan_make, title_hits
from autodetect.catalogue.seller_fields import SellerFields


def confirm_with_title(cat: Catalogue, seller: SellerFields, ti_tokens: list[str], mentions: list[MakeMention],
                       model: str | None) -> Label:
    """The seller's fields name a class A; check the title agrees (or refines, or contradicts)."""
    aspect, fuzzy_score, make_note = seller.aspect, seller.make_fuzzy, seller.make_note
    a = aspect.cls
    method = "fuzzy" if fuzzy_score else "aspects"
    conf_scale = (fuzzy_score / 100) if fuzzy_score else 1.0
    src = "seller make+model" if seller.make_names else "seller model"
    note = f"; {make_note}" if make_note else ""
    if not ti_tokens:
        return make_label(cat, a, method, (0.85 if aspect.soft else 0.95) * conf_scale,
                          f"{src} -> {a}{' (default)' if aspect.soft else ''}{note}")
    own, other = title_hits(cat, ti_tokens, [seller.aspect_make], mentions)
    hits = own + other
    strong = [h for h in hits if not h.entry.weak]
    tres = resolve(hits)
    if tres.blocked:
        return unknown(f"{src} -> {a} but title names '{tres.blocked}', a model outside the catalogue")
    if not strong:  # the title names nothing, or only words that are also trims ("GT", "Sport"): A stands
        agrees = any(a in h.entry.classes for h in hits)
        return make_label(cat, a, method, (0.85 if aspect.soft else (1.0 if agrees else 0.95)) * conf_scale,
                          f"{src} -> {a}{' (default)' if aspect.soft else ''}; "
                          f"{'title agrees' if agrees else 'title names no model'}{note}")
    named = {c for h in strong if len(h.entry.classes) == 1 for c in h.entry.classes}
    # refinement: the seller's name is a soft default or a prefix of what the title names
    if tres.cls and tres.cls != a and cat.classes[tres.cls].make == cat.classes[a].make and (
            (aspect.soft and tres.cls in aspect.candidates) or (tres.key.startswith(aspect.key) and a not in named)):
        return make_label(cat, tres.cls, "fuzzy" if fuzzy_score else "title", 0.9 * conf_scale,
                          f"title '{tres.key}' refines seller model '{quote(model)}'{note}")
    if aspect.soft and aspect.not_with and any(t in aspect.not_with for t in ti_tokens):
        return unknown(f"seller model '{quote(model)}' may be {fmt_classes(aspect.candidates)}; the title's "
                       f"'{next(t for t in ti_tokens if t in aspect.not_with)}' rules out the default {a}")
    if a in named or (not named and all(a in h.entry.classes for h in strong)):
        others = named - {a}
        extra = f"; title also names {fmt_classes(others)}" if others else "; title agrees"
        return make_label(cat, a, method, (0.8 if others else (0.9 if aspect.soft else 1.0)) * conf_scale,
                          f"{src} -> {a}{' (default)' if aspect.soft else ''}{extra}{note}")
    if not named:  # the title only has ambiguous names that exclude A
        return unknown(f"{src} -> {a} but title suggests {fmt_classes(tres.candidates)}")
    return unknown(f"{src} -> {a} contradicts title ({fmt_classes(named)})")


def model_from_title(cat: Catalogue, seller: SellerFields, make: str | None, model: str | None,
                     ti_tokens: list[str], mentions: list[MakeMention]) -> Label:
    """The seller's make is known but its model field names no one class: the title decides, in this order."""
    own, other = title_hits(cat, ti_tokens, list(seller.make_names), mentions)
    res = resolve(own)
    if seller.aspect.candidates and len(seller.aspect.candidates) > 1:
        return _one_of_the_seller_candidates(cat, seller, model, res)
    return (_title_model_of_seller_make(cat, seller, model, res, own)
            or _title_make_and_model(cat, seller, make, model, other)
            or _misspelled_model(cat, seller, ti_tokens, mentions)
            or unknown(f"seller make {seller.make_names[0]} but no model in model field or title"))


def _one_of_the_seller_candidates(cat: Catalogue, seller: SellerFields, model: str | None, res: Resolved) -> Label:
    """The model field may mean several classes ("Super Duty"): the title must pick one of them."""
    candidates = seller.aspect.candidates
    narrowed = frozenset(c for c in (res.candidates if res.candidates else ()) if c in candidates)
    if len(narrowed) == 1:
        c = next(iter(narrowed))
        return make_label(cat, c, "fuzzy" if seller.make_fuzzy else "title", 0.85,
                          f"seller model '{quote(model)}' may be {fmt_classes(candidates)}; title says {c}")
    if res.cls and res.cls not in candidates:
        return unknown(f"seller model '{quote(model)}' ({fmt_classes(candidates)}) disagrees with title ({res.cls})")
    return unknown(f"seller model '{quote(model)}' is ambiguous: {fmt_classes(candidates)}")


def _title_model_of_seller_make(cat: Catalogue, seller: SellerFields, model: str | None, res: Resolved,
                                own: list[Hit]) -> Label | None:
    """A model of the seller's make in the title (narrowed by an unrecognized model field); None if none."""
    md_tokens = list(seller.md_tokens)
    if res.blocked:
        return unknown(f"title names '{res.blocked}', a model outside the catalogue")
    res = narrow_by_model_text(res, own, "".join(md_tokens))
    if res.cls and md_tokens:
        # the seller's model is unrecognized: if it is a misspelling of another model, they disagree
        fz = next(filter(None, (fuzzy_model(cat, md_tokens, mk) for mk in seller.make_names)), None)
        if fz and fz[3] and fz[0] != res.cls:
            return unknown(f"seller model '{quote(model)}' (~{fz[0]}) disagrees with title ({res.cls})")
    if res.cls:
        how = "default" if res.soft else "title"
        make_note = seller.make_note
        return make_label(cat, res.cls, "fuzzy" if seller.make_fuzzy else "title", 0.8 if res.soft else 0.9,
                          f"seller make {seller.make_names[0]}{', ' + make_note if make_note else ''}; model from"
                          f" title ({how}: '{res.key}')")
    return refuse_if_several(res.candidates, "title names several models")


def _title_make_and_model(cat: Catalogue, seller: SellerFields, make: str | None, model: str | None,
                          other: list[Hit]) -> Label | None:
    """A make+model of another make in the title ("GMC Sierra 1500" for seller "Chevrolet"): used if the
    seller's model field agrees with it (or is empty); None if the title names no other make's model."""
    md_tokens = list(seller.md_tokens)
    ores = resolve(other)
    if ores.blocked:
        return unknown(f"title names '{ores.blocked}', a model outside the catalogue")
    if ores.cls:
        omake = cat.classes[ores.cls].make
        agrees = (not md_tokens or ores.cls in resolve(scan_make(cat, md_tokens, omake)).candidates
                  or any(omake == c[0] for c in cat.make_keys.get("".join(md_tokens), ())))
        if agrees:
            return make_label(cat, ores.cls, "title", 0.7,
                              f"seller make '{quote(make)}' disagrees with title make {omake}; title make+model used"
                              + (f" (seller model '{quote(model)}' agrees)" if md_tokens else ""))
        return unknown(f"seller '{quote(make)}'/'{quote(model)}' disagrees with title ({ores.cls})")
    return refuse_if_several(ores.candidates, "title names several models")


def _misspelled_model(cat: Catalogue, seller: SellerFields, ti_tokens: list[str],
                      mentions: list[MakeMention]) -> Label | None:
    """A misspelled model of the seller's make: in the model field, else in the title after the make."""
    md_tokens = list(seller.md_tokens)
    make_fuzzy, make_note = seller.make_fuzzy, seller.make_note
    for mk in seller.make_names:
        region = ti_tokens
        for cands, _, end in mentions:
            if any(c[0] == mk for c in cands):
                region = ti_tokens[end:]
                break
        fz = fuzzy_model(cat, md_tokens, mk) if md_tokens else None
        src = "seller model"
        if not fz:
            fz, src = fuzzy_model(cat, region, mk), "title"
        if fz:
            cls, score, how, _ = fz
            return make_label(cat, cls, "fuzzy", score / 100 * (1 if not make_fuzzy else make_fuzzy / 100),
                              f"{src} misspelled: {how}{'; ' + make_note if make_note else ''}")
    return None
