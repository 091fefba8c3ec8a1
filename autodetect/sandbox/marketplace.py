"""A deterministic, lazy used-car marketplace with ground truth.

Listing ``i`` is computed from ``(seed, i)`` when first asked for, so a marketplace of any size
costs nothing up front; photos are rendered (and cached) when first fetched. Models are dealt
round-robin in blocks: each block of ``models`` consecutive listings holds every model once, in a
rotated order.

What a crawler meets, as on a real marketplace:

- relists (~8%): a listing of the same car as an earlier listing of its model, reusing one or more of
  its photos as exact copies or re-encoded, resized, lightly cropped or brightened;
- non-car photos (~5% of listings): one interior or document photo at position 2 or later;
- with ``bad_input``, one listing of each of these (indices in :attr:`Marketplace.bad_cases`): no
  photo, no price, the price ``"12,500.00"``, a first photo whose URL answers 404, and one listing
  served twice in a row by search (the last item of a page of 200 comes again first on the next).
  Search's ``total`` counts distinct listings: the repeat takes a place in the serving order only.

Prices follow a known function (``sandbox/prices.py``; with ``price_quirks`` some are placeholders, auctions,
foreign...); :meth:`Marketplace.expected_price` gives the generating price and its own deal rating.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np

from autodetect.sandbox.cars import CARS, CarSpec, canonical_make, make_title, seller_aspects
from autodetect.sandbox.label_noise import flip_labels
from autodetect.sandbox.locations import CITIES, City
from autodetect.sandbox.photo_copies import TRANSFORMS, copy_photo, jpeg_bytes
from autodetect.sandbox.prices import CURRENT_YEAR, Offer, draw_offer, price_draws, seller_view
from autodetect.sandbox.render import NON_CAR_KINDS, PAINT_SHARES, render_car, render_non_car

ITEM_NUMBER_BASE = 100_000_000
CATEGORY_ID = "6001"  # eBay Motors: Cars & Trucks
LISTING_DEFECTS = ("no_photo", "no_price", "comma_price", "broken_photo")  # plus "repeated" in search
PAGE_BOUNDARY = 200  # where the repeated listing straddles two pages (any page size dividing 200)
RELIST_SHARE = 0.08
NON_CAR_SHARE = 0.06  # of listings with 3+ photos, i.e. ~5% of all
_PHOTO_COUNTS, _PHOTO_COUNT_CUMULATIVE = (1, 2, 3, 4, 5), (5, 15, 45, 75, 100)
_PAINTS = tuple(PAINT_SHARES)
_PAINT_CUMULATIVE = tuple(np.cumsum(list(PAINT_SHARES.values())).tolist())
_PHOTO_PATH = re.compile(r"^/photos/(\d+)/(\d+)\.jpg$")


@dataclass(frozen=True)
class Photo:
    path: str  # "/photos/100000123/0.jpg", relative to the server
    kind: str  # "car", "interior" or "document"
    original: str | None = None  # the earlier listing's photo this one copies
    transform: str | None = None  # how it was copied: one of TRANSFORMS


class PhotoTruth(NamedTuple):
    kind: str
    class_name: str  # the listing's car (also for interior and document photos)
    original: str | None
    transform: str | None


class Matches(NamedTuple):
    """What a search matches: ``served`` in serving order (the repeated listing twice when it matches)
    and ``distinct``, each matching listing once, ascending. ``total`` counts the distinct ones."""
    served: np.ndarray
    distinct: np.ndarray

    @property
    def total(self) -> int:
        return len(self.distinct)


#: A price band in cents, both bounds inclusive, either one open (None).
PriceBand = tuple[int | None, int | None]


def price_cents(text: str | None) -> int | None:
    """ "18450.00" -> 1845000, "12,500.00" -> 1250000; None without a price (or an unreadable one)."""
    if text is None:
        return None
    try:
        return round(float(text.replace(",", "")) * 100)
    except ValueError:
        return None


class DuplicatePair(NamedTuple):
    original: str
    copy: str
    transform: str


@dataclass(frozen=True)
class Listing:
    index: int
    item_id: str  # "v1|100000123|0"
    spec: CarSpec = field(repr=False)
    year: int
    title: str
    price: str | None  # "18450.00"; None when the seller gave none
    currency: str
    mileage: int
    condition: str
    aspects: dict[str, str]  # the seller's Make, Model, Year, Mileage
    city: City
    colour: str
    photos: tuple[Photo, ...]
    relist_of: int | None  # index of the earlier listing of the same car
    web_path: str  # "/itm/100000123"
    offer: Offer = field(repr=False)  # how it is sold, and the generating price

    @property
    def class_name(self) -> str:
        return self.spec.class_name

    @property
    def item_number(self) -> int:
        return ITEM_NUMBER_BASE + self.index


def item_id(index: int) -> str:
    return f"v1|{ITEM_NUMBER_BASE + index}|0"


def _seed(*parts: object) -> int:
    """A stable 64-bit seed from parts (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def photo_index(path: str) -> tuple[int, int] | None:
    """``(listing index, photo position)`` for a photo path or URL; None if it is not one."""
    m = _PHOTO_PATH.match(urlsplit(path).path)
    if not m:
        return None
    return int(m.group(1)) - ITEM_NUMBER_BASE, int(m.group(2))


class Marketplace:
    """``listings`` listings of the first ``models`` models of :data:`~autodetect.sandbox.cars.CARS`."""

    def __init__(self, listings: int = 500, models: int = 10, seed: int = 0, bad_input: bool = True,
                 label_noise: float = 0.0, price_quirks: bool = False):
        if listings < 0:
            raise ValueError("listings must be >= 0")
        if not 1 <= models <= len(CARS):
            raise ValueError(f"models must be between 1 and {len(CARS)}")
        self.size = listings
        self.specs: tuple[CarSpec, ...] = CARS[:models]
        self.seed = seed
        self.bad_input = bad_input
        self.price_quirks = price_quirks  # placeholders, auctions, other currencies...: sandbox/prices.py
        self.label_noise = label_noise  # share of listings whose seller names another model: flipped_listings()
        self._named = flip_labels(listings, self.specs, self.model_of, seed=seed, share=label_noise)
        #: Which listing carries each deliberate defect (empty without ``bad_input`` or below 12 listings).
        self.bad_cases: dict[str, int] = self._place_bad_cases() if bad_input else {}
        self._defect = {index: case for case, index in self.bad_cases.items() if case != "repeated"}
        self._listing = lru_cache(maxsize=20_000)(self._build)
        self._photo = lru_cache(maxsize=2048)(self._render_photo)
        self._matches = lru_cache(maxsize=64)(self._match)
        self._lock = threading.Lock()
        self._titles: list[str] | None = None
        self._prices: np.ndarray | None = None  # cents; -1 where the listing has no price
        self._model_index: np.ndarray | None = None

    def __len__(self) -> int:
        return self.size

    # --- ground truth -------------------------------------------------------------------------
    def classes(self) -> list[str]:
        """The canonical class names on offer ("Audi TT", ...)."""
        return [spec.class_name for spec in self.specs]

    def listing(self, index: int) -> Listing:
        if not 0 <= index < self.size:
            raise IndexError(f"listing {index} out of range 0..{self.size - 1}")
        return self._listing(index)

    def listings(self) -> Iterator[Listing]:
        return (self.listing(i) for i in range(self.size))

    def listing_for_item(self, item_id: str) -> Listing | None:
        """The listing with this item id ("v1|100000123|0"), or None."""
        m = re.fullmatch(r"v1\|(\d+)\|0", item_id)
        index = int(m.group(1)) - ITEM_NUMBER_BASE if m else -1
        return self._listing(index) if 0 <= index < self.size else None

    def truth_for_photo(self, path: str) -> PhotoTruth:
        """What a photo path or URL shows; KeyError for a path the marketplace never served."""
        photo, listing = self._lookup(path)
        return PhotoTruth(photo.kind, listing.class_name, photo.original, photo.transform)

    def expected_price(self, item_id: str) -> Offer | None:
        """How an item is offered, with its generating price and own deal rating; None if unknown."""
        return listing.offer if (listing := self.listing_for_item(item_id)) else None

    def flipped_listings(self) -> dict[int, tuple[str, str]]:
        """The listings whose seller names another model: index -> (the car's class, the class named)."""
        return {i: (self.specs[self.model_of(i)].class_name, named.class_name) for i, named in self._named.items()}

    def duplicate_pairs(self) -> list[DuplicatePair]:
        """Every photo that copies an earlier listing's photo (computes all listings)."""
        return [DuplicatePair(p.original, p.path, p.transform) for listing in self.listings()
                for p in listing.photos if p.original]

    def photo_bytes(self, path: str) -> bytes | None:
        """The JPEG for a photo path or URL; None if it does not exist or is the broken one."""
        try:
            photo, listing = self._lookup(path)
        except KeyError:
            return None
        if self._defect.get(listing.index) == "broken_photo" and photo is listing.photos[0]:
            return None
        return self._photo(photo.path)

    # --- search -------------------------------------------------------------------------------
    def search(self, q: str | None = None, makes: frozenset[str] = frozenset(), offset: int = 0,
               limit: int = 50, price: PriceBand = (None, None)) -> tuple[int, list[Listing]]:
        """``(total, page)``: ``total`` distinct listings match; the page is cut from the serving order
        (where the repeated listing comes twice). See :meth:`matches` for the filters."""
        found = self.matches(q, makes, price)
        return found.total, self.page(found, offset, limit)

    def matches(self, q: str | None = None, makes: frozenset[str] = frozenset(),
                price: PriceBand = (None, None)) -> Matches:
        """The listings a search matches. ``q``: every word must occur in the title (case-insensitive);
        ``makes``: the listing's make, given as a canonical name or an alias ("VW"); ``price``: a band in
        cents, bounds inclusive, either open (a listing without a price never matches a band). Results
        are cached per filter: a page then costs ~10 ms for its 200 listings. The first ``q`` or
        ``price`` search builds every listing once (~0.7 s for 10,000 listings)."""
        canonical = frozenset(canonical_make(m) or m for m in makes)
        words = tuple(sorted(set((q or "").lower().split())))
        return self._matches(words, canonical, tuple(price))

    def page(self, found: Matches, offset: int, limit: int) -> list[Listing]:
        return [self.listing(int(i)) for i in found.served[max(0, offset): max(0, offset) + max(0, limit)]]

    def make_counts(self, found: Matches) -> dict[str, int]:
        """Matching listings per canonical make, most first (makes without a match left out)."""
        per_model = np.bincount(self._models()[found.distinct], minlength=len(self.specs))
        counts: Counter[str] = Counter()
        for spec, n in zip(self.specs, per_model.tolist(), strict=True):
            counts[spec.make] += n
        return {make: n for make, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n}

    def _match(self, words: tuple[str, ...], makes: frozenset[str], price: PriceBand) -> Matches:
        sequence = np.arange(self.size)
        if makes:
            wanted = [k for k, spec in enumerate(self.specs) if spec.make in makes]
            sequence = sequence[np.isin(self._models()[sequence], wanted)]
        lo, hi = price
        if lo is not None or hi is not None:
            cents = self._columns()[1][sequence]
            keep = cents >= max(0, lo or 0)
            if hi is not None:
                keep &= cents <= hi
            sequence = sequence[keep]
        if words:
            titles = self._columns()[0]
            sequence = sequence[np.fromiter((all(w in titles[i] for w in words) for i in sequence),
                                            dtype=bool, count=len(sequence))]
        served = sequence
        if "repeated" in self.bad_cases:
            repeated = self.bad_cases["repeated"]
            at = int(np.searchsorted(sequence, repeated))
            if at < len(sequence) and sequence[at] == repeated:
                served = np.insert(sequence, at + 1, repeated)
        return Matches(served, sequence)

    def _models(self) -> np.ndarray:
        with self._lock:
            if self._model_index is None:
                n = len(self.specs)
                indices = np.arange(self.size)
                offsets = np.array([self._block_offset(b) for b in range(self.size // n + 1)])
                self._model_index = (indices % n + offsets[indices // n]) % n
            return self._model_index

    def _columns(self) -> tuple[list[str], np.ndarray]:
        """Every listing's lower-case title and price in cents (-1: none), built once."""
        with self._lock:
            if self._titles is None or self._prices is None:
                listings = [self._listing(i) for i in range(self.size)]
                cents = (price_cents(listing.price) for listing in listings)
                self._prices = np.fromiter((-1 if c is None else c for c in cents), dtype=np.int64,
                                           count=len(listings))
                self._titles = [listing.title.lower() for listing in listings]
            return self._titles, self._prices

    # --- building listings --------------------------------------------------------------------
    def model_of(self, index: int) -> int:
        """Which of :attr:`specs` listing ``index`` offers: every block of ``models`` listings holds
        each model once, rotated by a per-block offset."""
        n = len(self.specs)
        block, position = divmod(index, n)
        return (position + self._block_offset(block)) % n

    def _block_offset(self, block: int) -> int:
        return _seed(self.seed, "block", block) % len(self.specs)

    def _place_bad_cases(self) -> dict[str, int]:
        n = self.size
        if n < 12:
            return {}
        repeated = min(PAGE_BOUNDARY, n // 2) - 1
        cases = {"repeated": repeated}
        for k, case in enumerate(LISTING_DEFECTS, start=1):
            index = n * k // 6 + 1
            cases[case] = index + 1 if index == repeated else index
        return cases

    def _relist_source(self, index: int, rng: random.Random) -> tuple[Listing, list[Photo]] | None:
        """An earlier listing of the same model, and those of its photos a relist may copy."""
        n = len(self.specs)
        block = index // n
        if block == 0:
            return None
        earlier = rng.randrange(block)
        source = self._listing(earlier * n + (self.model_of(index) - self._block_offset(earlier)) % n)
        broken = self._defect.get(source.index) == "broken_photo"
        originals = [p for k, p in enumerate(source.photos)
                     if p.kind == "car" and p.original is None and not (broken and k == 0)]
        return (source, originals) if originals else None

    def _build(self, index: int) -> Listing:
        rng = random.Random(_seed(self.seed, "listing", index))
        spec = self.specs[self.model_of(index)]
        defect = self._defect.get(index)
        roll = rng.random()
        source = self._relist_source(index, rng) if roll < RELIST_SHARE and defect is None else None
        if source:
            year, colour = source[0].year, source[0].colour
            mileage = source[0].mileage + rng.randrange(50, 900)
        else:
            first, last = spec.years
            last = min(last, CURRENT_YEAR - 1)
            year = last - round(rng.triangular(0, min(last - first, 25), 4))  # mostly 2-12 years old
            colour = rng.choices(_PAINTS, cum_weights=_PAINT_CUMULATIVE)[0]
            age = CURRENT_YEAR - year
            mileage = max(300, int(age * rng.uniform(6000, 15000)))
        title = make_title(spec, rng, year)
        aspects = {**seller_aspects(spec, rng, year), "Mileage": str(mileage)}
        rng.random()  # where the price was once drawn: kept so that every later draw (photos...) stays as it was
        count = rng.choices(_PHOTO_COUNTS, cum_weights=_PHOTO_COUNT_CUMULATIVE)[0]
        if defect == "no_photo":
            count = 0
        elif defect == "broken_photo":
            count = max(2, count)
        number = ITEM_NUMBER_BASE + index
        paths = [f"/photos/{number}/{k}.jpg" for k in range(count)]
        photos = [Photo(path, "car") for path in paths]
        if source:
            originals = source[1]
            copies = rng.randint(1, min(len(originals), count))
            for position, original in zip(rng.sample(range(count), copies), rng.sample(originals, copies)):
                photos[position] = Photo(paths[position], "car", original.path, rng.choice(TRANSFORMS))
        elif defect is None and count >= 3 and roll < RELIST_SHARE + NON_CAR_SHARE:
            position = rng.randint(2, count - 1)
            photos[position] = Photo(paths[position], rng.choice(NON_CAR_KINDS))
        city = rng.choice(CITIES)
        offer = draw_offer(spec, year, mileage, title, city.state, price_draws(self.seed, "price", index),
                           quirks=self.price_quirks, defect=defect)
        named = self._named.get(index, spec)
        if named is not spec:  # label noise (the price is the car's): own draws, the rest unchanged
            named_rng = random.Random(_seed(self.seed, "seller label", index))
            title, aspects = make_title(named, named_rng, year), {**aspects, **seller_aspects(named, named_rng, year)}
        title, aspects = seller_view(title, aspects, year, offer)
        return Listing(
            index=index, item_id=item_id(index), spec=spec, year=year, title=title, price=offer.price,
            currency=offer.currency, mileage=mileage, condition="Used", aspects=aspects, city=city,
            colour=colour, photos=tuple(photos), relist_of=source[0].index if source else None,
            web_path=f"/itm/{number}", offer=offer)

    # --- photos -------------------------------------------------------------------------------
    def _lookup(self, path: str) -> tuple[Photo, Listing]:
        where = photo_index(path)
        if where is None or not 0 <= where[0] < self.size:
            raise KeyError(path)
        listing = self._listing(where[0])
        if where[1] >= len(listing.photos):
            raise KeyError(path)
        return listing.photos[where[1]], listing

    def _render_photo(self, path: str) -> bytes:
        photo, listing = self._lookup(path)
        index, position = photo_index(path)  # type: ignore[misc]
        rng = np.random.default_rng(_seed(self.seed, "photo", index, position))
        if photo.original:
            return copy_photo(self._photo(photo.original), photo.transform or "exact", rng)
        if photo.kind == "car":
            return jpeg_bytes(render_car(listing.spec, rng, colour=listing.colour))
        return jpeg_bytes(render_non_car(rng, photo.kind))
