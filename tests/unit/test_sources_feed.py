"""The feed source and the item parser: the feed's formats, and every kind of bad record counted,
recorded with its reason and stored as well as it can be while the crawl goes on (fresh SQLite)."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from autodetect.db import session_scope
from autodetect.pipeline.discovery import crawl
from autodetect.settings import Settings, configure
from autodetect.sources import CallBudget, open_source
from autodetect.sources.feed import parse_feed
from autodetect.sources.items import listing_from_item, parse_price
from autodetect.storage import Image, Listing, PriceChange


@pytest.fixture
def settings(tmp_path, template_db) -> Settings:
    shutil.copy(template_db, tmp_path / "autodetect.db")
    return configure(data_dir=tmp_path, database_url="", source="feed", feed_url=str(tmp_path / "feed.jsonl"),
                     crawl_page_size=3)


def item(n: int, **fields) -> dict:
    return {"itemId": f"v1|{n}|0", "title": f"2015 Audi TT Coupe #{n}",
            "price": {"value": "18450.00", "currency": "USD"},
            "image": {"imageUrl": f"http://img.example/{n}/0.jpg"},
            "localizedAspects": [{"name": "Make", "value": "Audi"}, {"name": "Model", "value": "TT"}], **fields}


@pytest.mark.parametrize("value, expected", [
    ("18450.00", "18450.00"), ("12,500.00", "12500.00"), ("12.500,00", "12500.00"), ("1.234.567", "1234567.00"),
    ("$9 999", "9999.00"), ("12 500 €", "12500.00"), ("EUR 12.500", "12500.00"), ("12'500.50", "12500.50"),
    (12500, "12500.00"), (12500.5, "12500.50"), ("12,5", "12.50"),
    ("abc", None), ("-500", None), ("10,000 - 12,000", None), ("1e20", None), ("9" * 15, None), ("", None),
    (None, None), ({"value": 1}, None), (True, None),
])
def test_prices_with_separators_and_symbols(value, expected):
    assert parse_price(value) == (Decimal(expected) if expected else None)


@pytest.mark.parametrize("value, expected", [
    (12500.0, "12500.00"), (12.5, "12.50"), (float("nan"), None), (-5, None),  # a JSON number is its own value
    ("12500-", "12500.00"), ("12.500,-", "12500.00"), ("12500.-", "12500.00"),  # a trailing dash: no cents
    ("12,500.000", "12500.00"), ("1.234.567,891", "1234567.89"),  # both marks: the last one is decimal
    ("12500.000", "12500.00"), ("12,500", "12500.00"), ("12.500", "12500.00"), ("125.000", "125000.00"),
    ("0.500", "0.50"), ("1.234.5", "1234.50"),  # one mark groups thousands only where it can
])
def test_price_rules_three_decimals_and_trailing_dash(value, expected):
    """The rules ``parse_price`` states: "12500.000" (a float printed with three decimals) is 12,500, not
    12.5 million, as "12.500" (a thousands group) is; "12500-" is 12,500."""
    assert parse_price(value) == (Decimal(expected) if expected else None)


def test_buying_options_bids_and_a_negative_mileage_are_read():
    listing = listing_from_item(item(1, buyingOptions=["AUCTION", "fixed_price", "RAFFLE"], bidCount="7",
                                     localizedAspects=[{"name": "Mileage", "value": "-45,000 mi"}]))
    assert (listing.buying_options, listing.bid_count, listing.mileage) == (["AUCTION", "FIXED_PRICE"], 7, -45000)
    assert {p.split(":")[0] for p in listing.problems} == {"bad buyingOptions", "negative mileage"}
    plain = listing_from_item(item(2, localizedAspects=[{"name": "Mileage", "value": "45,000"}]))
    assert (plain.buying_options, plain.bid_count, plain.mileage, plain.problems) == ([], None, 45000, [])
    csv_item = parse_feed("itemId,title,price,buyingOptions,bidCount\nv1|3|0,2014 Audi TT,900,AUCTION|BEST_OFFER,3\n",
                          name="feed.csv")[0][0]
    assert (listing_from_item(csv_item).buying_options, listing_from_item(csv_item).bid_count) == \
        (["AUCTION", "BEST_OFFER"], 3)


def test_a_record_is_cleaned_to_fit_the_database_and_what_was_wrong_is_said():
    listing = listing_from_item({
        "itemId": "v1|1|0", "title": "2015\tAudi\x00 TT\r\n" + "x" * 10_000,
        "price": {"value": "9.999,00", "currency": "eur"}, "image": {"imageUrl": "javascript:alert(1)"},
        "itemLocation": {"city": "C" * 300, "country": "USA"}, "itemWebUrl": "file:///etc/passwd",
        "localizedAspects": [{"name": "Year", "value": "1066"}, "junk", {"name": "Model", "value": ["TT"]}],
    })
    assert listing.title.startswith("2015 Audi TT xxx") and len(listing.title) == 500
    assert (listing.price, listing.currency) == (Decimal("9999.00"), "EUR")
    assert listing.photos == [] and listing.url is None and listing.country is None
    assert listing.year == 2015  # the bad aspect (1066) is refused; the title's year stands in
    assert listing.model is None and len(listing.city) == 120
    assert "\\u0000" not in json.dumps(listing.raw)  # PostgreSQL cannot read NUL back out of JSON
    kinds = {p.split(":")[0] for p in listing.problems}
    assert kinds == {"control characters", "too long", "other currency", "bad photo url", "no photos",
                     "bad country", "bad year"}
    for bad in ({"title": "no id"}, {"itemId": "x" * 121}, ["not", "an", "object"], "text"):
        with pytest.raises(ValueError):
            listing_from_item(bad)


def test_feed_formats_search_page_list_single_item_json_lines_and_csv(tmp_path):
    one, two = item(1), item(2)
    assert parse_feed(json.dumps({"total": 2, "itemSummaries": [one, two]}))[0] == [one, two]
    assert parse_feed(json.dumps([one, two]))[0] == [one, two]
    assert parse_feed(json.dumps(one))[0] == [one]
    items, rejected = parse_feed(f"{json.dumps(one)}\n\n{{broken\n{json.dumps(two)}\n")
    assert items == [one, two]
    assert rejected == ["malformed JSON: line 3 (Expecting property name enclosed in double quotes)"]
    csv_text = ("itemId,title,price,currency,make,model,year,photo1,photo2\n"
                'v1|7|0,2012 BMW 328i,"12,500",USD,BMW,328i,2012,http://img.example/7/0.jpg,'
                "http://img.example/7/1.jpg\n"
                "v1|8|0,Honda Civic,,,Honda,Civic,,,\n")
    csv_items, _ = parse_feed(csv_text, name="export.csv")
    first, second = (listing_from_item(i) for i in csv_items)
    assert (first.price, first.make, first.model, first.year) == (Decimal("12500.00"), "BMW", "328i", 2012)
    assert len(first.photos) == 2
    assert (second.price, second.photos, second.problems) == (None, [], ["missing price", "no photos"])


def test_bad_records_are_counted_recorded_and_the_crawl_goes_on(settings):
    pages = [  # three records a page (settings.crawl_page_size)
        [item(1),
         item(2, price={"value": "12,500.00", "currency": "USD"}),             # separators
         item(3, price={"value": "9.999,00", "currency": "EUR"})],             # another currency
        [item(4, title="Audi TT " + "x" * 10_000),                            # 10,000 characters
         item(5, title="2016 Audi\x00 TT\x1b Coupe\r\n"),                     # control characters
         item(6, image=None)],                                                # no photos
        [{"title": "a record without an id"},                                 # rejected
         item(7, price=None, title=None),                                     # missing fields
         item(7, price={"value": "15000", "currency": "USD"})],               # 7 again on the page: dropped
        [[1, 2],                                                              # not an object: rejected
         item(1, title=None, price={"value": "17,000", "currency": "USD"}),   # 1 again, cheaper, no title
         item(2, price={"value": "12500", "currency": "USD"})],               # 2 again, the same price
    ]
    lines = [json.dumps(record) for page in pages for record in page]
    lines.insert(1, "{not json")                                              # malformed: skipped
    Path(settings.feed_url).write_text("\n".join(lines), encoding="utf-8")
    stats = crawl(settings, open_source(settings), lambda stage, ids: None)

    assert (stats.state, stats.complete) == ("partial", False)  # a record may hide in the malformed line
    assert stats.problems == {"malformed JSON": 1, "rejected item": 2, "other currency": 1, "too long": 1,
                              "control characters": 1, "no photos": 1, "missing price": 1, "missing title": 2}
    assert stats.duplicate_ids == 3 and stats.price_changes == 1  # 12,500.00 and 12500 are one price
    assert any("line 2" in note for note in stats.notes)
    with session_scope(settings) as s:
        rows = {r.external_id: r for r in s.scalars(select(Listing))}
        photos = {r.external_id: len(s.scalars(select(Image).where(Image.listing_id == r.id)).all())
                  for r in rows.values()}
        history = [str(c.price) for c in s.scalars(
            select(PriceChange).where(PriceChange.listing_id == rows["v1|1|0"].id).order_by(PriceChange.seen_at))]
    assert len(rows) == 7
    assert (rows["v1|1|0"].title, str(rows["v1|1|0"].price)) == ("2015 Audi TT Coupe #1", "17000.00")  # title kept
    assert history == ["18450.00", "17000.00"]
    assert str(rows["v1|2|0"].price) == "12500.00"
    assert (str(rows["v1|3|0"].price), rows["v1|3|0"].currency, rows["v1|3|0"].issues) == (
        "9999.00", "EUR", ["other currency: EUR"])
    assert len(rows["v1|4|0"].title) == 500
    assert rows["v1|4|0"].issues == ["too long: title of 10008 characters cut to 500"]
    assert rows["v1|5|0"].title == "2016 Audi TT Coupe" and rows["v1|5|0"].class_id is not None
    assert photos["v1|6|0"] == 0 and rows["v1|6|0"].issues == ["no photos"] and rows["v1|6|0"].class_id is not None
    assert (rows["v1|7|0"].title, rows["v1|7|0"].price) == ("", None)
    assert rows["v1|7|0"].issues == ["missing title", "missing price"]


def test_an_empty_feed_is_a_complete_crawl_of_nothing(settings):
    Path(settings.feed_url).write_text("", encoding="utf-8")
    source = open_source(settings)
    assert [(p.listings, p.cursor) for p in source.pages({}, CallBudget(0))] == [([], {})]
    assert crawl(settings, source, lambda stage, ids: None).state == "idle"
