"""The web page in a real headless browser (Debian's Chromium driven by Playwright): take a sandbox photo,
see the right model among the three, the offers in the area with their deal badges and fair prices, and the
median and middle half of their asking prices. Writes the screenshots the README shows
(``docs/img/page_offers.png``)."""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "autodetect" / "serving" / "static" / "screenshot.png"
PAGE_OFFERS = ROOT / "docs" / "img" / "page_offers.png"
DEALS = {"Great deal", "Good deal", "Fair price", "High price", "Overpriced"}  # app.js's words for the ratings
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

sys.path.insert(0, str(ROOT / "tests" / "unit"))
import test_api_support as sup  # noqa: E402

RADIUS = 250


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from autodetect.serving.app import create_app
    from autodetect.db import upgrade
    from autodetect.settings import Settings

    model_root = sup.tiny_model(tmp_path_factory)
    settings = Settings(data_dir=tmp_path_factory.mktemp("web-data"), database_url="")
    upgrade(settings)
    specs = sup.catalogue_specs()
    sup.build_catalogue(settings, specs, model_root / "bundle")
    with sup.serve(create_app(settings)) as url:
        yield url, model_root, specs


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def in_area(specs, name, origin, radius):
    return [s for s in specs if s.status == "active" and (s.label == name or (s.label is None and s.predicted == name))
            and s.point() is not None and sup.haversine(origin, s.point()) <= radius]


def test_snap_a_car_and_see_the_offers(site, browser):
    url, model_root, specs = site
    truth = "Toyota Camry"
    context = browser.new_context(viewport={"width": 430, "height": 900}, device_scale_factor=1,
                                  geolocation={"latitude": sup.HOME[0], "longitude": sup.HOME[1]},
                                  permissions=["geolocation"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url + "/")
        file_input = page.locator("#photo")
        assert file_input.get_attribute("accept") == "image/*"
        assert file_input.get_attribute("capture") == "environment"

        page.select_option("#radius", str(RADIUS))
        page.click("#locate")
        page.wait_for_function("document.getElementById('location-status').textContent.startsWith('Using')")

        file_input.set_input_files(str(sup.training_photo_path(model_root, truth)))  # submits on change
        page.wait_for_selector("#results:not([hidden]) .candidate", timeout=30_000)
        cards = page.locator(".candidate")
        assert cards.count() == 3
        names = [cards.nth(i).locator(".candidate-name").inner_text() for i in range(3)]
        assert truth in names

        card = cards.nth(names.index(truth))
        expected = in_area(specs, truth, sup.HOME, RADIUS)
        assert card.locator(".offer-count").inner_text() == f"{len(expected)} offers in your area"
        usd = [s.price for s in expected if s.price is not None and s.currency == "USD"]
        dollars = lambda x: f"${round(x):,}"  # noqa: E731 - as the page writes them (en-US)
        assert card.locator(".asking-median").inner_text() == f"· median asking price {dollars(statistics.median(usd))}"
        q1, _, q3 = statistics.quantiles(usd, n=4, method="inclusive")
        note = card.locator(".price-note").inner_text()
        assert f"Asking prices {dollars(q1)}–{dollars(q3)} (middle half), {len(usd)} comparables" in note, note
        assert "in other currencies not counted" in note

        width = card.locator(".bar-fill").evaluate("e => e.getBoundingClientRect().width")
        assert width > 0
        offers = card.locator(".offer")
        assert offers.count() == 5
        distances = [float(re.search(r"([\d.]+) km", offers.nth(i).locator(".offer-meta").inner_text()).group(1))
                     for i in range(5)]
        assert distances == sorted(distances)
        shown = [next(s for s in expected if s.title == offers.nth(i).locator(".offer-title").inner_text())
                 for i in range(5)]
        for i, spec in enumerate(shown):  # a badge and a fair price for each USD offer; none for the others
            offer = offers.nth(i)
            if spec.currency == "USD":
                assert offer.locator(".deal").inner_text() in DEALS
                assert re.fullmatch(r"fair \$[\d,]+ \([+-]?\d+%\)", offer.locator(".fair-price").inner_text())
            else:
                assert offer.locator(".deal").count() == offer.locator(".fair-price").count() == 0
        assert sum(s.currency == "USD" for s in shown) >= 2
        page.wait_for_function(  # thumbnails served by the app, all loaded
            "[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
        assert not errors, errors
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert SCREENSHOT.stat().st_size > 10_000
        card.screenshot(path=str(PAGE_OFFERS))  # the model card: asking prices, offers with their deal badges
        assert PAGE_OFFERS.stat().st_size > 10_000

        # A postal code instead of the browser's location; then a file that is not a photo.
        page.fill("#postal-code", "10001")
        page.click("#submit")
        page.wait_for_function("document.getElementById('submit').disabled === false")
        assert page.locator(".candidate").count() == 3

        bad = model_root / "not-a-photo.txt"
        bad.write_text("hello")
        file_input.set_input_files(str(bad))
        page.wait_for_selector("#status.error")
        assert "not an image" in page.inner_text("#status")
        assert not errors, errors
    finally:
        context.close()


def test_a_photo_without_a_car_shows_no_car_recognised(site, browser, tmp_path):
    """A photo all one colour is "no car recognised" (a rule before the model): the message, not the ranking."""
    from PIL import Image

    url, _, _ = site
    photo = tmp_path / "wall.jpg"
    Image.new("RGB", (640, 480), (120, 130, 140)).save(photo, "JPEG")
    context = browser.new_context(viewport={"width": 430, "height": 700}, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url + "/")
        page.locator("#photo").set_input_files(str(photo))  # submits on change
        page.wait_for_selector("#verdict:not([hidden])", timeout=30_000)
        assert page.inner_text("#verdict .verdict-message") == "No car recognised: the photo is all one colour"
        assert page.locator("#results").is_hidden()
        assert not errors, errors
        page.screenshot(path=str(SCREENSHOT.with_name("screenshot-no-car.png")), full_page=True)
    finally:
        context.close()
