"""The run summary (console) and the HTML report with plots."""

from __future__ import annotations

import html
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autodetect.cli import report_plots
from autodetect.model.registry import active_version
from autodetect.pricing.fits import comparables, current_fair_prices
from autodetect.settings import Settings
from autodetect.pipeline.status import pipeline_status
from autodetect.storage import CarClass, Image, Listing, ListingPrediction, ModelVersion, State


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, float) else "-"


def build_summary(session: Session, settings: Settings) -> dict[str, Any]:
    status = pipeline_status(session)
    count = lambda *w: session.execute(select(func.count()).select_from(Image).where(*w)).scalar_one()  # noqa: E731
    photos = count()
    failed = count(Image.state == State.failed.value)
    duplicates = status["duplicates"]
    version = active_version(session)
    metrics = version.metrics if version else {}
    classes = session.execute(select(func.count()).select_from(CarClass)).scalar_one()
    tagged = status["listings"]["tagged"]
    correct = 0
    if version is not None:
        correct = session.execute(
            select(func.count()).select_from(ListingPrediction)
            .join(Listing, Listing.id == ListingPrediction.listing_id)
            .join(CarClass, CarClass.id == Listing.class_id)
            .where(ListingPrediction.model_version_id == version.id, ListingPrediction.top_class == CarClass.name)
        ).scalar_one()
    labelled_tagged = session.execute(
        select(func.count()).select_from(ListingPrediction).join(Listing, Listing.id == ListingPrediction.listing_id)
        .where(ListingPrediction.model_version_id == (version.id if version else -1), Listing.class_id.is_not(None))
    ).scalar_one()
    rows = [
        ("listings", str(status["listings"]["total"])),
        ("listings labelled from seller fields or title", str(status["listings"]["labelled"])),
        ("photos", str(photos)),
        ("photos failed (recorded with reason)", str(failed)),
        ("duplicates (exact or near)", str(duplicates)),
        ("photos excluded from training", ", ".join(f"{k} {n}" for k, n in status["excluded_from_training"].items())),
        ("classes", str(classes)),
        ("model", f"{version.name} ({version.backbone}, {len(version.classes)} classes)" if version else "none"),
        ("held-out top-1 (photos)", _pct(metrics.get("top1"))),
        ("held-out top-3 (photos)", _pct(metrics.get("top3"))),
        ("held-out mean per-class accuracy", _pct(metrics.get("mean_per_class"))),
        ("held-out top-1 (listings, photos averaged)", _pct(metrics.get("listing_top1"))),
        ("tagged listings", str(tagged)),
        ("tagged listings agreeing with the seller's label", f"{correct} of {labelled_tagged}"),
        ("suspect listings (confident mismatch)", str(len(status["suspects"]))),
        ("retraining trigger", (status["last_trigger"] or {}).get("reason", "did not fire")),
        *open_set_rows(metrics.get("open_set") or {}),
    ]
    confusion = (settings.data_dir / version.artifacts["dir"] / version.artifacts["confusion"]
                 if version and "confusion" in version.artifacts else None)
    return {"rows": rows, "status": status, "metrics": metrics, "confusion_png": confusion and str(confusion),
            "classes": list(version.classes) if version else [], "version": version.name if version else None,
            "per_class": per_class_rows(metrics.get("confusion") or [], list(version.classes) if version else []),
            "history": training_history(settings, version), "price_fits": price_fit_panels(session, settings)}


def open_set_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary's open-set lines: AUROC of the OOD score, the rates at the operating point, calibration."""
    if not figures:
        return [("open set (no car / unknown model)", "not calibrated")]
    auroc = lambda key: f"{figures[key]:.3f}" if isinstance(figures.get(key), float) else "-"  # noqa: E731
    calibration = figures.get("calibration") or {}
    return [
        ("OOD AUROC: photos without a car / cars of unknown models",
         f"{auroc('auroc_non_car')} / {auroc('auroc_unknown_model')} ({calibration.get('score', '?')} score)"),
        ("operating point: non-car accepted / unknown model taken as known / known car turned away",
         f"{_pct(figures.get('non_car_false_accept'))} / {_pct(figures.get('unknown_model_false_accept'))} / "
         f"{_pct(figures.get('known_false_reject'))}"),
        ("calibration: temperature, expected calibration error before -> after",
         f"T {calibration.get('temperature', float('nan')):.2f}, {_pct(figures.get('ece'))} -> "
         f"{_pct(figures.get('ece_calibrated'))}"),
    ]


def per_class_rows(confusion: list[list[int]], classes: list[str]) -> list[dict[str, Any]]:
    """Precision, recall and support of each class on the held-out test photos, from the confusion
    matrix ([true][predicted]); precision is None for a class never predicted. [] without a matrix."""
    if not confusion:
        return []
    m = np.asarray(confusion, dtype=np.int64).reshape(len(classes), len(classes))
    support, predicted, hits = m.sum(axis=1), m.sum(axis=0), np.diag(m)
    return [{"class": c, "precision": float(hits[i] / predicted[i]) if predicted[i] else None,
             "recall": float(hits[i] / support[i]) if support[i] else None, "support": int(support[i])}
            for i, c in enumerate(classes)]


