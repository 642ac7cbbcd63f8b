"""Fine-tune jobs as the Train page shows them: a table of every job (status, duration, final metrics, a link to
each), and one job followed live (step, ETA, loss and eval curves, its log in words, its spec), with a Cancel that
asks first and says "cancelling" until the worker has stopped the job, and a hint when no worker claims a job."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from registry.client import RegistryClient, RegistryUnavailable
from registry.domain.errors import NotFound
from registry.domain.schemas import ACTIVE_JOB_STATUSES, JobCheckpointInfo, JobEventInfo, JobInfo, VersionInfo
from registry.domain.words import UNCLAIMED_AFTER as UNCLAIMED_AFTER  # (the page's hint: shared with `vera job`)
from registry.domain.words import span, unclaimed_hint
from web_ui import charts, formats, navigation, session, tables, views
from web_ui.activity import markdown_text

#: Jobs listed in the table, newest first.
TABLE_ROWS = 50
#: A registry older than the lookup is read a GET each for this long before the lookup is tried again (the table
#: refreshes every few seconds; an upgrade meanwhile is noticed after it).
NO_LOOKUP_S = 600
#: session_state: registry URL -> time.monotonic() until which it is known to have no lookup
NO_LOOKUP = "registries_without_lookup"


def status(job: JobInfo) -> str:
    """The job's status as people read it: a running job whose cancellation was asked for is 'cancelling' (its
    worker stops it after the step it is on when it reads the request, about twice a second)."""
    return "cancelling" if job.status == "running" and job.cancel_requested else job.status


def duration(job: JobInfo, now: datetime | None = None) -> str:
    """How long it trained: start to finish, start to now while it runs, '—' before it starts."""
    if job.started_at is None:
        return formats.MISSING
    end = job.finished_at or now or datetime.now(UTC)
    return span(end - job.started_at)


def published(jobs: list[JobInfo]) -> dict[str, VersionInfo | None]:
    """The versions ``jobs`` published, by reference, read in one lookup (the table refreshes every few seconds: it
    asked a GET per finished job each time); None for one deleted since. A registry older than the lookup (2026-12)
    is asked a GET each, side by side, and the lookup is not tried again there for NO_LOOKUP_S."""
    refs = tuple(sorted({j.result_ref for j in jobs if j.result_ref}))
    if not refs:
        return {}
    url, without = session.settings()[0], st.session_state.setdefault(NO_LOOKUP, {})
    if without.get(url, 0.0) <= time.monotonic():
        try:
            return session.read(RegistryClient.lookup, refs)
        except NotFound:  # "has no lookup": an older registry
            without[url] = time.monotonic() + NO_LOOKUP_S
    for ref in refs:
        session.prefetch(RegistryClient.get, ref)
    found: dict[str, VersionInfo | None] = {}
    for ref in refs:
        try:
            found[ref] = session.read(RegistryClient.get, ref)
        except NotFound:  # the version was deleted since
            found[ref] = None
    return found


def final_metrics(job: JobInfo, versions: dict[str, VersionInfo | None]) -> dict[str, float | None]:
    """The published version's test accuracy and eval loss (its ``test`` and ``final_eval`` metrics: the weights it
    was published with, which are the best evaluation's when training keeps the best, as it does by default); None
    where there is none (no version yet, or deleted since). ``versions``: ``published``'s."""
    version = versions.get(job.result_ref) if job.result_ref else None
    metrics: dict[str, Any] = version.metrics if version is not None else {}
    return {"test accuracy": formats.metric_at(metrics, "test", "accuracy"),
            "eval loss": formats.metric_at(metrics, "final_eval", "loss")}


#: Where the page leaves its own listing of the jobs for the table's first drawing.
LISTED = "jobs_listed"


def live_table(listed: list[JobInfo]) -> None:
    """The jobs table, refreshed every five seconds (statuses change while the page is open): drawn from the page's
    own listing ``listed`` first, then from a listing of its own at each refresh."""
    st.session_state[LISTED] = listed
    _live_table()


