"""Seller make/model (or listing title) -> one canonical catalogue class, or a refusal.

``normalize(make, model, title)`` returns a :class:`Label`. The algorithm, a module a step:

1. Tokenize (``tokens``): the seller's make and model fields and the title become lower-case, accent-free
   tokens; a name's key is its tokens concatenated, so spacing, case, hyphens and accents never matter.
2. Find the make (``make_match``): the make field among make names and aliases, and the makes the title
   names.
3. Match the model (``model_match``): the longest model name (or model code) at each position, within a
   make; ``seller_fields`` reads the seller's two fields this way, once per distinct pair.
4. Resolve ambiguity (``seller_vs_title``, ``title_only``): the seller's class is confirmed, refined or
   contradicted by the title; without one, the title decides; several classes, or none, are a refusal.
5. Fall back to fuzzy (``fuzzy_match``): only when exact matching finds nothing, misspelled makes and
   models are matched with rapidfuzz, and only when one class is clearly best.

The rules in detail, in order:

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

from autodetect.catalogue import make_match, seller_fields, tokens
from autodetect.catalogue.catalogue import Catalogue, load, tokenize
from autodetect.catalogue.labels import Label, quote, unknown
from autodetect.catalogue.make_match import MakeMention, find_makes
from autodetect.catalogue.seller_fields import read_seller_fields
from autodetect.catalogue.seller_vs_title import confirm_with_title, model_from_title
from autodetect.catalogue.title_only import label_from_title

__all__ = ["Label", "clear_caches", "normalize", "normalize_uncached"]


def normalize_uncached(make: str | None, model: str | None, title: str | None = None) -> Label:
    """:func:`normalize` without the per-listing cache."""
    cat = load()
    seller = read_seller_fields(make or "", model or "")
    if seller.refusal:
        return unknown(seller.refusal)
    ti_tokens = tokenize(title)
    mentions = find_makes(cat, ti_tokens)
    if seller.mk_tokens and not seller.make_names:
        return _make_outside_catalogue(cat, make, ti_tokens, mentions)
    if seller.aspect.cls:
        return confirm_with_title(cat, seller, ti_tokens, mentions, model)
    if seller.make_names:
        return model_from_title(cat, seller, make, model, ti_tokens, mentions)
    return label_from_title(cat, ti_tokens, mentions, list(seller.md_tokens))


def _make_outside_catalogue(cat: Catalogue, make: str | None, ti_tokens: list[str],
                            mentions: list[MakeMention]) -> Label:
    """A make field outside the catalogue (motorcycle, trailer, coachbuilder): only the title can tell."""
    found = label_from_title(cat, ti_tokens, mentions, [])
    if found.class_name:
        return Label(found.class_name, found.make, found.model, found.method, min(found.confidence, 0.6),
                     f"seller make '{quote(make)}' not in catalogue; {found.reason}"[:200])
    return unknown(f"seller make '{quote(make)}' not in catalogue; {found.reason}")


@functools.lru_cache(maxsize=200_000)
def _cached(make: str, model: str, title: str) -> Label:
    return normalize_uncached(make, model, title)


def normalize(make: str | None, model: str | None, title: str | None = None) -> Label:
    """Normalize a listing's seller make/model (and title) to a catalogue class; see the module docstring."""
    return _cached(make or "", model or "", title or "")


def clear_caches() -> None:
    """Forget every cached result (tests and benchmarks measure cold runs with this)."""
    _cached.cache_clear()
    seller_fields.read_seller_fields.cache_clear()
    make_match._find_makes_cached.cache_clear()
    tokens._tokenize.cache_clear()
