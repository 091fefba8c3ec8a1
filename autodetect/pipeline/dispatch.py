"""How the domain asks for the next stage without knowing Celery: a dispatcher is injected.

The worker package implements it with Celery tasks; tests may pass a list-collecting callable. The
dispatcher is only ever called after the transaction that made the rows pending has committed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from autodetect.storage import Stage


class Dispatch(Protocol):
    def __call__(self, stage: Stage | str, ids: Sequence[int]) -> None: ...


def no_dispatch(stage: Stage | str, ids: Sequence[int]) -> None:
    """For callers that let the sweeper (or a later command) pick the rows up."""
