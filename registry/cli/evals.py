"""`vera eval`: evaluations recorded on versions after publish (registry.services.evaluations), by hand, from
lm-evaluation-harness's results file (`lm_eval ... --output_path DIR` writes one per run), or run by `vera eval run`:
lm-evaluation-harness's tasks against a `vera serve-model`, the version pinned, its results recorded."""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from registry.cli.common import RegistryUrl, Token, VersionRef, call_registry, console, read_json_object
from registry.client import RegistryClient
from registry.domain.errors import Conflict, InvalidInput, RegistryError

Name = Annotated[str, typer.Argument(help="The evaluation's name (1-64 of a-z, 0-9, '_', '-'): its metrics' key.")]
#: model_args entries that carry a credential (token=..., api_key=...): masked in what is recorded
_SECRET = re.compile(r"(?i)\b([a-z_]*(?:token|key|secret|password)[a-z_]*)=([^,]*)")


def _free(client: RegistryClient, version: str, names: list[str], *, otherwise: str = "") -> None:
    """Conflict, before anything is run or recorded, when the version already has any of ``names``."""
    taken = sorted(set(names) & set(client.get(version).metrics))
    if taken:
        raise Conflict(f"{version} already has {', '.join(taken)}: delete those evaluations first (vera eval delete "
                       f"{version} NAME){otherwise}.")


def _serving(server: str, base_model: str) -> None:
    """InvalidInput unless ``server`` is a `vera serve-model` that answers and serves ``base_model`` (every request
    would be refused otherwise, after lm-eval had loaded its tasks)."""
    import httpx

    try:
        health = httpx.get(f"{server.rstrip('/')}/health", timeout=10).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise InvalidInput(f"No vera serve-model answers at {server} ({type(exc).__name__}): start one for the "
                           f"version's base model (vera serve-model --base ... --base-name {base_model}) or give "
                           "its address with --server.") from exc
    served = health.get("base_model") if isinstance(health, dict) else None
    if served != base_model or health.get("task") != "causal-lm":
        raise InvalidInput(f"The model server at {server} serves {served!r} ({health.get('task')}); this version "
                           f"is for {base_model!r}, and lm-evaluation-harness needs a causal-lm server of it.")


