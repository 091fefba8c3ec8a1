"""Watching the pipeline: the Prometheus exporter over the database (``exporter``, ``snapshot``) and
structured logs (``logs``). The API's own metrics live in ``autodetect.serving.metrics``."""
