"""Train: launch a fine-tune job (the form checks Publish as before sending), the table of jobs, and one job followed
live (web_ui.jobs)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from registry.domain.errors import RegistryError
from registry.domain.schemas import Ref, check_name
from registry.domain.training_spec import training_spec
from vera_core.config import KNOWN_GENERATORS, TASK_METRICS
from vera_core.errors import parse_json
from web_ui import editing, jobs, navigation, session

#: The page's heading (also shown above a message that its registry URL is wrong: session.guarded).
TITLE = "Train: fine-tune jobs"

JOB_BOX = "job_box"


def job_number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def page() -> None:
    ahead = session.start(lambda c: c.jobs())  # the jobs are listed (uncached) while the form is built
    st.title(TITLE)
    queued = launch()
    st.divider()
    # a listing started before this run queued a job may lack it: then the jobs are listed again
    found = session.call(lambda c: c.jobs()) if queued else ahead.result()
    if not found:
        st.caption("No jobs yet.")
        return
    st.subheader("Jobs")
    jobs.live_table(found)
    labels = {j.id: f"job {j.id}: {j.target_name} (submitted {j.created_at:%Y-%m-%d %H:%M} UTC)" for j in found}
    ids: list[int] = list(labels)
    wanted = navigation.follow_url("job", JOB_BOX, default=str(ids[0]), decode=job_number)
    if st.session_state[JOB_BOX] not in ids:
        st.warning(f"This registry has no job {wanted!r}; showing the newest, job {ids[0]}.")
        st.session_state[JOB_BOX] = ids[0]
    job_id = st.selectbox("Job", ids, key=JOB_BOX, format_func=lambda i: labels[i], on_change=navigation.write_url,
                          args=("job", JOB_BOX))
    if job_id is not None:
        navigation.set_param("job", str(job_id))
        jobs.follow(job_id, listed=next(j for j in found if j.id == job_id))


def target_problem(target: str) -> str | None:
    """What is wrong with the Publish as name, checked before the job is sent; None when it is owner/name."""
    if not target.strip():
        return "Publish as is empty: type the name to publish the adapter as, owner/name (e.g. alice/polarity)."
    try:
        ref = Ref.parse(target.strip())
    except RegistryError as exc:
        return f"Publish as: {exc}"
    if ref.version is not None or ref.alias is not None:
        return (f"Publish as takes owner/name without a version or alias; found {target.strip()!r}. The job "
                f"publishes the next version of {ref.owner}/{ref.name}.")
    try:
        check_name(ref.owner, "The owner")
        check_name(ref.name, "The name")
    except RegistryError as exc:
        return f"Publish as: {exc}"
    return None


#: What the browser checks in Publish as before the form is sent: all that target_problem checks (the browser also
#: refuses an empty box: ``required``), so a name the browser lets through is one the page accepts.
TARGET_PATTERN = (r"^\s*(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,63}/[a-z0-9][a-z0-9._-]{0,63}\s*$",
                  "Type owner/name in lowercase letters, digits, '.', '_' or '-' (e.g. alice/polarity; no '..'), "
                  "without a version or alias: the job publishes the next version.")


#: The registry's words for the spec's fields, and the form's (a refusal said "init_from", "leave r out").
_FORM_WORDS = ((re.compile(r"\binit_from\b"), "Start from"),
               (re.compile(r"leave (r|projection_prng_key|projection_generator) out: a warm start keeps the "
                           r"adapter's\."),
                "leave Rank r, Projection seed and Generator at their defaults: a warm start keeps the version's."),
               (re.compile(r"Name a version that `vera ls` lists"), "Name a version that Browse lists"))


def form_words(message: str) -> str:
    """A refusal of the job in the Train form's words (Start from, Rank r, Browse), not the spec's and the CLI's."""
    for pattern, words in _FORM_WORDS:
        message = pattern.sub(words, message)
    return session.dashboard_words(message)


