"""Serving many registry adapters: activation time, throughput against the number of distinct adapters in the
traffic, and adapters resident per GiB. Everything real: a `vera serve` registry on loopback (SQLite, local
folder), adapters published over HTTP, a ModelServer on the bundled MiniLM fetching them over HTTP.

- Activation: the first request for an adapter not yet resident (resolve the name, download its vectors, add it
  to the bank, one forward), per adapter; LoRAX reports 0.5 to 1 s per adapter (its docs), not measured here.
- Throughput: C client threads send 1-text classification requests for T seconds, each naming an adapter drawn
  round-robin from N distinct ones (all resident); requests/s for N = 1, 10, 100, 1000, as a ratio of N = 1.
- Memory: bank bytes per adapter, and RSS growth while 1,000 adapters were activated.

    .venv/bin/python bench/serving.py [--adapters 1000] [--seconds 8] [--clients 32]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from registry.client import RegistryClient  # noqa: E402
from registry.serving.server import ModelServer  # noqa: E402
from tests.registry.servers import running_server  # noqa: E402
from vera_core import PEFT_GENERATOR, VeraConfig, VeraModel, save_adapter  # noqa: E402
from vera_core.recipes import resolve_base  # noqa: E402

TEXT = ["an ordinary sentence about the weather today"]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def publish_adapters(client: RegistryClient, root: Path, count: int, r: int) -> list[str]:
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(resolve_base("minilm"), num_labels=2)
    # PEFT's generator, so that PEFT can load the very same adapter folders for the side-by-side activation
    model = VeraModel(base, VeraConfig(r=r, target_modules=["query", "value"], task_type="SEQ_CLS",
                                       save_projection=False, projection_generator=PEFT_GENERATOR))
    params = model.trainable_parameters()
    gen = torch.Generator().manual_seed(0)
    names = []
    for i in range(count):
        with torch.no_grad():
            for p in params.values():
                p.normal_(0, 0.1, generator=gen)
        path = save_adapter(model, root / f"a{i}")
        names.append(client.publish(path, f"bench/a{i}", base_model="minilm").ref)
    return names


def peft_activation(root: Path, count: int) -> list[float]:
    """PEFT, side by side: load_adapter() of one more adapter folder (local disk, no HTTP) into a live PeftModel,
    then one forward with it (set_adapter), as a server switching to a new adapter would."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_base("minilm")
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = PeftModel.from_pretrained(base, root / "a0", adapter_name="a0").eval()
    enc = AutoTokenizer.from_pretrained(path)(TEXT, return_tensors="pt")
    times = []
    for i in range(1, count + 1):
        t = time.perf_counter()
        model.load_adapter(root / f"a{i}", adapter_name=f"a{i}")
        model.set_adapter(f"a{i}")
        with torch.no_grad():
            model(**enc)
        times.append(time.perf_counter() - t)
    return sorted(times)


def throughput(server: ModelServer, names: list[str], seconds: float, clients: int) -> float:
    cycle = itertools.cycle(names)
    lock = threading.Lock()
    done = [0]
    stop = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop:
            with lock:
                name = next(cycle)
            server.classify(name, TEXT)
            with lock:
                done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapters", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--r", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp, \
            running_server(f"sqlite:///{tmp}/r.db", Path(tmp) / "blobs") as url:
        with RegistryClient(url) as client:
            t0 = time.perf_counter()
            names = publish_adapters(client, Path(tmp), args.adapters, args.r)
            publish_s = time.perf_counter() - t0
        server = ModelServer("minilm", client_for=lambda token: RegistryClient(url, token or ""),
                             max_resident=args.adapters + 10, resolve_ttl_s=3600)
        try:
            server.classify(names[0], TEXT)  # the bank (a copy of the base) is built on the first adapter
            rss0 = rss_mib()
            activation = []
            for name in names[1:]:
                t = time.perf_counter()
                server.classify(name, TEXT)
                activation.append(time.perf_counter() - t)
            rss_per = (rss_mib() - rss0) * 2**20 / max(1, len(names) - 1)
            warm = []
            for name in names[:50]:
                t = time.perf_counter()
                server.classify(name, TEXT)
                warm.append(time.perf_counter() - t)
            counts = [n for n in (1, 10, 100, 1000) if n <= len(names)]
            samples: dict[int, list[float]] = {n: [] for n in counts}
            for round_ in range(args.rounds):  # interleaved, each round in another order: drift hits all points
                for n in (counts if round_ % 2 == 0 else counts[::-1]):
                    samples[n].append(throughput(server, names[:n], args.seconds, args.clients))
            rates = {n: statistics.median(v) for n, v in samples.items()}
            bank_bytes = next(iter(server.bytes_per_adapter().values()))
        finally:
            server.close()
        peft = peft_activation(Path(tmp), min(100, len(names) - 1))
    activation.sort()
    print(f"## bench/serving.py, {date.today()}: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"MiniLM seq-cls, VeRA r={args.r} on query+value, {len(names)} adapters published over HTTP in "
          f"{publish_s:.1f} s; {args.clients} client threads, {args.seconds:g} s per point, median of "
          f"{args.rounds} interleaved rounds")
    print(f"activation (first request: resolve + download + add + forward): median "
          f"{statistics.median(activation) * 1000:.1f} ms, p95 {activation[int(0.95 * len(activation))] * 1000:.1f} "
          f"ms, max {activation[-1] * 1000:.1f} ms; a warm request: median {statistics.median(warm) * 1000:.1f} ms")
    print(f"PEFT side by side (load_adapter from local disk + set_adapter + forward, {len(peft)} adapters): median "
          f"{statistics.median(peft) * 1000:.1f} ms, p95 {peft[int(0.95 * len(peft))] * 1000:.1f} ms; ratio PEFT/ours "
          f"{statistics.median(peft) / statistics.median(activation):.2f}")
    print("| distinct adapters in traffic | requests/s (median) | rounds | vs 1 adapter |\n|---|---|---|---|")
    for n, rate in rates.items():
        print(f"| {n} | {rate:.1f} | {', '.join(f'{x:.0f}' for x in samples[n])} | {rate / rates[1]:.2f} |")
    print(f"memory per resident adapter: bank {bank_bytes:,} B ({2**30 // bank_bytes:,} per GiB); RSS growth "
          f"{rss_per:,.0f} B ({2**30 / rss_per:,.0f} per GiB)")


if __name__ == "__main__":
    main()
