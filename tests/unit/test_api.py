"""The HTTP API on SQLite with a tiny real model (trained once per session in a subprocess, LiteRT):
identification with and without a location, offers and price statistics checked against numbers
computed here from the catalogue the test wrote, pagination, and every bad input -> a JSON 4xx."""

from __future__ import annotations

import io
import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_api_support as sup  # noqa: E402

from autodetect.pricing.ratings import RATINGS  # noqa: E402
from autodetect.serving.app import create_app  # noqa: E402
from autodetect.db import session_scope, upgrade  # noqa: E402
from autodetect.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow  # the session fixture trains the model (in a subprocess)

RADIUS = 200.0  # km around New York: Philadelphia (130 km) in, Baltimore (275 km) and Boston (306 km) out


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    return sup.tiny_model(tmp_path_factory)


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory, model_root):
    settings = Settings(data_dir=tmp_path_factory.mktemp("api-data"), database_url="")
    upgrade(settings)
    specs = sup.catalogue_specs()
    sup.build_catalogue(settings, specs, model_root / "bundle")
    return settings, specs


@pytest.fixture(scope="session")
def client(catalogue):
    with sup.client_for(create_app(catalogue[0])) as c:
        yield c


@pytest.fixture(scope="session")
def specs(catalogue):
    return catalogue[1]


def training_photo(model_root: Path, class_name: str, i: int = 0) -> bytes:
    return sup.training_photo_path(model_root, class_name, i).read_bytes()


def upload(data: bytes, name: str = "car.jpg", kind: str = "image/jpeg"):
    return {"photo": (name, data, kind)}


# --- expectations, computed from the specs ----------------------------------------------------------
def expected_offers(specs, name, origin=None, radius=None):
    rows = [s for s in specs if s.status == "active" and (s.label == name or (s.label is None and s.predicted == name))]
    if origin is None:
        return rows
    return [s for s in rows if s.point() is not None and sup.haversine(origin, s.point()) <= radius]


def expected_prices(rows, currency="USD", min_per_year=5):
    """The asking prices' statistics; per model year for the years with at least price_min_comparables (5)."""
    prices = [s.price for s in rows if s.price is not None and s.currency == currency]
    q1, q2, q3 = statistics.quantiles(prices, n=4, method="inclusive")
    years = {}
    for s in rows:
        if s.price is not None and s.currency == currency:
            years.setdefault(s.year, []).append(s.price)
    return {
        "count": len(prices), "mean": statistics.mean(prices), "median": statistics.median(prices), "p25": q1,
        "p75": q3, "min": min(prices), "max": max(prices), "median_q2": q2,
        "excluded_other_currency": sum(1 for s in rows if s.price is not None and s.currency != currency),
        "without_price": sum(1 for s in rows if s.price is None),
        "by_year": {y: (len(v), statistics.mean(v), statistics.median(v)) for y, v in years.items()
                    if len(v) >= min_per_year},
    }


def check_prices(got: dict, want: dict, currency: str = "USD") -> None:
    assert got["currency"] == currency
    assert got["count"] == want["count"] and got["min_comparables"] == 5 <= want["count"]
    for key in ("mean", "median", "p25", "p75", "min", "max"):
        assert got[key] == pytest.approx(want[key], abs=0.01), key
    assert want["median"] == pytest.approx(want["median_q2"])
    assert got["excluded_other_currency"] == want["excluded_other_currency"]
    assert got["without_price"] == want["without_price"]
    assert {y["year"]: (y["count"], y["mean"], y["median"]) for y in got["by_year"]} == {
        y: (n, pytest.approx(m, abs=0.01), pytest.approx(md, abs=0.01)) for y, (n, m, md) in want["by_year"].items()}


