"""The `vera` command line: local adapter tools, the registry (serve, publish, fetch, ...), Hub sync, jobs, the
dashboard and multi-adapter serving."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

import vera_core
from registry.bootstrap import open_hub, open_registry
from registry.client import RegistryClient
from registry.domain.errors import InvalidInput, RegistryError
from registry.domain.schemas import JobEventInfo, JobInfo, json_object
from registry.services.tokens import create_token, list_tokens, revoke_token
from registry.settings import Settings
from registry.store.database import Database
from vera_core import PORTABLE_GENERATOR, ProjectionSpec, VeraError
from vera_core.recipes import published_metrics

app = typer.Typer(help="VeRA adapters: train, inspect and convert them; publish, fetch, verify and serve them from "
                  "the registry; sync with the HuggingFace Hub; `vera up` runs the whole product.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
projection_app = typer.Typer(help="The shared random projections A and B.", no_args_is_help=True)
app.add_typer(projection_app, name="projection")
db_app = typer.Typer(help="The registry database (VERA_DATABASE_URL).", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()
err_console = Console(stderr=True)


def _fail(exc: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=1)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A PEFT-format VeRA adapter directory.")],
    verify: Annotated[bool, typer.Option(help="Regenerate the projections from the seed and compare.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show an adapter's config, projection and size; with --verify, prove the seed regenerates its projections."""
    try:
        files = vera_core.read_adapter(path)
        report = _describe(files, verify=verify)
    except VeraError as exc:
        _fail(exc)
        return
    if as_json:
        console.print_json(json.dumps(report))
        return
    table = Table(show_header=False, box=None)
    for key, value in report.items():
        table.add_row(f"[bold]{key}[/]", str(value))
    console.print(table)
    if verify and report.get("seed_reproducible") is False:
        raise typer.Exit(code=2)


def _describe(files: vera_core.AdapterFiles, *, verify: bool) -> dict[str, object]:
    cfg = files.config
    vectors = files.vector_keys()
    report: dict[str, object] = {
        "r": cfg.r,
        "target_modules": cfg.target_modules,
        "projection_generator": cfg.projection_generator,
        "projection_prng_key": cfg.projection_prng_key,
        "save_projection": cfg.save_projection,
        "adapted_layers": len(vectors) // 2,
        "adapter_parameters": sum(files.tensors[k].numel() for k in vectors),
        "recorded_fingerprint": files.recorded_fingerprint,
        "peft_loadable": not vera_core.peft_problems(cfg),
    }
    spec = files.spec
    if verify:
        if spec is None:
            raise vera_core.AdapterFormatError(
                "The adapter records neither its projections nor their shape, so it can only be verified on its "
                "base model (vera_core.load_adapter)."
            )
        a, b = vera_core.generate(spec)
        regenerated = vera_core.fingerprint(a, b)
        if files.has_projection:
            stored = vera_core.fingerprint(*(files.tensors[k] for k in vera_core.model.PROJECTION_KEYS))
            report["seed_reproducible"] = stored == regenerated
        elif files.recorded_fingerprint is not None:
            report["seed_reproducible"] = files.recorded_fingerprint == regenerated
        else:  # PEFT wrote it seed-only: nothing recorded to compare against
            report["seed_reproducible"] = "unknown (no fingerprint or projections recorded)"
        report["regenerated_fingerprint"] = regenerated
    return report


@app.command("export-peft")
def export_peft(
    src: Annotated[Path, typer.Argument(help="Adapter directory to read.")],
    dst: Annotated[Path, typer.Argument(help="Directory to write the PEFT-loadable copy to.")],
) -> None:
    """Write a copy with vera_A and vera_B materialised, which PEFT >= 0.21 loads whatever the generator."""
    try:
        out = vera_core.export_peft(src, dst)
    except VeraError as exc:
        _fail(exc)
        return
    console.print(f"wrote {out} (projections materialised; load with PeftModel.from_pretrained)")


@app.command("export-lora")
def export_lora(
    src: Annotated[Path, typer.Argument(help="VeRA adapter directory to read.")],
    dst: Annotated[Path, typer.Argument(help="Directory to write the equivalent LoRA to.")],
) -> None:
    """Write the equivalent rank-r LoRA in PEFT's LoRA format (lora_B @ lora_A equals VeRA's delta weight)."""
    try:
        out = vera_core.export_lora(src, dst)
    except VeraError as exc:
        _fail(exc)
        return
    console.print(f"wrote {out} (LoRA, r = lora_alpha = VeRA's r)")


