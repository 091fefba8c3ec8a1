"""The model registry: versions with their metrics and artifacts; promotion and rollback."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from autodetect.storage import ModelVersion, VersionStatus, utcnow


class RegistryError(Exception):
    pass


def active_version(session: Session) -> ModelVersion | None:
    return session.execute(
        select(ModelVersion).where(ModelVersion.status == VersionStatus.active.value)
    ).scalar_one_or_none()


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.execute(select(ModelVersion).order_by(ModelVersion.id)).scalars())


def find_version(session: Session, ref: str | int) -> ModelVersion:
    ref = str(ref)
    cond = ModelVersion.name == ref
    if ref.isdigit():
        cond = cond | (ModelVersion.id == int(ref))
    version = session.execute(select(ModelVersion).where(cond)).scalars().first()
    if version is None:
        raise RegistryError(f"no model version {ref!r} (see `autodetect models list`)")
    return version


def next_name(session: Session) -> str:
    return f"v{session.query(ModelVersion).count() + 1}"


def promote(session: Session, version: ModelVersion) -> ModelVersion | None:
    """Make ``version`` the active one; the previous active version is retired. Returns it."""
    if version.status == VersionStatus.failed.value:
        raise RegistryError(f"{version.name} failed to train and cannot be promoted")
    previous = active_version(session)
    if previous is not None and previous.id == version.id:
        return None
    if previous is not None:
        session.execute(update(ModelVersion).where(ModelVersion.id == previous.id)
                        .values(status=VersionStatus.retired.value))
    session.execute(update(ModelVersion).where(ModelVersion.id == version.id)
                    .values(status=VersionStatus.active.value, promoted_at=utcnow()))
    session.expire_all()
    return previous


def rollback(session: Session) -> ModelVersion:
    """Re-activate the version that was active before the current one."""
    current = active_version(session)
    if current is None:
        raise RegistryError("no active model version to roll back from")
    previous = session.execute(
        select(ModelVersion).where(ModelVersion.status == VersionStatus.retired.value,
                                   ModelVersion.promoted_at.is_not(None), ModelVersion.id != current.id)
        .order_by(ModelVersion.promoted_at.desc())
    ).scalars().first()
    if previous is None:
        raise RegistryError(f"{current.name} is the only version ever promoted; nothing to roll back to")
    promote(session, previous)
    session.execute(update(ModelVersion).where(ModelVersion.id == current.id)
                    .values(status=VersionStatus.rejected.value))
    return previous


def is_better(candidate: dict, incumbent: dict | None) -> bool:
    """Promote when the candidate matches or beats the incumbent on the same test set:
    top-1 first, mean per-class accuracy as the tie-break."""
    if not incumbent:
        return True
    c = (round(candidate.get("top1", 0.0), 4), round(candidate.get("mean_per_class", 0.0), 4))
    i = (round(incumbent.get("top1", 0.0), 4), round(incumbent.get("mean_per_class", 0.0), 4))
    return c >= i