# --- identification ---------------------------------------------------------------------------------
def test_identify_without_location(client, specs, model_root):
    truth = "Toyota Camry"
    r = client.post("/identify", files=upload(training_photo(model_root, truth)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"]["name"] == "v1" and body["location"] is None and body["radius_km"] is None
    cands = body["candidates"]
    assert [c["rank"] for c in cands] == [1, 2, 3]
    probs = [c["probability"] for c in cands]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs) and sum(probs) <= 1.0001
    assert {c["name"] for c in cands} <= set(sup.CLASSES) and len({c["name"] for c in cands}) == 3
    assert truth in [c["name"] for c in cands], "a training photo's class is among the top three"
    for c in cands:
        rows = expected_offers(specs, c["name"])
        assert c["offers"]["count"] == len(rows) == c["offers"]["anywhere"]
        assert c["make"] == c["name"].split(" ", 1)[0] and c["class_id"] is not None
        check_prices(c["asking_prices"], expected_prices(rows))
        assert len(c["nearest"]) == 5 and all(o["distance_km"] is None for o in c["nearest"])
    assert set(body["timing_ms"]) == {"decode", "model", "offers", "total"}


def test_identify_with_coordinates(client, specs, model_root):
    r = client.post("/identify", files=upload(training_photo(model_root, "Audi TT")),
                    data={"lat": str(sup.HOME[0]), "lon": str(sup.HOME[1]), "radius_km": str(RADIUS)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["location"]["source"] == "coordinates" and body["radius_km"] == RADIUS
    for c in body["candidates"]:
        rows = expected_offers(specs, c["name"], sup.HOME, RADIUS)
        everywhere = expected_offers(specs, c["name"])
        assert c["offers"]["count"] == len(rows)
        assert c["offers"]["unlocated"] == sum(1 for s in everywhere if s.point() is None)
        assert c["offers"]["count"] + c["offers"]["unlocated"] + c["offers"]["outside_radius"] == len(everywhere)
        check_prices(c["asking_prices"], expected_prices(rows))
        nearest = c["nearest"]
        dists = [o["distance_km"] for o in nearest]
        assert dists == sorted(dists) and dists[0] < 5 and all(d <= RADIUS for d in dists)
        by_id = {s.id: s for s in rows}
        for o in nearest:
            spec = by_id[o["listing_id"]]
            assert o["title"] == spec.title and o["price"] == spec.price and o["currency"] == spec.currency
            tolerance = 0.2 if spec.coords else 15  # postal codes resolve to the ZIP centroid
            assert o["distance_km"] == pytest.approx(sup.haversine(sup.HOME, spec.point()), abs=tolerance)
            assert o["url"].startswith("https://cars.example/item/")
            if o["thumbnail_url"]:
                photo = client.get(o["thumbnail_url"])
                assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
                assert Image.open(io.BytesIO(photo.content)).size[0] > 0
        assert any(o["thumbnail_url"] for o in nearest)


def test_identify_with_postal_code_and_currency(client, specs, model_root):
    r = client.post("/identify", files=upload(training_photo(model_root, "Jeep Wrangler")),
                    data={"postal_code": "10001", "country": "us", "radius_km": str(RADIUS), "currency": "eur"})
    assert r.status_code == 200, r.text
    body = r.json()
    loc = body["location"]
    assert loc["source"] == "postal_code" and loc["postal_code"] == "10001" and loc["country"] == "US"
    assert sup.haversine((loc["lat"], loc["lon"]), sup.HOME) < 10
    for c in body["candidates"]:
        rows = expected_offers(specs, c["name"], (loc["lat"], loc["lon"]), RADIUS)
        eur = [s.price for s in rows if s.currency == "EUR"]
        p = c["asking_prices"]
        assert p["currency"] == "EUR" and p["count"] == len(eur) == 2
        assert all(p[k] is None for k in ("mean", "median", "p25", "p75", "min", "max")), "2 comparables: no range"
        assert p["excluded_other_currency"] == sum(1 for s in rows if s.price is not None and s.currency != "EUR")
        assert p["by_year"] == []  # one EUR offer per year: not enough data


def test_identified_offers_carry_their_fair_price_and_deal_rating(client, specs, model_root):
    """Every offer of the catalogue's models is rated against a fair price fitted on the catalogue's usable asking
    prices; EUR offers (2 per model: too few comparables) and offers without a price (nor a currency) get none."""
    r = client.post("/identify", files=upload(training_photo(model_root, "Volkswagen Golf")), data={"offers": "30"})
    assert r.status_code == 200, r.text
    body = r.json()
    fitted_on = [s for s in specs if s.status == "active" and s.label and s.price is not None]
    assert body["fair_prices"]["listings"] == len(fitted_on) == 90
    cuts = body["fair_prices"]["rating_cuts_pct"]
    assert len(cuts) == 4 and cuts == sorted(cuts) and cuts[0] < 0 < cuts[-1]
    by_id = {s.id: s for s in specs}
    rated = 0
    for c in body["candidates"]:
        usd = [s.price for s in expected_offers(specs, c["name"]) if s.currency == "USD" and s.price]
        for o in c["nearest"]:
            spec = by_id[o["listing_id"]]
            assert o["price_issue"] is None  # written straight into the database: nothing marked
            if spec.currency != "USD":
                assert (o["fair_price"], o["deal_rating"], o["difference_pct"]) == (None, None, None), o
                continue
            assert min(usd) * 0.7 < o["fair_price"] < max(usd) * 1.3, o
            difference = (spec.price - o["fair_price"]) / o["fair_price"] * 100
            assert o["difference_pct"] == pytest.approx(difference, abs=0.06)
            if min(abs(o["difference_pct"] - cut) for cut in cuts) > 0.2:  # not on a cut, within the rounding
                assert o["deal_rating"] == RATINGS[sum(o["difference_pct"] > cut for cut in cuts)], o
            rated += 1
    assert rated >= 40


def test_default_radius_applies_with_a_location(client, catalogue, model_root):
    r = client.post("/identify", files=upload(training_photo(model_root, "Ford F-150")),
                    data={"lat": "40.7", "lon": "-74.0"})
    assert r.status_code == 200 and r.json()["radius_km"] == catalogue[0].api_default_radius_km


def test_model_reloads_when_the_active_version_changes(client, catalogue, model_root):
    from autodetect.model.registry import promote
    from autodetect.storage import ModelVersion

    settings, _ = catalogue
    shutil.copytree(settings.data_dir / "models" / "v1", settings.data_dir / "models" / "v2")
    photo = training_photo(model_root, "Volkswagen Golf")
    with session_scope(settings) as s:
        v1 = s.query(ModelVersion).filter_by(name="v1").one()
        v2 = ModelVersion(name="v2", backbone=v1.backbone, image_size=v1.image_size, classes=list(v1.classes),
                          artifacts={"dir": "models/v2"})
        s.add(v2)
        s.flush()
        promote(s, v2)
    try:
        assert client.post("/identify", files=upload(photo)).json()["model_version"]["name"] == "v2"
        assert client.get("/health").json()["loaded_model"] == "v2"
    finally:
        with session_scope(settings) as s:
            promote(s, s.query(ModelVersion).filter_by(name="v1").one())
    assert client.post("/identify", files=upload(photo)).json()["model_version"]["name"] == "v1"


# --- offers of one model ----------------------------------------------------------------------------
def test_offers_pagination_nearest_first(client, specs):
    name = "Ford F-150"
    rows = expected_offers(specs, name, sup.HOME, RADIUS)
    seen, dists, offset = [], [], 0
    while True:
        r = client.get(f"/models/{name}/offers", params={"lat": sup.HOME[0], "lon": sup.HOME[1],
                                                        "radius_km": RADIUS, "limit": 4, "offset": offset})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["total"] == len(rows) and page["limit"] == 4 and page["offset"] == offset
        if not page["offers"]:
            break
        assert len(page["offers"]) <= 4
        seen += [o["listing_id"] for o in page["offers"]]
        dists += [o["distance_km"] for o in page["offers"]]
        offset += 4
    assert offset == 4 * -(-len(rows) // 4)
    assert sorted(seen) == sorted(s.id for s in rows) and len(seen) == len(set(seen))
    assert dists == sorted(dists)
    check_prices(page["asking_prices"], expected_prices(rows))
    assert page["model"] == {"name": name, "class_id": page["model"]["class_id"], "make": "Ford", "model": "F-150"}


def test_offers_by_class_id_without_location(client, specs):
    name = "Audi TT"
    first = client.get(f"/models/{name}/offers").json()
    by_id = client.get(f"/models/{first['model']['class_id']}/offers", params={"limit": 100})
    assert by_id.status_code == 200
    body = by_id.json()
    rows = expected_offers(specs, name)
    assert body["total"] == len(rows) and body["location"] is None and body["radius_km"] is None
    assert sorted(o["listing_id"] for o in body["offers"]) == sorted(s.id for s in rows)
    assert {o["match"] for o in body["offers"]} == {"label", "prediction"}
    assert client.get("/models/audi tt/offers").json()["total"] == len(rows)  # names match case-insensitively
    check_prices(body["asking_prices"], expected_prices(rows))


def test_listing_detail(client, specs):
    spec = next(s for s in specs if s.photo_seed is not None)
    body = client.get(f"/listings/{spec.id}").json()
    assert body["title"] == spec.title and body["label"]["name"] == spec.label and body["status"] == "active"
    assert len(body["photos"]) == 1 and client.get(body["photos"][0]["thumbnail_url"]).status_code == 200
    unlabelled = next(s for s in specs if s.label is None)
    body = client.get(f"/listings/{unlabelled.id}").json()
    assert body["label"]["name"] is None
    assert body["predictions"][0]["top_class"] == unlabelled.predicted and body["predictions"][0]["model_version"] == "v1"


def test_health_and_docs(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["database"] == "ok" and h["model"]["name"] == "v1"
    assert h["active_listings"] > 0
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/identify", "/models/{model_ref}/offers", "/listings/{listing_id}", "/health"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'capture="environment"' in page.text
    assert client.get("/static/app.js").status_code == 200


# --- bad input: clear 4xx answers with a JSON message, never a 500 ----------------------------------
def assert_error(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    for w in words:
        assert w in detail.lower(), detail


def test_not_an_image(client):
    assert_error(client.post("/identify", files=upload(b"%PDF-1.4 hello", "a.pdf", "application/pdf")), 415, "not an image")
    assert_error(client.post("/identify", files=upload(b"", "empty.jpg")), 415, "not an image")
    broken = sup.jpeg_bytes(Image.new("RGB", (64, 64), "red"))[:200]
    assert_error(client.post("/identify", files=upload(broken)), 422, "unusable image")
    assert_error(client.post("/identify", data={"lat": "1"}), 422, "photo")


def test_decompression_bomb(client):
    bomb = sup.png_bomb()
    assert len(bomb) < 200_000
    assert_error(client.post("/identify", files=upload(bomb, "bomb.png", "image/png")), 422, "too many pixels")


@pytest.mark.parametrize("data, words", [
    ({"lat": "91", "lon": "0"}, ["lat"]),
    ({"lat": "0", "lon": "-180.5"}, ["lon"]),
    ({"lat": "nan", "lon": "0"}, ["lat"]),
    ({"lat": "40"}, ["both lat and lon"]),
    ({"lat": "north", "lon": "0"}, ["lat"]),
    ({"postal_code": "00000"}, ["unknown postal code"]),
    ({"postal_code": "SW1A 1AA", "country": "GB"}, ["unknown postal code"]),
    ({"postal_code": "10001", "country": "USA!"}, ["country"]),
    ({"lat": "40", "lon": "-74", "radius_km": "0"}, ["radius_km"]),
    ({"lat": "40", "lon": "-74", "radius_km": "-5"}, ["radius_km"]),
    ({"currency": "dollars"}, ["currency"]),
    ({"offers": "1000"}, ["offers"]),
])
def test_bad_location_and_options(client, model_root, data, words):
    r = client.post("/identify", files=upload(training_photo(model_root, "Audi TT")), data=data)
    assert_error(r, 422, *words)


def test_bad_offer_queries(client):
    assert_error(client.get(f"/models/{sup.EMPTY_CLASS}/offers"), 404, "no active offers")
    assert_error(client.get("/models/Trabant 601/offers"), 404, "no car model")
    assert_error(client.get("/models/999999/offers"), 404, "no car model")
    assert_error(client.get("/models/Audi TT/offers", params={"limit": 1000}), 422, "limit")
    assert_error(client.get("/models/Audi TT/offers", params={"offset": -1}), 422, "offset")
    assert_error(client.get("/models/Audi TT/offers", params={"lat": 100, "lon": 0}), 422, "lat")
    assert_error(client.get("/listings/999999"), 404, "no listing")
    assert_error(client.get("/listings/abc"), 422, "listing_id")
    assert_error(client.get("/photos/999999"), 404, "photo")


@pytest.fixture()
def small_limit_app(catalogue):
    settings = catalogue[0].model_copy(update={"api_max_upload_bytes": 100_000})
    return create_app(settings)


def test_oversized_upload_is_refused_while_reading(small_limit_app, model_root):
    with sup.client_for(small_limit_app) as c:
        # Content-Length beyond the limit: answered before a byte of the body is read.
        head = (b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 50000000\r\n\r\n")
        answer = sup.raw_exchange(c.base_url, head + b"--b\r\n")
        assert answer.startswith("HTTP/1.1 413") and '"detail"' in answer and "too large" in answer

        # No Content-Length (chunked): counted as it arrives, refused on the first chunk past the limit.
        head = (b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        part = (b'--b\r\nContent-Disposition: form-data; name="photo"; filename="a.jpg"\r\n'
                b"Content-Type: image/jpeg\r\n\r\n")
        first = b"%x\r\n%s\r\n" % (len(part), part)
        chunk = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"
        answer = sup.raw_exchange(c.base_url, head, [first] + [chunk] * 4)
        assert answer.startswith("HTTP/1.1 413") and "too large" in answer

        # An ordinary upload over the limit, from an ordinary client.
        big = b"\xff\xd8" + b"\0" * 300_000
        assert_error(c.post("/identify", files=upload(big)), 413, "too large")

        ok = c.post("/identify", files=upload(training_photo(model_root, "Audi TT")))
        assert ok.status_code == 200, "the server keeps serving"
        assert c.get("/health").json()["status"] == "ok"


def test_empty_catalogue_and_no_model(tmp_path, model_root):
    (tmp_path / "empty").mkdir()
    settings = Settings(data_dir=tmp_path / "empty", database_url="")
    upgrade(settings)
    photo = training_photo(model_root, "Audi TT")
    with sup.client_for(create_app(settings)) as c:
        assert c.get("/health").json()["status"] == "no_model"
        assert_error(c.post("/identify", files=upload(photo)), 409, "no active model")
        assert_error(c.get("/models/Audi TT/offers"), 404, "no car model")

        from autodetect.storage import ModelVersion

        with session_scope(settings) as s:  # an active version whose files are missing
            s.add(ModelVersion(name="v9", backbone="compact_cnn", image_size=40, classes=sup.CLASSES,
                               artifacts={"dir": "models/v9"}, status="active"))
        assert_error(c.post("/identify", files=upload(photo)), 409, "cannot load model v9")

        from sqlalchemy import update

        with session_scope(settings) as s:  # retired first: the schema allows one active version
            s.execute(update(ModelVersion).where(ModelVersion.name == "v9").values(status="retired"))
        sup.build_catalogue(settings, [], model_root / "bundle")  # a model, and not one listing
        r = c.post("/identify", files=upload(photo), data={"lat": "40", "lon": "-74"})
        assert r.status_code == 200, r.text
        for cand in r.json()["candidates"]:
            assert cand["offers"]["count"] == 0 and cand["asking_prices"]["count"] == 0 and cand["nearest"] == []
            assert cand["asking_prices"]["median"] is None
        assert_error(c.get("/models/Audi TT/offers"), 404, "no active offers")


def test_database_missing_is_503_not_500(tmp_path):
    settings = Settings(data_dir=tmp_path / "nodb", database_url="")  # no migrations run
    with sup.client_for(create_app(settings)) as c:
        r = c.get("/listings/1")
        assert r.status_code == 503 and "db upgrade" in r.json()["detail"]
        assert c.get("/health").status_code == 503


def test_openapi_documents_the_shapes(client):
    spec = client.get("/openapi.json").json()
    identify = spec["paths"]["/identify"]["post"]
    assert "multipart/form-data" in identify["requestBody"]["content"]
    schemas = spec["components"]["schemas"]
    assert {"IdentifyOut", "CandidateOut", "AskingPricesOut", "FairPricesOut", "OffersPage", "OfferOut"} <= set(schemas)
    json.dumps(spec)


# --- the edges of the Earth, and work done once per model version ---------------------------------------------
@pytest.mark.parametrize("lat, lon", [(90.0, 0.0), (-90.0, 45.0), (0.0, 179.9), (0.0, -180.0), sup.HOME])
def test_offers_from_the_poles_and_the_antimeridian_within_20000_km(client, specs, lat, lon):
    """20,000 km from anywhere reaches every place but those within 15 km of the antipode: here, all of them."""
    name = "Ford F-150"
    everywhere = expected_offers(specs, name)
    located = [s for s in everywhere if s.point() is not None]
    r = client.get(f"/models/{name}/offers", params={"lat": lat, "lon": lon, "radius_km": 20000, "limit": 100})
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == len(located) and page["unlocated"] == len(everywhere) - len(located)
    assert page["outside_radius"] == 0 and page["anywhere"] == len(everywhere)
    dists = [o["distance_km"] for o in page["offers"]]
    assert dists == sorted(dists) and all(d <= 20000 for d in dists)
    assert dists[0] == pytest.approx(min(sup.haversine((lat, lon), s.point()) for s in located), abs=15)
    check_prices(page["asking_prices"], expected_prices(located))


def test_radius_beyond_half_the_earth_is_refused(client):
    assert_error(client.get("/models/Ford F-150/offers", params={"lat": 0, "lon": 0, "radius_km": 20016}), 422,
                 "radius_km")
    assert client.get("/models/Ford F-150/offers", params={"lat": 0, "lon": 0, "radius_km": 20015}).status_code == 200


def test_class_fields_are_read_once_per_model_version(catalogue):
    from autodetect.serving.deps import Service

    service, built = Service(catalogue[0]), []
    make = lambda: built.append(1) or len(built)  # noqa: E731
    assert service.per_version(1, "fields", make) == service.per_version(1, "fields", make) == 1
    assert service.per_version(2, "fields", make) == 2 and service.per_version(2, "fields", make) == 2
    assert len(built) == 2


def test_decodes_reserve_the_pixels_they_hold(catalogue):
    """A big JPEG decoded at the model's size reserves a sliver of the budget; a photo at the pixel limit
    reserves it all; the budget refuses past its limit and takes back what is released."""
    from autodetect.serving.deps import DecodeBudget
    from autodetect.serving.routes.identify import _decoded_pixels

    settings = catalogue[0]
    big_jpeg = sup.jpeg_bytes(Image.new("RGB", (4000, 3000), "gray"))
    assert _decoded_pixels(big_jpeg, 96, settings.download_max_pixels) == 500 * 375  # reduced 1/8 while decoded
    assert _decoded_pixels(sup.png_bomb(6000), 96, settings.download_max_pixels) == 6000 * 6000  # no draft for PNG
    assert _decoded_pixels(sup.png_bomb(7000), 96, settings.download_max_pixels) == settings.download_max_pixels
    for refused_unread in (sup.png_bomb(), b"not an image"):  # the decode refuses these before any pixel
        assert _decoded_pixels(refused_unread, 96, settings.download_max_pixels) == 1
    budget = DecodeBudget(1000)
    assert budget.try_reserve(600) and not budget.try_reserve(500) and budget.try_reserve(400)
    budget.release(600)
    assert budget.try_reserve(500) and not budget.try_reserve(101)