@projection_app.command("fingerprint")
def projection_fingerprint(
    r: Annotated[int, typer.Option(help="Rank.")],
    max_in: Annotated[int, typer.Option(help="Largest in_features of the adapted layers.")],
    max_out: Annotated[int, typer.Option(help="Largest out_features of the adapted layers.")],
    seed: Annotated[int, typer.Option(help="projection_prng_key.")] = 0,
    generator: Annotated[str, typer.Option(help="Generator name.")] = PORTABLE_GENERATOR,
) -> None:
    """Regenerate A and B and print their SHA-256 fingerprint (docs/projections.md)."""
    try:
        spec = ProjectionSpec(generator, seed, r, max_in, max_out)
    except VeraError as exc:
        _fail(exc)
        return
    console.print(vera_core.fingerprint(*vera_core.generate(spec)))


@app.command()
def params(
    layers: Annotated[int, typer.Option(help="Transformer blocks.")],
    d_model: Annotated[int, typer.Option(help="Hidden size (square attention projections).")],
    r: Annotated[list[int], typer.Option(help="Rank; repeat for several.")],
    modules: Annotated[int, typer.Option(help="Adapted modules per block (query and value: 2).")] = 2,
) -> None:
    """Trainable parameters of VeRA and LoRA from shapes alone, as in the paper's Table 1."""
    shapes = vera_core.transformer_shapes(layers=layers, d_model=d_model, modules_per_layer=modules)
    table = Table("rank", "VeRA params", "VeRA bytes (fp32)", "LoRA params")
    for rank in r:
        n = vera_core.vera_parameters(shapes, rank)
        table.add_row(str(rank), f"{n:,}", f"{4 * n:,}", f"{vera_core.lora_parameters(shapes, rank):,}")
    console.print(table)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the adapter and metrics.json.")],
    demo: Annotated[bool, typer.Option(help="The offline demo: word polarity on the bundled MiniLM.")] = False,
    data: Annotated[Path | None, typer.Option(help="A .csv or .jsonl file with text (and label) columns.")] = None,
    base_model: Annotated[str, typer.Option(help="'minilm' (bundled), a local model directory, or a cached Hub id."
                                            )] = "minilm",
    task: Annotated[str, typer.Option(help="classification or causal-lm.")] = "classification",
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    label_column: Annotated[str, typer.Option(help="Column holding the label (classification).")] = "label",
    r: Annotated[int, typer.Option(help="VeRA rank.")] = 256,
    target_modules: Annotated[str | None, typer.Option(
        help="Comma-separated module names, or a regex if it starts with '^'. Default: by model type.")] = None,
    seed: Annotated[int, typer.Option(help="Training seed (data order, head init, dropout).")] = 0,
    projection_seed: Annotated[int, typer.Option(help="projection_prng_key: the seed of A and B.")] = 0,
    generator: Annotated[str, typer.Option(help="Projection generator.")] = PORTABLE_GENERATOR,
    d_initial: Annotated[float, typer.Option(help="Initial value of d.")] = 0.1,
    save_projection: Annotated[bool, typer.Option(help="Store A and B in the adapter (PEFT-loadable).")] = False,
    epochs: Annotated[float, typer.Option(help="Epochs.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps; overrides --epochs.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate of d and b.")] = 1e-2,
    head_lr: Annotated[float, typer.Option(help="Learning rate of the task head.")] = 1e-3,
    schedule: Annotated[str, typer.Option(help="linear, cosine or constant.")] = "linear",
    warmup_ratio: Annotated[float, typer.Option(help="Warmup fraction.")] = 0.06,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm (0: off).")] = 1.0,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate every N steps (default: each epoch).")] = None,
    patience: Annotated[int | None, typer.Option(help="Early stopping patience, in evaluations.")] = None,
    max_length: Annotated[int, typer.Option(help="Max tokens per example.")] = 64,
    save_every: Annotated[int | None, typer.Option(help="Resumable checkpoint every N steps.")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from the latest checkpoint under --out.")] = False,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16 (mixed precision needs CUDA).")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Fine-tune a model with VeRA; writes a PEFT-format adapter and metrics.json to --out."""
    from vera_core.callbacks import ProgressBar
    from vera_core.recipes import TrainSpec, run

    targets: list[str] | str | None = None
    if target_modules:
        targets = target_modules if target_modules.startswith("^") else [t.strip() for t in target_modules.split(",")]
    training = {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "head_lr": head_lr,
                "schedule": schedule, "warmup_ratio": warmup_ratio, "gradient_accumulation_steps": grad_accum,
                "max_grad_norm": max_grad_norm or None, "eval_every": eval_every, "early_stopping_patience": patience,
                "save_every": save_every, "output_dir": str(out) if save_every or resume else None,
                "precision": precision}
    try:
        spec = TrainSpec(base_model=base_model, task=task, demo=demo, data=str(data) if data else None,  # type: ignore[arg-type]
                         text_column=text_column, label_column=label_column, r=r, seed=seed,
                         projection_prng_key=projection_seed, projection_generator=generator,
                         target_modules=targets, d_initial=d_initial, save_projection=save_projection,
                         max_length=max_length, training=training)
        metrics = run(spec, out, callbacks=[ProgressBar(disable=not progress)], resume=resume)
    except VeraError as exc:
        _fail(exc)
        return
    summary = Table(show_header=False, box=None)
    for key in ("final_eval", "test", "trainable_parameters", "adapter_parameters", "steps", "train_wall_time_s"):
        value = f"{metrics[key]} of {metrics['total_steps']}" if key == "steps" else metrics[key]
        summary.add_row(f"[bold]{key}[/]", ", ".join(f"{k}={v:.4f}" for k, v in value.items())
                        if isinstance(value, dict) else str(value))
    summary.add_row("[bold]adapter[/]", str(out))
    console.print(summary)


DatabaseUrl = Annotated[str | None, typer.Option("--database-url", envvar="VERA_DATABASE_URL",
                                                 help="SQLAlchemy URL; default: SQLite under VERA_DATA_DIR.")]
StorageUrl = Annotated[str | None, typer.Option("--storage-url", envvar="VERA_STORAGE_URL",
                                                help="fsspec URL or folder for blobs; default: VERA_DATA_DIR/blobs.")]


def _settings(database_url: str | None, storage_url: str | None = None) -> Settings:
    try:
        return Settings(database_url=database_url, storage_url=storage_url)
    except ValueError as exc:
        _fail(exc)
        raise


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None, revision: str = "head") -> None:
    """Create or upgrade the registry schema (Alembic)."""
    db = Database(_settings(database_url).resolved_database_url)
    db.upgrade(revision)
    console.print(f"database at revision {db.current_revision()}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")],
                 database_url: DatabaseUrl = None) -> None:
    """Downgrade the registry schema (destructive: drops what later revisions added)."""
    db = Database(_settings(database_url).resolved_database_url)
    db.downgrade(revision)
    console.print(f"database at revision {db.current_revision() or 'base (empty)'}")


@db_app.command("status")
def db_status(database_url: DatabaseUrl = None) -> None:
    """Show the schema revision, and whether it is current."""
    db = Database(_settings(database_url).resolved_database_url)
    current, head = db.current_revision(), db.head_revision()
    state = "up to date" if current == head else "run `vera db upgrade`"
    console.print(f"current: {current or 'none (empty)'}; head: {head}; {state}")
    if current != head:
        raise typer.Exit(code=3)


@app.command()
def fsck(
    repair: Annotated[bool, typer.Option(
        help="Delete orphan and corrupted blobs; mark affected versions failed.")] = False,
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None,
) -> None:
    """Report (and repair) disagreement between the database and blob storage."""
    try:
        registry = open_registry(_settings(database_url, storage_url))
        report = registry.fsck(repair=repair)
    except RegistryError as exc:
        _fail(exc)
        return
    for kind, digests in report.items():
        console.print(f"{kind}: {len(digests)}" + "".join(f"\n  {d}" for d in digests))
    if any(report.values()) and not repair:
        raise typer.Exit(code=2)


@app.command()
def gc(database_url: DatabaseUrl = None, storage_url: StorageUrl = None) -> None:
    """Delete blobs and projections that no version references."""
    try:
        result = open_registry(_settings(database_url, storage_url)).gc()
    except RegistryError as exc:
        _fail(exc)
        return
    console.print(f"removed {result['blobs_removed']} unreferenced blobs")


token_app = typer.Typer(help="Access tokens (run on the registry's machine: it writes the database).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")
RegistryUrl = Annotated[str | None, typer.Option("--registry", envvar="VERA_REGISTRY_URL",
                                                 help="Registry URL; default http://127.0.0.1:8765.")]
Token = Annotated[str | None, typer.Option("--token", envvar="VERA_TOKEN", help="Bearer token.")]


T = TypeVar("T")


def _call(url: str | None, token: str | None, fn: Callable[[RegistryClient], T]) -> T:
    """Run ``fn`` with a client; a registry error becomes one clear line on stderr and exit code 1."""
    try:
        with RegistryClient(url, token) as client:
            return fn(client)
    except RegistryError as exc:
        _fail(exc)
        raise  # _fail exits; this line is never reached


def _run_api(host: str, port: int, settings: Settings, *, with_worker: bool = False) -> None:
    import threading
    from datetime import timedelta

    import uvicorn

    from registry.api import ApiOptions, create_app, is_loopback
    from registry.services.jobs import Jobs
    from registry.worker import Worker

    registry = open_registry(settings)
    jobs = Jobs(registry, lease=timedelta(seconds=settings.job_lease_s))
    require = settings.require_tokens if settings.require_tokens is not None else not is_loopback(host)
    if require:
        mode = "tokens required" + (" (anonymous read allowed)" if settings.anonymous_read else "")
    else:
        mode = "LOCAL MODE: no token needed, every caller acts as the single local user"
        if not is_loopback(host):
            err_console.print(f"[bold yellow]warning:[/] tokens are off on {host}, which is not loopback")
    console.print(f"vera-registry on http://{host}:{port} - {mode}\n  database {registry.db.engine.url!r}\n"
                  f"  storage  {registry.blobs.url}")
    options = ApiOptions(require_tokens=require, anonymous_read=settings.anonymous_read,
                         max_upload_bytes=settings.max_upload_bytes)
    if with_worker:
        worker = Worker(jobs, log=lambda line: console.print(f"[dim]worker:[/] {line}"))
        threading.Thread(target=worker.run_forever, name="vera-worker", daemon=True).start()
    uvicorn.run(create_app(registry, options, jobs, open_hub(registry, settings)), host=host, port=port,
                log_level="warning")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address; any non-loopback address requires tokens.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None,
) -> None:
    """Run the registry API."""
    try:
        _run_api(host, port, _settings(database_url, storage_url))
    except RegistryError as exc:
        _fail(exc)


@app.command("serve-model")
def serve_model(
    base: Annotated[str, typer.Option(help="Base model: 'minilm' (the offline demo model) or a local directory.")
                    ] = "minilm",
    base_name: Annotated[str | None, typer.Option(help="The base model's name in the registry; adapters published "
                                                  "for another base are refused. Default: --base.")] = None,
    task: Annotated[str, typer.Option(help="classification or causal-lm.")] = "classification",
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8766,
    max_resident: Annotated[int, typer.Option(help="Adapters kept loaded (least recently used go first; pinned "
                                              "never).")] = 10_000,
    max_banks: Annotated[int, typer.Option(help="Projection families (each holds a copy of the base).")] = 4,
    max_batch: Annotated[int, typer.Option(help="Rows per forward.")] = 64,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    registry: RegistryUrl = None,
) -> None:
    """Serve many registry adapters on one base model: hot-loaded on first use, batched together."""
    import uvicorn

    from registry.serving.api import create_serving_app
    from registry.serving.server import ModelServer

    if task not in ("classification", "causal-lm"):
        _fail(InvalidInput(f"--task must be classification or causal-lm, got {task!r}."))
    try:
        server = ModelServer(base, task=task, base_name=base_name,  # type: ignore[arg-type]
                             client_for=lambda caller: RegistryClient(registry, caller or ""),  # never ours
                             max_resident=max_resident, max_banks=max_banks, max_batch=max_batch, device=device)
    except (RegistryError, VeraError) as exc:
        _fail(exc)
        return
    with RegistryClient(registry, "") as client:
        console.print(f"vera serve-model on http://{host}:{port}: {server.base_name} ({task}), adapters from "
                      f"{client.url}")
    uvicorn.run(create_serving_app(server), host=host, port=port, log_level="warning")


def _dashboard(port: int, registry_url: str) -> subprocess.Popen[bytes]:
    """Start the Streamlit dashboard (a child process) against ``registry_url``."""
    import web_ui

    command = [sys.executable, "-m", "streamlit", "run", str(web_ui.ENTRY), "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--global.developmentMode", "false", "--client.toolbarMode", "minimal"]
    return subprocess.Popen(command, env={**os.environ, "VERA_REGISTRY_URL": registry_url},
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when `vera` exits, however it exits (uvicorn re-raises SIGTERM after shutdown,
    which skips `finally` blocks)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Dashboard port.")] = 8501,
    registry: RegistryUrl = None,
) -> None:
    """The dashboard (Streamlit) on http://127.0.0.1:PORT, talking to the registry's API."""
    with RegistryClient(registry, "") as client:
        url = client.url
    console.print(f"dashboard on http://127.0.0.1:{port} for the registry at {url}")
    process = _dashboard(port, url)
    try:
        raise typer.Exit(process.wait())
    finally:
        if process.poll() is None:
            process.terminate()


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port.")] = 8765,
    ui_port: Annotated[int, typer.Option(help="Dashboard port.")] = 8501,
    with_ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Start the dashboard too.")] = True,
) -> None:
    """The product on the embedded default: the API, one job worker and the dashboard on 127.0.0.1, with SQLite
    and a local folder (VERA_DATA_DIR).
    """
    settings = _settings(None)
    dashboard = _dashboard(ui_port, f"http://127.0.0.1:{port}") if with_ui else None
    if dashboard is not None:
        console.print(f"dashboard on http://127.0.0.1:{ui_port}")
    try:
        _run_api("127.0.0.1", port, settings, with_worker=True)
    except RegistryError as exc:
        _fail(exc)
    finally:
        if dashboard is not None and dashboard.poll() is None:
            dashboard.terminate()
            dashboard.wait(timeout=20)


