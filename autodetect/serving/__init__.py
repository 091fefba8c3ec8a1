"""What the person on the street meets: the HTTP app (``app``, routers under ``routes``), ``identify``
(rank a photo with the active model) and ``offers`` (offers nearby and their asking prices).

This package file imports nothing on purpose: import what you need from its modules."""