def _record_all(client: RegistryClient, version: str,
                recorded: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Record each evaluation; one refused does not stop the others, and the command fails naming those refused."""
    refused = []
    for task, (values, how) in recorded.items():
        try:
            info = client.record_evaluation(version, task, values, details=how)
        except RegistryError as exc:
            refused.append(task)
            console.print(f"{version}: {task} not recorded: {exc}")
            continue
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else k for k, v in list(values.items())[:6])
        console.print(f"{info.ref}: recorded {info.name} ({shown}{', ...' if len(values) > 6 else ''})")
    if refused:
        raise InvalidInput(f"{len(refused)} of {len(recorded)} evaluations were not recorded: {', '.join(refused)}.")


def evaluation_name(task: str) -> str:
    """The evaluation name an lm-eval task is recorded under: lowercase, other characters '_', at most 64."""
    return re.sub(r"[^a-z0-9_-]", "_", task.lower()).lstrip("_-")[:64] or "task"


def _task_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """One task's numbers: ``"acc,none"`` as ``acc``, ``"exact_match,strict-match"`` as ``exact_match_strict-match``;
    "N/A" and NaN (lm-eval's mean of nothing) are no numbers; sample_len (documents scored) is a detail."""
    metrics: dict[str, float] = {}
    for key, value in scores.items():
        if key in ("alias", "sample_len") or not isinstance(value, int | float) or isinstance(value, bool) or \
                not math.isfinite(value):
            continue
        metric, _, applied = key.partition(",")
        metrics[metric if applied in ("", "none") else f"{metric}_{applied}"] = float(value)
    return metrics


def lm_eval_results(data: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each task of an lm-evaluation-harness results file as (metrics, details), by an evaluation name made of
    the task's: ``"acc,none": 0.41`` becomes ``acc``, another filter's ``"exact_match,strict-match"`` becomes
    ``exact_match_strict-match``; "N/A" (a standard error lm-eval could not compute) is left out."""
    results = data.get("results")
    if not isinstance(results, dict) or not results:
        raise InvalidInput("This is not an lm-evaluation-harness results file: it has no \"results\" object (lm_eval "
                           "--output_path DIR writes DIR/<model>/results_<date>.json).")
    config: dict[str, Any] = data["config"] if isinstance(data.get("config"), dict) else {}
    shared: dict[str, Any] = {"harness": "lm-evaluation-harness"}
    shared.update({k: data[k] for k in ("lm_eval_version", "git_hash", "date") if k in data})
    shared.update({k: config[k] for k in ("model", "limit", "batch_size", "bootstrap_iters") if k in config})
    if "model_args" in config:  # readers of the adapter see the details: no credential goes with them
        shared["model_args"] = _SECRET.sub(r"\1=***", str(config["model_args"]))
    tasks: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    named: dict[str, str] = {}
    for task, scores in results.items():
        if not isinstance(scores, dict):
            continue
        metrics = _task_metrics(scores)
        name = evaluation_name(str(task))
        if name in named:
            raise InvalidInput(f"Tasks {named[name]!r} and {task!r} would both be recorded as {name!r} (names are "
                               "lowercase a-z, 0-9, '_', '-', at most 64): record them from separate results files.")
        named[name] = str(task)
        details = {**shared, "task": task}
        if "sample_len" in scores:
            details["sample_len"] = scores["sample_len"]
        for part, field in (("versions", "task_version"), ("n-shot", "n_shot"), ("n-samples", "samples")):
            if isinstance(data.get(part), dict) and task in data[part]:
                details[field] = data[part][task]
        tasks[name] = (metrics, details)
    return tasks


def record(
    ref: VersionRef,
    name: Annotated[str | None, typer.Argument(help="The evaluation's name (with --metrics); with --lm-eval, each "
                                                     "task's own.")] = None,
    metrics: Annotated[Path | None, typer.Option(help="A JSON object of what was measured, e.g. {\"acc\": 0.41}.")
                       ] = None,
    details: Annotated[Path | None, typer.Option(help="A JSON object of how it was measured (harness, settings).")
                       ] = None,
    lm_eval: Annotated[Path | None, typer.Option("--lm-eval", help="lm-evaluation-harness's results file: one "
                                                 "evaluation per task in it.")] = None,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Record what a version scored: its numbers join the version's metrics under the evaluation's name (search
    them as metrics.NAME.KEY); a name it already has is refused. An alias records on the version it names now."""
    if (lm_eval is None) == (metrics is None):
        raise InvalidInput("Give --metrics FILE with a NAME, or --lm-eval RESULTS_FILE (one evaluation per task).")
    if lm_eval is not None:
        if name is not None or details is not None:
            raise InvalidInput("--lm-eval names each evaluation after its task and takes its details from the file: "
                               "leave NAME and --details out.")
        recorded = lm_eval_results(read_json_object(lm_eval, "--lm-eval"))
    else:
        assert metrics is not None
        if name is None:
            raise InvalidInput("Name the evaluation: vera eval record REF NAME --metrics FILE.")
        recorded = {name: (dict(read_json_object(metrics, "--metrics")),
                           dict(read_json_object(details, "--details")) if details is not None else {})}
    for values, how in recorded.values():
        try:
            json.dumps([values, how], allow_nan=False)
        except ValueError as exc:
            raise InvalidInput(f"--metrics and --details hold finite numbers only (no NaN or Infinity): {exc}."
                               ) from exc

    def send(client: RegistryClient) -> None:
        version = client.get(ref).ref  # every task on the one version the alias names now
        _free(client, version, list(recorded))
        _record_all(client, version, recorded)

    call_registry(registry, token, send)


def ls(ref: VersionRef, json_output: Annotated[bool, typer.Option("--json", help="Print them as the API gives them.")
                                               ] = False,
       registry: RegistryUrl = None, token: Token = None) -> None:
    """The evaluations recorded on a version: name, numbers, who recorded them and when."""
    found = call_registry(registry, token, lambda c: c.evaluations(ref))
    if json_output:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in found], indent=2))
        return
    if not found:
        console.print(f"No evaluation is recorded on {ref}; add one with `vera eval record`.")
        return
    from rich.table import Table

    table = Table(title=f"Evaluations of {found[0].ref}")
    for column in ("name", "metrics", "recorded by", "at"):
        table.add_column(column)
    for e in found:
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in e.metrics.items() if isinstance(v, int | float))
        table.add_row(e.name, numbers or "(nested)", e.recorded_by, f"{e.recorded_at:%Y-%m-%d %H:%M}")
    console.print(table)


