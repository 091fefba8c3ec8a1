"""``GET /listings/{id}``: one listing with its photos and the predictions of every model version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from autodetect.serving.deps import SessionsDep
from autodetect.serving.schemas import ERRORS
from autodetect.storage import Image, Listing, ListingPrediction, ModelVersion, Prediction

router = APIRouter()


@router.get("/listings/{listing_id}", responses=ERRORS, summary="One listing with its photos and predictions")
def listing(listing_id: int, sessions: SessionsDep) -> dict[str, Any]:
    with sessions() as session:
        item = session.get(Listing, listing_id)
        if item is None:
            raise HTTPException(404, f"no listing {listing_id}")
        versions = dict(session.execute(select(ModelVersion.id, ModelVersion.name)).all())
        images = session.execute(select(Image).where(Image.listing_id == listing_id)
                                 .order_by(Image.position)).scalars().all()
        sources = {i.id: i.duplicate_of_id or i.id for i in images}
        per_image = _photo_predictions(session, set(sources.values()), versions)
        listing_preds = session.execute(select(ListingPrediction).where(ListingPrediction.listing_id == listing_id)
                                        .order_by(ListingPrediction.model_version_id)).scalars().all()
        return {
            **_listing_fields(item),
            "photos": [_photo_json(i, per_image.get(sources[i.id], [])) for i in images],
            "predictions": [{**_prediction_json(p, versions), "photos": p.photos, "mismatch": p.mismatch}
                            for p in listing_preds],
        }


def _photo_predictions(session: Session, image_ids: set[int],
                       versions: dict[int, str]) -> dict[int, list[dict[str, Any]]]:
    """Each photo's predictions, oldest model version first (a duplicate photo's are its original's)."""
    per_image: dict[int, list[dict[str, Any]]] = {}
    if image_ids:
        for p in session.execute(select(Prediction).where(Prediction.image_id.in_(image_ids))
                                 .order_by(Prediction.model_version_id)).scalars():
            per_image.setdefault(p.image_id, []).append(_prediction_json(p, versions))
    return per_image


def _prediction_json(p: Prediction | ListingPrediction, versions: dict[int, str]) -> dict[str, Any]:
    return {"model_version": versions.get(p.model_version_id), "model_version_id": p.model_version_id,
            "top_class": p.top_class, "top_probability": p.top_probability, "topk": p.topk}


def _listing_fields(item: Listing) -> dict[str, Any]:
    label = item.car_class
    return {
        "id": item.id, "source": item.source, "external_id": item.external_id, "url": item.url,
        "title": item.title, "status": item.status, "year": item.year, "mileage": item.mileage,
        "condition": item.condition,
        "price": float(item.price) if item.price is not None else None, "currency": item.currency,
        "city": item.city, "postal_code": item.postal_code, "country": item.country,
        "latitude": item.latitude, "longitude": item.longitude,
        "seller": {"make": item.seller_make, "model": item.seller_model},
        "label": {"name": label.name if label else None, "class_id": item.class_id,
                  "method": item.label_method, "confidence": item.label_confidence},
        "first_seen": item.first_seen.isoformat() if item.first_seen else None,
        "last_seen": item.last_seen.isoformat() if item.last_seen else None,
    }


def _photo_json(i: Image, predictions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image_id": i.id, "position": i.position, "source_url": i.url, "stage": i.stage,
        "state": i.state, "error": i.error, "width": i.width, "height": i.height,
        "duplicate_of": i.duplicate_of_id,
        "thumbnail_url": f"/photos/{i.id}" if (i.normalized_key or i.duplicate_of_id) else None,
        "predictions": predictions,
    }
