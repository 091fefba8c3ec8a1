"""What the person on the street meets: the HTTP app (``app``, routers under ``routes``, their dependencies in
``deps``, response shapes in ``schemas``), ``identify`` (rank a photo with the active model) and ``offers``
(offers nearby and their asking prices; ``places`` and ``prices`` beneath it).

This package file imports nothing on purpose: import what you need from its modules."""