@app.command()
def publish(
    directory: Annotated[Path, typer.Argument(help="A PEFT-format VeRA adapter directory.")],
    name: Annotated[str, typer.Option("--name", help="owner/name")],
    base_model: Annotated[str, typer.Option(help="Base model (Hub id or name).")],
    base_revision: Annotated[str, typer.Option(help="Base model revision.")] = "",
    metrics: Annotated[Path | None, typer.Option(help="A JSON file of metrics (e.g. vera train's metrics.json).")
                       ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag; repeat for several.")] = None,
    description: Annotated[str, typer.Option(help="Description.")] = "",
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Publish an adapter directory as the next version of owner/name."""
    try:
        values = _metrics_file(metrics)
    except RegistryError as exc:
        _fail(exc)
        return
    info = _call(registry, token, lambda c: c.publish(directory, name, base_model=base_model,
                                                      base_revision=base_revision, metrics=values, tags=tag or [],
                                                      description=description))
    console.print(f"published {info.ref} ({info.stored_bytes:,} bytes stored, "
                  f"{'seed-reproducible' if info.seed_reproducible else 'projections stored'})")


def _metrics_file(path: Path | None) -> dict[str, object]:
    if path is None:
        return {}
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"--metrics {path}: not a readable file ({exc}).") from exc
    data = json_object(text, f"--metrics {path}")
    return published_metrics(data) if "final_eval" in data else data


@app.command()
def fetch(
    ref: Annotated[str, typer.Argument(help="owner/name, owner/name:VERSION or owner/name@ALIAS")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write.")],
    with_projection: Annotated[bool, typer.Option(help="Always materialise A and B (by default they are included "
                                                  "unless PEFT's own generator regenerates them).")] = False,
    seed_only: Annotated[bool, typer.Option(help="Leave A and B out even where PEFT cannot regenerate them (smallest; "
                                            "for vera_core, PEFT refuses such a folder).")] = False,
    as_: Annotated[str, typer.Option("--as", help="vera (PEFT's VeRA format) or lora (the equivalent LoRA, for "
                                     "LoRA-only servers such as vLLM).")] = "vera",
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Download an adapter in PEFT's format: by default a folder PEFT loads correctly."""
    if as_ not in ("vera", "lora"):
        _fail(InvalidInput(f"--as must be vera or lora, got {as_!r}."))
    if with_projection and seed_only:
        _fail(InvalidInput("--with-projection and --seed-only contradict each other; pass one of them."))
    info = _call(registry, token, lambda c: c.get(ref))
    _call(registry, token, lambda c: c.fetch(info.ref, out, with_projection=with_projection, seed_only=seed_only,
                                             as_lora=as_ == "lora"))
    console.print(f"fetched {info.ref} into {out}")


@app.command()
def verify(
    ref: Annotated[str, typer.Argument(help="owner/name[:VERSION|@ALIAS]")],
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Regenerate the projections from the seed, re-hash the blobs, check shapes; exit 2 if it fails."""
    report = _call(registry, token, lambda c: c.verify(ref))
    console.print(f"{report.ref}: [bold]{report.status}[/]")
    for check, result in report.checks.items():
        console.print(f"  {check}: {'ok' if result.get('ok') else 'FAILED'} "
                      + ", ".join(f"{k}={v}" for k, v in result.items() if k != "ok"))
    if report.status != "passed":
        raise typer.Exit(code=2)


@app.command("ls")
def list_versions(
    owner: Annotated[str | None, typer.Option(help="Owner.")] = None,
    base_model: Annotated[str | None, typer.Option(help="Base model.")] = None,
    r: Annotated[int | None, typer.Option(help="Rank.")] = None,
    seed: Annotated[int | None, typer.Option(help="Projection seed.")] = None,
    generator: Annotated[str | None, typer.Option(help="Projection generator.")] = None,
    tag: Annotated[str | None, typer.Option(help="Tag.")] = None,
    q: Annotated[str | None, typer.Option(help="Text in owner, name or description.")] = None,
    limit: Annotated[int, typer.Option(help="Rows per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Cursor from the previous page.")] = None,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """List adapter versions, newest first."""
    page = _call(registry, token, lambda c: c.list_versions(owner=owner, base_model=base_model, r=r, seed=seed,
                                                            generator=generator, tag=tag, q=q, limit=limit,
                                                            cursor=cursor))
    table = Table("ref", "aliases", "base model", "r", "seed", "params", "bytes", "verified", "tags")
    for v in page.items:
        table.add_row(v.ref, ",".join(v.aliases), v.base_model, str(v.r), str(v.seed), f"{v.adapter_parameters:,}",
                      f"{v.stored_bytes:,}", v.verification_status, ",".join(v.tags))
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


hub_app = typer.Typer(help="Sync with the HuggingFace Hub (the registry server talks to the Hub).",
                      no_args_is_help=True)
app.add_typer(hub_app, name="hub")
HubTokenOpt = Annotated[str | None, typer.Option("--hub-token", envvar="HF_TOKEN", show_default=False,
                                                 help="HuggingFace token for this call (default: HF_TOKEN, then the "
                                                 "server's VERA_HUB_TOKEN); sent once, never stored.")]


@hub_app.command("push")
def hub_push(
    ref: Annotated[str, typer.Argument(help="owner/name[:VERSION|@ALIAS]")],
    repo_id: Annotated[str, typer.Argument(help="Hub repo, namespace/name (created if missing).")],
    revision: Annotated[str, typer.Option(help="Branch to commit to.")] = "main",
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    seed_only: Annotated[bool, typer.Option(help="Leave A and B out (regenerated from the seed; PEFT can do that "
                                            "only for its own generator).")] = False,
    as_: Annotated[str, typer.Option("--as", help="vera, or lora: the equivalent LoRA, for LoRA-only servers.")
                   ] = "vera",
    hub_token: HubTokenOpt = None, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Push a version to a Hub repo in PEFT's format, with a model card; an unchanged re-push makes no commit."""
    if as_ not in ("vera", "lora"):
        _fail(InvalidInput(f"--as must be vera or lora, got {as_!r}."))
    result = _call(registry, token, lambda c: c.hub_push(ref, repo_id, revision=revision, private=private,
                                                          with_projection=not seed_only, as_lora=as_ == "lora",
                                                          hub_token=hub_token))
    what = "pushed" if result.changed else "unchanged, no new commit:"
    console.print(f"{what} {result.version.ref} -> {result.sync.repo_id}@{result.sync.commit_sha[:12]} "
                  f"({result.sync.commit_url})")
    for note in result.notes:
        err_console.print(f"[bold yellow]warning:[/] {note}")


@hub_app.command("pull")
def hub_pull(
    repo_id: Annotated[str, typer.Argument(help="Hub repo holding a PEFT VeRA adapter.")],
    as_: Annotated[str, typer.Option("--as", help="owner/name to record it as.")],
    revision: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
    base_model: Annotated[str | None, typer.Option(help="Base model; default: the adapter config's.")] = None,
    base_revision: Annotated[str | None, typer.Option(help="Base model revision.")] = None,
    hub_token: HubTokenOpt = None, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Record a Hub repo's VeRA adapter as the next version of owner/name; an unchanged revision makes none."""
    result = _call(registry, token, lambda c: c.hub_pull(repo_id, as_, revision=revision, base_model=base_model,
                                                          base_revision=base_revision, hub_token=hub_token))
    what = "pulled as" if result.changed else "unchanged, already"
    console.print(f"{what} {result.version.ref} from {repo_id}@{result.sync.commit_sha[:12]}")


@hub_app.command("status")
def hub_status(
    ref: Annotated[str, typer.Argument(help="owner/name[:VERSION|@ALIAS]")],
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Where a version was pushed to or pulled from, at which commit."""
    syncs = _call(registry, token, lambda c: c.hub_status(ref))
    if not syncs:
        console.print(f"{ref}: never pushed to or pulled from the Hub")
        return
    table = Table("direction", "repo", "revision", "commit", "format", "by", "at")
    for s in syncs:
        kind = "lora" if s.format == "lora" else ("vera" if s.with_projection else "vera, seed-only")
        table.add_row(s.direction, f"{s.endpoint}/{s.repo_id}", s.revision, s.commit_sha[:12], kind, s.actor,
                      s.at.isoformat(timespec="seconds"))
    console.print(table)


@app.command()
def compare(
    refs: Annotated[list[str], typer.Argument(help="Two to eight versions.")],
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Compare versions: parameters, bytes, metrics, and per-layer cosine similarity of their weight deltas."""
    result = _call(registry, token, lambda c: c.compare(refs))
    summary = Table("ref", "params", "bytes", "metrics")
    for v in result.versions:
        summary.add_row(v.ref, f"{v.adapter_parameters:,}", f"{v.stored_bytes:,}", json.dumps(v.metrics)[:60])
    console.print(summary)
    layers = Table("layer", *[f"cos(1,{i + 1})" for i in range(1, len(result.refs))])
    for layer in result.layers:
        layers.add_row(layer.module, *[f"{c:.3f}" if c is not None else "-" for c in layer.delta_cosine[0][1:]])
    console.print(layers)


@app.command()
def alias(
    ref: Annotated[str, typer.Argument(help="owner/name:VERSION the alias should point to")],
    name: Annotated[str, typer.Argument(help="Alias, e.g. prod")],
    remove: Annotated[bool, typer.Option(help="Remove the alias instead (ref is then owner/name).")] = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Move (or remove) an alias."""
    if remove:
        _call(registry, token, lambda c: c.remove_alias(ref, name))
        console.print(f"removed {ref}@{name}")
    else:
        info = _call(registry, token, lambda c: c.set_alias(ref, name))
        console.print(f"{info.owner}/{info.name}@{name} -> {info.version}")


base_app = typer.Typer(help="Base models and their layer shapes.", no_args_is_help=True)
app.add_typer(base_app, name="base")


@base_app.command("register")
def base_register(
    name: Annotated[str, typer.Argument(help="The base model's name as adapters are published with it.")],
    config: Annotated[Path, typer.Option(help="Its transformers config.json (no weights needed).")],
    revision: Annotated[str, typer.Option(help="Base model revision.")] = "",
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None,
) -> None:
    """Declare a base model's exact layer shapes (run on the registry's machine): publishes are then checked against
    them, and adapters that do not record their layer sizes (PEFT's) can be exported as LoRA."""
    try:
        registry = open_registry(_settings(database_url, storage_url))
        before = {b.revision: b.shapes_source for b in registry.list_base_models() if b.name == name}
        info = registry.register_base_model_from_config(name=name, revision=revision, config_path=str(config))
    except RegistryError as exc:
        _fail(exc)
        return
    was = before.get(revision)
    how = {None: "new", "implied": "upgraded from the shapes its published adapters implied, which agree"}.get(
        was, "already declared with these shapes")
    console.print(f"registered {info.name}@{info.revision or 'default'}: {info.layers} layers, {info.shapes_source} "
                  f"({how})")
    for other, source in sorted(before.items()):
        if other != revision and source == "implied":
            flag = f"--revision {other}" if other else "no --revision"
            console.print(f"note: {name}@{other or 'default'} (another revision) stays implied; declare it with "
                          f"{flag}.")


@base_app.command("ls")
def base_ls(registry: RegistryUrl = None, token: Token = None) -> None:
    """Base models the registry knows, with how their shapes are known."""
    table = Table("name", "revision", "layers", "shapes", "fingerprint")
    for b in _call(registry, token, lambda c: c.base_models()):
        table.add_row(b.name, b.revision, str(b.layers), b.shapes_source, b.shapes_fingerprint[:16])
    console.print(table)


@token_app.command("create")
def token_create(
    owner: Annotated[str, typer.Option(help="Owner namespace the token acts for.")],
    scope: Annotated[list[str], typer.Option(help="read, publish or admin; repeat for several.")],
    name: Annotated[str, typer.Option(help="A label.")] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token; the secret is printed once and only its hash is stored."""
    try:
        registry = open_registry(_settings(database_url))
        token_id, secret = create_token(registry.db, owner=owner, scopes=scope, name=name)
    except RegistryError as exc:
        _fail(exc)
        return
    console.print(f"token {token_id} for {owner} {sorted(set(scope))}:")
    print(secret)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="Token id.")], database_url: DatabaseUrl = None) -> None:
    """Revoke a token."""
    try:
        revoke_token(open_registry(_settings(database_url)).db, token_id)
    except RegistryError as exc:
        _fail(exc)
        return
    console.print(f"revoked token {token_id}")


@token_app.command("list")
def token_list(database_url: DatabaseUrl = None) -> None:
    """List tokens (never their secrets)."""
    table = Table("id", "owner", "name", "scopes", "revoked", "last used")
    for t in list_tokens(open_registry(_settings(database_url)).db):
        table.add_row(str(t["id"]), str(t["owner"]), str(t["name"]), ",".join(t["scopes"]),  # type: ignore[arg-type]
                      str(t["revoked"]), str(t["last_used_at"] or "-"))
    console.print(table)


job_app = typer.Typer(help="Fine-tune jobs (run by `vera worker`).", no_args_is_help=True)
app.add_typer(job_app, name="job")


@app.command()
def worker(
    poll: Annotated[float, typer.Option(help="Seconds between polls when the queue is empty.")] = 2.0,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats while a job runs.")] = 5.0,
    once: Annotated[bool, typer.Option(help="Run at most one job, then exit.")] = False,
    database_url: DatabaseUrl = None, storage_url: StorageUrl = None,
) -> None:
    """Claim and run fine-tune jobs from the registry database (several workers may share it)."""
    from datetime import timedelta

    from registry.services.jobs import Jobs
    from registry.worker import Worker

    settings = _settings(database_url, storage_url)
    try:
        jobs = Jobs(open_registry(settings), lease=timedelta(seconds=settings.job_lease_s))
    except RegistryError as exc:
        _fail(exc)
        return
    runner = Worker(jobs, poll_s=poll, heartbeat_s=heartbeat, log=lambda line: console.print(line))
    if once:
        runner.run_once()
    else:
        runner.run_forever()


@job_app.command("submit")
def job_submit(
    name: Annotated[str, typer.Option("--name", help="owner/name to publish the adapter as.")],
    demo: Annotated[bool, typer.Option(help="The offline demo task (word polarity on the bundled MiniLM).")] = False,
    data: Annotated[Path | None, typer.Option(help="A .csv or .jsonl dataset to upload.")] = None,
    base_model: Annotated[str, typer.Option(help="'minilm', a local directory, or a cached Hub id.")] = "minilm",
    task: Annotated[str, typer.Option(help="classification or causal-lm.")] = "classification",
    r: Annotated[int, typer.Option(help="VeRA rank.")] = 256,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    projection_seed: Annotated[int, typer.Option(help="projection_prng_key.")] = 0,
    generator: Annotated[str, typer.Option(help="Projection generator.")] = PORTABLE_GENERATOR,
    target_modules: Annotated[str | None, typer.Option(help="Comma-separated module names.")] = None,
    d_initial: Annotated[float, typer.Option(help="Initial value of d.")] = 0.1,
    epochs: Annotated[float, typer.Option(help="Epochs.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps; overrides --epochs.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate of d and b.")] = 1e-2,
    head_lr: Annotated[float, typer.Option(help="Learning rate of the head.")] = 1e-3,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Queue a fine-tune; a worker trains it and publishes the result under --name."""
    spec: dict[str, object] = {
        "base_model": base_model, "task": task, "demo": demo, "r": r, "seed": seed,
        "projection_prng_key": projection_seed, "projection_generator": generator, "d_initial": d_initial,
        "target_modules": [t.strip() for t in target_modules.split(",")] if target_modules else None,
        "training": {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr,
                     "head_lr": head_lr},
    }
    info = _call(registry, token, lambda c: c.submit_job(name, spec, dataset=data))
    console.print(f"job {info.id} queued: publishes {info.target_name}; follow it with `vera job logs {info.id} "
                  "--follow`")


@job_app.command("ls")
def job_ls(
    owner: Annotated[str | None, typer.Option(help="Owner.")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")] = None,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """List jobs, newest first."""
    table = Table("id", "status", "target", "progress", "result", "created")
    for j in _call(registry, token, lambda c: c.jobs(owner=owner, status=status)):
        table.add_row(str(j.id), j.status, j.target_name, _progress(j), j.result_ref or "-",
                      j.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


def _progress(job: JobInfo) -> str:
    p = job.progress
    if "step" in p:
        eta = f", eta {p['eta_s']:.0f}s" if p.get("eta_s") is not None else ""
        return f"{p['step']}/{p['total_steps']} loss {p.get('loss') or 0:.4f}{eta}"
    return str(p.get("phase", "-"))


@job_app.command("show")
def job_show(job_id: int, registry: RegistryUrl = None, token: Token = None) -> None:
    """A job with its progress and metrics history."""
    job = _call(registry, token, lambda c: c.job(job_id))
    console.print_json(job.model_dump_json())
    evals = _call(registry, token, lambda c: c.job_events(job_id, kind="evaluate"))
    for e in evals:
        console.print(f"eval at step {int(e.data.get('step', 0))}: "
                      + ", ".join(f"{k}={v:.4f}" for k, v in e.data.items() if k != "step"))


@job_app.command("cancel")
def job_cancel(job_id: int, registry: RegistryUrl = None, token: Token = None) -> None:
    """Cancel a job (a running one stops after its current step)."""
    job = _call(registry, token, lambda c: c.cancel_job(job_id))
    console.print(f"job {job.id}: {job.status}{' (stopping)' if job.status == 'running' else ''}")


def _events_after(job_id: int, after: int, client: RegistryClient) -> list[JobEventInfo]:
    return client.job_events(job_id, after=after)


@job_app.command("logs")
def job_logs(
    job_id: int, follow: Annotated[bool, typer.Option(help="Keep printing until the job ends.")] = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Print a job's progress, evaluations and log lines."""
    import time

    after = 0
    while True:
        for e in _call(registry, token, partial(_events_after, job_id, after)):
            after = e.id
            text = e.data.get("message") if e.kind == "log" else ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.data.items())
            console.print(f"{e.at:%H:%M:%S} {e.kind:8} {text}")
        job = _call(registry, token, lambda c: c.job(job_id))
        if not follow or job.status in ("succeeded", "failed", "cancelled"):
            console.print(f"job {job_id}: {job.status}" + (f" -> {job.result_ref}" if job.result_ref else "")
                          + (f" ({job.error})" if job.error else ""))
            return
        time.sleep(2)


def main() -> None:
    app()
