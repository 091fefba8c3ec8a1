"""The stages in data-flow order, one module per queue: ``discovery`` -> ``download`` -> ``dedup`` (its
candidates from ``near_duplicates``) -> ``inference`` (-> ``listing_predictions``), and ``training``; plus
``tagging`` (the catalogue through a chosen version), the ``sweeper`` (lost work back on its queue),
``status`` (counts per stage) and ``dispatch`` (how a stage asks for the next one without knowing Celery).

This package file imports nothing on purpose: import what you need from its modules."""
