"""The API's routes, one router per resource: ``identify`` (POST /identify), ``models`` (a car model's
offers), ``listings``, ``photos``, ``health`` and ``page`` (the web page and its static files).
``autodetect.serving.app`` includes them.

This package file imports nothing on purpose: import the router modules themselves."""
