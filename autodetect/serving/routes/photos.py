"""``GET /photos/{image_id}``: a stored photo (the normalized JPEG), for thumbnails."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from autodetect.serving.deps import ServiceDep, SessionsDep
from autodetect.serving.schemas import Error
from autodetect.storage import Image

router = APIRouter()


@router.get("/photos/{image_id}", responses={404: {"model": Error}, 200: {"content": {"image/jpeg": {}}}},
            response_class=FileResponse, summary="A stored photo (normalized JPEG, longest side 512 px)")
def photo(image_id: int, service: ServiceDep, sessions: SessionsDep):
    with sessions() as session:  # closed before the file is sent
        key = _stored_key(session, image_id)
    if key is None:
        raise HTTPException(404, f"no stored photo {image_id}")
    try:
        path = service.store.path(key)
    except ValueError:
        raise HTTPException(404, f"no stored photo {image_id}") from None
    if not path.is_file():
        raise HTTPException(404, f"photo {image_id} is missing from the image store")
    return FileResponse(path, media_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=86400, immutable"})


def _stored_key(session: Session, image_id: int) -> str | None:
    """The image store key of a photo's normalized JPEG (a duplicate's is its original's); None if there is none."""
    image = session.get(Image, image_id)
    key = image.normalized_key if image is not None else None
    if image is not None and key is None and image.duplicate_of_id is not None:
        original = session.get(Image, image.duplicate_of_id)
        key = original.normalized_key if original is not None else None
    return key
