"""A 7B-scale `--with-projection` export through the registry (issue 15): peak memory of the server while the
adapter is published (which fingerprints the A and B its seed regenerates), of the server and of the client on the
first fetch (which builds the export) and a later one (served from storage, by a server process that
never built it), and optionally the same against another checkout (``--tree``, e.g. the commit before derived files,
whose server rebuilt such an export on every request: over a quarter of its in-memory cache, it was never kept).

The adapter: Llama-2-7B's shapes (32 layers; q, k, v, o, gate, up and down projections), VeRA r=1024, PEFT's own
generator, seed-only; the base model is declared from its config (no weights). The export materialises A (1024 x
11008) and B (11008 x 1024) in float32: 90 MB of the file's 91 MB.

    .venv/bin/python bench/big_export.py [--tree /path/to/other/checkout] [--lora [--max-rank K] --layers N]
        [--stored]

``--stored`` publishes A and B with the adapter, values its seed does not give (as a model trained with a
projection of its own): the registry stores them, and the export copies them from their blob.

``--lora`` fetches the equivalent LoRA instead (``--as lora``, rank-capped with ``--max-rank``): r x (in + out)
numbers per layer, 2.6 GB per decoder layer of these shapes at r=1024, so ``--layers`` keeps the adapter to a few.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.registry.servers import free_port, wait_for  # noqa: E402

LLAMA_7B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
            "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32, "num_hidden_layers": 32,
            "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
MODULES = {"self_attn.q_proj": 4096, "self_attn.k_proj": 4096, "self_attn.v_proj": 4096, "self_attn.o_proj": 4096,
           "mlp.gate_proj": 11008, "mlp.up_proj": 11008, "mlp.down_proj": 4096}  # module: out_features
RANK = 1024


def write_adapter(folder: Path, layers: int = 32, stored: bool = False) -> Path:
    """A seed-only PEFT VeRA adapter with Llama-2-7B's shapes (PEFT's generator: the registry regenerates A, B);
    ``stored``: with an A and B of its own instead, which the registry must store."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    config = {"peft_type": "VERA", "r": RANK, "projection_prng_key": 7, "save_projection": stored,
              "target_modules": sorted({m.split(".")[1] for m in MODULES}), "vera_dropout": 0.0, "d_initial": 0.1,
              "base_model_name_or_path": "llama-2-7b-shapes", "bias": "none", "fan_in_fan_out": False,
              "inference_mode": True, "init_weights": True, "task_type": "CAUSAL_LM"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(layers):
        for module, out in MODULES.items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{key}.vera_lambda_b"] = torch.randn(out, generator=gen)
            tensors[f"{key}.vera_lambda_d"] = torch.randn(RANK, generator=gen)
    if stored:  # PEFT's shapes: A (r, largest in_features), B (largest out_features, r)
        tensors["base_model.vera_A"] = torch.randn(RANK, 11008, generator=gen) * 0.01
        tensors["base_model.vera_B"] = torch.randn(11008, RANK, generator=gen) * 0.01
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def command(tree: Path) -> tuple[list[str], dict[str, str]]:
    """How to run `vera` from ``tree`` with this interpreter: its module, first on the path (run with cwd=tree, since
    ``-m`` puts the working directory before PYTHONPATH)."""
    return [sys.executable, "-m", "registry.cli"], {"PYTHONPATH": str(tree)}


