"""Prometheus metrics of the API: requests and latency per route (a pure ASGI middleware), and what the registry
holds (gauges read through the status service, at most once per ``COUNTS_TTL_S`` however often /metrics is
scraped). With several API processes on one port (`vera serve --workers N`), prometheus_client's multiprocess mode
(``MULTIPROCESS_DIR``): whichever process a scrape reaches answers with the sums over all of them."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from registry.api.gate import App, Message, Receive, Scope, Send
from registry.domain.errors import InvalidInput
from registry.domain.schemas import StoreCounts
from registry.services.status import Status

log = logging.getLogger("vera.metrics")

#: How long the registry's totals are reused: counting every version and summing every blob is a scan, and
#: /metrics may be scraped often, or by several Prometheus servers; totals a few seconds old are what a gauge is.
COUNTS_TTL_S = 15.0

#: prometheus_client's multiprocess mode, by its own variable: each process writes its request counters and
#: histograms to memory-mapped files in this directory (one per process and kind), and /metrics sums every file.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: The files prometheus_client writes there (its mmap values: counter_PID.db, gauge_livesum_PID.db, ...): the only
#: *.db files a metrics directory may hold, so that one shared by mistake with other files (the registry's SQLite
#: database in VERA_DATA_DIR) is refused, not cleared.
METRIC_FILE = re.compile(r"(counter|histogram|summary|gauge_(all|liveall|min|livemin|max|livemax|sum|livesum|"
                         r"mostrecent|livemostrecent))_\d+\.db")


T = TypeVar("T")

#: How long a readiness check is reused: /ready needs no token, and each check is a database round trip, a schema
#: check and a storage listing (a LIST request on S3); a probe every few seconds sees every change within a second.
READY_TTL_S = 1.0


class Recent(Generic[T]):
    """``read()``'s last result while it is younger than ``ttl_s``, else a new one (one reading at a time: callers
    arriving meanwhile wait for it and share it)."""

    def __init__(self, read: Callable[[], T], *, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.read, self.ttl_s, self.clock = read, ttl_s, clock
        self._reading: tuple[float, T] | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._reading is None or self.clock() - self._reading[0] >= self.ttl_s:
                self._reading = (self.clock(), self.read())
            return self._reading[1]


class StoreGauges:
    """Adapters, versions and stored bytes, read from the database when a scrape finds the last reading older than
    ``ttl_s`` (Recent: scrapes arriving meanwhile share one reading)."""

    def __init__(self, status: Status, *, ttl_s: float = COUNTS_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._counts = Recent(status.counts, ttl_s=ttl_s, clock=clock)

    def counts(self) -> StoreCounts:
        return self._counts.get()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self.counts()
        except Exception:  # noqa: BLE001 - the database is away: the request counters still answer
            log.warning("metrics: the registry's totals cannot be read now", exc_info=True)
            yield GaugeMetricFamily("vera_totals_up", "Whether the totals below could be read", value=0)
            return
        yield GaugeMetricFamily("vera_totals_up", "Whether the totals below could be read", value=1)
        yield GaugeMetricFamily("vera_adapters", "Adapters in the registry", value=counts.adapters)
        yield GaugeMetricFamily("vera_versions", "Adapter versions in the registry", value=counts.versions)
        yield GaugeMetricFamily("vera_stored_bytes", "Bytes of blobs in storage", value=counts.stored_bytes)
        jobs = GaugeMetricFamily("vera_jobs", "Fine-tune jobs by status (queued: the queue's depth)",
                                 labels=["status"])
        for status, count in counts.jobs.items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily("vera_busy_workers", "Workers running a job now", value=counts.workers)


class RequestMetrics:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer every streamed download through a task and a
    queue): counts each request by method, route template and status, and times it to its last byte."""

    def __init__(self, app: App, *, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:  # the router wrote the matched route into the scope
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI, status: Status) -> CollectorRegistry:
    """Count and time every request by route template; return the collector registry /metrics exposes: this
    process's counters, or in multiprocess mode (PROMETHEUS_MULTIPROC_DIR set, as `vera serve --workers N` does) the
    sums over every process's files. The registry's totals are read by the process scraped either way: they come
    from the database, the same whichever process answers."""
    exposed = counting = CollectorRegistry()
    if os.environ.get(MULTIPROCESS_DIR):
        counting = CollectorRegistry()  # the counts live in the files, where the collector reads them: never exposed
        MultiProcessCollector(exposed)  # type: ignore[no-untyped-call]  # registers itself
    else:  # the process's own: CPU, resident memory, open files, start time, Python's version (process_*,
        # python_info), which every Prometheus dashboard of a service expects (an operator's walk, session 48); one
        # process of several would say only its own, so not in multiprocess mode (as prometheus_client advises)
        ProcessCollector(registry=exposed)
        PlatformCollector(registry=exposed)
    requests = Counter("vera_http_requests", "HTTP requests", ["method", "route", "status"], registry=counting)
    latency = Histogram("vera_http_request_seconds", "HTTP request latency", ["method", "route"], registry=counting)
    exposed.register(StoreGauges(status))
    app.add_middleware(RequestMetrics, requests=requests, latency=latency)
    return exposed