@st.fragment(run_every=5)
def _live_table() -> None:
    found: list[JobInfo] | None = st.session_state.pop(LISTED, None)  # the page's listing, on the page's own run
    if found is None:
        try:
            found = session.call(lambda c: c.jobs())
        except Exception as exc:  # noqa: BLE001 - a live panel reports and keeps trying
            _not_refreshed("the jobs", exc)
            return
    table(found)


def _not_refreshed(what: str, exc: Exception) -> None:
    """A live panel's refresh that failed: a registry it cannot reach in the dashboard's words (the client's said to
    set VERA_REGISTRY_URL), anything else as it was said."""
    said = session.unreachable(session.settings()[0]) if isinstance(exc, RegistryUnavailable) else str(exc)
    st.warning(f"Cannot refresh {what}: {said}")


def table(jobs: list[JobInfo]) -> None:
    """Every job (the newest TABLE_ROWS), each linked to its own view (``?job=``)."""
    versions = published(jobs[:TABLE_ROWS])
    scores = [final_metrics(j, versions) for j in jobs[:TABLE_ROWS]]
    # as wide as the longest name needs up to PUBLISHES_PX, a longer one cut with '…': a 100-character name pushed the
    # result column out of the frame, clipped with no sign of it (a walk's finding, session 31)
    publishes_px = formats.text_width((j.target_name for j in jobs[:TABLE_ROWS]), 100, PUBLISHES_PX)
    rows = [{"job": navigation.job_link(j.id), "publishes": formats.fit(j.target_name, publishes_px),
             "status": status(j),
             "submitted": j.created_at, "duration": duration(j), **score,
             "result": navigation.version_link(j.result_ref) if j.result_ref else None}
            for j, score in zip(jobs[:TABLE_ROWS], scores, strict=True)]
    tables.show(pd.DataFrame(rows), hide_index=True, width="stretch", key="jobs_table", column_config={
        "job": st.column_config.LinkColumn(display_text=r"train\?job=(\d+)", help="Follow this job", width=60),
        "publishes": st.column_config.TextColumn(width=publishes_px, help="The adapter the job publishes a version "
                                                 "of (a long name cut with '…': the job's page shows it whole)"),
        "submitted": formats.moment_column(),
        "test accuracy": formats.metric_column(s["test accuracy"] for s in scores),
        "eval loss": formats.metric_column((s["eval loss"] for s in scores), help=EVAL_LOSS_HELP),
        # a fixed width, so a long reference is cut with '…' (web_ui.tables), not clipped mid-letter at the edge
        "result": st.column_config.LinkColumn(help="Open the published version", width=RESULT_PX),
    })
    if len(jobs) > TABLE_ROWS:
        st.caption(f"The newest {TABLE_ROWS} of {len(jobs):,} jobs; `vera job list` shows them all.")


#: The px of the jobs table's result column: 'alice/polarity-v2:12' whole, a longer reference cut with '…'.
RESULT_PX = 180
#: The most px of its publishes column ('alice/polarity-sentiment-v2' whole).
PUBLISHES_PX = 230
#: What the jobs table's eval loss is (final_metrics).
EVAL_LOSS_HELP = ("The published version's loss on the eval set, with the weights it was published with: the best "
                  "evaluation's (highest eval accuracy for a classifier) unless training was told not to keep the best")


def ask_cancel(job_id: int) -> None:
    st.session_state["cancel_asked"] = job_id


def confirm_cancel(job_id: int) -> None:
    """``on_click`` of the confirmation: asks the registry to cancel (a queued job at once, a running one after the
    step it is on when its worker reads the request)."""
    st.session_state.pop("cancel_asked", None)
    session.call(lambda c: c.cancel_job(job_id))


