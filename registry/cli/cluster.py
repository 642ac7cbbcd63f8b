"""`vera cluster`: the deployment's topology as local processes, the tested stand-in for a compose file (no container
runtime works on the machines this is built on, so none is shipped untested). Several API replicas (`vera serve`),
job workers (`vera worker`) and the dashboard, all on one database and one blob store that the caller names
(PostgreSQL and an S3-compatible store at scale): started together, health-checked, supervised (when one stops, all
stop) and stopped together (SIGTERM or Ctrl-C: workers drain). docs/deployment.md walks through it;
tests/registry/test_topology.py runs it on PostgreSQL and an S3-compatible server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Annotated

import httpx
import typer

from registry.cli.common import (
    DatabaseUrl,
    ExitCode,
    LogLevel,
    ReadOnlyMode,
    StorageUrl,
    console,
    fail,
    load_settings,
)
from registry.cpu_share import share_cores
from registry.domain.errors import InvalidInput

MAX_REPLICAS = 16
MAX_WORKERS = 16
STOP_GRACE_S = 60.0  # a draining worker finishes its job's current step within this


@dataclass
class Child:
    """One process of the topology."""

    role: str  # api-0, worker-1, dashboard
    process: subprocess.Popen[bytes]
    url: str = ""


def _vera(*args: str) -> list[str]:
    return [sys.executable, "-m", "registry.cli", *args]


def _start(role: str, command: list[str], env: dict[str, str], url: str = "") -> Child:
    from registry.cli.run import _die_with_parent

    return Child(role, subprocess.Popen(command, env=env, preexec_fn=_die_with_parent if sys.platform == "linux"
                                        else None), url)


def _wait_healthy(children: list[Child], timeout_s: float) -> None:
    """Until every child with a URL answers /health (the dashboard: its page); a child that exits first fails."""
    deadline = time.monotonic() + timeout_s
    pending = [c for c in children if c.url]
    from registry.client import shared_ssl_context

    # one client for every poll: a new one each time loaded the certificate store each time (~20 ms of CPU, 3 polls
    # a second for as long as the children take to start)
    with httpx.Client(timeout=2, verify=shared_ssl_context()) as http:
        while pending:
            for child in list(pending):
                if child.process.poll() is not None:
                    raise InvalidInput(f"{child.role} exited with code {child.process.returncode} while starting; "
                                       "its log is above.")
                with contextlib.suppress(httpx.HTTPError):
                    health = child.url if child.role == "dashboard" else f"{child.url}/health"
                    if http.get(health).status_code == 200:
                        pending.remove(child)
            if pending and time.monotonic() > deadline:
                raise InvalidInput(f"{', '.join(c.role for c in pending)} did not answer within {timeout_s:.0f} s.")
            time.sleep(0.3)


def _stop(children: list[Child]) -> None:
    """SIGTERM to all (workers drain, servers finish their requests), then SIGKILL to what outlives the grace."""
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def _supervise(children: list[Child]) -> Child:
    """Block until one child exits; that child."""
    while True:
        for child in children:
            if child.process.poll() is not None:
                return child
        time.sleep(0.5)


def cluster(
    replicas: Annotated[int, typer.Option(min=1, max=MAX_REPLICAS, help="API replicas (processes), on consecutive "
                                          "ports from --port.")] = 2,
    workers: Annotated[int, typer.Option(min=0, max=MAX_WORKERS, help="Job worker processes.")] = 1,
    port: Annotated[int, typer.Option(help="The first replica's port.")] = 8765,
    ui_port: Annotated[int, typer.Option(help="Dashboard port (it talks to the first replica).")] = 8501,
    with_ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Start the dashboard too.")] = True,
    host: Annotated[str, typer.Option(help="The replicas' bind address. Tokens are required on any non-loopback "
                                           "address, and on loopback too over PostgreSQL or object storage.")
                    ] = "127.0.0.1",
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None,
    start_timeout: Annotated[float, typer.Option(help="Seconds for every process to answer.")] = 120.0,
    log_level: LogLevel = None, read_only: ReadOnlyMode = False,
) -> None:
    """Run the deployment's topology as local processes: API replicas, job workers and the dashboard on one database
    and one blob store (e.g. PostgreSQL and s3://), health-checked; when one stops, all stop (exit 1); SIGTERM or
    Ctrl-C stops them all (workers drain first). Read-only (--read-only): replicas only, no worker."""
    settings = load_settings(database_url, storage_url, read_only=read_only)
    if settings.read_only and workers:
        console.print(f"note: read-only (VERA_READ_ONLY): no job worker starts (--workers {workers} ignored; a worker "
                      "publishes what it trains)")
        workers = 0
    from registry.bootstrap import open_registry

    open_registry(settings, create_if_empty=True).db.engine.dispose()  # the schema, once, before the processes
    env = {**os.environ, **settings.environment()}
    if log_level is not None:
        env["VERA_LOG_LEVEL"] = log_level
    children: list[Child] = []

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for i in range(replicas):
            url = f"http://127.0.0.1:{port + i}"
            children.append(_start(f"api-{i}", _vera("serve", "--host", host, "--port", str(port + i)), env, url))
        worker_env = share_cores(env, workers)
        if worker_env is not env:
            console.print(f"workers: {worker_env['OMP_NUM_THREADS']} torch thread(s) each, their share of this "
                          "machine's cores (set OMP_NUM_THREADS to choose)")
        children += [_start(f"worker-{i}", _vera("worker"), worker_env) for i in range(workers)]
        if with_ui:
            from registry.cli.run import _dashboard

            children.append(Child("dashboard", _dashboard(ui_port, children[0].url,
                                                          dataset_bytes=settings.max_dataset_bytes),
                                  f"http://127.0.0.1:{ui_port}"))
        _wait_healthy(children, start_timeout)
        _announce(children, settings.resolved_database_url, settings.resolved_storage_url)
        stopped = _supervise(children)
        console.print(f"{stopped.role} exited with code {stopped.process.returncode}: stopping the others")
        raise typer.Exit(code=ExitCode.ERROR)
    except KeyboardInterrupt:
        console.print("stopping: workers drain, replicas finish their requests")
    except InvalidInput as exc:
        _stop(children)
        fail(exc)
    finally:
        _stop(children)


def _announce(children: list[Child], database: str, storage: str) -> None:
    from sqlalchemy.engine import make_url

    console.print(f"ready: database {make_url(database)!r}, storage {storage}")  # the URL without its password
    for child in children:
        console.print(f"  {child.role:<10} pid {child.process.pid:<8} {child.url}")
