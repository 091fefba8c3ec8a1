"""Clean training data: before a training run splits its photos, the active version judges them once,
and the photos it contradicts are recorded as excluded with the reason (``images.excluded_reason``);
``retraining.labelled_samples`` leaves them out of the run.

- **not a car**: the judge's open-set calibration (``autodetect.model.calibration``, fitted with the
  version) answers "no car recognised": its out-of-distribution score is below its threshold. Trusted
  only from a version that turned away at most ``clean_labels_max_no_car_share`` of its held-out test
  cars as "no car" (a loose threshold would take real cars out of training by the hundred);
- **label contradicted**: confident learning (``autodetect.model.clean_labels``) over the other photos:
  the seller's class is predicted far below its typical self-confidence while another class is predicted
  near or above its own.
- Only a confident judge judges: the active version, if its held-out test top-1 is at least
  ``clean_labels_min_top1``. Without one, nothing is excluded.

Every run clears the reasons and records them afresh, so a photo whose listing's label changed, or that
a later version no longer contradicts, comes back. The judge runs on the serving runtime (LiteRT/ONNX
Runtime), batched; it costs seconds per thousand photos. The database is read, then left alone while
the model runs, then written in one transaction."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from autodetect.db import session_scope
from autodetect.model.calibration import NO_CAR
from autodetect.model.clean_labels import Contradiction, contradicted_labels
from autodetect.model.provider import LoadedModel, load_serving_model
from autodetect.model.registry import active_version
from autodetect.model.runtime import load_batch, load_image
from autodetect.pipeline.retraining import trainable_photos
from autodetect.settings import Settings
from autodetect.storage import CarClass, Image, Listing, ModelVersion

log = logging.getLogger(__name__)

NOT_A_CAR, CONTRADICTED = "not a car", "label contradicted"
#: The kinds of reason, each the start of the reasons it names ("label contradicted: seller says ...").
KINDS = (NOT_A_CAR, CONTRADICTED)
_REASON_CHARS = 200  # images.excluded_reason


@dataclass
class Review:
    """What one review did: who judged (None: nobody, and why), how many photos, what it excluded."""

    judge: str | None
    photos: int = 0
    excluded: Counter = field(default_factory=Counter)  # kind -> photos
    why_no_judge: str | None = None


def review_training_photos(settings: Settings,
                           loader: Callable[[Settings, ModelVersion], LoadedModel] = load_serving_model) -> Review:
    """Clear every photo's exclusion and record the reasons of today's judge (the active version, loaded
    with ``loader``) for the photos a training run would take."""
    with session_scope(settings) as s:
        judge, why_not = _confident_judge(s, settings)
        photos = s.execute(
            select(Image.id, Image.normalized_key, CarClass.name)
            .join(Listing, Listing.id == Image.listing_id).join(CarClass, CarClass.id == Listing.class_id)
            .where(*trainable_photos()).order_by(Image.id)).all() if judge else []
    reasons: dict[int, str] = {}
    if judge is not None:
        try:
            model = loader(settings, judge)
        except Exception as exc:  # noqa: BLE001 - a judge that cannot load judges nothing; the run goes on
            judge, why_not = None, f"cannot load {judge.name}: {exc}"[:300]
        else:
            reasons = judge_photos(settings, model, photos, no_car=trusts_no_car(settings, judge, model))
    with session_scope(settings) as s:
        _record(s, reasons)
    review = Review(judge.name if judge else None, len(photos), Counter(r.split(":", 1)[0] for r in reasons.values()),
                    why_not)
    log.info("training photos reviewed by %s: %d photos, excluded %s%s", review.judge or "nobody", review.photos,
             dict(review.excluded) or "none", f" ({why_not})" if why_not else "")
    return review


def _confident_judge(session: Session, settings: Settings) -> tuple[ModelVersion | None, str | None]:
    """The active version if it is confident enough to judge labels, else None and why."""
    version = active_version(session)
    if version is None:
        return None, "no active version"
    top1 = float((version.metrics or {}).get("top1") or 0.0)
    if top1 < settings.clean_labels_min_top1:
        return None, f"{version.name}'s test top-1 {top1:.3f} is below {settings.clean_labels_min_top1:.3f}"
    return version, None


def trusts_no_car(settings: Settings, version: ModelVersion, model: LoadedModel) -> bool:
    """Whether ``version``'s "no car" verdicts may exclude photos: it has a fitted threshold, and at it
    turned away at most ``clean_labels_max_no_car_share`` of its held-out test cars."""
    share = ((version.metrics or {}).get("open_set") or {}).get("known_no_car")
    return model.open_set.fitted and share is not None and share <= settings.clean_labels_max_no_car_share


def judge_photos(settings: Settings, model: LoadedModel, photos: Sequence[tuple], *, no_car: bool) -> dict:
    """Photo id -> reason for the photos ``(id, store key, label)`` that ``model`` says are not cars
    (with ``no_car``) or whose label it contradicts (photos that cannot be read are not judged)."""
    probs, readable = predict_photos(settings, model, [key for _, key, _ in photos])
    kept = [photos[i] for i in readable]
    reasons, cars = {}, np.arange(len(kept))
    if no_car:
        assessment = model.open_set.assess(probs)
        not_car = np.array([v == NO_CAR for v in assessment.verdicts], dtype=bool)
        for i in np.flatnonzero(not_car):
            reasons[kept[i][0]] = (f"{NOT_A_CAR}: {model.name}'s out-of-distribution score ({model.open_set.score}) "
                                   f"{assessment.ood_score[i]:.2f} is below its threshold "
                                   f"{model.open_set.no_car_below:.2f}")[:_REASON_CHARS]
        cars = np.flatnonzero(~not_car)
    found = contradicted_labels(probs[cars], [kept[i][2] for i in cars], model.classes,
                                given_ratio=settings.clean_labels_given_ratio,
                                suspect_ratio=settings.clean_labels_suspect_ratio,
                                min_class_photos=settings.clean_labels_min_class_photos)
    reasons.update({kept[cars[c.row]][0]: contradiction_reason(c, model.name) for c in found})
    return reasons


def contradiction_reason(c: Contradiction, judge: str) -> str:
    """The readable reason of a contradicted label (at most the column's 200 characters)."""
    return (f"{CONTRADICTED}: seller says {c.given} ({c.given_probability:.2f}), {judge} says {c.suspected} "
            f"at {c.probability:.2f} (typical {c.typical:.2f})")[:_REASON_CHARS]


def predict_photos(settings: Settings, model: LoadedModel, keys: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """Probabilities (rows: the readable photos) and the positions in ``keys`` of those photos; in
    batches of ``inference_batch_size``, a batch with an unreadable photo decoded photo by photo."""
    root = settings.data_dir / "images"
    size, step = model.image_size, max(1, settings.inference_batch_size)
    parts, readable = [np.zeros((0, len(model.classes)), np.float32)], []
    for start in range(0, len(keys), step):
        paths = [root / key for key in keys[start:start + step]]
        try:
            batch, ok = load_batch(paths, size), list(range(start, start + len(paths)))
        except ValueError:
            decoded = [(start + i, _decoded(p, size)) for i, p in enumerate(paths)]
            ok = [i for i, image in decoded if image is not None]
            batch = np.stack([image for _, image in decoded if image is not None]) if ok else None
        if ok:
            parts.append(model.predict(batch))
            readable.extend(ok)
    return np.concatenate(parts), readable


def _decoded(path, size: int) -> np.ndarray | None:
    try:
        return load_image(path, size)
    except ValueError:
        return None


def _record(session: Session, reasons: dict[int, str]) -> None:
    """Clear every exclusion, then record ``reasons`` (image id -> reason), in one transaction."""
    session.execute(update(Image).where(Image.excluded_reason.is_not(None)).values(excluded_reason=None))
    if reasons:
        session.connection().execute(
            update(Image.__table__).where(Image.__table__.c.id == bindparam("image_id"))
            .values(excluded_reason=bindparam("reason")),
            [{"image_id": i, "reason": r} for i, r in reasons.items()])


def excluded_counts(session: Session) -> dict[str, int]:
    """Photos left out of training, per kind of reason (every kind, zeros included)."""
    return {kind: session.execute(select(func.count()).select_from(Image)
                                  .where(Image.excluded_reason.like(f"{kind}:%"))).scalar_one()
            for kind in KINDS}
