"""Fine-tune jobs through the registry's API: job submit, ls, show, cancel and logs (workers run them: `vera
worker`)."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from registry.cli import training_options as opt
from registry.cli.common import (
    RegistryUrl,
    Token,
    call_registry,
    check_failed,
    console,
    err_console,
    key_values,
    styled,
)
from registry.cli.output import JsonOutput, print_json
from registry.client import RegistryClient
from registry.domain.schemas import (
    FINAL_JOB_STATUSES,
    JOB_EVENT_PAGE,
    MAX_JOB_GPUS,
    MAX_JOB_PRIORITY,
    MAX_JOB_TIME_LIMIT_S,
    JobEventInfo,
    JobInfo,
)
from registry.domain.training_spec import training_spec
from registry.domain.words import unclaimed_hint
from vera_core import PORTABLE_GENERATOR


def _above_zero(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter("give a number of seconds above 0, or leave it out for no limit")
    return value


def job_submit(
    name: Annotated[str, typer.Option("--name", help="owner/name to publish the adapter as.")],
    demo: opt.Demo = False,
    data: opt.JobData = None,
    base_model: opt.JobBaseModel = "minilm",
    task: opt.Task = "classification",
    text_column: opt.TextColumn = "text",
    label_column: opt.LabelColumn = "label",
    r: opt.Rank = 256,
    seed: opt.Seed = 0,
    projection_seed: opt.ProjectionSeed = 0,
    generator: opt.Generator = PORTABLE_GENERATOR,
    target_modules: opt.TargetModules = None,
    d_initial: opt.DInitial = 0.1,
    epochs: opt.Epochs = 1.0,
    max_steps: opt.MaxSteps = None,
    batch_size: opt.BatchSize = 32,
    lr: opt.Lr = 1e-2,
    head_lr: opt.HeadLr = 1e-3,
    save_projection: opt.SaveProjection = False,
    schedule: opt.Schedule = "linear",
    warmup_ratio: opt.WarmupRatio = 0.06,
    grad_accum: opt.GradAccum = 1,
    max_grad_norm: opt.MaxGradNorm = 1.0,
    eval_every: opt.EvalEvery = None,
    log_every: opt.LogEvery = None,
    patience: opt.Patience = None,
    metric_for_best: opt.MetricForBest = None,
    keep_best: opt.KeepBest = True,
    max_length: opt.MaxLength = 64,
    max_train_examples: opt.MaxTrainExamples = None,
    max_eval_examples: opt.MaxEvalExamples = None,
    save_every: opt.SaveEvery = None,
    precision: opt.Precision = "auto",
    priority: Annotated[int, typer.Option(min=-MAX_JOB_PRIORITY, max=MAX_JOB_PRIORITY, help="Higher runs first.")
                        ] = 0,
    time_limit: Annotated[float | None, typer.Option(
        max=MAX_JOB_TIME_LIMIT_S, callback=_above_zero,  # the API's bounds (0 was its 422, naming body.time_limit_s)
        help="Seconds of training after which the job stops and fails, saying so. Default: none.")] = None,
    gpus: Annotated[int, typer.Option(min=0, max=MAX_JOB_GPUS, help="GPUs its training needs: only a worker that "
                                      "owns them (`vera worker --device cuda`) claims it. Default: 0, any worker.")
                    ] = 0,
    start_from: Annotated[str | None, typer.Option(
        "--from", help="A version of this registry to start from (owner/name:N or @ALIAS; a warm start: its "
        "vectors and head, rank, projection, targets and base model). The result records it as its parent.")
                          ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag of the version it publishes, besides fine-tune; "
                                                  "repeat for several.")] = None,
    description: Annotated[str, typer.Option(help="The version's description (default: fine-tuned by job N).")
                           ] = "",
    prop: Annotated[list[str] | None, typer.Option("--property", help="A key=value property of the version it "
                                                   "publishes (e.g. experiment=baseline); repeat for several.")
                    ] = None,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Queue a fine-tune; a worker trains it and publishes the result under --name (labelled with --tag,
    --description and --property, as `vera publish` labels a version)."""
    spec = training_spec(base_model=base_model, task=task, demo=demo, text_column=text_column,
                         label_column=label_column, r=r, seed=seed, projection_seed=projection_seed,
                         generator=generator, target_modules=target_modules, d_initial=d_initial,
                         save_projection=save_projection, max_length=max_length, epochs=epochs, max_steps=max_steps,
                         max_train_examples=max_train_examples, max_eval_examples=max_eval_examples,
                         batch_size=batch_size, lr=lr, head_lr=head_lr, schedule=schedule, warmup_ratio=warmup_ratio,
                         grad_accum=grad_accum, max_grad_norm=max_grad_norm, eval_every=eval_every, log_every=log_every,
                         patience=patience, metric_for_best=metric_for_best, keep_best=keep_best,
                         save_every=save_every, precision=precision, init_from=start_from)
    properties = key_values(prop or [])
    info = call_registry(registry, token, lambda c: c.submit_job(
        name, spec, dataset=data, priority=priority, time_limit_s=time_limit, gpus=gpus, tags=tag or [],
        description=description, properties=properties))
    console.print(f"job {info.id} queued: publishes {info.target_name}; follow it with `vera job logs {info.id} "
                  "--follow`")
    asked = [t for t in tag or [] if t.strip()] or description.strip() or properties  # (blank: nothing asked)
    if asked and not (info.result_tags or info.result_description or info.result_properties):
        err_console.print(styled("warning:", "yellow", f" the registry did not keep the --tag, --description or "
                                 f"--property values of job {info.id} (it is older than them): its version is "
                                 "published without them; `vera tag`, `vera describe` and `vera property` label it "
                                 "after."),
                          soft_wrap=True)


