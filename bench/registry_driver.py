"""One side of bench/vs_mlflow.py: publish or fetch adapters through a registry's own Python client, from
``threads`` threads, and print the latencies as JSON. The same driver shape runs MLflow's side in MLflow's own
environment (bench/mlflow_driver.py), so both pay the same process and client costs.

    python bench/registry_driver.py vera URL publish|fetch|cached-fetch|peft-fetch ADAPTER_DIRS... [--threads N]
        [--requests N] [--warm]

``fetch`` and ``cached-fetch`` ask for the seed-only form: the very files that were published, as MLflow's fetch
returns them. ``peft-fetch`` asks for the default form, what PEFT loads: for these portable-generator adapters, A
and B materialised (3.2 MB instead of 117 KB).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from driver_timing import timed  # noqa: E402


def vera(url: str, op: str, dirs: list[Path], threads: int, requests: int, prefix: str,
         warm: bool = False) -> dict[str, object]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from registry.client import RegistryClient

    scratch = Path(tempfile.mkdtemp(prefix="vera-bench-"))
    if op == "publish":  # adapter i as bench/{prefix}{i}
        clients = [RegistryClient(url, "", cache=False) for _ in range(threads)]
        return timed(lambda i: clients[i % threads].publish(dirs[i % len(dirs)], f"bench/{prefix}{i}",
                                                             base_model="minilm"), requests, threads)
    cache = scratch / "cache" if op == "cached-fetch" else False
    clients = [RegistryClient(url, "", cache=cache) for _ in range(threads)]
    if op == "cached-fetch":  # fill the cache once, then time fetches that find it
        for i in range(len(dirs)):
            clients[0].fetch(f"bench/a{i}", scratch / "warm" / str(i), seed_only=True)
    seed_only = op != "peft-fetch"
    return timed(lambda i: clients[i % threads].fetch(f"bench/a{i % len(dirs)}", scratch / "out" / str(i),
                                                      seed_only=seed_only), requests, threads, warm=warm)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("op", choices=["publish", "fetch", "cached-fetch", "peft-fetch"])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prefix", default="a")
    parser.add_argument("--warm", action="store_true", help="fetches: one untimed call per thread first")
    args = parser.parse_args()
    print(json.dumps(vera(args.url, args.op, args.dirs, args.threads, args.requests, args.prefix, args.warm)))


if __name__ == "__main__":
    main()
