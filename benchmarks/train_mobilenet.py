"""Train MobileNetV3-Small from scratch on the sandbox catalogue within a CPU time budget, then report.

    .venv/bin/python benchmarks/train_mobilenet.py                # 800 listings, 20 models, 10 min, 128 px
    .venv/bin/python benchmarks/train_mobilenet.py --budget 120 --listings 300 --models 10   # a quick look

Photos: the first three of each listing, rendered by ``autodetect.sandbox.marketplace.Marketplace``.
As in the pipeline, a relist's copied photos are duplicates (dropped) and a relist is grouped with the
listing it copies, so the split never puts one car on two sides. Non-car photos (interior, document)
are left out here, since this measures the car classifier; ``--keep-non-car`` keeps them, labelled with
the listing's car as the pipeline would.

Everything reported comes from the held-out TEST split (by group): top-1, top-3, mean per-class and
listing-level top-1; the int8 LiteRT model's top-1 agreement with the Keras model on the same photos;
training images/s (steady state, augmentation included). Results go to ``<work>/results.json`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from autodetect.model.split import Sample, split_samples
from autodetect.sandbox.marketplace import Marketplace

GOALS = {"top1": 0.85, "top3": 0.95, "agreement": 0.99}


def render_catalogue(market: Marketplace, photo_dir: Path, per_listing: int, keep_non_car: bool) -> tuple[list[Sample], dict]:
    """Write the photos (cached between runs) and return one Sample per kept photo, plus counts."""
    photo_dir.mkdir(parents=True, exist_ok=True)
    parent = {}  # union-find over relists: a relist joins the group of the listing it copies

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    listings = list(market.listings())
    for listing in listings:
        if listing.relist_of is not None:
            parent[listing.index] = root(listing.relist_of)
    jobs, skipped = [], {"duplicate": 0, "non_car": 0, "unavailable": 0}
    for listing in listings:
        for photo in listing.photos[:per_listing]:
            if photo.original:
                skipped["duplicate"] += 1
                continue
            if photo.kind != "car" and not keep_non_car:
                skipped["non_car"] += 1
                continue
            jobs.append((listing, photo))

    def fetch(job):
        listing, photo = job
        path = photo_dir / f"{listing.item_number}-{photo.path.rsplit('/', 1)[-1]}"
        if not path.exists():
            data = market.photo_bytes(photo.path)
            if data is None:
                return None
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        group = f"g{root(listing.index)}"
        return Sample(str(path), listing.class_name, group, str(listing.index))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(fetch, jobs))
    samples = [s for s in results if s is not None]
    skipped["unavailable"] = len(results) - len(samples)
    return samples, skipped


def mark(value: float, goal: float | None) -> str:
    if goal is None:
        return ""
    return "PASS" if value >= goal else "MISS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listings", type=int, default=800)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--photos", type=int, default=3, help="first N photos per listing")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--budget", type=float, default=600.0, help="training time budget, seconds")
    ap.add_argument("--backbone", default="mobilenet_v3_small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--rotation", type=float, default=0.0, help="augmentation rotation (share of a turn); 0 is cheaper")
    ap.add_argument("--zoom", type=float, default=0.15, help="augmentation: the random crop's side is 1 - zoom .. 1")
    ap.add_argument("--jitter", type=float, default=0.0, help="augmentation: brightness/contrast factor (the "
                    "renderer already varies the light); 0 is cheaper")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--warmup", type=float, default=0.03, help="linear warm-up, a share of the budget")
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    ap.add_argument("--keep-non-car", action="store_true")
    ap.add_argument("--work", type=Path, default=ROOT / "autodetect-data" / "benchmarks" / "train_mobilenet")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    market = Marketplace(listings=args.listings, models=args.models, seed=args.seed)
    samples, skipped = render_catalogue(market, args.work / "photos", args.photos, args.keep_non_car)
    split = split_samples(samples, seed=args.seed)
    counts = split.counts()
    print(f"{len(samples)} photos of {len(split.classes)} models in {time.monotonic() - t0:.0f}s; skipped {skipped}")
    print("split (photos/groups/listings): " + ", ".join(
        f"{side} {c['photos']}/{c['groups']}/{c['listings']}" for side, c in counts.items()))

    # TensorFlow only now: the photos were rendered in threads of a TF-free process.
    from autodetect.model.evaluate import metrics_from_probs, predict_samples
    from autodetect.model.export import export_tflite, keras_predict_fn
    from autodetect.model.runtime import ServingModel
    from autodetect.model.train import TrainConfig, train

    config = TrainConfig(
        backbone=args.backbone, image_size=args.size, weights="none", epochs_head=1000, epochs_finetune=0,
        batch_size=args.batch, lr_head=args.lr, seed=args.seed, time_budget_s=args.budget, rotation=args.rotation,
        zoom=args.zoom, colour_jitter=args.jitter, weight_decay=args.weight_decay,
        warmup_share=args.warmup, dropout=args.dropout, label_smoothing=args.smoothing,
    )

    def progress(row: dict) -> None:
        print(
            f"  epoch {row['epoch']:3d}  loss {row['loss']:.3f}  acc {row['accuracy']:.3f}  "
            f"val_loss {row.get('val_loss', float('nan')):.3f}  val_acc {row.get('val_accuracy', float('nan')):.3f}  "
            f"lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s",
            flush=True,
        )

    print(f"training {args.backbone} from scratch at {args.size}px, budget {args.budget:.0f}s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cpu0 = time.process_time()
    result = train(split.train, split.val, split.classes, config, args.work / "run", progress=progress)
    cpu_s = time.process_time() - cpu0
    print(f"trained {result.epochs_run} epochs in {result.seconds:.0f}s wall, {cpu_s:.0f}s CPU "
          f"(stopped by {result.stopped_by}); load average now {os.getloadavg()[0]:.1f}")

    keras_probs, keras_rate = predict_samples(keras_predict_fn(result.keras_path), split.test, image_size=args.size)
    metrics = metrics_from_probs(keras_probs, split.test, split.classes, images_per_s=keras_rate)
    tflite_path = export_tflite(result.keras_path, args.work / "run" / "model.tflite")
    lite = ServingModel.load(tflite_path)
    lite_probs, lite_rate = predict_samples(lite.predict, split.test, image_size=args.size)
    lite_metrics = metrics_from_probs(lite_probs, split.test, split.classes, images_per_s=lite_rate)
    agreement = float((lite_probs.argmax(1) == keras_probs.argmax(1)).mean())

    rows = [
        ("test top-1", metrics.top1, GOALS["top1"]),
        ("test top-3", metrics.top3, GOALS["top3"]),
        ("test mean per-class top-1", metrics.mean_per_class, None),
        ("test listing-level top-1", metrics.listing_top1, None),
        ("int8 LiteRT top-1 agreement with Keras", agreement, GOALS["agreement"]),
        ("int8 LiteRT test top-1", lite_metrics.top1, None),
    ]
    print()
    print(f"{'metric':42s} {'value':>8s} {'goal':>8s}")
    for name, value, goal in rows:
        print(f"{name:42s} {value:8.1%} {('>= ' + format(goal, '.0%')) if goal else '':>8s} {mark(value, goal)}")
    print(f"{'training images/s (steady state)':42s} {result.train_images_per_s:8.0f}")
    print(f"{'Keras predict images/s (tf.function, b32)':42s} {keras_rate:8.0f}")
    print(f"{'LiteRT int8 predict images/s (b32)':42s} {lite_rate:8.0f}")
    print(f"({metrics.n_images} test photos, {metrics.n_listings} test listings, {len(split.classes)} classes, "
          f"{result.epochs_run} epochs, {result.seconds:.0f}s training)")

    confusion = metrics.confusion
    pairs = sorted(
        ((confusion[i][j], split.classes[i], split.classes[j]) for i in range(len(split.classes))
         for j in range(len(split.classes)) if i != j and confusion[i][j] > 0),
        reverse=True,
    )
    if pairs:
        print("most confused (true -> predicted: photos): " + "; ".join(f"{t} -> {p}: {n}" for n, t, p in pairs[:10]))
    weakest = sorted(metrics.per_class.items(), key=lambda kv: kv[1])[:6]
    print("weakest classes: " + ", ".join(f"{c} {v:.0%}" for c, v in weakest))
    final = result.history[-1] if result.history else {}
    print(f"last epoch: train acc {final.get('accuracy', float('nan')):.3f}, val acc {final.get('val_accuracy', float('nan')):.3f}")

    out = {
        "config": {**vars(args), "work": str(args.work)},
        "data": {"photos": len(samples), "classes": len(split.classes), "skipped": skipped, "split": counts},
        "train": {**{k: v for k, v in result.to_dict().items() if k != "history"}, "cpu_seconds": cpu_s},
        "test_keras": metrics.to_dict(),
        "test_tflite": lite_metrics.to_dict(),
        "tflite_agreement": agreement,
        "keras_images_per_s": keras_rate,
        "tflite_images_per_s": lite_rate,
        "goals": GOALS,
    }
    out["test_tflite"].pop("confusion", None)
    (args.work / "results.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