@contextmanager
def multiprocess_directory(processes: int) -> Iterator[Path | None]:
    """The directory of the multiprocess mode for the API processes started in the block, named to them in
    PROMETHEUS_MULTIPROC_DIR (None: no such mode, one process counting for itself, as before there was one):

    - the operator's, when the variable is set, for any number of processes: an existing, writable directory,
      cleared now of the files an earlier run left (as prometheus_client requires: their counts would be summed
      into this run's, and a process given the pid an old file bears would count on from it); kept afterwards;
    - else, for several processes, a new private temporary directory, removed when the block ends.

    No process is marked dead (``prometheus_client.multiprocess.mark_process_dead``): uvicorn's supervisor replaces
    a process that died or hangs (all of them on SIGHUP) and tells nobody, and nothing needs it: it removes the
    files of live gauges only, and no gauge is in the files (the totals are read from the database when scraped). A
    process that ended keeps its counts in the sums, as a counter must: a total never falls when a process goes."""
    chosen = os.environ.get(MULTIPROCESS_DIR)
    if chosen:
        yield _cleared(Path(chosen))
        return
    if processes < 2:
        yield None
        return
    made = Path(tempfile.mkdtemp(prefix="vera-metrics-"))  # private: mode 0700
    os.environ[MULTIPROCESS_DIR] = str(made)  # the processes started from here on inherit it
    try:
        yield made
    finally:
        os.environ.pop(MULTIPROCESS_DIR, None)
        shutil.rmtree(made, ignore_errors=True)


def _cleared(directory: Path) -> Path:
    """``directory`` (the operator's PROMETHEUS_MULTIPROC_DIR) without the metric files (METRIC_FILE, what the
    collector reads) an earlier run left; refused when it holds other *.db files (a database), which stay."""
    if not directory.is_dir():
        found = "does not exist" if not directory.exists() else "is not a directory"
        raise InvalidInput(f"PROMETHEUS_MULTIPROC_DIR={str(directory)!r} {found}: it must name a directory where the "
                           "API processes write their metrics. Create it (empty, writable by the server), or unset "
                           "the variable for a private temporary one.")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidInput(f"PROMETHEUS_MULTIPROC_DIR={str(directory)!r} is not writable by this user: the API "
                           "processes write their metrics there. Make it writable, or unset the variable for a "
                           "private temporary one.")
    leftovers = sorted(directory.glob("*.db"))
    others = [path.name for path in leftovers if not METRIC_FILE.fullmatch(path.name)]
    if others:  # the collector would read them as metrics; clearing them could delete a database
        raise InvalidInput(f"PROMETHEUS_MULTIPROC_DIR={str(directory)!r} holds {', '.join(others[:3])}, which "
                           "prometheus_client did not write (the collector reads every *.db file there, and the "
                           "directory is cleared of its own at start): give the metrics a directory of their own, "
                           "or unset the variable for a private temporary one.")
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return directory
