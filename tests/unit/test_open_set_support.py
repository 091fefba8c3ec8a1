"""A tiny calibrated model for the open-set tests (no tests here): sandbox photos of three models, trained
and calibrated by the pipeline's own step (``pipeline.training._train_candidate``: outlier exposure,
training, LiteRT export, test evaluation, ``pipeline.open_set``), in a subprocess so TensorFlow stays out
of the test process. Run as a script it trains: ``python test_open_set_support.py WORK_DIR``; it prints the
version's metrics as one JSON line and leaves the bundle in ``WORK_DIR/bundle``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: Three bodies that look different (pickup, coupe, SUV): a model this small is sure of them.
CLASSES = sorted(["Ford F-150", "Audi TT", "Jeep Wrangler"])
IMAGE_SIZE = 64
LISTINGS_PER_CLASS = 30  # two photos each: 60 photos per class, split by listing
EPOCHS = 20
#: The open set's settings for the test: fewer sandbox photos than a real run, the same targets.
SETTINGS = dict(open_set_photos=80, open_set_outlier_share=1.0, train_seed=11)


def _photos(root: Path) -> list:
    """Two sandbox photos per listing, stored as the pipeline stores them; one Sample each."""
    import numpy as np

    from autodetect.images.decode import encode_jpeg, normalize
    from autodetect.model.split import Sample
    from autodetect.sandbox.cars import spec_for
    from autodetect.sandbox.render import render_car

    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for c, name in enumerate(CLASSES):
        for listing in range(LISTINGS_PER_CLASS):
            for k in range(2):
                path = root / f"{c}-{listing}-{k}.jpg"
                img = render_car(spec_for(name), np.random.default_rng(10_000 * c + 10 * listing + k))
                path.write_bytes(encode_jpeg(normalize(img, 512)))
                samples.append(Sample(str(path), name, f"{c}-{listing}", f"{c}-{listing}"))
    return samples


def _train_main(work: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t0 = time.monotonic()
    from autodetect.model.split import split_samples
    from autodetect.model.train import TrainConfig, train
    from autodetect.pipeline.training import _train_candidate
    from autodetect.settings import Settings

    work_dir = Path(work)
    settings = Settings(data_dir=work_dir / "data", database_url="", **SETTINGS)
    split = split_samples(_photos(work_dir / "photos"), seed=settings.train_seed, val_share=0.2, test_share=0.15)
    config = TrainConfig(backbone="compact_cnn", image_size=IMAGE_SIZE, weights="none", epochs_head=EPOCHS,
                         epochs_finetune=0, batch_size=32, lr_head=3e-3, seed=3, augment=False, patience=EPOCHS)
    metrics = _train_candidate(settings, train, split, config, "open-set-test", work_dir / "bundle", None)
    metrics["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps({k: metrics[k] for k in ("top1", "epochs", "outlier_photos", "open_set", "seconds")}))


def calibrated_model(work: Path) -> dict:
    """Train the tiny calibrated version into ``work/bundle`` in a subprocess; its metrics."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, str(work)], capture_output=True, text=True, timeout=900,
                          env=env, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"training the open-set test model failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    _train_main(sys.argv[1])
