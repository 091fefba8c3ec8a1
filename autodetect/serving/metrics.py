"""The API's Prometheus metrics, served at ``GET /metrics`` (``routes/metrics.py``).

- ``autodetect_http_request_duration_seconds{method,route,status}`` a histogram per route *template*
  (``/listings/{listing_id}``, never the raw path, so the label set stays small); a path that matches
  no route counts as ``route="unmatched"``.
- ``autodetect_identify_outcomes_total{outcome}``: ``identified``, ``unknown_model`` (a car, but not a
  model we know), ``no_car`` (no car recognised), ``no_model`` (409), ``bad_photo`` (413/415/422),
  ``busy`` (503), ``error`` (other).
- ``autodetect_api_model_info{version,backbone,format}``: the model this process serves (value 1;
  absent until a request has loaded one).

Each app has its own registry (``ApiMetrics``), so several apps in one process (tests) never collide.
One registry per process: run several API processes behind Prometheus as separate targets."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autodetect.serving.deps import Service

#: Seconds; /identify runs a CNN, so the buckets reach further than a web page's would.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES = ("identified", "unknown_model", "no_car", "no_model", "bad_photo", "busy", "error")


class _ServedModel(Collector):
    def __init__(self, service: Service):
        self.service = service

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("autodetect_api_model_info", "The model version this API process serves",
                                   labels=["version", "backbone", "format"])
        provider = self.service.started_provider
        model = provider.current if provider is not None else None
        if model is not None:
            family.add_metric([model.name, model.backbone, model.format], 1.0)
        yield family


class ApiMetrics:
    def __init__(self, service: Service):
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("autodetect_http_request_duration_seconds", "HTTP request latency per route",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.identify = Counter("autodetect_identify_outcomes", "Answers of POST /identify by outcome",
                                ["outcome"], registry=self.registry)
        for outcome in OUTCOMES:
            self.identify.labels(outcome)  # every outcome present from the start, at 0
        self.registry.register(_ServedModel(service))

    def observe(self, method: str, route: str, status: int, seconds: float, outcome: str | None) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)
        if route == "/identify" and method == "POST":
            self.identify.labels(outcome or _outcome_of(status)).inc()


def _outcome_of(status: int) -> str:
    if status < 400:
        return "identified"
    return {409: "no_model", 413: "bad_photo", 415: "bad_photo", 422: "bad_photo", 503: "busy"}.get(status, "error")


class RequestMetrics:
    """ASGI middleware: times every HTTP request and labels it with its route template and status."""

    def __init__(self, app, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            outcome = scope.get("state", {}).get("identify_outcome") if status < 400 else None
            self.metrics.observe(scope.get("method", ""), route, status, time.perf_counter() - started, outcome)
