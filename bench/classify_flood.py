"""One caller's costly classification requests, and another caller's latency meanwhile, over real HTTP.

An attacker (an ordinary read token) sends `/v1/classify` requests of the most the API takes (256 texts of 20,000
one-token characters, each read to its first 256 tokens) back to back on ``--connections`` connections; a victim
(another user) sends one short text every ``--every-s``. Reported: the victim's latency (p50, p90, the longest) with
no attacker and with each number of attacking connections, as ratios to no attacker, for each
``--classify-tokens`` (0: forwards of max_batch texts whatever their length, as before that option); the attacker's
own request time, its texts per second. Settings alternated round by round, one process, one registry, one model
server (the bundled MiniLM).

    .venv/bin/python bench/classify_flood.py [--seconds 20] [--connections 1,2] [--classify-tokens 2048,0]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
VICTIM_TEXT = ["an ordinary sentence about the weather today"]


def flood(url: str, token: str, adapter: str, stop: threading.Event, took: list[float]) -> None:
    """Costly requests back to back until ``stop``; each one's time appended to ``took``."""
    import httpx

    texts = ["!" * 20_000] * 256
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as http:
        while not stop.is_set():
            started = time.perf_counter()
            answer = http.post("/v1/classify", json={"adapter": adapter, "inputs": texts})
            if answer.status_code != 200:
                raise SystemExit(f"the attacker's request failed: {answer.status_code} {answer.text[:300]}")
            took.append(time.perf_counter() - started)


def run(url: str, tokens: dict[str, str], adapter: str, connections: int, seconds: float, every_s: float
        ) -> dict[str, list[float]]:
    """The victim's latencies over ``seconds`` while ``connections`` attackers flood; the attacker's request times."""
    import httpx

    stop, took = threading.Event(), []  # type: ignore[var-annotated]
    attackers = [threading.Thread(target=flood, args=(url, tokens["mallory"], adapter, stop, took), daemon=True)
                 for _ in range(connections)]
    for attacker in attackers:
        attacker.start()
    time.sleep(1.0 if connections else 0)  # the first costly request is in flight
    latency = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['bench']}"}, timeout=600) as http:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            answer = http.post("/v1/classify", json={"adapter": adapter, "inputs": VICTIM_TEXT})
            if answer.status_code != 200:
                raise SystemExit(f"the victim's request failed: {answer.status_code} {answer.text[:300]}")
            latency.append(time.perf_counter() - started)
            time.sleep(every_s)
    stop.set()
    for attacker in attackers:
        attacker.join()
    return {"latency": latency, "attacker": took}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the victim sends, per setting")
    parser.add_argument("--every-s", type=float, default=0.1, help="the victim's pause between two requests")
    parser.add_argument("--connections", default="1,2", help="attacking connections to measure against none")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--classify-tokens", default="2048,0", help="the server's settings to measure (0: none)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    import torch

    from bench.continuous import pct
    from bench.serving import publish_adapters
    from registry.client import RegistryClient
    from registry.serving.api import create_serving_app
    from registry.serving.server import ModelServer
    from tests.registry.servers import in_thread, issued_tokens, running_server

    torch.set_num_threads(2)
    connections = [0, *(int(c) for c in args.connections.split(","))]
    budgets = [int(t) for t in args.classify_tokens.split(",")]
    settings = [(t, c) for t in budgets for c in connections]
    results: dict[tuple[int, int], list[dict[str, list[float]]]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/r.db"
        with running_server(db, Path(tmp) / "blobs", VERA_REQUIRE_TOKENS="true") as registry:
            publisher, reader = issued_tokens(db, ("bench", ["read", "publish"]), ("mallory", ["read"]))
            tokens = {"bench": publisher, "mallory": reader}
            with RegistryClient(registry, publisher) as client:
                [adapter] = publish_adapters(client, Path(tmp), 1, 256)
            server = ModelServer("minilm", max_batch=args.max_batch,
                                 client_for=lambda token: RegistryClient(registry, token or ""))
            try:
                for token in tokens.values():  # loaded, and each caller known, before the clock starts
                    server.classify(adapter, VICTIM_TEXT, token)
                with in_thread(create_serving_app(server), "the model server") as url:
                    for round_ in range(args.rounds):
                        for budget, attackers in settings if round_ % 2 == 0 else settings[::-1]:
                            server.classify_tokens = budget or None
                            results[budget, attackers].append(run(url, tokens, adapter, attackers, args.seconds,
                                                                  args.every_s))
            finally:
                server.close()

    def figure(setting: tuple[int, int], q: float | None) -> float:
        values = [max(r["latency"]) if q is None else pct(r["latency"], q) for r in results[setting]]
        return statistics.median(values)

    def attacker(budget: int) -> str:
        took = [t for c in connections for r in results[budget, c] for t in r["attacker"]]
        return (f"{statistics.median(took):.1f} s a request ({256 / statistics.median(took):.0f} texts/s)" if took
                else "none finished")

    print(f"## {date.today()} — one caller's classification flood (bench/classify_flood.py --seconds {args.seconds} "
          f"--every-s {args.every_s} --connections {args.connections} --max-batch {args.max_batch} "
          f"--classify-tokens {args.classify_tokens} --rounds {args.rounds})\n")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 2 threads, CPU. The bundled "
          f"MiniLM, one adapter (r=256) over real HTTP, --max-batch {args.max_batch}; the attacker's requests: 256 "
          f"texts of 20,000 '!' (each read to 256 tokens), back to back. The victim: one short text every "
          f"{args.every_s} s for {args.seconds} s; seconds, medians of {args.rounds} alternated rounds (ratios to "
          f"no attacker).\n")
    names = {c: "no attacker" if not c else f"{c} attacking connection{'s' if c > 1 else ''}" for c in connections}
    print("| --classify-tokens | victim's latency | " + " | ".join(names[c] for c in connections) + " |")
    print("|---|---|" + "---|" * len(connections))
    for budget in budgets:
        for label, q in (("p50", 0.5), ("p90", 0.9), ("longest", None)):
            alone = figure((budget, 0), q)
            cells = [f"{alone:.3f}"] + [f"{figure((budget, c), q):.3f} ({figure((budget, c), q) / alone:.0f}x)"
                                        for c in connections[1:]]
            print(f"| {budget or 'none'} | {label} | " + " | ".join(cells) + " |")
    print("\nThe attacker's requests: " + "; ".join(f"--classify-tokens {b or 'none'}: {attacker(b)}"
                                                  for b in budgets) + ".")


if __name__ == "__main__":
    main()
