"""The sandbox marketplace: car specs, seller text, rendering, ground truth, and the HTTP API."""

from __future__ import annotations

import io
import itertools
import random
import time
from collections import Counter, defaultdict

import numpy as np
import pytest
import requests
from PIL import Image

from autodetect.sandbox import (
    CARS, MAKE_ALIASES, Marketplace, SandboxServer, canonical_make, city_for_postal_code, make_title,
    render_car, render_non_car, render_reference, seller_aspects, spec_for,
)
from autodetect.sandbox.marketplace import ITEM_NUMBER_BASE, price_cents
from autodetect.sandbox.photo_copies import TRANSFORMS

SEARCH = "/buy/browse/v1/item_summary/search"


# --- the catalogue ------------------------------------------------------------------------------

def test_catalogue_has_many_real_models_each_distinguishable():
    assert len(CARS) >= 40
    assert len({spec.class_name for spec in CARS}) == len(CARS)
    assert spec_for("Audi TT").make == "Audi" and spec_for("Ford F-150").shape.body == "pickup"
    for a, b in itertools.combinations(CARS, 2):
        fa, fb = a.look.features(), b.look.features()
        differing = sum(fa[k] != fb[k] for k in fa) + (a.shape.body != b.shape.body)
        assert differing >= 3, f"{a.class_name} and {b.class_name} look too alike"


def test_no_detail_is_a_make_shortcut():
    """No detail value is worn by every model of a make and by no other make."""
    by_make = defaultdict(list)
    for spec in CARS:
        by_make[spec.make].append(spec)
    for make, specs in by_make.items():
        if len(specs) < 2:
            continue
        for feature in specs[0].look.features():
            values = {spec.look.features()[feature] for spec in specs}
            if len(values) == 1:
                value = values.pop()
                assert any(s.make != make and s.look.features()[feature] == value for s in CARS), (make, feature)


def test_titles_and_aspects_vary_like_sellers_write():
    rng = random.Random(7)
    bmw, golf, f150 = spec_for("BMW 3 Series"), spec_for("Volkswagen Golf"), spec_for("Ford F-150")
    titles = [make_title(bmw, rng, 2016) for _ in range(300)]
    assert all(len(t) <= 80 for t in titles)
    assert any(code in t for t in titles for code in bmw.names.codes)  # "BMW 328i xDrive"
    assert any(t.isupper() for t in titles) and any(t.islower() for t in titles)
    assert len(set(titles)) > 100
    golf_titles = [make_title(golf, rng, 2015) for _ in range(300)]
    assert any(t.startswith(("VW", "2015 VW")) for t in golf_titles)
    aspects = [seller_aspects(f150, rng, 2019) for _ in range(300)]
    assert {a["Year"] for a in aspects} == {"2019"}
    models = Counter(a["Model"] for a in aspects)
    assert models["F-150"] > 100 and any(m.startswith("F-150 ") for m in models)
    vw = Counter(seller_aspects(golf, rng, 2015)["Make"] for _ in range(300))
    assert vw["Volkswagen"] > vw["VW"] > 30
    assert make_title(bmw, random.Random(1), 2016) == make_title(bmw, random.Random(1), 2016)


def test_make_aliases_and_postal_codes_resolve():
    assert canonical_make("vw") == "Volkswagen" and canonical_make("Chevy") == "Chevrolet"
    assert all(canonical_make(alias) == make for make, aliases in MAKE_ALIASES.items() for alias in aliases)
    assert canonical_make("Yugo") is None
    assert city_for_postal_code("98101").name == "Seattle"
    assert city_for_postal_code("00000") is None


# --- rendering ----------------------------------------------------------------------------------

def test_rendering_is_deterministic_and_varied():
    spec = spec_for("Audi TT")
    a = render_car(spec, np.random.default_rng(3))
    assert a.size == (384, 288) and a.mode == "RGB"
    assert a.tobytes() == render_car(spec, np.random.default_rng(3)).tobytes()
    assert a.tobytes() != render_car(spec, np.random.default_rng(4)).tobytes()
    assert render_car(spec, np.random.default_rng(3), size=(192, 144)).size == (192, 144)
    for kind in ("interior", "document"):
        assert render_non_car(np.random.default_rng(1), kind).size == (384, 288)
    with pytest.raises(ValueError):
        render_non_car(np.random.default_rng(1), "engine")


