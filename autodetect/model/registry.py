"""The model registry: versions with their metrics and artifacts; promotion and rollback.

At most one version is active: the schema says so (a partial unique index), so two promotions racing
each other cannot both win; the loser gets a ``RegistryError`` and changes nothing."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
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


def version_name(run_id: int, requeues: int = 0) -> str:
    """The name of the version a training run makes, from the run's id (allocated by the database,
    so unique); a run tried again after its worker died gets a name of its own."""
    return f"v{run_id}" if not requeues else f"v{run_id}-r{requeues}"


def promote(session: Session, version: ModelVersion) -> ModelVersion | None:
    """Make ``version`` the active one and retire the previous one, in one step (a savepoint).
    Returns the previous active version. Raises ``RegistryError`` if another promotion won a race."""
    if version.status == VersionStatus.failed.value:
        raise RegistryError(f"{version.name} failed to train and cannot be promoted")
    previous = active_version(session)
    if previous is not None and previous.id == version.id:
        return None
    try:
        with session.begin_nested():
            session.execute(update(ModelVersion).where(ModelVersion.status == VersionStatus.active.value,
                                                       ModelVersion.id != version.id)
                            .values(status=VersionStatus.retired.value))
            session.execute(update(ModelVersion).where(ModelVersion.id == version.id)
                            .values(status=VersionStatus.active.value, promoted_at=utcnow()))
    except IntegrityError:
        raise RegistryError(f"{version.name} was not promoted: another version was made active at the same "
                            "time (see `autodetect models list`)") from None
    session.expire_all()
    return previous


def fail_active(session: Session, version_id: int, reason: str) -> ModelVersion | None:
    """The active version ``version_id`` cannot be served: mark it ``failed`` with ``reason`` (in its
    metrics, ``load_error``) and make the version promoted before it active again. Returns that one
    (None: there was none, or another process did this first)."""
    version = session.get(ModelVersion, version_id)
    if version is None or version.status != VersionStatus.active.value:
        return None
    version.status = VersionStatus.failed.value
    version.metrics = {**(version.metrics or {}), "load_error": reason[:500]}
    session.flush()
    previous = session.execute(
        select(ModelVersion).where(ModelVersion.status == VersionStatus.retired.value,
                                   ModelVersion.promoted_at.is_not(None))
        .order_by(ModelVersion.promoted_at.desc())
    ).scalars().first()
    if previous is not None:
        promote(session, previous)
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
