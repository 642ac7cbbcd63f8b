"""Fine-tune jobs: queued in the database, claimed by workers, tracked by heartbeats, published on success.

States: queued -> running -> succeeded | failed | cancelled. Workers claim the highest priority first, then the
oldest. A running job whose heartbeat is older than the lease lost its worker (killed: out of memory, a crash): it is
queued again after a backoff (``retry_backoff_s``, doubling with each attempt), or failed with that reason once it
has used ``max_attempts``, so a job that kills every worker that runs it cannot wedge the queue. A job with a time
limit stops training when the limit is reached and fails saying so. Claiming uses ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so workers on many machines never take the same job; SQLite serialises writers and is correct with one
worker.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, case, false, func, literal, or_, select, true, update
from sqlalchemy.orm import Session, joinedload

from registry.domain.errors import Conflict, InvalidInput, NotFound, Problems, QuotaExceeded
from registry.domain.schemas import (
    ACTIVE_JOB_STATUSES,
    FINAL_JOB_STATUSES,
    JOB_EVENT_PAGE,
    MAX_DESCRIPTION,
    MAX_JOB_CHECKPOINT_BYTES,
    MAX_JOB_EVENTS,
    MAX_JOB_GPUS,
    MAX_JOB_PRIORITY,
    MAX_JOB_TIME_LIMIT_S,
    MAX_PENDING_JOBS,
    MAX_TAGS,
    JobCheckpointInfo,
    JobEventInfo,
    JobEventKind,
    JobInfo,
    JobStatus,
    Ref,
    check_json,
    check_name,
    check_new_name,
    check_properties,
    check_tags,
    check_text,
)
from registry.domain.words import shown_number, size
from registry.logs import REQUEST_ID
from registry.services.access import require_readable
from registry.services.job_checkpoints import JobCheckpoints
from registry.services.job_endings import cancel, record_end
from registry.services.lookup import version_ref
from registry.services.moves import lock_adapter, refuse_publish_to_old_name
from registry.services.publishing import discard_unreferenced, put_new
from registry.services.quotas import check_room, held_by_jobs
from registry.services.registry import Registry
from registry.services.tokens import Principal, check_new_owner, lock_owner
from registry.store import models as m
from vera_core.config import DEMO_MODEL, VeraConfig, unreported_metric
from vera_core.patterns import require_linear

if TYPE_CHECKING:  # torch: imported by the first job submitted (its spec is checked as the worker runs it)
    from vera_core.data import Splits
    from vera_core.recipes import TrainSpec
    from vera_core.trainer import TrainingArguments

#: A job event as a worker reports it: (kind, data), or (kind, data, when it happened).
EventRecord = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], datetime]


class Jobs:
    """The job queue over a Registry's database and blob store."""

    def __init__(self, registry: Registry, *, lease: timedelta = timedelta(seconds=60),
                 base_models: Sequence[str] = (DEMO_MODEL,), max_attempts: int = 3,
                 retry_backoff: timedelta = timedelta(seconds=30),
                 checkpoint_max_bytes: int = MAX_JOB_CHECKPOINT_BYTES,
                 time_limits: tuple[float | None, float] = (None, MAX_JOB_TIME_LIMIT_S),
                 max_pending: int = MAX_PENDING_JOBS) -> None:
        """``base_models``: what a job may train (VERA_JOB_BASE_MODELS): the demo alias or Hub ids that workers find
        in their local Hub cache. A job never names a path on a worker's disk. ``max_attempts`` and
        ``retry_backoff``: how often, and after how long, a job whose worker died is tried again
        (VERA_JOB_MAX_ATTEMPTS, VERA_JOB_RETRY_BACKOFF_S). ``checkpoint_max_bytes``: the largest checkpoint a worker
        stores in the registry for another machine to resume from (VERA_JOB_CHECKPOINT_MAX_BYTES). ``time_limits``:
        the seconds of training a job gets when it asks for none (None: no limit) and the most it may ask for
        (VERA_JOB_DEFAULT_TIME_LIMIT_S, VERA_JOB_MAX_TIME_LIMIT_S). ``max_pending``: the most jobs one owner may have
        queued or running at once (VERA_JOB_MAX_PENDING_PER_OWNER)."""
        self.max_pending = max_pending
        self.default_time_limit_s, self.max_time_limit_s = time_limits
        self.registry, self.db, self.lease, self.base_models = registry, registry.db, lease, tuple(base_models)
        self.max_attempts, self.retry_backoff = max_attempts, retry_backoff
        self.checkpoints = JobCheckpoints(registry.db, registry.blobs, max_bytes=checkpoint_max_bytes)

    def _time_limit(self, asked: float | None) -> float | None:
        """What a job asking for ``asked`` seconds gets: the operator's default when it asks for none; over the
        operator's maximum, refused."""
        if asked is None:
            return self.default_time_limit_s
        if asked > self.max_time_limit_s:
            raise InvalidInput(f"time_limit_s {asked:g} is above this registry's maximum of "
                               f"{self.max_time_limit_s:g} s (VERA_JOB_MAX_TIME_LIMIT_S); ask for at most that, or "
                               "fewer steps.")
        return asked

    def submitter_problem(self, job: JobInfo) -> str | None:
        """Why ``job`` may not publish any more, or None: the member who submitted it through their role in the
        owning organisation no longer writes there (removed, or made a reader)."""
        if job.submitted_by is None:
            return None
        with self.db.session() as s:
            role = s.scalar(select(m.Membership.role).join(m.Organization).where(
                m.Organization.name == job.owner, m.Membership.member == job.submitted_by))
        if role in ("write", "admin"):
            return None
        now = f"now has only the {role} role there" if role else "is no longer a member"
        return (f"{job.submitted_by}, who submitted it as a member of {job.owner}, {now}: a job publishes only with "
                f"the rights it was submitted with. Nothing was published; a writer of {job.owner} may submit it "
                "again.")

    # ---- submission ------------------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any], *, owner: str, target: str, dataset: bytes | None = None,
               dataset_name: str = "data.csv", priority: int = 0, time_limit_s: float | None = None,
               gpus: int = 0, actor: str | None = None, member: str | None = None,
               provenance: dict[str, Any] | None = None, viewer: Principal | None = None,
               tags: Sequence[str] = (), description: str = "", properties: dict[str, str] | None = None) -> JobInfo:
        """Validate a spec now (bad specs never reach a worker) and queue it. Higher ``priority`` runs first
        (-100 to 100); ``time_limit_s`` stops its training after that long (a failed job, saying so); ``gpus``: the
        GPUs its training needs (0: it runs on a CPU worker, or on any other). ``actor``: who submitted it, for the
        audit log and the publisher its result names (a member of the organisation ``owner``, an admin, the local
        user; ``owner`` when not given). ``member``: the submitter when only their role in the organisation
        ``owner`` allowed it; the job then publishes only while they still write there (``submitter_problem``).
        ``provenance``: the submitting token's, when trusted publishing minted it (its result records it as
        ``published_via``). ``init_from``, in the spec: a version (owner/name:N or @alias) training starts from, that
        ``viewer`` may read (None: the operator, who reads all); pinned to its number now. ``tags``, ``description``
        and ``properties``: what the version it publishes is labelled with (besides the ``fine-tune`` tag; without a
        description it says "fine-tuned by job N"), checked now as a publish checks them."""
        problems = Problems("The job")  # every independent problem at once, each as it alone was said
        with problems.check():
            _check_scheduling(priority, time_limit_s, gpus)
            time_limit_s = self._time_limit(time_limit_s)
        ref = problems.value(lambda: _publish_target(target, owner))
        labels = result_labels(tags, description, properties, problems)
        if not problems.passed(lambda: check_json(spec, "spec", max_bytes=1 << 16)) \
                or not problems.passed(lambda: _check_integers(spec, "spec")):
            problems.raise_found()  # the rest reads the spec
        spec = dict(spec)
        base_allowed = self._check_fields(spec, problems)
        readable = dataset is None or _dataset_readable(dataset, dataset_name, problems)
        if dataset is not None:
            spec["data"] = f"uploaded{Path(dataset_name).suffix.lower()}"
        start, started = None, True
        if spec.get("init_from") is not None:
            start = problems.value(lambda: self._start(spec.get("init_from"), viewer))
            started = start is not None
        if dataset is not None and ref is not None:  # before the dataset is parsed: its bytes are stored until the job
            with self.db.session() as s:                # ends
                readable = problems.passed(lambda: self._check_dataset_room(s, ref, len(dataset), 0)) and readable
        found = problems.value(lambda: self._checked_spec(spec, start, dataset, dataset_name, gpus, problems,
                                                          readable=readable, shapes=base_allowed and started))
        if ref is not None:  # a name that moved, an owner at its quota: refused before the dataset is stored
            with self.db.session() as s:
                if problems.passed(lambda: refuse_publish_to_old_name(s, ref.owner, ref.name)):
                    with problems.check():  # (an old name's owner renamed: said once, above)
                        lock_owner(s, ref.owner)  # a deleted organisation's name takes no job (its publish is refused)
                with problems.check():
                    self._check_pending(s, ref.owner)
                with problems.check():
                    _check_new_target(s, ref)
                if found is not None:  # (else its vectors' size is unknown; the dataset's room was checked above)
                    with problems.check():
                        self._check_dataset_room(s, ref, len(dataset or b""), found[1])
        problems.raise_found()
        assert ref is not None and found is not None  # (each is None only with a problem, raised above)
        checked = found[0]
        written = put_new(self.registry.blobs, dataset) if dataset is not None else ""
        digest = hashlib.sha256(dataset).hexdigest() if dataset is not None else None
        try:
            with self.db.session() as s:
                # checked again where the job is written, with the locks a publish and an organisation's rename or
                # delete take (the adapter's row, then its owner's): one that committed while the dataset was stored
                # is seen now, and one that comes later sees this job (an outsider's race left a job queued under a
                # renamed organisation's old name, and under a deleted one's)
                lock_adapter(s, ref.owner, ref.name)  # SQLite: the database's write lock, before any read
                refuse_publish_to_old_name(s, ref.owner, ref.name)
                lock_owner(s, ref.owner)
                self._check_pending(s, ref.owner)  # again under the owner's lock: two submissions at once
                if digest is not None:
                    m.record_blob(s, digest, len(dataset or b""), "dataset")
                job = m.Job(spec=asdict(checked), owner=owner, target_name=f"{ref.owner}/{ref.name}",
                            dataset_sha256=digest, status="queued", progress={}, priority=priority,
                            time_limit_s=time_limit_s, gpus=gpus, submitted_by=member,
                            submitted_via=dict(provenance) if provenance is not None else None,
                            requested_by=(actor or owner)[:64], result_labels=labels or None)
                s.add(job)
                s.flush()
                request_id = REQUEST_ID.get()
                s.add(m.AuditEvent(actor=(actor or owner)[:64], action="job-submit", target=job.target_name,
                                   detail={"job": job.id, **({"request_id": request_id} if request_id else {})}))
                s.add(m.JobEvent(job_id=job.id, kind="log", data={"message": "queued", "request_id": request_id}))
                return self._info(s, job)
        except BaseException:
            discard_unreferenced(self.db, self.registry.blobs, [written])  # the dataset this request stored alone
            raise

    def _check_pending(self, s: Session, owner: str) -> None:
        """QuotaExceeded when ``owner`` has max_pending jobs queued or running: one token filled the queue that every
        owner's jobs wait in (an outsider's finding, session 33)."""
        pending = s.scalar(select(func.count()).select_from(m.Job).where(
            m.Job.owner == owner, m.Job.status.in_(ACTIVE_JOB_STATUSES))) or 0
        if pending >= self.max_pending:
            raise QuotaExceeded(f"{owner} has {pending:,} jobs queued or running, the most one owner may have at once "
                                f"(VERA_JOB_MAX_PENDING_PER_OWNER={self.max_pending:,}); wait for some to end, or "
                                f"cancel some (`vera job ls --owner {owner}`, `vera job cancel ID`).")

    def _check_dataset_room(self, s: Session, ref: Ref, dataset_bytes: int, vector_bytes: int) -> None:
        """QuotaExceeded unless the owner has room for the adapter the job publishes (``vector_bytes``, at least), its
        dataset, and the datasets its queued and running jobs hold (each is stored until its job ends)."""
        held = held_by_jobs(s, ref.owner) if dataset_bytes else 0
        what = f"the adapter job {ref} would publish" if vector_bytes else f"job {ref}'s dataset"
        if vector_bytes and dataset_bytes:
            what += f" and its {size(dataset_bytes)} dataset"
        if held:
            what += f", with the {size(held)} of datasets its queued and running jobs hold"
        check_room(s, self.registry.quotas, ref.owner, vector_bytes + dataset_bytes + held, what,
                   at_least=bool(vector_bytes))

    def _checked_spec(self, spec: dict[str, Any], start: tuple[str, VeraConfig, list[str] | None] | None,
                      dataset: bytes | None, dataset_name: str, gpus: int, problems: Problems, *,
                      readable: bool = True, shapes: bool = True) -> tuple[TrainSpec, int] | None:
        """The spec as the worker will run it (a warm start's VeRA fields and base taken from ``start``), checked:
        its training and VeRA settings, sizes, dataset (unless not ``readable``: its problem is known), base model and
        projection (with ``shapes``: its base is allowed and its start was found); and the bytes of the adapter's
        vectors (``_check_projection``). Raises what leaves no spec to check; keeps in ``problems`` what does not
        depend on the others, and then returns None."""
        from vera_core.recipes import TrainSpec, resolve_base, started_spec
        from vera_core.trainer import TrainingArguments

        with _job_input():
            checked = TrainSpec(**spec)
            if start is not None:
                checked = started_spec(replace(checked, init_from=start[0]), start[1], f"init_from {start[0]}")
            # checked as the worker will run it: save_every is welcome, with checkpoints in the worker's folder
            placed = {"output_dir": "worker" if checked.training.get("save_every") else None}
            args = TrainingArguments(**{**checked.training, **placed})
        before = len(problems)
        if start is not None and spec.get("base_model", DEMO_MODEL) == DEMO_MODEL:  # the version's base, left out
            with problems.check():                                                   # (a given one: _check_fields)
                self._check_base(checked.base_model)
        checks: tuple[Callable[[], None], ...] = (lambda: _check_batch_split(args, gpus),
                                                   lambda: _check_evaluations(args),
                                                   lambda: _check_sizes(checked, args),
                                                   lambda: _check_metric(args, checked.task))
        for check in checks:
            with problems.check(), _job_input():
                check()
        with problems.check(), _job_input():
            vera = VeraConfig(r=checked.r, projection_prng_key=checked.projection_prng_key,
                              d_initial=checked.d_initial, projection_generator=checked.projection_generator,
                              vera_dropout=checked.vera_dropout, target_modules=checked.target_modules)
            require_linear(vera.target_modules)  # a worker matches it against every module name
        labels = 2  # the demo's
        if not checked.demo and readable:
            with problems.check(), _job_input(), self.registry.budget.working():  # (Busy is raised, not kept)
                splits = _check_dataset(checked, dataset, dataset_name)
                labels = len(splits.labels)
                if start is not None and checked.task == "classification":
                    _check_start_labels(start, splits.labels)
                _check_epochs_evaluations(splits, args, gpus)
        elif checked.demo and _evaluates_by_epochs(args):  # (the demo's splits read only then)
            with problems.check(), _job_input():
                from vera_core.recipes import load_splits

                _check_epochs_evaluations(load_splits(checked), args, gpus)
        if len(problems) > before or not readable or not shapes:
            return None
        with _job_input():
            vector_bytes = self._check_projection(vera, resolve_base(checked.base_model, allow_paths=False), checked,
                                                  labels if checked.task == "classification" else 0,
                                                  batch=args.batch_size)
        return checked, vector_bytes

    def _start(self, given: Any, viewer: Principal | None) -> tuple[str, VeraConfig, list[str] | None]:
        """The version (owner/name:N) a job's ``init_from`` names, its VeRA config and the labels its metrics
        recorded: one ``viewer`` may read (as a GET of it, the read scope included; None: the operator), or
        NotFound as if it did not exist."""
        wanted = "a version of this registry (owner/name:N or owner/name@ALIAS) to start training from"
        if not isinstance(given, str):
            raise InvalidInput(f"init_from must name {wanted}; got {str(given)[:100]!r}.")
        try:
            ref = Ref.parse(given)
        except InvalidInput as exc:
            raise InvalidInput(f"init_from must name {wanted}: {str(exc)[:300]}") from None
        try:
            if viewer is not None:
                self.registry.access.check_readable(viewer, ref)
        except NotFound:
            raise NotFound(f"init_from {ref}: no such adapter that you may read. Name a version that `vera ls` lists "
                           "(owner/name:N or owner/name@ALIAS).") from None
        try:
            info, config = self.registry.vera_config(ref)
        except NotFound as exc:  # an adapter it may read: the registry's own words (its versions, its aliases)
            raise NotFound(f"init_from {ref}: {exc}") from None
        labels = info.metrics.get("labels")  # (its config names its base model: a publish writes it there)
        return info.ref, config, [str(label) for label in labels] if isinstance(labels, list) else None

    def _check_projection(self, vera: VeraConfig, base: str, spec: TrainSpec, labels: int, *, batch: int) -> int:
        """The projection the job's training generates, from the base's config on the meta device (no weights): it
        must fit the registry's budget (VERA_MAX_PROJECTION_ELEMENTS), as a publish of the result must, and its
        targets must match layers of the base; before a worker allocates any of it. ``spec.max_length`` must fit
        the base's learned positions, and a step of ``batch`` examples MAX_JOB_STEP_ELEMENTS. Returns the bytes of
        the adapter's vectors (d and b of each target, float32) and of the last layer of its classification head
        (``labels`` outputs, none for a causal LM): what its publish stores at least, for the owner's storage
        quota."""
        from transformers import AutoConfig

        from registry.services.base_models import meta_model
        from vera_core.layer import layer_shape
        from vera_core.projection import ProjectionSpec
        from vera_core.targets import find_targets, resolve_targets

        config = AutoConfig.from_pretrained(base, trust_remote_code=False)
        # learned positions (BERT's family, GPT-2) end where their table does: an index error mid-training; rotary
        # ones (Llama's) have no such end, whatever max_position_embeddings says
        learned = getattr(config, "position_embedding_type", None) == "absolute" or hasattr(config, "n_positions")
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if learned and isinstance(positions, int) and spec.max_length > positions:
            raise InvalidInput(f"max_length={spec.max_length} is more tokens than {spec.base_model} reads "
                               f"({positions:,} positions); ask for at most {positions:,}.")
        model = meta_model(config)
        shapes = [layer_shape(layer) for _, layer in find_targets(model, resolve_targets(model, vera))]
        self.registry.budget.check(ProjectionSpec(
            generator=vera.projection_generator, seed=vera.projection_prng_key, r=vera.r,
            max_in=max(shape[1] for shape in shapes if shape), max_out=max(shape[0] for shape in shapes if shape)))
        _check_step(batch, sum(vera.r + shape[0] for shape in shapes if shape), spec)
        hidden = getattr(config, "hidden_size", 0)
        head = 4 * labels * (hidden + 1) if isinstance(hidden, int) else 0
        return sum(4 * (vera.r + shape[0]) for shape in shapes if shape) + head

    def _check_fields(self, spec: dict[str, Any], problems: Problems) -> bool:
        """A spec is data, not places: the worker chooses where files go, and trains only allowed base models.
        Returns whether its base model is allowed (or left to its ``init_from``, checked then)."""
        training = spec.get("training") or {}
        if isinstance(training, dict):
            with problems.check():
                if training.get("output_dir") is not None:
                    raise InvalidInput("training.output_dir cannot be set in a job: the worker keeps checkpoints in "
                                       "its own work area. Leave it out.")
            with problems.check():
                if training.get("device") is not None:
                    raise InvalidInput("training.device cannot be set in a job: the worker trains on the device it "
                                       "owns (`vera worker --device`). Leave it out; ask for a GPU with gpus=1 (`vera "
                                       "job submit --gpus 1`).")
        base = spec.get("base_model", DEMO_MODEL)
        if spec.get("init_from") is not None and base == DEMO_MODEL:  # the default: the start's base, checked then
            return True
        if not isinstance(base, str) or not base:  # TrainSpec says what it must be
            return False
        return problems.passed(lambda: self._check_base(base))

    def _check_base(self, base: str) -> None:
        if base not in self.base_models:
            raise InvalidInput(f"Jobs on this registry train only {', '.join(map(repr, self.base_models))} "
                               f"(VERA_JOB_BASE_MODELS); got base_model={str(base)[:200]!r}.")

    def get(self, job_id: int, *, viewer: Principal | None = None) -> JobInfo:
        """A job (not found for a ``viewer`` that may not read the adapter it publishes: job_visible)."""
        with self.db.session() as s:
            return _infos(s, [self._visible_job(s, job_id, viewer)], viewer)[0]

    def list_jobs(self, *, owner: str | None = None, status: JobStatus | None = None, limit: int = 100,
                  before: int | None = None, viewer: Principal | None = None) -> list[JobInfo]:
        """The newest ``limit`` jobs ``viewer`` may see (older than the job ``before``, for a next page)."""
        query = select(m.Job).where(self.job_visible(viewer)).order_by(m.Job.id.desc()).limit(limit)
        if before is not None:
            query = query.where(m.Job.id < before)
        if owner:
            query = query.where(m.Job.owner == owner)
        if status:
            query = query.where(m.Job.status == status)
        with self.db.session() as s:
            return _infos(s, list(s.scalars(query)), viewer)

    def events(self, job_id: int, *, after: int = 0, kind: JobEventKind | None = None,
               limit: int = JOB_EVENT_PAGE, viewer: Principal | None = None) -> list[JobEventInfo]:
        """Progress, evaluations and log lines after event id ``after`` (for following a job), the first
        ``limit``."""
        query = (select(m.JobEvent).where(m.JobEvent.job_id == job_id, m.JobEvent.id > after)
                 .order_by(m.JobEvent.id).limit(limit))
        if kind:
            query = query.where(m.JobEvent.kind == kind)
        with self.db.session() as s:
            self._visible_job(s, job_id, viewer)
            self._job(s, job_id)
            return [JobEventInfo(id=e.id, at=e.at, kind=e.kind, data=e.data) for e in s.scalars(query)]

    def cancel(self, job_id: int, *, actor: str, reason: str | None = None) -> JobInfo:
        """A queued job is cancelled at once; a running one stops after the training step it is on when its worker
        reads the request (Jobs.should_stop, about twice a second). ``reason``: why, in the job's log."""
        with self.db.session() as s:
            job = self._job(s, job_id)
            if job.status in FINAL_JOB_STATUSES:
                # ("is already succeeded": a docs audit, session 53)
                ended = "was already cancelled" if job.status == "cancelled" else f"has already {job.status}"
                raise Conflict(f"Job {job_id} {ended}: it cannot be cancelled.")
            dropped = cancel(s, job, actor=actor, reason=reason)
            s.flush()
            info = self._info(s, job)
        self.checkpoints.delete_bytes(dropped)
        return info

    # ---- workers ---------------------------------------------------------------------------------------------
    def claim(self, worker: str, *, gpus: int = 0) -> JobInfo | None:
        """Take a queued job (one whose worker died: once its backoff passed) among those that need no more than the
        worker's ``gpus`` (a job asking for more stays queued for a worker that has them): of the user who has the
        fewest jobs running, the one of highest priority, the oldest among equals. Whoever submits a hundred jobs
        at priority 100 takes the workers in turn with the others who queued jobs, not before all of them: priority
        orders one user's own jobs, and those of users with as many running (an outsider's walk, session 44)."""
        now = datetime.now(UTC)
        stale = (m.Job.status == "running") & (m.Job.heartbeat_at < now - self.lease)
        with self.db.session() as s:
            # a job cancelled while its worker was dying will not be resumed: it is cancelled
            cancelled = s.execute(update(m.Job).where(stale, m.Job.cancel_requested.is_(True))
                                  .values(status="cancelled", finished_at=now).returning(m.Job.id)).scalars().all()
            for job_id in cancelled:
                record_end(s, self._job(s, job_id), actor="registry")
            # the UPDATE above also takes SQLite's write lock first, so that two claims there serialise
            locking = self.db.engine.dialect.name == "postgresql"
            self._requeue_lost(s, stale, now, locking)
            query = next_claim(now, gpus, running_by_user(s))
            job = s.scalar(query.with_for_update(skip_locked=True) if locking else query)
            if job is None:
                return None
            if job.attempts:
                s.add(m.JobEvent(job_id=job.id, kind="log", data={
                    "message": f"re-claimed by {worker} for attempt {job.attempts + 1} of {self.max_attempts}"}))
            job.status, job.claimed_by, job.heartbeat_at = "running", worker, now
            job.started_at, job.attempts = job.started_at or now, job.attempts + 1
            s.flush()
            return self._info(s, job)

    def _requeue_lost(self, s: Any, stale: Any, now: datetime, locking: bool) -> None:
        """Running jobs whose worker stopped sending heartbeats: queued again after a backoff, or failed with the
        reason once they used every attempt."""
        query = select(m.Job).where(stale).limit(100)
        for job in s.scalars(query.with_for_update(skip_locked=True) if locking else query):
            self._lost(s, job, f"{job.claimed_by} stopped sending heartbeats during attempt {job.attempts}", now)

    def _lost(self, s: Any, job: m.Job, lost: str, now: datetime) -> None:
        """An attempt that was lost (``lost`` says how, ending with "during attempt N"): queued again after the
        backoff, or failed once the job has used every attempt."""
        if job.attempts >= self.max_attempts:
            job.status, job.finished_at = "failed", now
            job.error = (f"{lost} of {self.max_attempts}: every attempt of this job was lost, its worker or a training "
                         "process died (out of memory? killed?); not tried again (VERA_JOB_MAX_ATTEMPTS).")
            s.add(m.JobEvent(job_id=job.id, kind="log", data={"message": job.error}))
            record_end(s, job, actor="registry")
            return
        delay = self.retry_backoff * 2 ** max(job.attempts - 1, 0)
        job.status, job.claimed_by, job.not_before = "queued", None, now + delay
        s.add(m.JobEvent(job_id=job.id, kind="log", data={
            "message": f"{lost}; queued again, claimable after {delay.total_seconds():g} s"}))

    def retry(self, job_id: int, worker: str, *, lost: str) -> None:
        """A worker reports that it lost this attempt although it lives on (one of the job's training processes
        died: killed, out of memory): the job is queued again after the backoff, or failed once it has used every
        attempt, as when a worker stops sending heartbeats. ``lost``: what happened, for the job's log."""
        with self.db.session() as s:
            job = self._job(s, job_id)
            if job.claimed_by != worker or job.status != "running":
                return
            self._lost(s, job, f"{worker}: {lost} during attempt {job.attempts}", datetime.now(UTC))

    def heartbeat(self, job_id: int, worker: str, *, progress: dict[str, Any] | None = None,
                  events: Sequence[EventRecord] = ()) -> bool:
        """Record liveness, progress and events ((kind, data), or (kind, data, when it happened): a heartbeat
        brings the steps of several seconds, each at its own time); returns True if the job should stop (cancelled
        or lost)."""
        with self.db.session() as s:
            job = self._job(s, job_id)
            if job.claimed_by != worker or job.status != "running":
                return True  # another worker took it over
            job.heartbeat_at = datetime.now(UTC)
            if progress is not None:
                job.progress = progress
            if events:
                _record_events(s, job_id, events)
            return job.cancel_requested

    def should_stop(self, job_id: int, worker: str) -> bool:
        """Whether ``worker`` should stop the job (cancelled, or taken over by another worker), as heartbeat says,
        but only read: what a worker asks between heartbeats, so that a cancellation stops training promptly."""
        with self.db.session() as s:
            found = s.execute(select(m.Job.cancel_requested, m.Job.claimed_by, m.Job.status)
                              .where(m.Job.id == job_id)).one_or_none()
        if found is None:
            raise _no_job(job_id)
        cancel_requested, claimed_by, status = found
        return bool(cancel_requested) or claimed_by != worker or status != "running"

    def finish(self, job_id: int, worker: str, *, status: JobStatus, error: str | None = None,
               result_version: tuple[str, int] | None = None) -> None:
        dropped: set[str] = set()
        with self.db.session() as s:
            job = self._job(s, job_id)
            if job.claimed_by != worker:
                return
            job.status, job.error, job.finished_at = status, error, datetime.now(UTC)
            if result_version is not None:
                ref = Ref.parse(f"{result_version[0]}:{result_version[1]}")
                version = s.scalar(select(m.AdapterVersion).join(m.Adapter).where(
                    m.Adapter.owner == ref.owner, m.Adapter.name == ref.name, m.AdapterVersion.version == ref.version))
                job.result_version_id = version.id if version else None
            dropped = record_end(s, job, actor=worker)
        self.checkpoints.delete_bytes(dropped)

    def request_id(self, job_id: int) -> str | None:
        """The id of the request that queued the job (registry.logs), for the worker's log lines."""
        query = (select(m.JobEvent.data).where(m.JobEvent.job_id == job_id, m.JobEvent.kind == "log")
                 .order_by(m.JobEvent.id).limit(1))
        with self.db.session() as s:
            data = s.scalar(query) or {}
        value = data.get("request_id")
        return value if isinstance(value, str) else None

    def release(self, job_id: int, worker: str) -> None:
        """A worker that is shutting down gives its job back: queued again at once, this attempt not counted."""
        with self.db.session() as s:
            job = self._job(s, job_id)
            if job.claimed_by != worker or job.status != "running":
                return
            job.status, job.claimed_by, job.attempts = "queued", None, max(job.attempts - 1, 0)
            s.add(m.JobEvent(job_id=job_id, kind="log", data={
                "message": f"{worker} is shutting down: the job is queued again for another worker"}))

    def dataset(self, job: JobInfo) -> bytes | None:
        with self.db.session() as s:
            digest = self._job(s, job.id).dataset_sha256
        return None if digest is None else self.registry.blobs.get(digest)

    # ---- helpers ---------------------------------------------------------------------------------------------
    def job_visible(self, viewer: Principal | None) -> ColumnElement[bool]:
        """Jobs ``viewer`` may see: those of the owners whose private adapters it reads (itself, its organisations;
        every job for admins). A job's spec, dataset and log are its owner's, whatever the adapter's visibility."""
        owners = viewer.readable_owners() if viewer is not None else None
        if owners is None:
            return true()
        return m.Job.owner.in_(sorted(owners)) if owners else false()

    def _visible_job(self, s: Any, job_id: int, viewer: Principal | None) -> m.Job:
        job = self._job(s, job_id)
        if viewer is not None and s.scalar(select(m.Job.id).where(m.Job.id == job_id,
                                                                  self.job_visible(viewer))) is None:
            raise _no_job(job_id)
        return job

    @staticmethod
    def _job(s: Any, job_id: int) -> m.Job:
        job: m.Job | None = s.get(m.Job, job_id)
        if job is None:
            raise _no_job(job_id)
        return job

    @staticmethod
    def _info(s: Any, job: m.Job) -> JobInfo:
        return _infos(s, [job])[0]


