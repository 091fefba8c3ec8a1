"""The sandbox marketplace: a local server in the eBay Browse API's shapes with synthetic, seeded car
photos and ground truth, so the real crawler runs against it and tests know the answers."""

from autodetect.sandbox.cars import CARS, MAKE_ALIASES, CarSpec, canonical_make, make_title, seller_aspects, spec_for
from autodetect.sandbox.locations import CITIES, City, city_for_postal_code
from autodetect.sandbox.marketplace import DuplicatePair, Listing, Marketplace, Photo, PhotoTruth
from autodetect.sandbox.render import PALETTE, render_car, render_non_car, render_reference
from autodetect.sandbox.server import SandboxServer, serve

__all__ = [
    "CARS", "CITIES", "MAKE_ALIASES", "PALETTE", "CarSpec", "City", "DuplicatePair", "Listing", "Marketplace",
    "Photo", "PhotoTruth", "SandboxServer", "canonical_make", "city_for_postal_code", "make_title",
    "render_car", "render_non_car", "render_reference", "seller_aspects", "serve", "spec_for",
]
