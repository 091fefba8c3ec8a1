"""Canonical car make/model names: the labels AutoDetect trains on.

* :func:`normalize` — seller make/model (or the listing title) -> :class:`Label` (one catalogue class,
  or unknown with the reason).
* :func:`class_names` / :func:`load` — the catalogue itself: NHTSA vPIC makes and models
  (``data/vpic_models.csv``, rebuilt by ``python -m autodetect.catalogue.regenerate``) plus hand-curated
  families, aliases and European models (``data/curated.json``).
"""
from autodetect.catalogue.catalogue import CarClass, Catalogue, class_names, load, tokenize
from autodetect.catalogue.names import Label, clear_caches, normalize, normalize_uncached

__all__ = ["CarClass", "Catalogue", "Label", "class_names", "clear_caches", "load", "normalize",
           "normalize_uncached", "tokenize"]