def result_labels(tags: Sequence[str], description: str, properties: dict[str, str] | None,
                  problems: Problems) -> dict[str, Any]:
    """What a job's result is to be labelled with, each checked as a publish checks it (the ``fine-tune`` tag its
    worker adds counted among a version's MAX_TAGS; a problem each, kept in ``problems``), as jobs.result_labels
    stores it: only what is given ({} for nothing; a blank description is none: the version says "fine-tuned by job
    N")."""
    given = {"tags": problems.value(lambda: [t for t in check_tags([*tags, FINE_TUNE_TAG], most=MAX_TAGS)
                                             if t != FINE_TUNE_TAG]),
             "description": description.strip() and description if problems.passed(lambda: check_text(
                 description, "description", max_length=MAX_DESCRIPTION, multiline=True)) else None,
             "properties": problems.value(lambda: check_properties(properties or {}))}
    return {key: value for key, value in given.items() if value}


def _labels_of(stored: dict[str, Any] | None) -> dict[str, Any]:
    """JobInfo's result_* fields from jobs.result_labels (None before 0030, or nothing asked)."""
    stored = stored or {}
    return {"result_tags": list(stored.get("tags", [])), "result_description": str(stored.get("description", "")),
            "result_properties": dict(stored.get("properties", {}))}