GENERATOR_HELP = ("How A and B are drawn from the seed. philox4x32-10-kaiming-uniform-v1 (the default): the same "
                  "bits on any device or torch version (docs/projections.md). torch-kaiming-uniform: PEFT's own, "
                  "so PEFT regenerates A and B from a seed-only adapter.")


#: The form's numbers, each from its lowest to its highest value (the form's own ranges: `vera job submit` takes
#: more), checked together on Launch.
NUMBER_BOUNDS: dict[str, tuple[float, float]] = {
    "Rank r": (1, 4096), "Projection seed": (0, 2**53 - 1), "d initial": (0.0, 10.0), "Epochs": (0.05, 100.0),
    "Vector learning rate": (1e-5, 1.0), "Head learning rate": (1e-6, 1.0), "Batch size": (1, 1024),
    "Train examples": (1, 10**9), "Eval examples": (1, 10**9), "Max steps": (1, 10**7),
    "Warmup ratio": (0.0, 1.0), "Gradient accumulation": (1, 1024), "Max length": (1, 4096),
    "Training seed": (0, 2**53 - 1), "Eval every": (1, 10**7), "Patience": (1, 10**4),
    "Log every": (1, 10**7)}

#: The numbers the form may leave empty: a trial run's (empty: the whole split), the steps (empty: by epochs), how
#: often to evaluate (empty: each epoch) and the patience (empty: never stop early).
OPTIONAL_NUMBERS = frozenset({"Train examples", "Eval examples", "Max steps", "Eval every", "Patience",
                              "Log every"})
#: The form's box of further settings, and the numbers in it (a problem with one says where it is: the box may be
#: closed when Launch is clicked).
MORE = "More settings: schedule, evaluation, weights kept"
MORE_NUMBERS = frozenset({"Warmup ratio", "Gradient accumulation", "Max length", "Training seed", "Eval every",
                          "Patience", "Log every"})
#: The More settings box's choices: the schedules, and which weights are published.
SCHEDULES = ("linear", "cosine", "constant")
KEPT = {"the best evaluation's": True, "the last step's": False}


