"""The demo's summary and HTML report: per-class precision and recall, right and wrong test photos, the
OOD score histogram, the price fit per class and the training curves, from a catalogue crawled from the
sandbox and a model trained on it by the real training run; and the evaluation's stored examples."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image as PILImage

from autodetect.cli.report import build_summary, per_class_rows, write_report
from autodetect.db import session_scope
from autodetect.model.evaluate import metrics_from_probs, score_histogram
from autodetect.model.split import Sample
from autodetect.pipeline.discovery import crawl
from autodetect.pipeline.retraining import check_retraining
from autodetect.pricing.fits import comparables
from autodetect.settings import configure
from autodetect.sources import open_source


def test_per_class_precision_recall_and_support_come_from_the_confusion_matrix():
    confusion = [[8, 2, 0],   # a: 10 photos, 8 right
                 [1, 4, 0],   # b: 5 photos, 4 right
                 [3, 0, 0]]   # c: 3 photos, none right, never predicted
    rows = {r["class"]: r for r in per_class_rows(confusion, ["a", "b", "c"])}
    assert rows["a"] == {"class": "a", "precision": 8 / 12, "recall": 0.8, "support": 10}
    assert rows["b"] == {"class": "b", "precision": 4 / 6, "recall": 0.8, "support": 5}
    assert rows["c"] == {"class": "c", "precision": None, "recall": 0.0, "support": 3}


def test_evaluation_keeps_right_answers_class_by_class_and_the_most_confident_mistakes():
    classes = ["a", "b"]
    labels = ["a", "a", "a", "b", "b", "a", "b"]
    probs = np.array([[.9, .1], [.8, .2], [.7, .3], [.4, .6], [.6, .4], [.2, .8], [.95, .05]])
    samples = [Sample(f"/p/{i}.jpg", label, f"g{i}", f"l{i}") for i, label in enumerate(labels)]
    examples = metrics_from_probs(probs, samples, classes).examples
    assert [e["path"] for e in examples["right"]] == ["/p/0.jpg", "/p/3.jpg", "/p/1.jpg", "/p/2.jpg"]
    assert [(e["path"], e["true"], e["predicted"], e["p"]) for e in examples["wrong"]] == [
        ("/p/6.jpg", "b", "a", 0.95), ("/p/5.jpg", "a", "b", 0.8), ("/p/4.jpg", "b", "a", 0.6)]


def test_the_score_histogram_shares_its_bins_and_counts_every_finite_score():
    histogram = score_histogram({"car": np.array([0.9, 0.95, 1.0]), "non_car": np.array([0.1, -np.inf, 0.5])},
                                bins=4)
    assert histogram["edges"] == pytest.approx([0.1, 0.325, 0.55, 0.775, 1.0])
    assert histogram["counts"] == {"car": [0, 0, 0, 3], "non_car": [1, 1, 0, 0]}


def _assert_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 2000, path
    with PILImage.open(path) as img:
        img.verify()
    with PILImage.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= 200, (path, img.size)
        assert np.asarray(img.convert("L")).std() > 5, f"{path} is blank"


@pytest.mark.slow
def test_the_report_shows_classes_examples_ood_prices_and_training(settings, sync_dispatch, tmp_path):
    settings = configure(**{**settings.model_dump(), "open_set_photos": 60})  # a shorter calibration
    sync_dispatch.settings = settings
    crawl(settings, open_source(settings), sync_dispatch)
    sync_dispatch.drain()
    decision, _ = check_retraining(settings, sync_dispatch)
    assert decision.fire, decision.reason
    sync_dispatch.drain()

    with session_scope(settings) as s:
        summary = build_summary(s, settings)
        offers = Counter(c.class_name for _, c in comparables(s))
    path = write_report(summary, settings, tmp_path / "report")
    page = path.read_text()

    metrics, classes = summary["metrics"], summary["classes"]
    per_class = {r["class"]: r for r in summary["per_class"]}
    assert sorted(per_class) == sorted(classes)
    assert sum(r["support"] for r in per_class.values()) == metrics["n_images"] - metrics["n_unknown"]
    for name, accuracy in metrics["per_class"].items():
        assert per_class[name]["recall"] == pytest.approx(accuracy)
        assert f"<td>{name}</td>" in page

    right = int(np.trace(np.asarray(metrics["confusion"])))
    examples = metrics["examples"]
    assert len(examples["right"]) == min(12, right)
    assert len(examples["wrong"]) == min(12, metrics["n_images"] - right)
    assert all(e["true"] == e["predicted"] for e in examples["right"])
    assert all(e["true"] != e["predicted"] for e in examples["wrong"])
    for kind in ("right", "wrong"):
        assert (f"examples_{kind}.png" in page) == bool(examples[kind])

    histogram = metrics["open_set"]["score_histogram"]
    assert sum(histogram["counts"]["non_car"]) == metrics["open_set"]["n_non_car"] > 0
    assert sum(histogram["counts"]["unknown_model"]) == metrics["open_set"]["n_unknown_model"] > 0
    assert sum(histogram["counts"]["car"]) == metrics["open_set"]["n_known"]

    panels = summary["price_fits"]
    assert panels and all(len(p["prices"]) == offers[p["class"]] for p in panels)
    assert len(summary["history"]) == metrics["epochs"]

    for name in ("confusion", "ood_scores", "price_fits", "training",
                 *(f"examples_{k}" for k in ("right", "wrong") if examples[k])):
        assert f"src='{name}.png'" in page
        _assert_png(tmp_path / "report" / f"{name}.png")
    rows = dict(summary["rows"])
    aurocs = rows["OOD AUROC: photos without a car / cars of unknown models"]
    assert aurocs.startswith(f"{metrics['open_set']['auroc_non_car']:.3f} / ")
    assert "photos excluded from training" in rows