#: The tag every version a job publishes carries.
FINE_TUNE_TAG = "fine-tune"


#: What a job's spec says of the version it starts from to a reader of the job who may not read that version.
HIDDEN_START = "(a version you may not read)"


def _shown_spec(s: Any, spec: dict[str, Any], viewer: Principal | None) -> dict[str, Any]:
    """The job's spec as ``viewer`` may see it: the version it starts from (``init_from``) named only to those who
    may read it (a job's readers are its target's; a private start elsewhere stays unnamed, as lineage does)."""
    start = spec.get("init_from")
    if start is None or viewer is None:
        return spec
    try:
        require_readable(s, viewer, start, missing_too=True)
    except (NotFound, InvalidInput):
        return {**spec, "init_from": HIDDEN_START}
    return spec


def _infos(s: Any, jobs: Sequence[m.Job], viewer: Principal | None = None) -> list[JobInfo]:
    """The domain objects of job rows, in order, with two queries whatever their number: the versions they published
    (with their adapters, for the ref) and the stored checkpoints of those still queued or running (only those have
    one: it goes when the job ends); and one for each that starts from a version, shown to ``viewer`` only if it
    may read that version (None: the operator, who reads all)."""
    versions = {job.result_version_id for job in jobs if job.result_version_id is not None}
    refs = {v.id: version_ref(v) for v in s.scalars(
        select(m.AdapterVersion).where(m.AdapterVersion.id.in_(sorted(versions)))
        .options(joinedload(m.AdapterVersion.adapter)))} if versions else {}
    active = sorted(job.id for job in jobs if job.status in ACTIVE_JOB_STATUSES)
    checkpoints = {row.job_id: JobCheckpointInfo(step=row.step, world_size=row.world_size, attempt=row.attempt,
                                                 worker=row.worker, size=row.size, saved_at=row.created_at)
                   for row in s.scalars(select(m.JobCheckpoint).where(m.JobCheckpoint.job_id.in_(active)))
                   } if active else {}
    return [JobInfo(id=job.id, status=job.status, owner=job.owner, target_name=job.target_name,
                    spec=_shown_spec(s, job.spec, viewer),
                    created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                    claimed_by=job.claimed_by, heartbeat_at=job.heartbeat_at, attempts=job.attempts,
                    cancel_requested=job.cancel_requested, progress=job.progress, error=job.error,
                    result_ref=refs.get(job.result_version_id) if job.result_version_id is not None else None,
                    priority=job.priority, time_limit_s=job.time_limit_s, not_before=job.not_before, gpus=job.gpus,
                    checkpoint=checkpoints.get(job.id), submitted_by=job.submitted_by,
                    submitted_via=job.submitted_via, requested_by=job.requested_by,
                    result_deleted=job.result_version_id is not None and job.result_version_id not in refs,
                    **_labels_of(job.result_labels))
            for job in jobs]


