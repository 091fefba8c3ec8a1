"""Celery workers: thin adapters from messages to ``autodetect`` functions. ``celery -A workers ...``"""

from workers.app import app

__all__ = ["app"]
