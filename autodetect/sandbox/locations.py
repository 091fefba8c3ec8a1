"""US cities where sandbox listings are located: name, state, one real postal code, and coordinates.

Other code uses this table to resolve a postal code offline (:func:`city_for_postal_code`)."""

from __future__ import annotations

from typing import NamedTuple


class City(NamedTuple):
    name: str
    state: str  # two-letter code
    postal_code: str
    latitude: float
    longitude: float


CITIES: tuple[City, ...] = (
    City("New York", "NY", "10001", 40.7128, -74.0060),
    City("Los Angeles", "CA", "90012", 34.0522, -118.2437),
    City("Chicago", "IL", "60601", 41.8781, -87.6298),
    City("Houston", "TX", "77002", 29.7604, -95.3698),
    City("Phoenix", "AZ", "85004", 33.4484, -112.0740),
    City("Philadelphia", "PA", "19107", 39.9526, -75.1652),
    City("San Antonio", "TX", "78205", 29.4241, -98.4936),
    City("San Diego", "CA", "92101", 32.7157, -117.1611),
    City("Dallas", "TX", "75201", 32.7767, -96.7970),
    City("San Jose", "CA", "95113", 37.3382, -121.8863),
    City("Austin", "TX", "78701", 30.2672, -97.7431),
    City("Jacksonville", "FL", "32202", 30.3322, -81.6557),
    City("Fort Worth", "TX", "76102", 32.7555, -97.3308),
    City("Columbus", "OH", "43215", 39.9612, -82.9988),
    City("Charlotte", "NC", "28202", 35.2271, -80.8431),
    City("Indianapolis", "IN", "46204", 39.7684, -86.1581),
    City("San Francisco", "CA", "94102", 37.7749, -122.4194),
    City("Seattle", "WA", "98101", 47.6062, -122.3321),
    City("Denver", "CO", "80202", 39.7392, -104.9903),
    City("Washington", "DC", "20001", 38.9072, -77.0369),
    City("Boston", "MA", "02108", 42.3601, -71.0589),
    City("Nashville", "TN", "37203", 36.1627, -86.7816),
    City("El Paso", "TX", "79901", 31.7619, -106.4850),
    City("Detroit", "MI", "48226", 42.3314, -83.0458),
    City("Oklahoma City", "OK", "73102", 35.4676, -97.5164),
    City("Portland", "OR", "97204", 45.5152, -122.6784),
    City("Las Vegas", "NV", "89101", 36.1699, -115.1398),
    City("Memphis", "TN", "38103", 35.1495, -90.0490),
    City("Louisville", "KY", "40202", 38.2527, -85.7585),
    City("Baltimore", "MD", "21202", 39.2904, -76.6122),
    City("Milwaukee", "WI", "53202", 43.0389, -87.9065),
    City("Albuquerque", "NM", "87102", 35.0844, -106.6504),
    City("Tucson", "AZ", "85701", 32.2226, -110.9747),
    City("Fresno", "CA", "93721", 36.7378, -119.7871),
    City("Sacramento", "CA", "95814", 38.5816, -121.4944),
    City("Kansas City", "MO", "64106", 39.0997, -94.5786),
    City("Atlanta", "GA", "30303", 33.7490, -84.3880),
    City("Miami", "FL", "33130", 25.7617, -80.1918),
    City("Raleigh", "NC", "27601", 35.7796, -78.6382),
    City("Omaha", "NE", "68102", 41.2565, -95.9345),
    City("Minneapolis", "MN", "55401", 44.9778, -93.2650),
    City("Tulsa", "OK", "74103", 36.1540, -95.9928),
    City("Cleveland", "OH", "44113", 41.4993, -81.6944),
    City("New Orleans", "LA", "70112", 29.9511, -90.0715),
    City("Tampa", "FL", "33602", 27.9506, -82.4572),
    City("Pittsburgh", "PA", "15222", 40.4406, -79.9959),
    City("Cincinnati", "OH", "45202", 39.1031, -84.5120),
    City("St. Louis", "MO", "63101", 38.6270, -90.1994),
    City("Salt Lake City", "UT", "84101", 40.7608, -111.8910),
    City("Orlando", "FL", "32801", 28.5383, -81.3792),
    City("Boise", "ID", "83702", 43.6150, -116.2023),
    City("Birmingham", "AL", "35203", 33.5186, -86.8104),
    City("Richmond", "VA", "23219", 37.5407, -77.4360),
)

_BY_POSTAL_CODE = {city.postal_code: city for city in CITIES}


def city_for_postal_code(postal_code: str) -> City | None:
    """The sandbox city with this postal code (the first five digits count), or None."""
    return _BY_POSTAL_CODE.get(postal_code.strip()[:5])