def _dataset_readable(dataset: bytes, dataset_name: str, problems: Problems) -> bool:
    """Whether the uploaded dataset is to be parsed: a .csv or .jsonl file of at most MAX_JOB_DATASET_LINES lines
    (each problem kept)."""
    named = problems.passed(lambda: _check_dataset_suffix(dataset_name))
    sized = problems.passed(lambda: _check_dataset_lines(dataset, dataset_name))
    return named and sized


def _check_dataset_suffix(dataset_name: str) -> None:
    if Path(dataset_name).suffix.lower() not in (".csv", ".jsonl"):
        raise InvalidInput(f"Dataset {dataset_name!r} must be .csv or .jsonl.")


#: Where the dataset readers end a row: CSV at \n, \r and \r\n; JSONL (str.splitlines) at those and \v, \f, \x1c-\x1e,
#: NEL, LS and PS (a file of lone \r passed a count of \n alone: a reviewer's, session 38).
LINE_BREAKS = (b"\n", b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", "\x85".encode(), "\u2028".encode(),
               "\u2029".encode())


def _check_dataset_lines(dataset: bytes, dataset_name: str) -> None:
    """At most MAX_JOB_DATASET_LINES rows, by the line breaks either reader ends one at (an upper bound)."""
    if (lines := sum(map(dataset.count, LINE_BREAKS)) - dataset.count(b"\r\n")) > MAX_JOB_DATASET_LINES:
        raise InvalidInput(f"{Path(dataset_name).name[:200]} has {lines:,} lines; a job's dataset has at most "
                           f"{MAX_JOB_DATASET_LINES:,} (the registry reads it whole to check it). Train on a sample "
                           "of it, or train it yourself with `vera train`.")