def _shown(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


def bounds_help(label: str) -> str:
    low, high = NUMBER_BOUNDS[label]
    return f"{_shown(low)} to {_shown(high)}."


def number_problems(numbers: Mapping[str, float | None]) -> list[str]:
    """What is wrong with each of the form's numbers (by label: NUMBER_BOUNDS), every one, in the form's order."""
    problems = []
    for label, value in numbers.items():
        low, high = NUMBER_BOUNDS[label]
        if value is None and label in OPTIONAL_NUMBERS:
            continue
        where = " (under **More settings**)" if label in MORE_NUMBERS else ""
        if value is None:
            problems.append(f"{label}{where} is empty: type a number from {_shown(low)} to {_shown(high)}.")
        elif not low <= value <= high:
            problems.append(f"{label} {_shown(value)}{where} is out of range: type a number from {_shown(low)} to "
                            f"{_shown(high)}.")
    return problems


#: How much of an upload the page reads for its columns (its first row) before Launch sends it; the registry reads
#: the whole file and says anything else that is wrong with it.
HEAD_BYTES = 64 << 10


def column_problem(name: str, data: bytes, text_column: str, label_column: str) -> str | None:
    """What the upload ``name`` lacks of the columns the form names (blank: ``text`` and ``label``), read from its
    first row (a CSV's header, a JSONL file's first object), so that it is said on Launch with the form's other
    problems, not after them as the registry's one refusal; None where it has them, or where its first row does not
    read as one within HEAD_BYTES of UTF-8 (the registry then says what is wrong: it reads the file as this does,
    vera_core.data)."""
    whole = len(data) <= HEAD_BYTES
    head = data if whole else data[:data.rfind(b"\n", 0, HEAD_BYTES) + 1]  # whole lines
    try:
        text = head.decode("utf-8-sig")
        if Path(name).suffix.lower() in (".jsonl", ".ndjson"):
            first = parse_json(next((line for line in text.splitlines() if line.strip()), "null"))
            columns = sorted(first) if isinstance(first, dict) else []
        else:
            reader = csv.reader(io.StringIO(text, newline=""))
            columns = sorted(next(reader, []))
            if not whole and reader.line_num >= text.count("\n"):  # the header may go on past what was read
                return None
    except (ValueError, csv.Error):  # (UnicodeDecodeError and parse_json's JSONTextError are ValueErrors)
        return None
    wanted = [text_column.strip() or "text", label_column.strip() or "label"]
    missing = [column for column in wanted if column not in columns]
    if not columns or not missing:
        return None
    return (f"{Path(name).name[:200]} has columns {columns[:20]}{' ...' if len(columns) > 20 else ''} but not "
            f"{missing}: type its column of texts in **Text column** and of labels in **Label column**.")


def not_launched(problems: list[str]) -> None:
    st.error("Not launched:\n" + "\n".join(f"- {problem}" for problem in problems), icon=":material/edit:")


@dataclass(frozen=True)
class MoreSettings:
    """What the form's More settings box holds: the schedule, evaluation and which weights are kept (`vera job
    submit`'s --schedule, --eval-every, --patience, --metric-for-best, --keep-best/--keep-last...)."""

    schedule: str
    metric: str
    keep_best: bool
    numbers: dict[str, float | None]  # by label, checked with the form's other numbers (NUMBER_BOUNDS)

    def spec(self) -> dict[str, Any]:
        """training_spec's arguments (each number's range was checked on Launch)."""
        n = self.numbers
        whole = {name: None if (value := n[label]) is None else int(value) for name, label in (
            ("grad_accum", "Gradient accumulation"), ("max_length", "Max length"), ("seed", "Training seed"),
            ("eval_every", "Eval every"), ("patience", "Patience"), ("log_every", "Log every"))}
        return {"schedule": self.schedule, "warmup_ratio": float(n["Warmup ratio"] or 0.0),
                "metric_for_best": self.metric, "keep_best": self.keep_best, **whole}


def more_settings() -> MoreSettings:
    """The More settings box of the form (closed: the defaults, as `vera job submit` has them)."""
    with st.expander(MORE):
        a1, a2, a3, a4, a5 = st.columns(5)
        schedule = a1.selectbox("Schedule", SCHEDULES, help="How the learning rate decays to zero after warmup: "
                                "linearly, along a cosine, or not at all.")
        warmup = a2.number_input("Warmup ratio", value=0.06, format="%.3f",
                                 help="The fraction of all optimizer steps over which the learning rate rises "
                                      "from zero. " + bounds_help("Warmup ratio"))
        accumulate = a3.number_input("Gradient accumulation", value=1, step=1,
                                     help="Batches summed into one optimizer step: a step sees Batch size x this "
                                          "many examples. " + bounds_help("Gradient accumulation"))
        max_length = a4.number_input("Max length", value=64, step=1, help="Tokens per example; longer texts are "
                                     "cut. " + bounds_help("Max length"))
        seed = a5.number_input("Training seed", value=0, step=1, help=(
            "Data order, head initialisation and dropout (the projection has its own seed above). "
            + bounds_help("Training seed")))
        b1, b2, b3, b4, b5 = st.columns(5)
        eval_every = b1.number_input("Eval every", value=None, step=1, placeholder="each epoch",
                                     help="Evaluate every N optimizer steps (and at the end): "
                                          + bounds_help("Eval every") + " Empty: at the end of each epoch.")
        patience = b2.number_input("Patience", value=None, step=1, placeholder="never stop early",
                                   help="Stop after this many evaluations without improvement of Metric for best: "
                                        + bounds_help("Patience") + " Empty: train to the end.")
        metric = b3.selectbox("Metric for best", TASK_METRICS["classification"][::-1],
                              help="The evaluation metric whose best value picks the weights kept and that "
                                   "Patience watches (higher accuracy, lower loss; a tie on accuracy goes to the "
                                   "lower loss).")
        kept = b4.selectbox("Weights published", tuple(KEPT), help="The weights of the best evaluation (by Metric "
                            "for best), or of the last step.")
        log_every = b5.number_input("Log every", value=None, step=1, placeholder="10 steps",
                                    help="Record the mean training loss every N steps: the job's log and the loss "
                                         "curve (a run records at most 10,000: beyond, the interval widens). "
                                         + bounds_help("Log every") + " Empty: every 10 steps.")
    return MoreSettings(schedule=str(schedule), metric=str(metric), keep_best=KEPT[str(kept)], numbers={
        "Warmup ratio": warmup, "Gradient accumulation": accumulate, "Max length": max_length,
        "Training seed": seed, "Eval every": eval_every, "Patience": patience, "Log every": log_every})


def launch() -> bool:
    """The form for a new job; whether this run queued one."""
    with st.form("train"):
        st.markdown("**New fine-tune job** (a worker trains it and publishes the adapter)")
        c1, c2 = st.columns(2)
        # required and validate: the browser refuses an empty or malformed name before the form is sent, so no
        # message of the page's can stay on screen about a name the box no longer holds
        target = c1.text_input("Publish as", placeholder="owner/name", required=True, validate=TARGET_PATTERN)
        c1.caption("owner/name in lowercase letters, digits, '.', '_' or '-'; the job publishes its next version")
        base = c2.text_input("Base model", value="minilm", help="'minilm' (offline demo model) or a Hub id the "
                                                                "registry's jobs train (VERA_JOB_BASE_MODELS), "
                                                                "never a local directory")
        start = c2.text_input("Start from (optional)", placeholder="owner/name@prod",
                              help="a version to go on fine-tuning (its vectors and head): its rank, projection "
                                   "and base model are kept, and the result names it as its parent")
        # what the version it publishes is labelled with (`vera job submit --tag --description`), beside fine-tune
        l1, l2 = st.columns([1, 2])
        tags = l1.text_input("Tags (optional)", placeholder="nightly, baseline",
                             help="comma-separated tags of the version it publishes, besides fine-tune")
        description = l2.text_input("Description (optional)", placeholder="fine-tuned by job N",
                                    help="the version's description; empty: 'fine-tuned by job N'")
        demo = st.checkbox("Demo task (word polarity, offline)", value=True)
        upload = st.file_uploader("Or a dataset (.csv or .jsonl with text and label columns)", type=["csv", "jsonl"])
        # a dataset whose columns have other names (sentence, sentiment) was refused with no way on from here
        u1, u2, _ = st.columns([1, 1, 2])
        text_column = u1.text_input("Text column", value="text", help="the uploaded dataset's column of texts")
        label_column = u2.text_input("Label column", value="label", help="its column of labels (names or numbers)")
        # The generator's names are long (philox4x32-10-kaiming-uniform-v1): its box gets the room to show one whole.
        c3, c4, c5 = st.columns([1, 1.4, 2.6])
        # with Start from, these three are the version's (the form read "Rank r 256" beside a start of another rank:
        # session 28's walk); left at their defaults they are taken from it, another value is refused
        from_start = " With **Start from**, the version's own is used (leave this as it is)."
        # no min_value/max_value: the browser would refuse an out-of-range number with its reason only in a tooltip
        # (a newcomer's walk); the page checks every number on Launch and says each problem under the button
        r = c3.number_input("Rank r", value=256, help="the rank of A and B, " + bounds_help("Rank r") + from_start)
        prng = c4.number_input("Projection seed", value=0,
                               help="0 to 2^53 - 1 here; any uint64 with `vera job submit`." + from_start)
        generator = c5.selectbox("Generator", KNOWN_GENERATORS, help=GENERATOR_HELP + from_start)
        c6, c7, c8, c9, c10 = st.columns(5)
        # their ranges (NUMBER_BOUNDS) are said on Launch when a number is outside them
        d_initial = c6.number_input("d initial", value=0.1)
        epochs = c7.number_input("Epochs", value=1.0)
        lr = c8.number_input("Vector learning rate", value=1e-2, format="%.4f")
        head_lr = c9.number_input("Head learning rate", value=1e-3, format="%.5f")
        batch = c10.number_input("Batch size", value=32)
        # a trial run (the spec's max_train_examples / max_eval_examples): minutes of evaluating the whole demo
        # split is not what a first try of a recipe wants
        t1, t2, t3, _ = st.columns([1, 1, 1, 1])
        trial = ("Empty: all of it. A number: a trial run on the first ones (the splits are a fixed sample); the "
                 "labels stay the whole dataset's.")
        # step 1: whole numbers only (the box refuses 2.5 as it is typed)
        max_train = t1.number_input("Train examples", value=None, step=1, placeholder="all",
                                    help="How many examples of the training split to train on. " + trial)
        max_eval = t2.number_input("Eval examples", value=None, step=1, placeholder="all",
                                   help="How many of the eval split, and of the test split, to score. " + trial)
        # `vera job submit --max-steps` had no box here: a short run took Train examples (a walk, session 40)
        max_steps = t3.number_input("Max steps", value=None, step=1, placeholder="by epochs",
                                    help="Optimizer steps to train for; overrides Epochs. Empty: Epochs decide.")
        more = more_settings()
        if not st.form_submit_button("Launch", type="primary"):
            return False
        numbers = {"Rank r": r, "Projection seed": prng, "d initial": d_initial, "Epochs": epochs,
                   "Vector learning rate": lr, "Head learning rate": head_lr, "Batch size": batch,
                   "Train examples": max_train, "Eval examples": max_eval, "Max steps": max_steps,
                   **more.numbers}
        problems = [*filter(None, [target_problem(target)]), *number_problems(numbers)]
        if not demo and upload is None:  # the registry's words for this name command-line options
            problems.append("No dataset: tick **Demo task** for the offline demo, or upload a .csv or .jsonl file.")
        if upload is not None and (lacking := column_problem(upload.name, upload.getvalue(), text_column,
                                                             label_column)):
            problems.append(lacking)
        if problems:  # every one at once, beside the button (the browser's checks were bypassed, or a number is out)
            not_launched(problems)
            return False
    uploaded = upload is not None
    spec = training_spec(base_model=base, demo=demo and not uploaded, r=int(r), projection_seed=int(prng),
                         text_column=(text_column.strip() or None) if uploaded else None,
                         label_column=(label_column.strip() or None) if uploaded else None, generator=generator,
                         d_initial=float(d_initial), epochs=float(epochs), lr=float(lr), head_lr=float(head_lr),
                         batch_size=int(batch), init_from=start.strip() or None,
                         max_train_examples=None if max_train is None else int(max_train),
                         max_eval_examples=None if max_eval is None else int(max_eval),
                         max_steps=None if max_steps is None else int(max_steps), **more.spec())
    dataset = None if upload is None else (upload.name, upload.getvalue())
    try:  # a refusal is said here, and the jobs below stay (the page's guard would stop the page: session 29's walk)
        job = session.call(lambda c: c.submit_job(target.strip(), spec, dataset=dataset,
                                                  tags=editing.split_tags(tags),
                                                  description=description.strip()))
    except RegistryError as exc:
        if exc.problems:  # what only the registry checks (Start from, the whole dataset, quotas): all at once too
            not_launched([form_words(problem) for problem in exc.problems])
        else:
            session.show_error(exc, form_words)
        return False
    navigation.set_param("job", str(job.id))  # the jobs below follow it
    # the message stays until the page's next run, while the job below goes on and ends: it says when, and where
    # the job is followed, so that it does not read as "still queued" after the job is done
    start_line = (f", starting from {job.spec['init_from']} (its rank, projection and base)"
                  if job.spec.get("init_from") else "")
    st.success(f"Queued job {job.id} for {job.target_name} at {job.created_at:%H:%M:%S} UTC{start_line}; followed "
               "below (its status is there). Launch again queues another job.")
    return True