def job_ls(
    owner: Annotated[str | None, typer.Option(help="Owner.")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="The newest this many (read 500 at a time).")] = 100,
    as_json: JsonOutput = False, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """List jobs, newest first."""
    jobs = call_registry(registry, token, lambda c: c.jobs(owner=owner, status=status, limit=limit))
    if as_json:
        print_json(jobs)
        return
    if not jobs:  # an empty table's header said nothing (a newcomer's walk, session 38)
        said = f"no {status + ' ' if status else ''}jobs{f' of {owner}' if owner else ''}"
        console.print(said + ("" if status or owner else "; `vera job submit` queues one"))
        return
    table = Table("id", "status", "target", "progress", "result", "created")
    for j in jobs:
        table.add_row(str(j.id), j.status, j.target_name, _progress(j),
                      j.result_ref or ("(deleted)" if j.result_deleted else "-"),
                      j.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


def _job_table(job: JobInfo) -> Table:
    """The job as label / value rows; the spec's training settings on one line of JSON."""
    spec = dict(job.spec)
    training = spec.pop("training", {}) or {}
    when = " -> ".join(f"{label} {moment:%Y-%m-%d %H:%M:%S}" for label, moment in (
        ("created", job.created_at), ("started", job.started_at), ("finished", job.finished_at)) if moment)
    rows = [
        ("job", f"{job.id}: {job.status}" + (" (cancel asked)" if job.cancel_requested and job.status == "running"
                                             else "")),
        ("publishes", job.result_ref or (f"{job.target_name} (the version it published was deleted since; `vera job "
                                         f"logs {job.id}` names it)" if job.result_deleted else job.target_name)),
        ("progress", _progress(job)),
        ("error", job.error),
        ("trains", ", ".join(f"{k}={spec.pop(k)}" for k in ("base_model", "task", "r") if k in spec)
         + (", demo data" if spec.pop("demo", False) else "")),
        ("settings", json.dumps(spec, sort_keys=True) if spec else None),
        ("training", json.dumps(training, sort_keys=True) if training else None),
        ("scheduling", f"priority {job.priority}, {job.gpus} GPU(s)"
         + (f", time limit {job.time_limit_s:,.0f} s" if job.time_limit_s else "")
         + f", attempt {job.attempts}" + (f" on {job.claimed_by}" if job.claimed_by else "")),
        ("when", when),
        ("labels", ", ".join([*(f"tag {t}" for t in job.result_tags),
                              *(f"{k}={v}" for k, v in job.result_properties.items())]) or None),
        ("description", job.result_description or None),
    ]
    table = Table(show_header=False, box=None)
    for label, value in rows:
        if value:
            table.add_row(Text(label, style="bold"), str(value))
    return table


def _progress(job: JobInfo) -> str:
    """Step of total and the last step's loss; once done, the published weights' eval loss, named so (the done
    progress holds the final evaluation: its loss read as the last step's, a newcomer's walk, session 40)."""
    p = job.progress
    if "step" in p:
        eta = f", eta {p['eta_s']:.0f}s" if p.get("eta_s") is not None else ""
        loss = "eval loss" if p.get("phase") == "done" else "loss"
        return f"{p['step']}/{p['total_steps']} {loss} {p.get('loss') or 0:.4f}{eta}"
    return str(p.get("phase", "-"))


def job_show(job_id: int, as_json: JsonOutput = False, registry: RegistryUrl = None, token: Token = None) -> None:
    """A job: what it trains, where it stands, its evaluations (--json: the job as the API gives it)."""
    job = call_registry(registry, token, lambda c: c.job(job_id))
    if as_json:
        print_json(job)
        return
    console.print(_job_table(job))
    if (hint := unclaimed_hint(job)) is not None:  # the dashboard's, said here too (a newcomer's walk, session 38)
        err_console.print(styled("note:", "yellow", f" {hint}"), soft_wrap=True)
    if (saved := job.checkpoint) is not None:
        console.print(f"checkpoint in the registry: {saved.summary()}; a new attempt resumes from it")
    evals = call_registry(registry, token, lambda c: list(c.each_job_event(job_id, kind="evaluate")))
    for e in evals:
        console.print(f"eval at step {int(e.data.get('step', 0))}: "
                      + ", ".join(f"{k}={v:.4f}" for k, v in e.data.items() if k != "step"))


def job_cancel(job_id: int, registry: RegistryUrl = None, token: Token = None) -> None:
    """Cancel a job (a running one stops after its current step)."""
    job = call_registry(registry, token, lambda c: c.cancel_job(job_id))
    console.print(f"job {job.id}: {job.status}{' (stopping)' if job.status == 'running' else ''}")


def _events_after(job_id: int, after: int, client: RegistryClient) -> list[JobEventInfo]:
    """One page of the job's events after ``after`` (the registry answers at most JOB_EVENT_PAGE at once)."""
    return client.job_events(job_id, after=after, limit=JOB_EVENT_PAGE)


def job_logs(
    job_id: int, follow: Annotated[bool, typer.Option(help="Keep printing until the job ends; then exit 3 if it "
                                                       "failed or was cancelled (0: succeeded).")] = False,
    steps: Annotated[bool, typer.Option("--steps/--no-steps", help="Print a line per loss record, every "
                                        "log_every steps (--no-steps: evaluations and log lines only).")] = True,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Print a job's progress, evaluations and log lines. With --follow, wait for the job to end: the exit status
    says how (0 succeeded, 3 failed or cancelled), so a script can stop on a failed job."""
    after, hinted = 0, False
    while True:
        while True:  # a page at a time, printed as it comes (a log of millions of steps is never held whole)
            page = call_registry(registry, token, partial(_events_after, job_id, after))
            for e in page:
                after = e.id
                text = e.data.get("message") if e.kind == "log" else ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.data.items())
                if steps or e.kind != "step":
                    console.print(f"{e.at:%H:%M:%S} {e.kind:8} {text}", soft_wrap=True)  # a line each, piped too
            if len(page) < JOB_EVENT_PAGE:
                break
        job = call_registry(registry, token, lambda c: c.job(job_id))
        if follow and not hinted and (hint := unclaimed_hint(job)) is not None:  # once: a follow waited silently
            err_console.print(styled("note:", "yellow", f" {hint}"), soft_wrap=True)
            hinted = True
        if not follow or job.status in FINAL_JOB_STATUSES:
            console.print(f"job {job_id}: {job.status}" + (f" -> {job.result_ref}" if job.result_ref else "")
                          + (f" ({job.error})" if job.error else ""))
            if follow and job.status != "succeeded":
                check_failed()
            return
        time.sleep(2)