def _check_new_target(s: Session, ref: Ref) -> None:
    """A job whose publish makes its adapter: a name the publish would refuse (check_new_name) is refused now."""
    if s.scalar(select(m.Adapter.id).where(m.Adapter.owner == ref.owner, m.Adapter.name == ref.name)) is None:
        check_new_owner(s, ref.owner)
        check_new_name(ref.name, "Adapter name")


def _publish_target(target: str, owner: str) -> Ref:
    """The adapter a job of ``owner``'s publishes: one of theirs."""
    ref = Ref.parse_adapter(target)
    check_name(owner, "Owner")
    if ref.owner != owner:
        raise InvalidInput(f"The job publishes {target}, but it is submitted by {owner!r}; publish under {owner}/.")
    return ref


@contextmanager
def _job_input() -> Iterator[None]:
    """vera_core's refusals of a spec (TrainSpec, TrainingArguments, VeraConfig, a dataset, a base model: TypeError
    and ValueError) as the registry's InvalidInput, saying which it was."""
    from vera_core.data import DatasetError

    try:
        yield
    except InvalidInput:
        raise
    except (TypeError, ValueError) as exc:
        kind = "dataset" if isinstance(exc, DatasetError) else "spec"
        said = str(exc)
        for cli, job in _JOB_WORDS:
            said = said.replace(cli, job)
        if unknown := _UNKNOWN_FIELD.fullmatch(said):  # Python's words for a field that is not one (an outsider's)
            said = _unknown_field(*unknown.groups())
        raise InvalidInput(f"Invalid job {kind}: {said}") from exc


