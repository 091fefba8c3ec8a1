"""Bounded fates on SQLite: reasons, backoff, the settings that govern them, the singletons in the
schema, ``autodetect retry`` and the retraining trigger's hold after failed runs."""

from __future__ import annotations

import errno
import random
import shutil
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from autodetect.cli import app
from autodetect.db import session_scope
from autodetect.images.errors import PermanentFetchError, TransientFetchError
from autodetect.model.registry import promote
from autodetect.pipeline.fates import Failure, describe, failure_of, record_failures, retry_delay, retry_failed
from autodetect.pipeline.retraining import failure_hold, request_run
from autodetect.settings import Settings, configure
from autodetect.storage import Image, Listing, ModelVersion, TrainingRun, utcnow


@pytest.fixture
def db(tmp_path, template_db):
    shutil.copy(template_db, tmp_path / "autodetect.db")
    return configure(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/autodetect.db", max_attempts=3,
                     retry_backoff_s=[60, 300, 1800], retry_jitter=0.0)


def _photos(settings, n: int, stage: str = "download") -> list[int]:
    with session_scope(settings) as s:
        listing = s.execute(insert(Listing).values(source="t", external_id="1", title="t").returning(Listing.id)).scalar()
        return list(s.execute(insert(Image).returning(Image.id), [
            {"listing_id": listing, "position": k, "url": f"http://h/{k}.jpg", "stage": stage, "state": "running"}
            for k in range(n)]).scalars())


def test_reasons_are_short_readable_and_free_of_secrets():
    assert describe(ValueError("Invalid IPv6 URL")) == "ValueError: Invalid IPv6 URL"
    leaked = describe(RuntimeError("cannot reach postgresql://user:S3CRET@db:5432/x and more"))
    assert "S3CRET" not in leaked and "postgresql://***@db:5432/x" in leaked
    assert len(describe(RuntimeError("x" * 5000))) == 300
    assert describe(PermanentFetchError("http 404")) == "http 404", "our own reasons as they are"
    full = failure_of(1, OSError(errno.ENOSPC, "No space left on device"))
    assert not full.permanent and full.reason.startswith("OSError: no space left on the device")
    assert failure_of(1, PermanentFetchError("http 410")).permanent
    assert failure_of(1, TransientFetchError("http 429", retry_after=900)).retry_after == 900
    assert not failure_of(1, KeyError("surprise")).permanent, "unknown errors are retried, bounded"


def test_backoff_grows_with_jitter_and_honours_retry_after_up_to_a_cap():
    s = Settings(retry_backoff_s=[60, 300, 1800, 7200], retry_jitter=0.2, retry_after_cap_s=3600)
    rng = random.Random(1)
    for attempts, wait in [(1, 60), (2, 300), (3, 1800), (4, 7200), (9, 7200)]:
        delays = [retry_delay(s, attempts, rng=rng) for _ in range(200)]
        assert wait * 0.8 <= min(delays) and max(delays) <= wait * 1.2 and max(delays) - min(delays) > wait * 0.2
    assert retry_delay(s, 1, retry_after=900, rng=rng) >= 900
    assert retry_delay(s, 1, retry_after=10 ** 6, rng=rng) <= 3600


@pytest.mark.parametrize("bad, words", [
    ({"max_attempts": -1}, "max_attempts"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"retry_backoff_s": [60, 60, 300]}, "must grow strictly"),
    ({"retry_backoff_s": [300, 60]}, "must grow strictly"),
    ({"retry_backoff_s": []}, "at least one wait"),
    ({"retry_jitter": 1.5}, "retry_jitter"),
])
def test_malformed_fate_settings_are_refused_with_a_clear_message(bad, words):
    with pytest.raises(ValidationError) as err:
        Settings(**bad)
    assert words in str(err.value)


def test_failures_are_counted_with_their_fate_and_retry_puts_failed_rows_back(db):
    ids = _photos(db, 4)
    failures = [Failure(ids[0], "http 503"), Failure(ids[1], "http 404", permanent=True),
                Failure(ids[2], "timed out"), Failure(ids[3], "timed out")]
    with session_scope(db) as s:
        final = record_failures(s, db, "download", failures, {ids[0]: 0, ids[1]: 0, ids[2]: 1, ids[3]: 2})
    assert final == {ids[1]: "http 404", ids[3]: "timed out"}, "permanent at once; the third try is the last"
    with session_scope(db) as s:
        rows = {r.id: r for r in s.execute(select(Image)).scalars()}
        assert (rows[ids[0]].state, rows[ids[0]].attempts, rows[ids[0]].lease_until) == ("pending", 1, None)
        assert 59 <= (rows[ids[0]].next_attempt_at - utcnow()).total_seconds() <= 61
        assert 299 <= (rows[ids[2]].next_attempt_at - utcnow()).total_seconds() <= 301
        assert [rows[i].state for i in ids[1::2]] == ["failed", "failed"]
    result = CliRunner().invoke(app, ["--data-dir", str(db.data_dir), "--database-url", db.database_url,
                                      "retry", "--stage", "download", "--reason", "404"])
    assert result.exit_code == 0, result.output
    assert "1 failed photos put back" in result.output
    with session_scope(db) as s:
        again = s.get(Image, ids[1])
        assert (again.state, again.attempts, again.error) == ("pending", 0, None)
        assert s.get(Image, ids[3]).state == "failed", "another reason: left alone"
        assert retry_failed(s, db) == {"download": [ids[3]]}


def test_the_schema_allows_one_active_version_and_one_open_training_run(db):
    with session_scope(db) as s:
        a = ModelVersion(name="va", backbone="b", image_size=8, status="active")
        b = ModelVersion(name="vb", backbone="b", image_size=8, status="candidate")
        s.add_all([a, b])
    with pytest.raises(IntegrityError), session_scope(db) as s:
        s.execute(update(ModelVersion).where(ModelVersion.name == "vb").values(status="active"))
    with session_scope(db) as s:
        promote(s, s.scalars(select(ModelVersion).where(ModelVersion.name == "vb")).one())
    with session_scope(db) as s:
        assert dict(s.execute(select(ModelVersion.name, ModelVersion.status)).all()) == {"va": "retired", "vb": "active"}
        first = request_run(s, "manual", "one")
        assert request_run(s, "manual", "two").id == first.id, "the open run is the answer"
    with pytest.raises(IntegrityError), session_scope(db) as s:
        s.add(TrainingRun(trigger="manual", reason="sneaked in", state="running"))


def test_failed_runs_back_off_and_stop_after_the_bound_on_the_same_data(db):
    key = "100 photos, 3 classes"

    def fail_one() -> None:
        with session_scope(db) as s:
            run = request_run(s, "new_photos", "test", data_key=key)
            s.execute(update(TrainingRun).where(TrainingRun.id == run.id).values(
                state="failed", error="ValueError: boom", finished_at=utcnow() - timedelta(hours=10)))

    with session_scope(db) as s:
        assert failure_hold(s, db, key) is None
    fail_one()
    with session_scope(db) as s:
        assert failure_hold(s, db, key) is None, "the backoff (60 s) is over"
        s.execute(update(TrainingRun).values(finished_at=utcnow()))
        assert "next try after" in failure_hold(s, db, key)
    fail_one()
    fail_one()
    with session_scope(db) as s:
        held = failure_hold(s, db, key)
        assert "3 runs failed on this data" in held and "ValueError: boom" in held
        assert failure_hold(s, db, "120 photos, 3 classes") is None, "new data: try again"
