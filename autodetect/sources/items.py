"""A listing in the Browse API's item shape (``itemSummaries[]`` or an item detail) -> SourceListing.

Every value is checked against what the database can hold; what was wrong is recorded on the listing
as a problem ``"kind: detail"`` (the kind is what crawl statistics count), never silently dropped."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from autodetect.sources.base import SourceListing

MAX_TITLE = 500
MAX_ID = 120
MAX_PRICE = Decimal("999999999999.99")  # Numeric(14, 2)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CURRENCY = re.compile(r"[A-Z]{3}")
_COUNTRY = re.compile(r"[A-Z]{2}")
#: The Browse API's ways to buy; a listing's ``buying_options`` column joins them with commas.
BUYING_OPTIONS = ("FIXED_PRICE", "AUCTION", "BEST_OFFER", "CLASSIFIED_AD")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def without_nul(value: Any) -> Any:
    """The record with NUL characters removed: PostgreSQL cannot read them back out of JSON as text."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def clean_text(value: Any, limit: int, name: str, problems: list[str]) -> str | None:
    """Control characters replaced by spaces, whitespace collapsed, cut to ``limit`` characters."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    if _CONTROL.search(text):
        problems.append(f"control characters: in {name}")
        text = _CONTROL.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > limit:
        problems.append(f"too long: {name} of {len(text)} characters cut to {limit}")
        text = text[:limit].rstrip()
    return text or None


def parse_price(value: Any) -> Decimal | None:
    """An asking price as a Decimal in cents; None for anything that is not one. The rules, each with a test:

    - a JSON number is its own value, nothing to guess: 12500 and 12500.0 -> 12500.00, 12.5 -> 12.50;
    - currency signs and codes, and a trailing dash ("12500-", "12.500,-"), around the number are dropped,
      as are spaces and apostrophes between digit groups ("$9 999", "12'500.50");
    - with both "." and ",", the last one is the decimal mark: "12,500.000" -> 12500.00 (a float printed
      with three decimals), "12.500,00" -> 12500.00;
    - otherwise the last mark groups thousands only where the whole number is a grouping with it (1 to 3
      digits, the first not 0, then groups of exactly three: "12,500", "12.500", "1.234.567") and is the
      decimal mark everywhere else: "12500.000" -> 12500.00, "12,5" -> 12.50, "0.500" -> 0.50;
    - amounts are rounded to cents; negative ones, ranges and ones the database cannot hold are refused.
    """
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    if isinstance(value, (int, float)):
        return _cents(repr(value)) if math.isfinite(value) and value >= 0 else None
    text = str(value).strip()
    if text.startswith("-") or not re.fullmatch(r"[^\d]{0,4}[\d][\d.,\s']*[^\d]{0,4}", text):
        return None
    digits = re.sub(r"[^\d.,]", "", text)
    last = max(digits.rfind("."), digits.rfind(","))
    if last >= 0 and not _GROUPED[digits[last]].fullmatch(digits):
        digits = re.sub(r"[.,]", "", digits[:last]) + "." + digits[last + 1:]
    else:
        digits = re.sub(r"[.,]", "", digits)
    return _cents(digits)


_GROUPED = {mark: re.compile(rf"[1-9]\d{{0,2}}(?:{re.escape(mark)}\d{{3}})+") for mark in ".,"}


def _cents(digits: str) -> Decimal | None:
    try:
        price = Decimal(digits).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None
    return price if 0 <= price <= MAX_PRICE else None


def parse_int(value: Any, low: int = 0, high: int = 2**31 - 1) -> int | None:
    """'2015', '123,456 mi' -> int within [low, high]; anything else -> None."""
    digits = re.sub(r"[^\d]", "", str(value if value is not None else ""))
    number = int(digits) if digits and len(digits) <= 10 else None
    return number if number is not None and low <= number <= high else None


def _aspect_int(aspects: dict[str, Any], name: str, problems: list[str],
                low: int = 0, high: int = 2**31 - 1) -> int | None:
    number = parse_int(aspects.get(name), low, high)
    if aspects.get(name) and number is None:
        problems.append(f"bad {name}: {str(aspects[name])[:20]!r}")
    return number


def _mileage(value: Any, problems: list[str]) -> int | None:
    """The stated mileage ("123,456 mi"), negative if the seller wrote it so ("-45000": kept, and then it does
    not count for prices); None when missing or unreadable (recorded)."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    number = parse_int(text) if text else None
    if value not in (None, "") and number is None:
        problems.append(f"bad mileage: {str(value)[:20]!r}")
    if number and text.startswith("-"):
        problems.append(f"negative mileage: {text[:20]!r}")
        return -number
    return number