_UNKNOWN_FIELD = re.compile(r"(TrainSpec|TrainingArguments)\.__init__\(\) got an unexpected keyword argument "
                            r"'(.{1,200})'")


def _unknown_field(within: str, name: str) -> str:
    """A spec's field, or a training setting, that is not one: named with those there are."""
    from vera_core.recipes import TrainSpec
    from vera_core.trainer import TrainingArguments

    known = sorted(f.name for f in fields(TrainSpec if within == "TrainSpec" else TrainingArguments)
                   if f.name not in ("data", "output_dir", "device"))  # (the worker's to set)
    what = f"{name!r} is not a field of a job's spec" if within == "TrainSpec" else \
        f"training.{name} is not a training setting"
    close = difflib.get_close_matches(name, known, n=1)
    return f"{what}{f' (did you mean {close[0]}?)' if close else ''}; it takes {', '.join(known)}."


#: vera_core's words for `vera train`'s options, in a job's (an outsider's, session 38: the API answered "pass
#: --demo", which no request has)
_JOB_WORDS = (("Pass either --demo or --data, not both.",
               "Either set demo=true or upload a dataset (`vera job submit --demo` or `--data FILE`), not both."),
              ("No dataset: pass --data FILE (.csv or .jsonl) or --demo for the offline demo.",
               "No dataset: upload a .csv or .jsonl file (`vera job submit --data FILE`, the dashboard's upload) or "
               "set demo=true for the offline demo."))


def _check_start_labels(start: tuple[str, VeraConfig, list[str] | None], labels: list[str]) -> None:
    """A classification head trained on ``start``'s labels (as its metrics recorded them) fits only those: one
    output per label, in that order."""
    ref, _, trained = start
    if trained is not None and trained != labels:
        raise InvalidInput(f"The dataset's labels {labels[:20]} are not those {ref} was trained on {trained[:20]}: "
                           "its classification head has one output per label, in that order. Start from a "
                           "version trained on the same labels, or train without init_from.")