#: What happens to a running job once its cancellation is asked for (registry.worker.CANCEL_CHECK_S).
CANCELLING = ("its worker checks about twice a second and stops it after the training step it is on; nothing is "
              "published.")


def cancel_controls(job: JobInfo) -> None:
    """Cancel, asking first; while the worker stops the job, says so instead."""
    if job.status not in ACTIVE_JOB_STATUSES:
        return
    if job.cancel_requested:
        st.info(f"Cancelling job {job.id}: {CANCELLING}", icon=":material/hourglass_top:")
    elif st.session_state.get("cancel_asked") == job.id:
        st.warning(f"Cancel job {job.id} ({job.target_name})? Its training so far is lost; nothing is published.")
        yes, no, _ = st.columns([1, 1, 4])
        yes.button("Yes, cancel the job", key=f"confirm-cancel-{job.id}", type="primary", on_click=confirm_cancel,
                   args=(job.id,))
        no.button("Keep it running", key=f"keep-{job.id}", on_click=st.session_state.pop, args=("cancel_asked", None))
    else:
        st.button("Cancel job", key=f"cancel-{job.id}", on_click=ask_cancel, args=(job.id,))


def header(job: JobInfo) -> None:
    p = job.progress
    total = p.get("total_steps")
    active = job.status in ACTIVE_JOB_STATUSES
    # a queued job read "Step: starting" while no worker had it yet (session 28's walk); "waiting for a worker" was
    # cut to "waiting f…" in the tile (session 29's): the tile says little, its help the rest
    queued = job.status == "queued"
    # a finished job's progress holds its final eval metrics: its loss is the eval set's, named so (a new user read
    # an unlabelled "Loss" tile as the training loss: session 23's walk)
    done = p.get("phase") == "done"
    views.tiles([
        ("Status", status(job), None),
        ("Step", f"{p.get('step', 0):,} / {total:,}" if total
         else "none yet" if queued else "starting" if active else formats.MISSING,
         "No worker has claimed the job yet: its steps start when one does." if queued and not total else None),
        ("ETA", f"{p['eta_s']:.0f} s" if p.get("eta_s") is not None and active else formats.MISSING, None),
        ("Eval loss" if done else "Training loss",
         formats.number(p["loss"]) if isinstance(p.get("loss"), int | float) else formats.MISSING,
         "the published version's loss on the eval set" if done else "the last step's mean loss"),
        ("Duration", duration(job), None)])
    if active and total:
        st.progress(min(1.0, p.get("step", 0) / total))
    if job.checkpoint is not None:
        st.caption(checkpoint_line(job.checkpoint))


def checkpoint_line(saved: JobCheckpointInfo) -> str:
    """What the registry keeps of a running job's training, in words (as `vera job show` says it)."""
    return (f"Checkpoint in the registry: {saved.summary(formats.size(saved.size))}; if this worker stops, another "
            "resumes from it.")


def curves(job: JobInfo, events: list[JobEventInfo]) -> None:
    """The job's loss and eval metric curves from its events; once it published, the step whose weights it kept
    (the version's metrics say: a dotted rule, as on the Adapter page)."""
    label = f"job {job.id}"
    steps = [[e.data["step"], e.data["loss"]] for e in events if e.kind == "step" and "loss" in e.data]
    history = [e.data for e in events if e.kind == "evaluate"]
    train, evals = {label: steps}, {label: charts.eval_points(history)}
    kept = charts.kept_steps({label: published_metrics(job.result_ref)}) if job.result_ref else {}
    chart = charts.loss_curves(train, evals, kept)
    for drawn in ([chart] if chart is not None else []) + charts.metric_curves(
            {label: history}, charts.step_span(train, evals), kept):
        st.altair_chart(drawn, width="stretch")


def published_metrics(ref: str) -> dict[str, Any]:
    """The metrics of the version a job published ({} once it is deleted, or unreadable)."""
    try:
        return session.read(RegistryClient.get, ref).metrics
    except NotFound:
        return {}


