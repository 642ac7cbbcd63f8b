"""One caller's generation flood, and another caller's latency meanwhile, against the model server of an earlier
commit (``--before``), each side in a process of its own.

An attacker keeps ``--attackers`` requests of ``--rows`` rows of ``--tokens`` tokens in flight (each sent again as
soon as it is answered), as one caller; a victim, another caller, sends one row of ``--victim-tokens`` every
``--every-s``. Before 05226c8 the batcher took up to max_batch more of the attacker's rows to wait for room in the
running batch, first come first served, so a victim's row that arrived a moment later waited a whole batch of the
attacker's; now rows leave the queue only as the batch has room, by turns. Reported: the victim's latency (p50,
p90, the longest) and the attacker's tokens per second, medians of alternated rounds, as ratios now / before. The
base is Llama-shaped with random weights (bench/continuous.py's), every row runs to its budget.

    .venv/bin/python bench/generation_flood.py [--seconds 12] [--rows 16] [--max-batch 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def run_side(config: dict[str, Any]) -> dict[str, Any]:
    """In the side's own process (its code first on sys.path): the flood and the victim's latencies."""
    import torch

    from registry.client import RegistryClient
    from registry.serving.decode import Row
    from registry.serving.server import ModelServer

    torch.set_num_threads(2)
    url = config["registry"]
    server = ModelServer(config["base"], task="causal-lm", base_name="bench", max_batch=config["max_batch"],
                         client_for=lambda token: RegistryClient(url, token or ""), resolve_ttl_s=3600)
    try:
        resident = server.generator_for(config["adapter"], None)
        server.wait(server.start(resident, [Row(server.prompt_ids("w1 w2"), 2)]))  # loaded and run once
        stop, made = threading.Event(), [0]

        def flood() -> None:
            while not stop.is_set():
                rows = [Row(server.prompt_ids("w3 w4 w5"), config["tokens"]) for _ in range(config["rows"])]
                made[0] += sum(len(g.tokens) for g in server.wait(server.start(resident, rows, "mallory")))

        attackers = [threading.Thread(target=flood, daemon=True) for _ in range(config["attackers"])]
        started = time.perf_counter()
        for attacker in attackers:
            attacker.start()
        time.sleep(1.0)  # the batch runs full and the attacker's next rows wait
        latency = []
        until = time.monotonic() + config["seconds"]
        while time.monotonic() < until:
            sent = time.perf_counter()
            server.wait(server.start(resident, [Row(server.prompt_ids("w6 w7"), config["victim_tokens"])], "bob"))
            latency.append(time.perf_counter() - sent)
            time.sleep(config["every_s"])
        stop.set()
        for attacker in attackers:
            attacker.join(timeout=600)
        return {"latency": latency, "tokens_per_s": made[0] / (time.perf_counter() - started)}
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--rows", type=int, default=16, help="rows of each attacking request")
    parser.add_argument("--tokens", type=int, default=64, help="tokens of each attacking row")
    parser.add_argument("--attackers", type=int, default=2, help="attacking requests in flight")
    parser.add_argument("--victim-tokens", type=int, default=8)
    parser.add_argument("--every-s", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--r", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default="05226c8~1", help="the commit whose server is the peer")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(json.loads(Path(args.side).read_text()))))
        return

    sys.path.insert(0, str(HERE))
    import torch

    from bench.continuous import alternated, pct, save_base
    from bench.generation import publish
    from registry.client import RegistryClient
    from tests.registry.servers import running_server

    with tempfile.TemporaryDirectory() as tmp, running_server(f"sqlite:///{tmp}/r.db", Path(tmp) / "blobs") as url:
        root = Path(tmp)
        base = save_base(root / "base", args.hidden, args.layers, words=200)
        with RegistryClient(url) as client:
            adapter = publish(client, base, root, 1, args.r)[0][0]
        config = {"registry": url, "base": str(base), "adapter": adapter, "max_batch": args.max_batch,
                  "rows": args.rows, "tokens": args.tokens, "attackers": args.attackers,
                  "victim_tokens": args.victim_tokens, "every_s": args.every_s, "seconds": args.seconds}
        results = alternated(args.before, config, root, args.rounds, __file__)

    def figure(name: str, what: str) -> tuple[float, float, float]:
        values = [run["tokens_per_s"] if what == "attacker tokens/s" else
                  max(run["latency"]) if what == "victim longest" else
                  pct(run["latency"], 0.9 if what == "victim p90" else 0.5) for run in results[name]]
        return statistics.median(values), min(values), max(values)

    print(f"## {date.today()} — one caller's generation flood (bench/generation_flood.py --hidden {args.hidden} "
          f"--layers {args.layers} --max-batch {args.max_batch} --rows {args.rows} --tokens {args.tokens} "
          f"--attackers {args.attackers} --victim-tokens {args.victim_tokens} --every-s {args.every_s} --seconds "
          f"{args.seconds} --r {args.r} --rounds {args.rounds} --before {args.before})\n")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads, CPU, in-process "
          f"ModelServer (max_batch {args.max_batch}). Attacker: {args.attackers} requests of {args.rows} rows x "
          f"{args.tokens} tokens in flight, one caller; victim: 1 row of {args.victim_tokens} tokens every "
          f"{args.every_s} s for {args.seconds} s, another caller. Medians (and spread) of {args.rounds} alternated "
          f"rounds, each side a fresh process and server.\n")
    print("| | before | now | now / before |")
    print("|---|---|---|---|")
    for what in ("victim p50", "victim p90", "victim longest", "attacker tokens/s"):
        b, n = figure("before", what), figure("now", what)
        print(f"| {what}{', s' if what.startswith('victim') else ''} | {b[0]:.3g} ({b[1]:.3g}-{b[2]:.3g}) | "
              f"{n[0]:.3g} ({n[1]:.3g}-{n[2]:.3g}) | {n[0] / b[0]:.2f}x |")


if __name__ == "__main__":
    main()