def training_history(settings: Settings, version: ModelVersion | None) -> list[dict]:
    """The version's epochs as training wrote them (``history.json`` in its directory); [] without one."""
    path = settings.data_dir / version.artifacts["dir"] / "history.json" if version else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else []


def price_fit_panels(session: Session, settings: Settings, most: int = 6) -> list[dict[str, Any]]:
    """The asking prices (against age) of the ``most`` classes with the most usable offers in the most
    common currency, and each class's fair-price curve at typical mileage, without trim or region."""
    offers = defaultdict(list)
    for _, c in comparables(session):
        offers[c.class_name, c.currency].append(c)
    currencies: Counter = Counter()
    for (_, cur), rows in offers.items():
        currencies[cur] += len(rows)
    if not currencies:
        return []
    currency = currencies.most_common(1)[0][0]
    fair = current_fair_prices(session, settings)
    reference = int(fair.params.get("reference_year", 0))
    panels = []
    for (name, cur), rows in sorted(offers.items(), key=lambda kv: -len(kv[1])):
        curve = fair.curve(name, cur)
        if cur != currency or curve is None or len(panels) >= most:
            continue
        ages = [reference - c.year for c in rows]
        span = range(max(0, min(ages)), max(ages) + 1)
        panels.append({"class": name, "currency": cur, "pooled": curve.get("pooled", ""), "ages": ages,
                       "prices": [c.price for c in rows], "curve_ages": list(span),
                       "curve_prices": [fair.estimate(name, cur, reference - a) for a in span]})
    return panels


def _plots(summary: dict[str, Any], out_dir: Path) -> dict[str, tuple[str, str]]:
    """Each plot's PNG written next to the report: {section: (caption, file name)}, drawn ones only."""
    figures = summary["metrics"].get("open_set") or {}
    calibration = figures.get("calibration") or {}
    examples = summary["metrics"].get("examples") or {}
    drawn = {
        "right": ("Right answers on held-out test photos: true class, answer, probability before calibration",
                  report_plots.plot_examples(examples.get("right", []), out_dir / "examples_right.png")),
        "wrong": ("The most confident wrong answers on held-out test photos",
                  report_plots.plot_examples(examples.get("wrong", []), out_dir / "examples_wrong.png")),
        "ood": ("OOD score on held-out photos: cars of known models, photos without a car, cars of unknown models",
                report_plots.plot_ood_histogram(figures.get("score_histogram"), out_dir / "ood_scores.png",
                                                threshold=calibration.get("no_car_below"),
                                                score=calibration.get("score", "?"))),
        "prices": ("Asking prices against age per class, and the fair price at typical mileage (no trim, no region)",
                   report_plots.plot_price_fits(summary.get("price_fits") or [], out_dir / "price_fits.png")),
        "training": ("Training curves: loss and accuracy per epoch (dotted: a new phase)",
                     report_plots.plot_training_curves(summary.get("history") or [], out_dir / "training.png")),
    }
    confusion = summary.get("confusion_png")
    if confusion and Path(confusion).exists():
        shutil.copyfile(confusion, out_dir / "confusion.png")
        drawn["confusion"] = ("Confusion matrix on the held-out test listings", out_dir / "confusion.png")
    return {key: (caption, path.name) for key, (caption, path) in drawn.items() if path is not None}


def _per_class_table(rows: list[dict[str, Any]]) -> str:
    cells = "".join(f"<tr><td>{html.escape(r['class'])}</td><td>{_pct(r['precision'])}</td>"
                    f"<td>{_pct(r['recall'])}</td><td>{r['support']}</td></tr>" for r in rows)
    return ("<table class='per-class'><tr><th>class</th><th>precision</th><th>recall</th><th>support (photos)</th>"
            f"</tr>{cells}</table>")


def write_report(summary: dict[str, Any], settings: Settings, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(summary, out_dir)

    def figure(*keys: str) -> str:
        return "".join(f"<figure><img src='{plots[k][1]}' alt='{html.escape(plots[k][0])}'>"
                       f"<figcaption>{html.escape(plots[k][0])}</figcaption></figure>" for k in keys if k in plots)

    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary["rows"])
    seconds = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.1f}</td></tr>" for k, v in summary.get("seconds", {}).items())
    suspects = "".join(
        f"<tr><td>{s['listing']}</td><td>{html.escape(s['title'])}</td><td>{html.escape(s['seller_label'])}</td>"
        f"<td>{html.escape(s['model_says'])}</td><td>{s['probability']:.2f}</td></tr>"
        for s in summary["status"]["suspects"]
    )
    trigger = summary["status"].get("last_trigger") or {}
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>AutoDetect report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>AutoDetect report</h1>
<h2>Summary</h2><table>{rows}</table>
<h2>Seconds per stage</h2><table>{seconds}</table>
<h2>Retraining</h2><p>{html.escape(str(trigger.get('trigger', '')))}: {html.escape(str(trigger.get('reason', '')))}</p>
<h2>Held-out test photos</h2>{_per_class_table(summary.get("per_class") or [])}{figure("confusion", "right", "wrong")}
<h2>Open set: no car, unknown model</h2>{figure("ood")}
<h2>Fair prices</h2>{figure("prices")}
<h2>Training</h2>{figure("training")}
<h2>Suspect listings</h2><table><tr><th>listing</th><th>title</th><th>seller</th><th>model</th><th>p</th></tr>{suspects}</table>
</body></html>"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