#: Where the page leaves the job it follows, from its own listing, for the view's first drawing.
FOLLOWED = "job_followed"


def follow(job_id: int, listed: JobInfo | None = None) -> None:
    """Job ``job_id`` live (_follow): drawn first from the page's own listing ``listed`` (one request less before
    the page is whole), then from reads of its own."""
    st.session_state[FOLLOWED] = listed
    _follow(job_id)


#: The followed job's events read so far (st.session_state): (its id, its events). Each refresh reads only newer
#: ones, at most READ_PAGES pages (1,000 events each) of them: the registry answers a page at a time since
#: 2026-12-06, and the panel read every event again every two seconds before.
EVENTS, READ_PAGES = "job_followed_events", 10


def _events(job_id: int) -> list[JobEventInfo]:
    """Job ``job_id``'s events, oldest first: those read before, and the newer ones (a long log catches up over a
    few refreshes)."""
    held_id, held = st.session_state.get(EVENTS, (None, []))
    held = held if held_id == job_id else []
    after = held[-1].id if held else 0
    held = held + session.call(lambda c: list(c.each_job_event(job_id, after=after, pages=READ_PAGES)))
    st.session_state[EVENTS] = (job_id, held)
    return held


@st.fragment(run_every=2)
def _follow(job_id: int) -> None:
    """Live while the job runs: status, step, ETA, loss and eval curves, logs; refreshed every two seconds."""
    listed: JobInfo | None = st.session_state.pop(FOLLOWED, None)  # the page's listing, on the page's own run
    try:
        job = listed if listed is not None and listed.id == job_id else session.call(lambda c: c.job(job_id))
        events = _events(job_id)
    except Exception as exc:  # noqa: BLE001 - a live panel reports and keeps trying
        _not_refreshed(f"job {job_id}", exc)
        return
    header(job)
    if (start := job.spec.get("init_from")) is not None:  # the log never names it (readers of the job may not
        # read it: the registry shows it to those who may, and "(a version you may not read)" to the others)
        named = start.strip("()") if start.startswith("(") else start
        st.caption(f"Starts from {named}: its d and b vectors and head, at its rank and projection (a warm start; "
                   "the published version names it as its parent).")
    if (hint := unclaimed_hint(job)) is not None:
        st.warning(hint, icon=":material/engineering:")
    cancel_controls(job)
    curves(job, events)
    if job.result_ref:
        st.success(f"Published {job.result_ref}")
        navigation.version_page_link(job.result_ref, f"Open {job.result_ref}")
    elif job.result_deleted:
        st.info(f"Published a version of {job.target_name} that was deleted since (the logs below name it).")
    if job.error:
        st.error("The job failed:")
        st.code(job.error[-4000:])
    # keyed and tracked: an untracked expander was drawn again closed at each refresh of a running job's panel,
    # every 2 s, so its log could not be read while it ran (a walk in a browser, session 40)
    with st.expander("Logs", expanded=job.status not in ACTIVE_JOB_STATUSES, key=f"job-logs-{job_id}",
                     on_change="rerun"):
        log(job_id, events)
    with st.expander("Spec", key=f"job-spec-{job_id}", on_change="rerun"):
        views.fields({"publishes": job.target_name, "priority": job.priority, "time limit (s)": job.time_limit_s,
                      **job.spec})


#: Events a job's log shows (its steps are the loss curve above it), and how many of the newest.
LOGGED, LOG_LINES = ("log", "evaluate"), 200
#: "365296 bytes" in a log message, and decimals written with five or more places ("0.637899894476263").
BYTES = re.compile(r"\b(\d+) bytes\b")
LONG_DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?:e[-+]?\d+)?(?![\w.])")