def test_models_differ_in_shape():
    """Clean reference views of any two models differ clearly (silhouette and details)."""
    refs = {s.class_name: np.asarray(render_reference(s, size=(128, 96)).convert("L"), dtype=float) for s in CARS}
    for (a, ia), (b, ib) in itertools.combinations(refs.items(), 2):
        silhouette_a, silhouette_b = np.abs(ia - 229) > 6, np.abs(ib - 229) > 6
        changed = np.mean(np.abs(ia - ib) > 25)
        assert changed > 0.03 and (silhouette_a != silhouette_b).mean() > 0.004, (a, b)


def test_colour_alone_does_not_identify_models():
    """A nearest-centroid classifier on mean RGB stays near chance (10%) over ten models."""
    features, labels = [], []
    for label, spec in enumerate(CARS[:10]):
        for k in range(30):
            img = render_car(spec, np.random.default_rng([11, label, k]), size=(128, 96))
            features.append(np.asarray(img, dtype=float).reshape(-1, 3).mean(axis=0))
            labels.append(label)
    x, y = np.array(features), np.array(labels)
    train = np.arange(len(y)) % 3 != 0
    centroids = np.array([x[train & (y == c)].mean(axis=0) for c in range(10)])
    predicted = np.argmin(((x[~train, None, :] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    assert np.mean(predicted == y[~train]) < 0.2


# --- the marketplace ----------------------------------------------------------------------------

def test_marketplace_is_lazy_and_deterministic():
    started = time.perf_counter()
    big = Marketplace(listings=10_000, models=10, seed=5)
    assert time.perf_counter() - started < 0.05
    first = big.listing(9_876)
    assert first == Marketplace(listings=10_000, models=10, seed=5).listing(9_876)
    other = Marketplace(listings=10_000, models=10, seed=6).listing(9_876)
    assert (first.title, first.price, first.colour, first.city) != (other.title, other.price, other.colour, other.city)
    path = first.photos[0].path
    assert big.photo_bytes(path) == Marketplace(listings=10_000, models=10, seed=5).photo_bytes(path)
    started = time.perf_counter()
    total, page = big.search(offset=4_000, limit=200)
    assert total == 10_000 and len(page) == 200  # distinct listings: the repeat is not counted twice
    assert time.perf_counter() - started < 0.25  # ~10 ms; generous for a shared CPU
    started = time.perf_counter()
    big.search(offset=4_200, limit=200)
    assert time.perf_counter() - started < 0.05


def test_listing_fields_and_balance():
    m = Marketplace(listings=500, models=10, seed=1)
    listings = list(m.listings())
    assert Counter(l.class_name for l in listings) == {name: 50 for name in m.classes()}
    for listing in listings:
        assert listing.item_id == f"v1|{ITEM_NUMBER_BASE + listing.index}|0"
        assert listing.condition == "Used" and listing.currency == "USD"
        assert listing.spec.years[0] <= listing.year <= listing.spec.years[1]
        assert set(listing.aspects) == {"Make", "Model", "Year", "Mileage"}
        assert canonical_make(listing.aspects["Make"]) == listing.spec.make
        assert city_for_postal_code(listing.city.postal_code) == listing.city
    counts = Counter(len(l.photos) for l in listings)
    assert sum(v for k, v in counts.items() if k >= 3) > 0.7 * len(listings) and max(counts) == 5


def test_bad_input_cases():
    m = Marketplace(listings=500, seed=2)
    cases = m.bad_cases
    assert set(cases) == {"no_photo", "no_price", "comma_price", "broken_photo", "repeated"}
    assert m.listing(cases["no_photo"]).photos == ()
    assert m.listing(cases["no_price"]).price is None
    assert m.listing(cases["comma_price"]).price == "12,500.00"
    broken = m.listing(cases["broken_photo"])
    assert m.photo_bytes(broken.photos[0].path) is None and m.photo_bytes(broken.photos[1].path)
    assert Marketplace(listings=500, seed=2, bad_input=False).bad_cases == {}
    clean = list(Marketplace(listings=300, seed=2, bad_input=False).listings())
    assert all(l.photos and l.price and "," not in l.price for l in clean)


def test_relists_and_non_car_photos_carry_ground_truth():
    m = Marketplace(listings=600, models=8, seed=3)
    listings = list(m.listings())
    relists = [l for l in listings if l.relist_of is not None]
    assert 0.04 < len(relists) / len(listings) < 0.13
    non_car = [(l, k) for l in listings for k, p in enumerate(l.photos) if p.kind != "car"]
    assert 0.025 < len(non_car) / len(listings) < 0.09
    assert all(k >= 2 for _, k in non_car) and len({l.index for l, _ in non_car}) == len(non_car)
    pairs = m.duplicate_pairs()
    assert {p.transform for p in pairs} == set(TRANSFORMS)
    for original, copy, transform in pairs:
        truth, source = m.truth_for_photo(copy), m.truth_for_photo(original)
        assert truth.original == original and truth.transform == transform and truth.kind == "car"
        assert source.original is None and truth.class_name == source.class_name
        a = Image.open(io.BytesIO(m.photo_bytes(original)))
        b = Image.open(io.BytesIO(m.photo_bytes(copy)))
        if transform == "exact":
            assert m.photo_bytes(original) == m.photo_bytes(copy)
        elif transform in ("reencode", "brighten"):
            assert a.size == b.size and m.photo_bytes(original) != m.photo_bytes(copy)
        elif transform == "resize":
            assert 0.49 <= b.width / a.width <= 0.91
        else:
            assert 0.87 <= b.width / a.width < 1 and 0.87 <= b.height / a.height < 1
    listing, k = non_car[0]
    assert m.truth_for_photo(listing.photos[k].path).kind in ("interior", "document")
    with pytest.raises(KeyError):
        m.truth_for_photo("/photos/1/0.jpg")


# --- the HTTP API -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def market():
    return Marketplace(listings=450, models=10, seed=4)


@pytest.fixture(scope="module")
def server(market):
    with SandboxServer(market) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    session = requests.Session()
    token = session.post(f"{server.url}/identity/v1/oauth2/token", auth=("client", "secret"),
                         data={"grant_type": "client_credentials", "scope": "https://api.ebay.com/oauth/api_scope"})
    assert token.status_code == 200
    body = token.json()
    assert body["expires_in"] == 7200 and body["token_type"] == "Application Access Token"
    session.headers["Authorization"] = f"Bearer {body['access_token']}"
    return session


def test_token_is_required(server, http):
    url = f"{server.url}{SEARCH}?category_ids=6001"
    assert requests.get(url).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer forged"}).status_code == 401
    assert requests.get(f"{server.url}/buy/browse/v1/item/v1|100000000|0").status_code == 401
    token_url = f"{server.url}/identity/v1/oauth2/token"
    assert requests.post(token_url, data={"grant_type": "client_credentials"}).status_code == 401
    assert requests.post(token_url, auth=("a", "b"), data={"grant_type": "password"}).status_code == 400
    assert http.get(url).status_code == 200


def test_pagination_covers_every_listing_once_but_the_repeated_one(server, market, http):
    url, pages, seen = f"{server.url}{SEARCH}?category_ids=6001&limit=200&offset=0", [], []
    while url:
        body = http.get(url).json()
        pages.append([item["itemId"] for item in body.get("itemSummaries", [])])
        seen += pages[-1]
        assert body["total"] == len(market) and body["limit"] == 200  # distinct listings
        url = body.get("next")
    assert len(pages) == 3
    repeated = market.listing(market.bad_cases["repeated"]).item_id
    assert pages[0][-1] == pages[1][0] == repeated
    assert [k for k, n in Counter(seen).items() if n > 1] == [repeated]
    assert set(seen) == {market.listing(i).item_id for i in range(len(market))}
    assert http.get(f"{server.url}{SEARCH}?limit=201").status_code == 400


def test_summaries_have_browse_shape_and_bad_cases(server, market, http):
    items = {}
    url = f"{server.url}{SEARCH}?category_ids=6001&limit=200"
    while url:
        body = http.get(url).json()
        items.update({item["itemId"]: item for item in body["itemSummaries"]})
        url = body.get("next")
    sample = items[market.listing(0).item_id]
    listing = market.listing(0)
    assert sample["title"] == listing.title and sample["condition"] == "Used" and sample["conditionId"] == "3000"
    assert sample["price"] == {"value": listing.price, "currency": "USD"}
    assert sample["itemLocation"]["postalCode"] == listing.city.postal_code and sample["itemLocation"]["country"] == "US"
    photo_urls = [sample["image"]["imageUrl"]] + [p["imageUrl"] for p in sample["additionalImages"]]
    assert photo_urls == [f"{server.url}{p.path}" for p in listing.photos]
    assert sample["itemWebUrl"].startswith(server.url)
    no_photo = items[market.listing(market.bad_cases["no_photo"]).item_id]
    assert "image" not in no_photo and not no_photo.get("additionalImages")
    assert "price" not in items[market.listing(market.bad_cases["no_price"]).item_id]
    assert items[market.listing(market.bad_cases["comma_price"]).item_id]["price"]["value"] == "12,500.00"


def test_make_filter_and_query(server, market, http):
    def search(**params):
        return http.get(f"{server.url}{SEARCH}", params={"category_ids": "6001", "limit": 200, **params}).json()

    audi = search(aspect_filter="categoryId:6001,Make:{Audi}")
    audi_count = sum(l.spec.make == "Audi" for l in market.listings())
    assert audi["total"] == audi_count == len(audi["itemSummaries"]) > 0
    assert all(market.listing_for_item(i["itemId"]).spec.make == "Audi" for i in audi["itemSummaries"])
    assert search(aspect_filter="categoryId:6001,Make:{VW}")["total"] == \
        search(aspect_filter="categoryId:6001,Make:{Volkswagen}")["total"] > 0
    both = search(aspect_filter="categoryId:6001,Make:{Audi|BMW}")["total"]
    assert both == audi_count + sum(l.spec.make == "BMW" for l in market.listings())
    assert search(aspect_filter="categoryId:6001,Make:{Yugo}")["total"] == 0
    assert "itemSummaries" not in search(aspect_filter="categoryId:6001,Make:{Yugo}")
    camry = search(q="CAMRY")
    assert camry["total"] == sum("camry" in l.title.lower() for l in market.listings()) > 0
    assert all("camry" in i["title"].lower() for i in camry["itemSummaries"])
    assert search(category_ids="177773")["total"] == 0


def test_item_detail_and_photos(server, market, http):
    listing = market.listing(3)
    detail = http.get(f"{server.url}/buy/browse/v1/item/{listing.item_id}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["itemId"] == listing.item_id and body["title"] == listing.title
    aspects = {a["name"]: a["value"] for a in body["localizedAspects"]}
    assert aspects == listing.aspects and all(a["type"] == "STRING" for a in body["localizedAspects"])
    missing = http.get(f"{server.url}/buy/browse/v1/item/v1|999|0")
    assert missing.status_code == 404 and missing.json()["errors"]
    before = server.stats["photo"]
    photo = requests.get(body["image"]["imageUrl"])
    assert photo.status_code == 200 and photo.headers["Content-Type"] == "image/jpeg"
    assert photo.content == market.photo_bytes(listing.photos[0].path)
    assert Image.open(io.BytesIO(photo.content)).size == (384, 288)
    broken = market.listing(market.bad_cases["broken_photo"]).photos[0].path
    assert requests.get(f"{server.url}{broken}").status_code == 404
    assert requests.get(f"{server.url}/photos/1/0.jpg").status_code == 404
    assert server.stats["photo"] == before + 3 and server.stats["item"] >= 2
    page = requests.get(body["itemWebUrl"])
    assert page.status_code == 200 and "<img" in page.text


def test_concurrent_photo_requests(server, market):
    from concurrent.futures import ThreadPoolExecutor

    paths = [p.path for i in range(20) for p in market.listing(i).photos]

    def fetch(path: str) -> bytes:
        return requests.get(f"{server.url}{path}", timeout=10).content

    with ThreadPoolExecutor(8) as pool:
        fetched = list(pool.map(fetch, paths))
    assert fetched == [market.photo_bytes(p) for p in paths]


def test_health_needs_no_token(server, market):
    resp = requests.get(f"{server.url}/health")
    assert resp.status_code == 200 and resp.json() == {"status": "ok", "listings": len(market)}


def test_total_counts_distinct_listings_and_the_last_one_is_still_served(server, market, http):
    """450 listings serve 451 entries: with pages of 50 a tenth page carries the last one."""
    url, seen, pages = f"{server.url}{SEARCH}?category_ids=6001&limit=50", [], 0
    while url:
        body = http.get(url).json()
        assert body["total"] == len(market)
        seen += [item["itemId"] for item in body.get("itemSummaries", [])]
        pages, url = pages + 1, body.get("next")
    assert pages == 10 and len(seen) == len(market) + 1 and len(set(seen)) == len(market)
    repeated = market.listing(market.bad_cases["repeated"])
    make = repeated.spec.make
    body = http.get(f"{server.url}{SEARCH}", params={
        "category_ids": "6001", "limit": 200, "aspect_filter": f"categoryId:6001,Make:{{{make}}}"}).json()
    ids = [item["itemId"] for item in body["itemSummaries"]]
    assert body["total"] == sum(l.spec.make == make for l in market.listings()) == len(set(ids)) == len(ids) - 1


def _make_distribution(body: dict) -> dict[str, int]:
    (make,) = [a for a in body["refinement"]["aspectDistributions"] if a["localizedAspectName"] == "Make"]
    return {v["localizedAspectValue"]: v["matchCount"] for v in make["aspectValueDistributions"]}


def test_make_refinement(server, market, http):
    def search(**params):
        return http.get(f"{server.url}{SEARCH}", params={"category_ids": "6001", "limit": 1, **params}).json()

    assert "refinement" not in search()
    body = search(fieldgroups="ASPECT_REFINEMENTS")
    expected = Counter(l.spec.make for l in market.listings())
    assert _make_distribution(body) == expected and sum(expected.values()) == body["total"]
    assert all(canonical_make(make) == make for make in expected)  # canonical names, never "VW"
    values = body["refinement"]["aspectDistributions"][0]["aspectValueDistributions"]
    counts = [v["matchCount"] for v in values]
    assert counts == sorted(counts, reverse=True)
    audi = next(v for v in values if v["localizedAspectValue"] == "Audi")
    selected = http.get(audi["refinementHref"]).json()  # the href selects the make
    assert selected["total"] == audi["matchCount"] == expected["Audi"]
    assert body["refinement"]["dominantCategoryId"] == "6001"
    # comma-joined field groups, and the distribution follows q and the price filter
    camry = search(q="camry", fieldgroups="MATCHING_ITEMS,ASPECT_REFINEMENTS")
    assert _make_distribution(camry) == Counter(l.spec.make for l in market.listings() if "camry" in l.title.lower())
    assert camry["itemSummaries"]
    cheap = search(fieldgroups="ASPECT_REFINEMENTS", filter="price:[..15000],priceCurrency:USD")
    assert _make_distribution(cheap) == Counter(
        l.spec.make for l in market.listings() if l.price is not None and price_cents(l.price) <= 1_500_000)
    assert _make_distribution(search(fieldgroups="FULL", aspect_filter="categoryId:6001,Make:{VW}")) == \
        {"Volkswagen": expected["Volkswagen"]}
    nothing = search(fieldgroups="ASPECT_REFINEMENTS", q="no such car")
    assert nothing["total"] == 0 and "aspectDistributions" not in nothing["refinement"]


def test_price_filter(server, market, http):
    def ids(filters, **params):
        url = f"{server.url}{SEARCH}?category_ids=6001&limit=200&filter={filters}"
        found = []
        while url:
            resp = http.get(url, params=params)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            found += [item["itemId"] for item in body.get("itemSummaries", [])]
            url, params = body.get("next"), {}
        assert body["total"] == len(set(found))
        return set(found)

    def expect(lo=None, hi=None):
        return {l.item_id for l in market.listings() if (c := price_cents(l.price)) is not None
                and (lo is None or c >= lo) and (hi is None or c <= hi)}

    prices = sorted({price_cents(l.price) for l in market.listings() if l.price})
    lo, hi = prices[len(prices) // 4], prices[len(prices) // 2]
    band = ids(f"price:[{lo / 100:.2f}..{hi / 100:.2f}],priceCurrency:USD")
    assert band == expect(lo, hi) and 0 < len(band) < len(market)
    assert {price_cents(market.listing_for_item(i).price) for i in band} >= {lo, hi}  # both bounds inclusive
    assert ids(f"price:[{lo / 100:.2f}..]") == expect(lo=lo)
    assert ids(f"price:[..{hi / 100}]") == expect(hi=hi)
    assert ids(f"price:[{(lo + 1) / 100:.2f}..{(hi - 1) / 100:.2f}]") == expect(lo + 1, hi - 1)
    # URL-encoded (once by the client, or twice), and among other filters
    assert ids(f"buyingOptions%3A%7BFIXED_PRICE%7D%2Cprice%3A%5B{lo // 100}..{hi // 100}%5D%2CpriceCurrency%3AUSD") \
        == expect(lo, hi)
    assert ids(f"price%253A%255B{lo // 100}..{hi // 100}%255D") == expect(lo, hi)
    assert ids("conditionIds:{3000}", q="") == {l.item_id for l in market.listings()}  # no price filter
    everything = ids("price:[0..]")
    assert market.listing(market.bad_cases["no_price"]).item_id not in everything  # no price: never in a band
    assert market.listing(market.bad_cases["comma_price"]).item_id in ids("price:[12500..12500]")
    assert len(everything) == len(market) - 1
    for bad in ("price:[abc..]", "price:[..]", "price:[500..100]", "price:[10-20]", "price:[-5..]",
                "price:[10..20],priceCurrency:EUR"):
        resp = http.get(f"{server.url}{SEARCH}", params={"category_ids": "6001", "filter": bad})
        assert resp.status_code == 400 and resp.json()["errors"][0]["domain"] == "API_BROWSE", bad


@pytest.fixture(scope="module")
def big_server():
    with SandboxServer(Marketplace(listings=10_050, models=10, seed=4)) as srv:
        yield srv


def test_results_past_ten_thousand_cannot_be_asked_for(big_server, server, http):
    token = requests.post(f"{big_server.url}/identity/v1/oauth2/token", auth=("client", "secret"),
                          data={"grant_type": "client_credentials"}).json()["access_token"]

    def get(url_base, offset, limit, **params):
        auth = f"Bearer {token}" if url_base == big_server.url else http.headers["Authorization"]
        return http.get(f"{url_base}{SEARCH}", headers={"Authorization": auth},
                        params={"category_ids": "6001", "offset": offset, "limit": limit, **params})

    last = get(big_server.url, 9_800, 200)
    assert last.status_code == 200
    body = last.json()
    assert body["total"] == 10_050 and len(body["itemSummaries"]) == 200 and "next" not in body
    assert "next" in get(big_server.url, 9_600, 200).json()
    assert "next" not in get(big_server.url, 9_950, 50).json()
    assert get(big_server.url, 9_900, 100).status_code == 200
    for offset, limit in ((9_801, 200), (10_000, 1), (10_050, 50)):
        resp = get(big_server.url, offset, limit)
        assert resp.status_code == 400, (offset, limit)
        error = resp.json()["errors"][0]
        assert error["domain"] == "API_BROWSE" and error["category"] == "REQUEST" and "10000" in error["message"]
    assert get(server.url, 9_999, 2).status_code == 400  # whatever the total
    refined = get(big_server.url, 0, 1, fieldgroups="ASPECT_REFINEMENTS").json()
    assert sum(_make_distribution(refined).values()) == refined["total"] == 10_050
