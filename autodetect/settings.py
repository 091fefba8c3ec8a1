"""The one settings object. Everything configurable is read here, from ``AUTODETECT_*`` variables
(or a ``.env`` file); no other module reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTODETECT_", env_file=".env", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Path("autodetect-data")
    #: SQLAlchemy URL. Empty means the embedded default: a SQLite file in ``data_dir``.
    database_url: str = ""
    #: Celery broker. ``memory://`` is the embedded default (in-process worker, demo only).
    broker_url: str = "memory://"
    #: Seconds before an unacknowledged message is redelivered (Redis/SQS). Task time limits stay below.
    visibility_timeout: int = 3600

    # --- the marketplace --------------------------------------------------------------------
    source: Literal["sandbox", "ebay", "feed"] = "sandbox"
    marketplace_url: str = "http://127.0.0.1:8765"
    ebay_auth_url: str = ""  # empty: ``{marketplace_url}/identity/v1/oauth2/token``
    ebay_client_id: str = ""
    ebay_client_secret: SecretStr = SecretStr("")
    ebay_marketplace_id: str = "EBAY_US"
    ebay_category_id: str = "6001"
    ebay_daily_call_budget: int = 5000
    ebay_currency: str = "USD"  # of the price bands a large make is split into; other prices are flagged
    feed_url: str = ""  # a URL or a file path, for ``source=feed``
    crawl_page_size: int = 200
    crawl_max_listings: int = 0  # 0: no limit
    crawl_interval_s: int = 900
    host_delay_s: float = 0.0  # politeness: pause between calls to one host
    host_concurrency: int = 4
    crawl_retries: int = 5  # per marketplace call, on connection errors, 429 and 5xx
    crawl_backoff_s: float = 0.5  # exponential backoff factor between those retries (Retry-After wins)
    ended_after_crawls: int = 3  # a listing unseen this many crawls in a row is marked ended
    photos_per_listing: int = 3

    # --- downloads --------------------------------------------------------------------------
    download_connect_timeout_s: float = 5.0
    download_read_timeout_s: float = 10.0
    download_total_timeout_s: float = 30.0
    download_max_bytes: int = 15 * 1024 * 1024
    download_max_pixels: int = 40_000_000
    download_max_redirects: int = 3
    download_retries: int = 3
    #: Photos per download message: the broker, task and database costs are paid once per batch.
    download_batch_size: int = Field(16, ge=1, le=256)
    #: Hosts or networks that the SSRF guard lets through although private/loopback (e.g. the sandbox).
    download_allow_hosts: list[str] = Field(default_factory=list)
    normalized_max_side: int = 512

    # --- dedup ------------------------------------------------------------------------------
    #: Photos per dedup message (decisions are serialized; the batch shares one message's costs).
    dedup_batch_size: int = Field(16, ge=1, le=256)
    #: Largest pHash distance (bits of 64) at which a stored original is a near-duplicate candidate for
    #: any of a photo's probes (see ``autodetect.pipeline.dedup``); 8 measured on the sandbox, see benchmarks/RESULTS.md.
    dedup_hamming_threshold: int = 8
    #: The extra probes: the photo padded by, and cropped by, each of these shares of its size per
    #: edge (empty: the photo's own hash only). They find lightly cropped copies.
    dedup_probe_margins: list[float] = Field(default_factory=lambda: [0.03, 0.06])
    #: Confirm every hash candidate on the pixels (off: the hash alone decides).
    dedup_verify: bool = True
    #: Largest RMS difference (grey levels) of two aligned photos, after a per-channel gain and offset
    #: fit, at which they are duplicates.
    dedup_max_residual: float = 10.5

    # --- the model --------------------------------------------------------------------------
    backbone: str = "inception_v3"
    image_size: int = 224
    weights: str = "imagenet"  # "imagenet", "none", or a path to a local .h5/.weights.h5 file
    min_photos_per_class: int = 30
    train_epochs_head: int = 8
    train_epochs_finetune: int = 8
    train_fine_tune_layers: int = 50
    train_batch_size: int = 32
    train_time_budget_s: float = 0.0  # 0: no budget; otherwise epochs are cut to fit
    train_seed: int = 1337
    #: Early stopping: epochs without a better validation loss before training stops.
    train_patience: int = 5
    #: Retrain when this many new labelled unique photos arrived since the active version...
    retrain_min_new_photos: int = 500
    #: ...or when they are this share of the active version's training set.
    retrain_min_new_share: float = 0.2
    retag_on_promote: bool = True
    #: Hard limit of one training run; a run "running" longer than this is presumed dead and re-queued.
    training_time_limit_s: int = 3000
    serving_format: Literal["tflite", "onnx"] = "tflite"
    #: The open set (``model/calibration.py``): at most this share of photos without a car may pass as
    #: a car at the "no car recognised" threshold (chosen on the calibration photos)...
    open_set_max_false_accept: float = Field(0.05, ge=0.0, le=1.0)
    #: ...and at most this share of known-car validation photos may be turned away in all.
    open_set_max_false_reject: float = Field(0.10, ge=0.0, le=1.0)
    #: Sandbox photos rendered per set (non-car, unknown models) and part (calibration, evaluation).
    open_set_photos: int = Field(240, ge=0)
    #: Outlier exposure: sandbox photos without a car or of other models, taught as "none of the classes",
    #: this many per training photo (0: none; see ``pipeline/open_set.py``).
    open_set_outlier_share: float = Field(0.5, ge=0.0)
    #: Photos smaller than this on their short side, or all one colour, are "no car recognised" unseen.
    identify_min_side: int = Field(64, ge=1)

    # --- inference --------------------------------------------------------------------------
    inference_batch_size: int = 32
    #: A partial batch waits this long for more photos. When inference keeps up with dedup, a short wait
    #: makes small batches whose per-batch costs (claim, read, write, listing refresh) are paid per few
    #: photos: measured on 2 cores (benchmarks/pipeline_throughput.py), 0.2 s gave 10 photos per batch,
    #: 2 s full ones. The wait is idle time the other stages use; a photo waits that much longer at most.
    inference_batch_wait_s: float = 2.0
    #: One inference message keeps predicting batch after batch while photos are pending, for up to
    #: this long (a pipeline: the next batch is claimed and decoded, the last one written, while the
    #: model runs). 0: one batch per message.
    inference_task_budget_s: float = 30.0
    #: Threads of one serving model (LiteRT/ONNX Runtime); 0: the runtime's default (all cores).
    inference_threads: int = 0
    #: A version whose artifact failed to load is tried again after this many seconds (meanwhile the
    #: worker keeps serving the last good model).
    inference_model_retry_s: float = 60.0
    #: An active version that fails to load this many times in a row (``inference_model_retry_s``
    #: apart) is marked failed with the reason, and the version promoted before it is active again.
    model_load_attempts: int = Field(3, ge=1)
    #: Testing only: a pause inside each batch, after the claim and before the write (to kill a worker
    #: in the middle of a batch). Always 0 in production.
    inference_test_delay_s: float = 0.0
    #: Photos put back into the inference stage per transaction by ``autodetect tag``.
    tag_chunk_size: int = 5000
    top_k: int = 5
    mismatch_confidence: float = 0.8

    # --- bounded fates -----------------------------------------------------------------------
    #: Tries of one photo in one stage (a transient failure, a lost worker) before it is ``failed``.
    max_attempts: int = Field(6, ge=1, le=100)
    #: The waits before the 2nd, 3rd... try of a photo that failed transiently (the last one repeats):
    #: 1 min, 5 min, 30 min, 2 h. Strictly growing.
    retry_backoff_s: list[float] = Field(default_factory=lambda: [60.0, 300.0, 1800.0, 7200.0])
    #: Each wait is drawn from [w * (1 - jitter), w * (1 + jitter)] so retries do not arrive in a herd.
    retry_jitter: float = Field(0.2, ge=0.0, le=1.0)
    #: A host's ``Retry-After`` is honoured up to this many seconds.
    retry_after_cap_s: float = Field(7200.0, gt=0)
    #: A task that meets a database or broker outage retries with backoff up to this many times.
    dependency_retries: int = Field(8, ge=0)
    dependency_backoff_max_s: int = Field(60, ge=1)

    #: The fixed part of every task's time limit, on top of the work it may do (see ``stage_time_limit``).
    task_margin_s: int = Field(60, ge=1)
    #: The longest one photo's dedup decision may take; one inference batch (decode, model, write).
    dedup_photo_limit_s: float = Field(5.0, gt=0)
    inference_batch_limit_s: float = Field(210.0, gt=0)

    # --- training runs ----------------------------------------------------------------------
    #: A running training run writes a heartbeat this often; one silent for 4 beats is presumed dead.
    training_heartbeat_s: float = Field(30.0, gt=0)
    #: A run presumed dead is put back this many times, then ``failed``.
    training_max_requeues: int = Field(2, ge=0)
    #: Failed runs on the same data before the trigger stops firing for it (new data or
    #: ``train --now`` start over); between failures it waits ``retry_backoff_s``.
    training_max_failures: int = Field(3, ge=1)
    #: Clean training data (``autodetect.pipeline.training_exclusions``): before a run splits its photos,
    #: the active version judges them, if its held-out test top-1 is at least this (0 judges always; above 1: never).
    #: Measured (benchmarks/clean_labels.py): a 70% judge excluded correct labels half the time, 85-89% ones 5-20%.
    clean_labels_min_top1: float = Field(0.8, ge=0)
    #: Confident learning (``autodetect.model.clean_labels``): a photo labelled j is contradicted when its
    #: p_j is below this share of t_j (the mean p_j over photos labelled j)...
    clean_labels_given_ratio: float = Field(0.5, gt=0, le=1)
    #: ...while another class k has p_k > p_j and p_k >= this share of t_k (Northcutt: 1, out of sample;
    #: the judge trained on most photos it judges, which pulls a flipped photo's p_k to 0.5-0.8 t_k)...
    clean_labels_suspect_ratio: float = Field(0.6, gt=0)
    #: ...and only classes with at least this many labelled photos are judged (or suspected).
    clean_labels_min_class_photos: int = Field(10, ge=1)
    #: The judge's "no car recognised" verdicts exclude photos only if, at its threshold, it turned away at
    #: most this share of its held-out test cars as "no car" (its recorded open-set figure ``known_no_car``).
    clean_labels_max_no_car_share: float = Field(0.02, ge=0, le=1)

    # --- the database -----------------------------------------------------------------------
    #: PostgreSQL: per process, up to pool + overflow connections (see the README's scaling notes).
    db_pool_size: int = Field(5, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    #: PostgreSQL: no statement runs longer, no lock is waited for longer, no transaction idles longer.
    db_statement_timeout_s: float = Field(120.0, gt=0)
    db_lock_timeout_s: float = Field(15.0, gt=0)
    db_idle_in_transaction_timeout_s: float = Field(300.0, gt=0)
    db_connect_timeout_s: int = Field(5, ge=1)

    # --- operations -------------------------------------------------------------------------
    sweeper_interval_s: int = 60
    #: A pending photo whose message has not been handled this long after it was sent is sent again.
    stale_after_s: int = 300
    #: A crawl holds its source's lease this long, renewed with every page.
    crawl_lease_s: int = Field(300, ge=10)
    retrain_check_interval_s: int = 300
    flower_basic_auth: str = ""  # "user:password"
    #: Flower's address, for ``autodetect doctor`` (empty: not checked).
    flower_url: str = ""
    #: ``autodetect doctor`` and ``GET /health``: each check's deadline; the checks run side by side.
    doctor_check_timeout_s: float = Field(4.0, gt=0, le=30)
    #: Free space under ``data_dir`` below which the disk check fails (MiB); under twice this, a warning.
    min_free_disk_mb: int = Field(1024, ge=0)
    #: Waiting for another process that is creating the embedded SQLite schema, at most (seconds).
    schema_lock_timeout_s: float = Field(120.0, gt=0)
    api_max_upload_bytes: int = 15 * 1024 * 1024
    #: Photos at the pixel limit ``/identify`` decodes at once per API process (each may need ~130 MiB):
    #: uploads reserve the pixels their decode holds (a JPEG reduced to the model's size, far fewer); a
    #: request past the budget is answered 503 with ``Retry-After`` instead of queueing in memory.
    api_max_concurrent_decodes: int = Field(2, ge=1)
    # --- metrics and logs -----------------------------------------------------------------------
    #: ``autodetect metrics serve``: where the pipeline exporter listens.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=1, le=65535)
    #: A scrape of the exporter waits this long for the database (and the broker) at most, then
    #: answers ``autodetect_exporter_up 0``; keep it below Prometheus' ``scrape_timeout``.
    metrics_scrape_timeout_s: float = Field(4.0, gt=0, le=60)
    #: ``json``: every process (workers, API, exporter) logs JSON lines with the task and photo ids.
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    # --- the HTTP API ---------------------------------------------------------------------------
    #: Offers within this distance of the person count as "in your area" unless the request says otherwise.
    api_default_radius_km: float = 100.0
    #: The country of a postal code sent without one.
    api_default_country: str = "US"
    #: Price statistics per model year only for years with at least this many priced offers.
    api_min_listings_per_year: int = 3
    #: Nearest offers returned per candidate model by ``POST /identify``.
    api_nearest_offers: int = 5
    #: Largest page of ``GET /models/{id}/offers``.
    api_max_page_size: int = 100

    # --- prices (``autodetect/pricing``) -------------------------------------------------------
    #: Asking prices below this are placeholders ($0, $1, $99) and never count in price statistics.
    price_floor: float = Field(500.0, ge=0)
    #: A car class gets a fair price only with at least this many usable asking prices in its currency.
    price_min_comparables: int = Field(5, ge=1)
    #: A class with this many usable asking prices gets its own curve; fewer borrow their make's or the
    #: whole catalogue's (shifted by the class's median residual).
    price_own_fit_min: int = Field(40, ge=5)
    #: A reader refits a changed catalogue at most this often (a crawl's end always refits).
    price_refit_interval_s: float = Field(60.0, ge=0)

    @field_validator("retry_backoff_s")
    @classmethod
    def _backoff_grows(cls, value: list[float]) -> list[float]:
        if not value or any(w <= 0 for w in value):
            raise ValueError("retry_backoff_s needs at least one wait, every wait > 0 seconds")
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"retry_backoff_s must grow strictly, got {value}")
        return value

    @model_validator(mode="after")
    def _defaults_from_data_dir(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'autodetect.db').resolve()}"
        return self

    @property
    def is_embedded(self) -> bool:
        return self.broker_url.startswith("memory://")

    @property
    def token_url(self) -> str:
        return self.ebay_auth_url or f"{self.marketplace_url.rstrip('/')}/identity/v1/oauth2/token"

    def stage_time_limit(self, stage: str) -> int:
        """Hard time limit of one task of ``stage`` (seconds): the work it may do plus
        ``task_margin_s``, below the broker's visibility timeout."""
        work = {
            "discovery": self.visibility_timeout,
            "download": self.download_batch_size * self.download_total_timeout_s,  # each photo has a deadline
            "dedup": self.dedup_batch_size * self.dedup_photo_limit_s,
            "inference": self.inference_task_budget_s + self.inference_batch_limit_s,
            "training": self.training_time_limit_s,
            "maintenance": self.task_margin_s,
        }[stage]
        return int(min(self.visibility_timeout - 60, work + self.task_margin_s))

    def stage_lease_s(self, stage: str) -> float:
        """How long a task's claim on its rows lasts: past its time limit, so the sweeper never takes
        rows from a task that may still be running."""
        return self.stage_time_limit(stage) + self.task_margin_s / 2

    def path(self, *parts: str) -> Path:
        p = self.data_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings()
    return _current


def configure(**overrides) -> Settings:
    """Replace the process-wide settings: the environment plus ``overrides`` (CLI options, tests)."""
    global _current
    _current = Settings(**overrides)
    return _current
