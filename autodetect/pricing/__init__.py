"""Prices that mean something: which asking prices count (``usable``), the fair price of an offer from a
robust regression on age, mileage, title words and region with pooling for thin classes (``fair_price``,
``regression``), deal ratings against it (``ratings``), and the stored fits, refitted when the catalogue
changes (``fits``: ``current_fair_prices(session, settings)`` is what the serving layer asks)."""