@contextmanager
def server(tree: Path, data: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    cmd, env = command(tree)
    environment = {**os.environ, **env, "VERA_DATABASE_URL": f"sqlite:///{data / 'r.db'}",
                   "VERA_STORAGE_URL": str(data / "blobs"), "VERA_COSTLY_REQUESTS_PER_MINUTE": "100000"}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([*cmd, "serve", "--port", str(port)], env=environment, stdout=log,
                                   stderr=subprocess.STDOUT, text=True, cwd=tree)
        try:
            wait_for(f"http://127.0.0.1:{port}/health", process, log)
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            process.terminate()
            process.wait(timeout=60)


def rss_mib(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (the process's peak) of ``pid``, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def reset_peak(pid: int) -> float:
    """Reset ``pid``'s VmHWM to its current RSS (Linux: 5 into clear_refs), so that the peak read after a fetch is
    the fetch's own and not, say, the publish's (which generates A and B to fingerprint them); returns that RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_mib(pid, "VmRSS")


def fetch(tree: Path, url: str, out: Path, form: list[str]) -> tuple[float, float]:
    """`vera fetch` of the ``form`` (its options) in a process of its own: (seconds, its peak RSS MiB)."""
    cmd, env = command(tree)
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd, "fetch", "llm/big", *form, "--out",
                             str(out), "--registry", url], env={**os.environ, **env, "VERA_NO_CACHE": "1"},
                            capture_output=True, text=True, check=True, cwd=tree)
    return time.perf_counter() - started, int(result.stderr.strip().splitlines()[-1]) / 1024


def measure(tree: Path, work: Path, adapter: Path, form: list[str]) -> dict[str, float]:
    data = work / "data"
    data.mkdir()
    with server(tree, data) as (url, pid):
        httpx.post(f"{url}/api/v1/base-models", json={"name": "llama-2-7b-shapes", "config": LLAMA_7B},
                   timeout=60).raise_for_status()
        cmd, env = command(tree)
        before = reset_peak(pid)
        subprocess.run([*cmd, "publish", str(adapter), "--name", "llm/big", "--base-model", "llama-2-7b-shapes",
                        "--registry", url], env={**os.environ, **env}, check=True, capture_output=True, cwd=tree)
        publish_server = rss_mib(pid, "VmHWM") - before
        before = reset_peak(pid)
        first_s, first_client = fetch(tree, url, work / "first", form)
        first_server = rss_mib(pid, "VmHWM") - before
    size = (work / "first" / "adapter_model.safetensors").stat().st_size
    with server(tree, data) as (url, pid):  # a fresh process: it never built the export
        httpx.get(f"{url}/api/v1/adapters/llm/big/versions/1", timeout=60).raise_for_status()
        before = reset_peak(pid)
        later_s, later_client = fetch(tree, url, work / "later", form)
        later_server = rss_mib(pid, "VmHWM") - before
    assert (work / "later" / "adapter_model.safetensors").read_bytes() == \
        (work / "first" / "adapter_model.safetensors").read_bytes()
    return {"size_mb": size / 1e6, "publish_server": publish_server, "first_s": first_s, "first_server": first_server,
            "first_client": first_client,
            "later_s": later_s, "later_server": later_server, "later_client": later_client}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="another checkout to measure beside this one")
    parser.add_argument("--lora", action="store_true", help="fetch the equivalent LoRA (--as lora)")
    parser.add_argument("--max-rank", type=int, help="with --lora: at most this rank per layer")
    parser.add_argument("--layers", type=int, default=32, help="decoder layers adapted (of 32)")
    parser.add_argument("--stored", action="store_true", help="A and B of its own, stored by the registry")
    args = parser.parse_args()
    form = ["--as", "lora", *(["--max-rank", str(args.max_rank)] if args.max_rank else [])] if args.lora \
        else ["--with-projection"]
    trees = {"this checkout": ROOT, **({f"{args.tree.name}": args.tree} if args.tree else {})}
    with tempfile.TemporaryDirectory() as tmp:
        adapter = write_adapter(Path(tmp) / "adapter", args.layers, args.stored)
        results = {}
        for label, tree in trees.items():
            work = Path(tmp) / label.replace(" ", "-")
            work.mkdir()
            results[label] = measure(tree, work, adapter, form)
    print(f"## {datetime.now(UTC):%Y-%m-%d} — a 7B-scale `{' '.join(form)}` export (bench/big_export.py)\n")
    print(f"Llama-2-7B shapes ({args.layers} of 32 decoder layers adapted), VeRA r={RANK} on all seven projections, "
          + ("its own A and B (stored by the registry, not regenerated); " if args.stored else "PEFT's generator; ")
          + "the export is "
          f"{next(iter(results.values()))['size_mb']:.0f} MB. Server memory: its peak RSS during the fetch (VmHWM, "
          "reset just before it) minus its RSS before; client: `vera fetch`'s peak RSS (VERA_NO_CACHE=1).\n")
    print("| code | publish: server +MiB | first fetch s | server +MiB | client MiB | later fetch (new process) s "
          "| server +MiB | client MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in results.items():
        print(f"| {label} | {r['publish_server']:.0f} | {r['first_s']:.1f} | {r['first_server']:.0f} | "
              f"{r['first_client']:.0f} | "
              f"{r['later_s']:.1f} | {r['later_server']:.0f} | {r['later_client']:.0f} |")


if __name__ == "__main__":
    main()