#: The most lines a job's dataset has, counted before it is parsed: its bytes alone (VERA_MAX_DATASET_BYTES) let
#: 6.8 million short rows take 43 s and 3.2 GB of the API to check (an outsider's, session 38); a million take about
#: 0.5 GB.
MAX_JOB_DATASET_LINES = 1_000_000
#: The most distinct labels a classification job trains (one output each; its version's metrics list them all), and
#: the most bytes they take as JSON (a version's metrics hold at most MAX_METRICS_BYTES, its loss curve too).
MAX_JOB_LABELS, MAX_JOB_LABEL_BYTES = 10_000, 256 << 10


def _check_labels(labels: list[str], where: Callable[[str], str]) -> None:
    """A head a worker can train and a version can record: 300,000 labels kept a worker busy for 10 minutes and 3 GB
    after its one step, and ignoring SIGTERM (an outsider's finding, session 33). ``where(label)``: the file and
    line where a label first appears, for a message about it."""
    if len(labels) > MAX_JOB_LABELS:
        raise InvalidInput(f"The dataset has {len(labels):,} distinct labels; a job trains at most "
                           f"{MAX_JOB_LABELS:,} (its classification head has an output for each, and its version's "
                           "metrics list them). Check that label_column names the labels, or train it yourself with "
                           "`vera train`.")
    for label in labels:  # its version's metrics list them, each one line of plain text, as other names are
        try:
            check_text(label, f"The dataset's label {label[:100]!r}", max_length=MAX_JOB_LABEL_BYTES)
        except InvalidInput as exc:
            raise InvalidInput(f"{where(label)}: {exc}") from None
    if (size := len(json.dumps(labels))) > MAX_JOB_LABEL_BYTES:
        raise InvalidInput(f"The dataset's {len(labels):,} label names take {size:,} bytes as JSON; its version's "
                           f"metrics list them, within {MAX_JOB_LABEL_BYTES:,}. Use shorter label names.")


def _check_metric(args: TrainingArguments, task: str) -> None:
    """metric_for_best names a metric the task's evaluation reports (else the job failed at its first evaluation)."""
    if (known := unreported_metric(task, args.metric_for_best)) is not None:
        raise InvalidInput(f"training.metric_for_best={args.metric_for_best[:100]!r} is not a metric a {task} job "
                           f"reports; name one of {', '.join(known)}.")


def _check_dataset(checked: TrainSpec, dataset: bytes | None, dataset_name: str) -> Splits:
    """The uploaded dataset reads as the spec says (its columns, its labels) and splits as the worker will split it
    (two rows were a 201, then a failed job: an outsider's re-check, session 33); errors name it as the caller did.
    Returns its splits, as the worker will train them (labels sorted; none for a causal-lm task)."""
    from vera_core.data import DatasetError, label_line
    from vera_core.recipes import load_splits

    if dataset is None:
        raise InvalidInput("The job names no dataset: upload a .csv/.jsonl file or set demo=true.")
    shown = Path(dataset_name).name[:200]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"uploaded{Path(dataset_name).suffix.lower()}"
        path.write_bytes(dataset)
        try:
            splits = load_splits(replace(checked, data=str(path)))
            _check_labels(splits.labels,
                          lambda label: f"{shown}:{label_line(path, checked.label_column, label) or '?'}")
            return splits
        except DatasetError as exc:  # named as the caller named it, not by this scratch path
            said = str(exc).replace(str(path), shown)
            # the spec's fields, and where each client sets them (the dashboard has no command-line options)
            raise DatasetError(said.replace("pass --text-column / --label-column.", (
                "name its columns: the spec's text_column and label_column (`vera job submit --text-column / "
                "--label-column`; the dashboard's Text column and Label column)."))) from None


def _check_scheduling(priority: int, time_limit_s: float | None, gpus: int) -> None:
    bound = MAX_JOB_PRIORITY
    if isinstance(priority, bool) or not isinstance(priority, int) or not -bound <= priority <= bound:
        raise InvalidInput(f"priority must be an integer from {-bound} to {bound} (higher runs first); "
                           f"got {priority!r}.")
    if time_limit_s is not None and not (isinstance(time_limit_s, int | float) and not isinstance(time_limit_s, bool)
                                         and 0 < time_limit_s <= MAX_JOB_TIME_LIMIT_S):
        raise InvalidInput(f"time_limit_s must be a number of seconds above 0 and at most {MAX_JOB_TIME_LIMIT_S:.0f} "
                           f"(30 days); got {time_limit_s!r}.")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= MAX_JOB_GPUS:
        raise InvalidInput(f"gpus must be an integer from 0 (a CPU job) to {MAX_JOB_GPUS}; got {gpus!r}.")


#: What one job may ask of a worker, beyond what vera_core checks: tokens per example, optimizer steps, epochs, kept
#: checkpoints and batch sizes (the rank is bounded by the projection budget, at submission).
MAX_JOB_LENGTH, MAX_JOB_STEPS, MAX_JOB_EPOCHS, MAX_JOB_CHECKPOINTS, MAX_JOB_BATCH = 8192, 10_000_000, 1000, 100, 65_536
MAX_JOB_ACCUMULATION = 1024
#: The most numbers one training step of a job may hold for its adapter's backward pass: batch_size x max_length x
#: the sum of (r + out_features) over its adapted layers (2**31: 8 GiB in float32). Each bound above held alone, but
#: their product did not: r=65536, batch 64, length 512 grew a worker past 6 GB before one step ended, and a cancel
#: waits for the step (an outsider's walk, session 44). A 7B model's q and v at r=1024, batch 8 of 512 tokens: 2**30.3.
MAX_JOB_STEP_ELEMENTS = 2**31


def _check_sizes(checked: TrainSpec, args: TrainingArguments) -> None:
    for what, value, bound in (("max_length", checked.max_length, MAX_JOB_LENGTH),
                               ("training.max_steps", args.max_steps or 0, MAX_JOB_STEPS),
                               ("training.epochs", args.epochs, MAX_JOB_EPOCHS),
                               ("training.save_total_limit", args.save_total_limit, MAX_JOB_CHECKPOINTS),
                               ("training.batch_size", args.batch_size, MAX_JOB_BATCH),
                               ("training.gradient_accumulation_steps", args.gradient_accumulation_steps,
                                MAX_JOB_ACCUMULATION),
                               ("training.eval_batch_size", args.eval_batch_size, MAX_JOB_BATCH)):
        if value > bound:
            raise InvalidInput(f"{what}={shown_number(value)} is over what a job may ask of a worker ({bound:,}); "
                               "ask for less, or train it yourself with `vera train`.")


#: Whose a job is, for taking turns: who asked for it, else (rows from before requested_by) its owner.
JOB_USER = func.coalesce(m.Job.requested_by, m.Job.owner)


