"""Prometheus metrics of the API: requests and latency per route (a middleware), and what the registry holds
(gauges read through the status service at scrape time)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from registry.services.status import Status


class _StoreGauges:
    """Adapters, versions and stored bytes, read from the database at scrape time."""

    def __init__(self, status: Status) -> None:
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.status.counts()
        yield GaugeMetricFamily("vera_adapters", "Adapters in the registry", value=counts.adapters)
        yield GaugeMetricFamily("vera_versions", "Adapter versions in the registry", value=counts.versions)
        yield GaugeMetricFamily("vera_stored_bytes", "Bytes of blobs in storage", value=counts.stored_bytes)


def install_metrics(app: FastAPI, status: Status) -> CollectorRegistry:
    """Count and time every request by route template; return the collector registry /metrics exposes."""
    metrics = CollectorRegistry()
    requests = Counter("vera_http_requests", "HTTP requests", ["method", "route", "status"], registry=metrics)
    latency = Histogram("vera_http_request_seconds", "HTTP request latency", ["method", "route"], registry=metrics)
    metrics.register(_StoreGauges(status))

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(request.method, route).observe(time.perf_counter() - start)
        return response

    return metrics
