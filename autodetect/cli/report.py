"""The run summary (console) and the HTML report with plots."""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autodetect.model.registry import active_version
from autodetect.settings import Settings
from autodetect.pipeline.status import pipeline_status
from autodetect.storage import CarClass, Image, Listing, ListingPrediction, State


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
    ]
    confusion = (settings.data_dir / version.artifacts["dir"] / version.artifacts["confusion"]
                 if version and "confusion" in version.artifacts else None)
    return {"rows": rows, "status": status, "metrics": metrics, "confusion_png": confusion and str(confusion),
            "classes": list(version.classes) if version else [], "version": version.name if version else None}


def write_report(summary: dict[str, Any], settings: Settings, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    confusion = summary.get("confusion_png")
    if confusion and Path(confusion).exists():
        shutil.copyfile(confusion, out_dir / "confusion.png")
        plots.append(("Confusion matrix on the held-out test listings", "confusion.png"))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary["rows"])
    seconds = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.1f}</td></tr>" for k, v in summary.get("seconds", {}).items())
    suspects = "".join(
        f"<tr><td>{s['listing']}</td><td>{html.escape(s['title'])}</td><td>{html.escape(s['seller_label'])}</td>"
        f"<td>{html.escape(s['model_says'])}</td><td>{s['probability']:.2f}</td></tr>"
        for s in summary["status"]["suspects"]
    )
    figures = "".join(f"<figure><img src='{src}' alt='{html.escape(t)}'><figcaption>{html.escape(t)}</figcaption></figure>"
                      for t, src in plots)
    trigger = summary["status"].get("last_trigger") or {}
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>AutoDetect report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>AutoDetect report</h1>
<h2>Summary</h2><table>{rows}</table>
<h2>Seconds per stage</h2><table>{seconds}</table>
<h2>Retraining</h2><p>{html.escape(str(trigger.get('trigger', '')))}: {html.escape(str(trigger.get('reason', '')))}</p>
{figures}
<h2>Suspect listings</h2><table><tr><th>listing</th><th>title</th><th>seller</th><th>model</th><th>p</th></tr>{suspects}</table>
</body></html>"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