def log(job_id: int, events: list[JobEventInfo]) -> None:
    """The job's log as a table that wraps its lines (time, event, what it says in words), and every event as
    the registry keeps it (JSON lines, steps included) behind a download button."""
    rows = log_rows(events)
    if rows.empty:
        st.caption("Nothing logged yet.")
    else:
        st.table(rows.assign(details=rows["details"].map(markdown_text)), hide_index=True)
    if said := log_caption(events, len(rows)):
        st.caption(said)
    st.download_button(f"Download the raw log ({formats.counted(len(events), 'event')}, JSON lines)", raw_log(events),
                       file_name=f"job-{job_id}-events.jsonl", mime="application/jsonl", key=f"raw-log-{job_id}",
                       on_click="ignore", disabled=not events)


def log_caption(events: list[JobEventInfo], shown: int) -> str:
    """What the log table leaves out, or "": the table listed 5 events beside a button for the raw log's 20, the
    other 15 unsaid (a dashboard walk, session 48): the newest lines only, and the events of other kinds (the
    training steps, drawn as the loss curve)."""
    logged = sum(e.kind in LOGGED for e in events)
    steps = sum(e.kind == "step" for e in events)
    others = len(events) - logged - steps
    unlisted = ([formats.counted(steps, "training step") + " (the loss curve above)"] if steps else []) + (
        [formats.counted(others, "other event")] if others else [])
    return " ".join(([f"The newest {shown:,} of {logged:,} log lines."] if logged > shown else [])
                    + ([f"Not listed: {' and '.join(unlisted)}; the raw log has every event."] if unlisted else []))


def raw_log(events: list[JobEventInfo]) -> str:
    """Every event as the registry keeps it, one JSON object a line (time, kind, data), steps included."""
    return "".join(json.dumps({"at": e.at.isoformat(), "kind": e.kind, "data": e.data}) + "\n" for e in events)


def log_rows(events: list[JobEventInfo]) -> pd.DataFrame:
    """The newest LOG_LINES log and evaluate events: time, event kind, and what it says (event_text)."""
    rows = [{"time": f"{e.at:%H:%M:%S}", "event": e.kind, "details": event_text(e.kind, e.data)}
            for e in events if e.kind in LOGGED]
    return pd.DataFrame(rows[-LOG_LINES:], columns=["time", "event", "details"])


def event_text(kind: str, data: dict[str, Any]) -> str:
    """An event in words: a log line's message (message_text); any other event's fields as 'step 50, eval loss
    0.6379, eval accuracy 0.8125' (the step first, names with spaces, numbers as formats.number writes them)."""
    if kind == "log" and isinstance(data.get("message"), str):
        return message_text(data["message"])
    ordered = sorted(data.items(), key=lambda item: item[0] != "step")
    return ", ".join(f"{key.replace('_', ' ')} {value_text(key, value)}" for key, value in ordered) or formats.MISSING


def value_text(key: str, value: object) -> str:
    """A field's value: a step as a whole number, a size in KB/MB, text as readable writes it, numbers to four
    significant digits."""
    if key == "step" and isinstance(value, float) and value.is_integer():
        return formats.count(int(value))
    if key.endswith(("bytes", "size")) and isinstance(value, int) and not isinstance(value, bool):
        return formats.size(value)
    if isinstance(value, str):
        return readable(value)
    return formats.number(value)


def message_text(message: str) -> str:
    """A log message on one line: a traceback as its last line (the error), other text as its first, saying how
    many more lines the raw log has."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return readable(lines[0] if lines else "")
    shown = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return f"{readable(shown)} (and {formats.counted(len(lines) - 1, 'more line')} in the raw log)"


def readable(text: str) -> str:
    """``text`` with sizes in KB/MB ('365296 bytes' -> '365.3 KB') and long decimals to four significant digits
    ('0.637899894476263' -> '0.6379')."""
    text = BYTES.sub(lambda found: formats.size(int(found[1])), text)
    return LONG_DECIMAL.sub(lambda found: formats.number(float(found[0])), text)