def delete(ref: VersionRef, name: Name, registry: RegistryUrl = None, token: Token = None) -> None:
    """Remove an evaluation: its numbers leave the version's metrics (published metrics never change)."""
    call_registry(registry, token, lambda c: c.delete_evaluation(ref, name))
    console.print(f"{ref}: evaluation {name} deleted")


def run(
    ref: VersionRef,
    tasks: Annotated[str, typer.Option(help="lm-evaluation-harness tasks, comma-separated (hellaswag,arc_easy).")],
    server: Annotated[str, typer.Option(help="The `vera serve-model` serving the version's base model.")
                      ] = "http://127.0.0.1:8766",
    include_path: Annotated[Path | None, typer.Option(help="A folder of your own task YAMLs (lm_eval's "
                                                      "--include_path).")] = None,
    limit: Annotated[float | None, typer.Option(help="At most this many documents per task (below 1: a "
                                                "fraction); a trial run, not a score to publish.")] = None,
    num_fewshot: Annotated[int | None, typer.Option(help="Examples in each prompt (default: the task's).")] = None,
    num_concurrent: Annotated[int, typer.Option(min=1, max=64, help="Requests in flight: they share the server's "
                                                "batches.")] = 8,
    max_length: Annotated[int, typer.Option(min=2, help="The base model's context, in tokens.")] = 2048,
    output: Annotated[Path | None, typer.Option(help="Write lm_eval's whole results (JSON) here (default: "
                                                "vera-eval-OWNER-NAME-N-TIME.json in this folder).")] = None,
    record_results: Annotated[bool, typer.Option("--record/--no-record", help="Record each task's results on the "
                                                 "version (default) or only print them.")] = True,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Evaluate a version with lm-evaluation-harness through a `vera serve-model` (the version pinned: an alias is
    resolved first), then record each task's results on it (metrics.TASK.METRIC). Needs lm_eval installed (pip
    install 'vera-registry[eval]')."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise InvalidInput("vera eval run drives lm-evaluation-harness, which is not installed: pip install "
                           "'vera-registry[eval]' (or 'lm_eval[api]>=0.4.13').") from exc
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise InvalidInput("--tasks names no task: give one or more, comma-separated (hellaswag,arc_easy).")
    with RegistryClient(registry, token) as client:
        info = client.get(ref)
        version = info.ref  # the number: an alias moved meanwhile does not change what is scored
        _serving(server, info.base_model)
        if record_results:  # before hours of evaluation, not after
            _free(client, version, [evaluation_name(t) for t in names],
                  otherwise=", or run with --no-record")
        bearer = str(client.http.headers.get("Authorization", "")).removeprefix("Bearer ")
        os.environ["OPENAI_API_KEY"] = bearer  # what lm-eval sends to the server, which passes it to the registry
        console.print(f"Evaluating {version} on {', '.join(names)} through {server} ...")
        results = simple_evaluate(
            model="local-completions", tasks=names, limit=limit, num_fewshot=num_fewshot,
            task_manager=TaskManager(include_path=str(include_path) if include_path else None),
            model_args=f"model={version},base_url={server.rstrip('/')}/v1/completions,"
                       f"num_concurrent={num_concurrent},max_length={max_length},max_retries=3")
        if results is None:  # lm-eval answers None on the ranks that are not its first: not ours
            raise InvalidInput("lm-evaluation-harness returned no results.")
        whole = {k: v for k, v in results.items() if k != "samples"}
        if output is None:  # the results are kept whatever happens next
            output = Path(f"vera-eval-{version.replace('/', '-').replace(':', '-')}-"
                          f"{datetime.now():%Y%m%d-%H%M%S}.json")
        output.write_text(json.dumps(whole, indent=2, default=str))
        console.print(f"lm-eval's results: {output}")
        evaluated = lm_eval_results(json.loads(json.dumps(whole, default=str)))
        if record_results:
            _record_all(client, version, {task: (values, {**how, **({"limit": limit} if limit else {})})
                                          for task, (values, how) in evaluated.items()})
        else:
            for task, (values, _) in evaluated.items():
                console.print(f"{version} {task}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