def running_by_user(s: Session) -> dict[str, int]:
    """How many jobs each user has running (users with none are left out): one grouped read of the running jobs."""
    return {user: count for user, count in s.execute(
        select(JOB_USER, func.count()).where(m.Job.status == "running").group_by(JOB_USER))}


def next_claim(now: datetime, gpus: int, running: dict[str, int]) -> Select[m.Job]:
    """The query of the job a worker with ``gpus`` claims next (Jobs.claim): a queued job it can run, of the user
    with the fewest jobs ``running`` (running_by_user), of highest priority among theirs, the oldest among equals.
    The counts are read first and given as a CASE (a join to them, or a count per queued job, cost PostgreSQL
    0.1-0.3 s a claim over 10,000 queued jobs: bench/job_claims.py, which measures it against the order by
    priority alone)."""
    turn = case(running, value=JOB_USER, else_=0) if running else literal(0)
    return (select(m.Job).where(m.Job.status == "queued", or_(m.Job.not_before.is_(None), m.Job.not_before <= now),
                                m.Job.gpus <= gpus)
            .order_by(turn, m.Job.priority.desc(), m.Job.created_at, m.Job.id).limit(1))


def _check_integers(value: Any, where: str) -> None:
    """Every integer of a spec is below 2**64 (a seed or a projection key at most: no setting needs more). Each
    field's own check echoed a 4,000-digit one whole, or said Python's "Exceeds the limit (4300 digits) for integer
    string conversion", and some fields queued it (a re-check's findings, session 44)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**64:
        raise InvalidInput(f"{where} is {shown_number(value)}; a job's settings are integers below 2**64 "
                           f"({2**64:,}): give a smaller number.")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_integers(item, f"{where}.{str(key)[:64]}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_integers(item, f"{where}[{index}]")


def _check_step(batch: int, per_token: int, spec: TrainSpec) -> None:
    """A training step of ``batch`` examples of ``spec.max_length`` tokens, whose adapted layers keep ``per_token``
    numbers a token for the backward pass (r + out_features a layer), must fit MAX_JOB_STEP_ELEMENTS."""
    tokens = batch * spec.max_length
    if tokens * per_token > MAX_JOB_STEP_ELEMENTS:
        most = MAX_JOB_STEP_ELEMENTS // (spec.max_length * per_token)
        raise InvalidInput(
            f"One training step would hold {tokens * per_token:,} numbers for the adapter's backward pass "
            f"({4 * tokens * per_token / 2**30:,.1f} GiB in float32: training.batch_size={batch} x max_length="
            f"{spec.max_length} x {per_token:,}, the adapted layers' r + out_features); a job may ask at most "
            f"{MAX_JOB_STEP_ELEMENTS:,} ({4 * MAX_JOB_STEP_ELEMENTS / 2**30:g} GiB) of a worker. Lower r, "
            + (f"training.batch_size (at most {most} at this r and length) " if most else "")
            + "or max_length, or train it yourself with `vera train`.")


def _check_evaluations(args: TrainingArguments) -> None:
    """A spec whose max_steps and eval_every ask more evaluations than a run may (vera_core.trainer's
    too_many_evaluations), refused at submission: a worker refused it only once it had loaded the model and data.
    A run by epochs is counted on the dataset's splits (_check_epochs_evaluations)."""
    from vera_core.trainer import too_many_evaluations

    if args.max_steps and args.eval_every and (problem := too_many_evaluations(
            args.max_steps, args.eval_every, 1, option="vera job submit --eval-every N")) is not None:
        raise InvalidInput(f"training.{problem}")


def _evaluates_by_epochs(args: TrainingArguments) -> bool:
    """Whether a run's number of evaluations depends on its dataset: eval_every steps over epochs (no max_steps)."""
    return not args.max_steps and bool(args.eval_every)


def _check_epochs_evaluations(splits: Splits, args: TrainingArguments, gpus: int) -> None:
    """A run by epochs (no max_steps) whose eval_every asks more evaluations than a run may, counted on the splits as
    the worker will train them (``gpus`` processes sharing each batch): a worker refused it only once it had loaded
    the model and data, after the job's wait in the queue."""
    from vera_core.trainer import steps_per_epoch, too_many_evaluations

    world = max(gpus, 1)
    if not _evaluates_by_epochs(args) or not splits.eval or args.batch_size % world:
        return  # (max_steps: _check_evaluations; a batch that does not split: _check_batch_split)
    per_epoch = steps_per_epoch(len(splits.train), args.batch_size // world, args.gradient_accumulation_steps, world)
    if (problem := too_many_evaluations(math.ceil(per_epoch * args.epochs), args.eval_every, per_epoch,
                                        option="vera job submit --eval-every N")) is not None:
        raise InvalidInput(f"training.{problem}")


def _check_batch_split(args: TrainingArguments, gpus: int) -> None:
    """A job's batch_size is the batch of one step, whatever the processes that train it: a job on k GPUs trains in k
    processes of batch_size / k examples each, so batch_size must be a multiple of k."""
    if gpus > 1 and args.batch_size % gpus:
        raise InvalidInput(f"training.batch_size={args.batch_size} does not split over gpus={gpus}: a job's "
                           f"batch_size is the batch of one step, shared by its {gpus} training processes (one per "
                           f"GPU). Pick a multiple of {gpus} (e.g. {args.batch_size // gpus * gpus or gpus}), or "
                           "another number of GPUs.")


def _no_job(job_id: int) -> NotFound:
    """The error for a job that does not exist, or that the caller may not see (one message for both)."""
    return NotFound(f"No job {job_id}; `vera job ls` lists them.")


def _record_events(s: Session, job_id: int, events: Sequence[EventRecord]) -> None:
    """Add a heartbeat's events to the job's log: its lines (kind "log": published, failed...) always, its training
    records and evaluations while the log holds fewer than MAX_JOB_EVENTS of them; the heartbeat that reaches the
    bound adds what fits and a line saying that later ones are not kept (events are never removed while a job
    lives, so the bound is reached once)."""
    held = s.scalar(select(func.count()).select_from(
        select(m.JobEvent.id).where(m.JobEvent.job_id == job_id, m.JobEvent.kind != "log")
        .limit(MAX_JOB_EVENTS).subquery())) or 0
    room = MAX_JOB_EVENTS - held
    for kind, data, *when in events:
        if kind != "log" and room <= 0:
            continue
        s.add(m.JobEvent(job_id=job_id, kind=kind, data=data, **({"at": when[0]} if when else {})))
        if kind != "log":
            room -= 1
            if room == 0:  # (at the time of the event that filled it: the log's times stay in order)
                s.add(m.JobEvent(job_id=job_id, kind="log", **({"at": when[0]} if when else {}), data={"message": (
                    f"The job's log holds {MAX_JOB_EVENTS:,} training records and evaluations, the most it keeps: "
                    "later ones are not kept here (its progress is, and the version it publishes has the loss curve "
                    "and evaluations). A larger log_every or eval_every keeps a long run within it.")}))