def _buying_options(value: Any, problems: list[str]) -> list[str]:
    """``buyingOptions`` (a list, or words separated by commas), each one of :data:`BUYING_OPTIONS`; others are
    dropped and recorded."""
    words = value.split(",") if isinstance(value, str) else _list(value)
    wanted = [str(w).strip().upper() for w in words if str(w).strip()]
    options = [w for w in dict.fromkeys(wanted) if w in BUYING_OPTIONS]
    if len(options) < len(set(wanted)):
        problems.append(f"bad buyingOptions: {str(value)[:40]!r}")
    return options


def _http_url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("http://", "https://")) else None


def listing_from_item(item: Any, *, make: str | None = None, currency: str = "USD") -> SourceListing:
    """Parse one item. ``make`` is what the query asked for (the seller's Make aspect wins);
    ``currency`` the marketplace's, other currencies are kept and recorded. Raises ValueError for a
    record that cannot be stored at all (not an object, no usable itemId)."""
    if not isinstance(item, dict):
        raise ValueError(f"not an object: {str(item)[:60]!r}")
    problems: list[str] = []
    external_id = _external_id(item)
    title = clean_text(item.get("title"), MAX_TITLE, "title", problems) or ""
    if not title:
        problems.append("missing title")
    price, price_currency = _price(item, currency, problems)
    photos = _photos(item, problems)
    aspects = {str(a.get("name", "")).lower(): a.get("value") for a in map(_obj, _list(item.get("localizedAspects")))}
    location = _obj(item.get("itemLocation"))
    country = _country(location, problems)
    return SourceListing(
        external_id=external_id,
        title=title,
        url=_http_url(item.get("itemWebUrl")),
        price=price,
        currency=price_currency,
        photos=list(dict.fromkeys(photos)),
        city=clean_text(location.get("city"), 120, "city", problems),
        postal_code=clean_text(location.get("postalCode"), 20, "postalCode", problems),
        country=country,
        condition=clean_text(item.get("condition"), 60, "condition", problems),
        make=clean_text(aspects.get("make"), 80, "make", problems) or make,
        model=clean_text(aspects.get("model"), 120, "model", problems),
        year=_aspect_int(aspects, "year", problems, 1886, 2100) or year_in_title(title),
        mileage=_mileage(aspects.get("mileage"), problems),
        buying_options=_buying_options(item.get("buyingOptions"), problems),
        bid_count=parse_int(item.get("bidCount")) if isinstance(item.get("bidCount"), (int, str)) else None,
        raw=without_nul(item),
        problems=problems,
    )


def _external_id(item: dict[str, Any]) -> str:
    """The item's id (``itemId``, else ``legacyItemId``); ValueError when there is none that fits."""
    external_id = clean_text(item.get("itemId") or item.get("legacyItemId"), 10 * MAX_ID, "itemId", [])
    if not external_id:
        raise ValueError("no itemId")
    if len(external_id) > MAX_ID:
        raise ValueError(f"itemId of {len(external_id)} characters")
    return external_id


def _price(item: dict[str, Any], currency: str, problems: list[str]) -> tuple[Decimal | None, str | None]:
    """(price, its currency): a missing or unreadable currency is taken as the marketplace's ``currency``."""
    price_field = item.get("price")
    price_field = price_field if isinstance(price_field, dict) else {"value": price_field}
    price, price_currency = parse_price(price_field.get("value")), None
    if price is None:
        raw_price = price_field.get("value")
        problems.append("missing price" if raw_price in (None, "") else f"bad price: {str(raw_price)[:40]!r}")
    else:
        price_currency = str(price_field.get("currency") or "").strip().upper()
        if not _CURRENCY.fullmatch(price_currency):
            problems.append(f"bad currency: {price_currency[:10]!r} taken as {currency}" if price_currency
                            else f"missing currency: taken as {currency}")
            price_currency = currency
        elif price_currency != currency:
            problems.append(f"other currency: {price_currency}")
    return price, price_currency


def _photos(item: dict[str, Any], problems: list[str]) -> list[str]:
    """The http(s) urls of the main and additional images, in order."""
    urls = [_obj(item.get("image")).get("imageUrl")]
    urls += [_obj(p).get("imageUrl") for p in _list(item.get("additionalImages"))]
    photos = [u for u in urls if _http_url(u)]
    if len(photos) < sum(1 for u in urls if u):
        problems.append("bad photo url")
    if not photos:
        problems.append("no photos")
    return photos


def _country(location: dict[str, Any], problems: list[str]) -> str | None:
    """The item location's two-letter country code, upper-cased; None if missing or malformed."""
    country = str(location.get("country") or "").upper() or None
    if country and not _COUNTRY.fullmatch(country):
        problems.append(f"bad country: {country[:10]!r}")
        country = None
    return country


_TITLE_YEAR = re.compile(r"(?<![\d.,$])(19[5-9]\d|20[0-4]\d)(?![\d.,])")


def year_in_title(title: str) -> int | None:
    """The model year a title starts with or names ("2014 Audi TT"), when the aspects lack it."""
    found = _TITLE_YEAR.search(title or "")
    return int(found.group(1)) if found else None
