"""What the normalizer answers: a :class:`Label`, and the helpers that word its reasons."""
from __future__ import annotations

from dataclasses import dataclass

from autodetect.catalogue.catalogue import Catalogue


@dataclass(frozen=True)
class Label:
    """The outcome of :func:`normalize`; ``class_name`` is None when the answer is unknown."""
    class_name: str | None
    make: str | None
    model: str | None
    method: str  # "aspects", "title", "fuzzy" or "unknown"
    confidence: float
    reason: str


def make_label(cat: Catalogue, cls: str, method: str, conf: float, reason: str) -> Label:
    """A decided label: the class's make and model, the confidence rounded, the reason cut to 200."""
    c = cat.classes[cls]
    return Label(cls, c.make, c.model, method, round(conf, 3), reason[:200])


def unknown(reason: str) -> Label:
    """A refusal, with its reason."""
    return Label(None, None, None, "unknown", 0.0, reason[:200])


def refuse_if_several(candidates: frozenset[str], what: str) -> Label | None:
    """A refusal listing ``candidates`` ("{what}: A, B"), when something was named; None when nothing was."""
    return unknown(f"{what}: {fmt_classes(candidates)}") if candidates else None


def quote(text: str | None) -> str:
    """Seller text quoted in a reason, shortened."""
    text = " ".join((text or "").split())
    return text if len(text) <= 40 else text[:37] + "..."


def fmt_classes(classes) -> str:
    """Classes listed in a reason: sorted, the first four."""
    return ", ".join(sorted(classes)[:4]) + ("..." if len(classes) > 4 else "")
