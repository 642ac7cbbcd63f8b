"""What a running `vera worker` says about itself over HTTP (`vera worker --status-port PORT`), for a liveness probe
and a Prometheus scrape, as the API says it on /ready and /metrics:

- ``GET /health``: 200 with ``{"status": "ok" | "draining", ...}`` while its loop runs (it polls the queue, or its
  current job's heartbeats go out), 503 ``"stuck"`` when neither has happened for ``stuck_after_s``: a worker that a
  supervisor should restart (its job, if any, goes back to the queue when its lease runs out). A database outage
  is not "stuck" (the worker waits it out, and a restart would not help): ``database`` says ``unreachable``.
- ``GET /metrics``: ``vera_worker_*`` gauges and counters (jobs ended by outcome, the job running, its training step,
  seconds since the loop last ran, the database, draining), labelled with nothing but what the worker is (its name
  and devices, on ``vera_worker_info``), so that one scrape config serves every worker.

The server is a thread of the worker's process (wsgiref, threaded) and answers only those two paths, GET and HEAD;
it reads the worker's state, never the database.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: How a job's attempt on this worker ended (``vera_worker_jobs_total{outcome}``).
OUTCOMES = ("succeeded", "failed", "cancelled", "released", "lost", "timed_out")


class WorkerStatus:
    """The worker's state, written by its loop and heartbeat thread, read by the status server (one lock)."""

    def __init__(self, *, name: str, device: str, stuck_after_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.device, self.stuck_after_s, self.clock = name, device, stuck_after_s, clock
        self._lock = threading.Lock()
        self._tick = clock()
        self._job: int | None = None
        self._step: int | None = None
        self._database = True
        self._draining = False
        self._ended: Counter[str] = Counter()

    def tick(self, *, database: bool = True) -> None:
        """The loop polled (or waited out an outage: ``database`` False), or the current job's heartbeat went out."""
        with self._lock:
            self._tick, self._database = self.clock(), database

    def started(self, job: int) -> None:
        with self._lock:
            self._job, self._step, self._tick = job, None, self.clock()

    def step(self, step: int) -> None:
        with self._lock:
            self._step = step

    def ended(self, outcome: str) -> None:
        """The current job's attempt ended (one of OUTCOMES); the worker is idle again."""
        with self._lock:
            self._ended[outcome] += 1
            self._job, self._step, self._tick = None, None, self.clock()

    def draining(self) -> None:
        with self._lock:
            self._draining = True

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            quiet = self.clock() - self._tick
            status = "stuck" if quiet > self.stuck_after_s else "draining" if self._draining else "ok"
            return {"status": status, "worker": self.name, "device": self.device, "job": self._job,
                    "step": self._step, "seconds_since_tick": round(quiet, 3), "stuck_after_s": self.stuck_after_s,
                    "database": "ok" if self._database else "unreachable",
                    "jobs_ended": {outcome: self._ended[outcome] for outcome in OUTCOMES}}


class _Collector(Collector):
    def __init__(self, status: WorkerStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = self.status.snapshot()
        info = GaugeMetricFamily("vera_worker_info", "The worker: its name and devices", labels=["worker", "device"])
        info.add_metric([now["worker"], now["device"]], 1)
        yield info
        ended = CounterMetricFamily("vera_worker_jobs", "Job attempts this worker ended, by outcome",
                                    labels=["outcome"])
        for outcome, count in now["jobs_ended"].items():
            ended.add_metric([outcome], count)
        yield ended
        yield GaugeMetricFamily("vera_worker_busy", "Whether a job is running", value=int(now["job"] is not None))
        yield GaugeMetricFamily("vera_worker_job", "The id of the job running (0: none)", value=now["job"] or 0)
        yield GaugeMetricFamily("vera_worker_job_step", "The training step of the job running (0: none yet)",
                                value=now["step"] or 0)
        yield GaugeMetricFamily("vera_worker_seconds_since_tick", "Seconds since the loop polled or a heartbeat went "
                                "out (over stuck_after_s: /health answers 503)", value=now["seconds_since_tick"])
        yield GaugeMetricFamily("vera_worker_database_up", "Whether the last poll reached the database",
                                value=int(now["database"] == "ok"))
        yield GaugeMetricFamily("vera_worker_draining", "Whether it takes no new jobs (SIGTERM)",
                                value=int(now["status"] == "draining"))


def status_app(status: WorkerStatus) -> Callable[..., Iterable[bytes]]:
    """The WSGI app of the status server: /health and /metrics."""
    metrics = CollectorRegistry()
    metrics.register(_Collector(status))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if method not in ("GET", "HEAD"):
            code, kind, body = "405 Method Not Allowed", "text/plain", b"GET /health or GET /metrics\n"
        elif path == "/health":
            now = status.snapshot()
            code = "503 Service Unavailable" if now["status"] == "stuck" else "200 OK"
            kind, body = "application/json", json.dumps(now).encode() + b"\n"
        elif path == "/metrics":
            code, kind, body = "200 OK", "text/plain; version=0.0.4; charset=utf-8", generate_latest(metrics)
        else:
            code, kind, body = "404 Not Found", "text/plain", b"GET /health or GET /metrics\n"
        start_response(code, [("Content-Type", kind), ("Content-Length", str(len(body))),
                              ("Cache-Control", "no-store")])
        return [b"" if method == "HEAD" else body]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Probes every few seconds would fill the worker's log: nothing is logged."""


def serve_status(status: WorkerStatus, host: str, port: int) -> _ThreadingServer:
    """Start the status server on host:port (0: any free port; ``server_port`` says which) in a daemon thread."""
    server = make_server(host, port, status_app(status), server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="vera-worker-status", daemon=True).start()
    return server
