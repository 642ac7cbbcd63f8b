"""The Train page (web_ui/train.py, web_ui/jobs.py) through AppTest against a real registry server with tokens: a
job's log in words with the raw log kept, the hint for a job no worker claims, the eval loss the table shows, Publish
as checked alike in the browser and on the server, and what the page asks the registry."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from registry.client import RegistryClient
from registry.domain.training_spec import training_spec
from registry.store import models as m
from registry.store.database import Database
from tests.registry.adapters import make_adapter
from tests.registry.servers import issued_tokens, registry_in_thread
from tests.web_ui.test_pages import counted, page, texts, worker_jobs
from web_ui import charts, jobs, train


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("train")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        [token] = issued_tokens(url, ("alice", ["read", "publish"]))
        with RegistryClient(base, token) as client:
            client.publish(make_adapter(root / "a", seed=0, r=4), "alice/trained", base_model="tiny-llama",
                           metrics={"test": {"accuracy": 0.875}, "final_eval": {"loss": 0.25, "accuracy": 0.9}})
        yield {"url": base, "token": token, "db": url, "blobs": root / "blobs"}


LOGGED = [("log", {"message": "job 1: stored the checkpoint at step 50 in the registry (365296 bytes): a later "
                              "attempt resumes from it, on this worker or another"}),
          ("step", {"step": 50, "loss": 0.7123456789, "lr": 0.01}),
          ("evaluate", {"step": 50.0, "eval_loss": 0.637899894476263, "eval_accuracy": 0.8125}),
          ("log", {"message": "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                              "RuntimeError: out of memory on purpose"})]


def test_a_jobs_log_is_a_table_in_words_and_the_raw_log_stays_reachable(registry: dict[str, Any]) -> None:
    queue = worker_jobs(registry)
    with RegistryClient(registry["url"], registry["token"]) as client:
        job = client.submit_job("alice/logged", training_spec(demo=True), priority=100)
        queue.claim("test-worker")
        queue.heartbeat(job.id, "test-worker", progress={"phase": "training", "step": 50, "total_steps": 100},
                        events=LOGGED)
        events = client.job_events(job.id)
    at = page("train", registry, query={"job": str(job.id)})
    assert not at.exception
    rows = jobs.log_rows(events)  # after what the registry logged at submission
    assert list(rows.columns) == ["time", "event", "details"] and list(rows["event"])[-3:] == ["log", "evaluate", "log"]
    assert list(rows["details"])[-3:] == [
        "job 1: stored the checkpoint at step 50 in the registry (365.3 KB): a later attempt resumes from it, on this "
        "worker or another",
        "step 50, eval loss 0.6379, eval accuracy 0.8125",  # four significant digits, the step first
        "RuntimeError: out of memory on purpose (and 2 more lines in the raw log)"]  # a traceback's error
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", t) for t in rows["time"])
    drawn = at.table[0].value  # st.table wraps its cells; Markdown characters shown as themselves
    assert list(drawn["details"]) == [jobs.markdown_text(d) for d in rows["details"]]
    assert "0.637899894476263" not in texts(at) and not at.code  # no raw JSON on the page
    # the live curves: the loss, and the task's metric as a chart of its own
    titles = [json.loads(c.proto.spec)["title"]["text"] for c in at.get("vega_lite_chart")]
    assert titles == ["Training and eval loss", "Eval accuracy"]
    download = at.get("download_button")[0]
    assert download.label == f"Download the raw log ({len(events)} events, JSON lines)" and len(events) >= 4
    # what the table leaves out is said (5 events listed beside "20 events" unsaid: a dashboard walk, session 48)
    assert "Not listed: 1 training step (the loss curve above); the raw log has every event." in \
        [c.value for c in at.caption]
    assert jobs.log_caption(events, 1) == f"The newest 1 of {len(rows)} log lines. Not listed: 1 training step " \
        "(the loss curve above); the raw log has every event."
    assert jobs.log_caption([e for e in events if e.kind != "step"], len(rows)) == ""  # all listed: nothing said
    raw = [json.loads(line) for line in jobs.raw_log(events).splitlines()]
    assert [r["data"] for r in raw] == [e.data for e in events] and raw[-2]["data"]["eval_loss"] == 0.637899894476263
    queue.finish(job.id, "test-worker", status="cancelled")


@pytest.mark.parametrize(("kind", "data", "text"), [
    ("log", {"message": "loss 0.123456789 after 1200 steps"}, "loss 0.1235 after 1200 steps"),
    ("log", {"message": "version 1.2.3, 12345 bytes"}, "version 1.2.3, 12.3 KB"),
    ("log", {"message": ""}, ""),
    ("evaluate", {"eval_perplexity": 12345.678, "step": 1200.0}, "step 1,200, eval perplexity 12,346"),
    ("save", {"checkpoint_bytes": 2_500_000}, "checkpoint bytes 2.5 MB"),
    ("evaluate", {}, "—"),
], ids=["decimal", "size", "empty", "step-first", "size-field", "nothing"])
def test_event_text_writes_an_event_in_words(kind: str, data: dict[str, Any], text: str) -> None:
    assert jobs.event_text(kind, data) == text


def backdate(registry: dict[str, Any], job_id: int, by: timedelta) -> None:
    """Move a job's submission into the past, as if it had waited ``by`` in the queue."""
    db = Database(registry["db"])
    with db.session() as s:
        s.execute(update(m.Job).where(m.Job.id == job_id).values(created_at=datetime.now(UTC) - by))
    db.engine.dispose()


def test_a_job_no_worker_claims_says_how_to_start_one(registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["token"]) as client:
        job = client.submit_job("alice/waiting", training_spec(demo=True))
        fresh = page("train", registry, query={"job": str(job.id)})
        assert not fresh.exception and "No worker has claimed" not in texts(fresh)  # just queued: no hint yet
        backdate(registry, job.id, timedelta(minutes=2))
        at = page("train", registry, query={"job": str(job.id)})
        hint = next(w.value for w in at.warning if "No worker has claimed" in w.value)
        assert hint.startswith(f"No worker has claimed job {job.id} in the 2 min ") and "`vera worker`" in hint
        assert "`vera up`" in hint
        client.cancel_job(job.id)
        assert "No worker has claimed" not in texts(page("train", registry, query={"job": str(job.id)}))

        queued = client.job(job.id).model_copy(update={"status": "queued"})
        since = queued.created_at
        assert jobs.unclaimed_hint(queued, since + jobs.UNCLAIMED_AFTER - timedelta(seconds=1)) is None
        assert jobs.unclaimed_hint(queued, since + jobs.UNCLAIMED_AFTER) is not None
        later = queued.model_copy(update={"not_before": since + timedelta(minutes=5)})  # queued again after a loss
        assert jobs.unclaimed_hint(later, since + timedelta(minutes=5, seconds=10)) is None
        gpus = jobs.unclaimed_hint(queued.model_copy(update={"gpus": 2}), since + timedelta(minutes=1))
        assert gpus is not None and "It asks for 2 GPUs: only a worker that owns as many claims it" in gpus


def test_the_jobs_table_eval_loss_is_the_published_versions(registry: dict[str, Any]) -> None:
    """Not the job's last training loss: the published version's final_eval loss, as its column's help says."""
    queue = worker_jobs(registry)
    with RegistryClient(registry["url"], registry["token"]) as client:
        job = client.submit_job("alice/trained", training_spec(demo=True), priority=100)
    queue.claim("test-worker")
    queue.heartbeat(job.id, "test-worker", progress={"phase": "done", "loss": 0.9876})  # a step's loss
    queue.finish(job.id, "test-worker", status="succeeded", result_version=("alice/trained", 1))
    at = page("train", registry, query={"job": str(job.id)})
    table = next(d for d in at.dataframe if "eval loss" in d.value.columns)
    row = table.value.set_index("publishes").loc["alice/trained"]
    assert row["eval loss"] == pytest.approx(0.25) and row["test accuracy"] == pytest.approx(0.875)
    columns = json.loads(table.proto.columns)
    assert columns["eval loss"]["help"] == jobs.EVAL_LOSS_HELP
    # the Adapter page's four significant digits (0.8750, 0.2500), not a fixed 0.875 beside its 0.8750
    assert columns["test accuracy"]["type_config"]["format"] == columns["eval loss"]["type_config"]["format"] == "%.4f"
    assert "best evaluation" in jobs.EVAL_LOSS_HELP and "last" not in jobs.EVAL_LOSS_HELP


def test_a_job_whose_result_was_deleted_says_so_on_its_page(registry: dict[str, Any], tmp_path: Path) -> None:
    """Its page said nothing of a result once the version went (as if the job had published none)."""
    queue = worker_jobs(registry)
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.publish(make_adapter(tmp_path / "gone", seed=2, r=4), "alice/gone", base_model="tiny-llama")
        job = client.submit_job("alice/gone", training_spec(demo=True), priority=100)
        queue.claim("test-worker")
        queue.finish(job.id, "test-worker", status="succeeded", result_version=("alice/gone", 1))
        client.delete("alice/gone:1")
    at = page("train", registry, query={"job": str(job.id)})
    assert not at.exception and not at.success
    assert [i.value for i in at.info] == ["Published a version of alice/gone that was deleted since (the logs below "
                                          "name it)."]


def test_a_long_name_in_the_jobs_table_is_cut_with_an_ellipsis(registry: dict[str, Any]) -> None:
    """A walk's finding (session 31): a long name filled the publishes column and pushed the result link out of the
    frame, clipped with no sign of it. The column is at most PUBLISHES_PX wide, the name cut with '…'."""
    long_name = "alice/" + "a-very-long-adapter-name-" * 2 + "that-ends-here"  # 64 characters
    with RegistryClient(registry["url"], registry["token"]) as client:
        job = client.submit_job(long_name, training_spec(demo=True))
    at = page("train", registry, query={"job": str(job.id)})
    table = next(d for d in at.dataframe if "publishes" in d.value.columns)
    shown = table.value.set_index("job")["publishes"]
    [cut] = [name for name in shown if name.startswith("alice/a-very-long")]
    assert cut.endswith("…") and long_name.startswith(cut[:-1]) and len(cut) < len(long_name)
    assert json.loads(table.proto.columns)["publishes"]["width"] == jobs.PUBLISHES_PX
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.cancel_job(job.id)


def test_every_out_of_range_number_is_said_beside_launch(registry: dict[str, Any]) -> None:
    """A newcomer's walk: the browser refused an out-of-range number with its reason in a tooltip only, and a refusal
    named one problem per Launch. The boxes take any number; Launch says every problem at once, under the button,
    and sends nothing."""
    at = page("train", registry)
    numbers = {n.label: n for n in at.number_input}
    assert set(numbers) == set(train.NUMBER_BOUNDS)
    assert not any(n.proto.has_min or n.proto.has_max for n in numbers.values())  # no tooltip-only refusal
    next(t for t in at.text_input if t.label == "Publish as").set_value("alice/ranged")
    numbers["Rank r"].set_value(5000)
    numbers["Epochs"].set_value(0.0)
    numbers["Head learning rate"].set_value(2.5)
    numbers["Eval examples"].set_value(0)  # may be empty (all), never 0
    numbers["Max steps"].set_value(0)  # may be empty (by epochs), never 0
    numbers["Patience"].set_value(0)  # in the More settings box, which may be closed: said so
    next(c for c in at.checkbox if c.label.startswith("Demo task")).uncheck()
    with RegistryClient(registry["url"], registry["token"]) as client:
        before = len(client.jobs())
        next(b for b in at.button if b.label == "Launch").click()
        at.run()
        assert len(client.jobs()) == before  # nothing was sent
    assert not at.exception and [e.value for e in at.error] == [
        "Not launched:\n"
        "- Rank r 5,000 is out of range: type a number from 1 to 4,096.\n"
        "- Epochs 0 is out of range: type a number from 0.05 to 100.\n"
        "- Head learning rate 2.5 is out of range: type a number from 1e-06 to 1.\n"
        "- Eval examples 0 is out of range: type a number from 1 to 1,000,000,000.\n"
        "- Max steps 0 is out of range: type a number from 1 to 10,000,000.\n"
        "- Patience 0 (under **More settings**) is out of range: type a number from 1 to 10,000.\n"
        "- No dataset: tick **Demo task** for the offline demo, or upload a .csv or .jsonl file."]
    shown = [n.type if n.type != "button" else n.label for n in at.main if n.type in ("button", "error")]
    assert shown.index("Launch") + 1 == shown.index("error")  # right under the button


ROWS = b"hi,1\nho,0\n"  # two labels: a dataset the registry's reader takes


@pytest.mark.parametrize(("name", "data", "columns", "said"), [
    ("a.csv", b"text,label\n" + ROWS, ("", ""), None),
    ("a.csv", b"\xef\xbb\xbftext,label\n" + ROWS, ("text", "label"), None),  # a spreadsheet's byte-order mark
    ("reviews.csv", b"sentence,sentiment\n" + ROWS, ("", ""),
     "reviews.csv has columns ['sentence', 'sentiment'] but not ['text', 'label']: type its column of texts in "
     "**Text column** and of labels in **Label column**."),
    ("reviews.csv", b"sentence,sentiment\n" + ROWS, (" sentence ", "sentiment"), None),
    ("r.csv", b"sentence,label\n" + ROWS, ("", "label"), "r.csv has columns ['label', 'sentence'] but not ['text']"),
    ("r.csv", b"sentence,label\n" + ROWS * 20_000, ("", ""), "r.csv has columns"),  # larger than the page reads
    ("r.csv", b'"sen\ntence",label\n' + ROWS, ("sen\ntence", ""), None),  # a quoted header field over two lines
    ("r.csv", b'"' + b"x\n" * (train.HEAD_BYTES // 2) + b'",label\n' + ROWS, ("", ""), None),  # a header past it
    ("r.csv", b"x" * (train.HEAD_BYTES + 1), ("", ""), None),  # a first line longer than the page reads
    ("r.csv", "text,label\nhi,1\nho,0\n".encode("utf-16"), ("", ""), None),  # not UTF-8: the registry says so
    ("r.csv", b"", ("", ""), None),  # no rows: the registry says so
    ("r.jsonl", b'\n{"sentence": "good", "label": "pos"}\n{"sentence": "bad", "label": "neg"}\n',
     ("sentence", "label"), None),
    ("r.JSONL", b'{"body": "good", "label": "pos"}\n', ("", ""),
     "r.JSONL has columns ['body', 'label'] but not ['text']"),
    ("r.jsonl", b'["good", "pos"]\n', ("", ""), None),  # not an object a line: the registry says so
    ("r.jsonl", b"{not json\n", ("", ""), None),
    ("r.jsonl", b"[" * 5000 + b"]" * 5000 + b"\n", ("", ""), None),  # nested past the parser (a RecursionError)
])
def test_launch_says_which_columns_an_upload_lacks_with_the_other_problems(
        name: str, data: bytes, columns: tuple[str, str], said: str | None, tmp_path: Path) -> None:
    """The columns the form names are looked for in the upload's first row on Launch, so that a dataset of other
    columns is said with every other problem of the form at once (it was the registry's refusal, one per Launch);
    the page refuses only what the registry's own reader (vera_core.data) refuses too."""
    from vera_core.data import DatasetError, read_examples

    problem = train.column_problem(name, data, *columns)
    assert (problem is None) if said is None else (problem is not None and problem.startswith(said)), problem
    (tmp_path / name).write_bytes(data)
    try:
        read_examples(tmp_path / name, text_column=columns[0].strip() or "text",
                      label_column=columns[1].strip() or "label")
    except DatasetError as exc:
        assert problem is None or "but not" in str(exc), exc  # the registry refuses it for its columns too
    else:
        assert problem is None


@pytest.mark.parametrize("target", ["alice/polarity", " alice/polarity ", "a/b", "alice/pol.v2", "alice/x_y-z",
                                    "alice/pol arity", "Alice/polarity", "alice/x:2", "alice/x@prod", "no slash",
                                    "alice/a..b", "alice/.x", "alice/" + "x" * 65, "a/b/c", "alice/", "/x"])
def test_the_browser_refuses_exactly_the_names_the_page_refuses(target: str) -> None:
    """Publish as is checked in the browser (validate) with all that the page checks before sending: a name the
    browser lets through is never refused on the page, so no refusal stays on screen about another name."""
    in_browser = re.fullmatch(train.TARGET_PATTERN[0], target) is not None
    assert in_browser == (train.target_problem(target) is None)


def test_publish_as_is_required_in_the_browser(registry: dict[str, Any]) -> None:
    at = page("train", registry)
    box = next(t for t in at.text_input if t.label == "Publish as")
    assert box.proto.required  # an empty box is refused before the form is sent


def test_the_followed_job_is_drawn_from_the_pages_own_listing(registry: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with RegistryClient(registry["url"], registry["token"]) as client:
        job = client.submit_job("alice/listed", training_spec(demo=True))
    listings, reads = counted(monkeypatch, "jobs"), counted(monkeypatch, "job")
    at = page("train", registry, query={"job": str(job.id)})
    assert not at.exception and {m.label: m.value for m in at.metric}["Status"] == "queued"
    assert len(listings) == 1 and reads == []  # the listing started ahead serves the table and the job's view
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.cancel_job(job.id)


def test_max_steps_from_the_form_reach_the_job(registry: dict[str, Any]) -> None:
    """`vera job submit --max-steps` had no box on the page: a short run took Train examples (a walk, session 40)."""
    at = page("train", registry)
    next(t for t in at.text_input if t.label == "Publish as").set_value("alice/short")
    next(n for n in at.number_input if n.label == "Max steps").set_value(20)
    next(b for b in at.button if b.label == "Launch").click()
    at.run()
    assert not at.exception and not at.error
    with RegistryClient(registry["url"], registry["token"]) as client:
        [job] = [j for j in client.jobs() if j.target_name == "alice/short"]
        assert job.spec["training"]["max_steps"] == 20
        client.cancel_job(job.id)


def test_the_more_settings_box_reaches_the_job(registry: dict[str, Any]) -> None:
    """A walk's finding (session 40): the page had no schedule, evaluation or weights-kept settings, which `vera job
    submit` has; its More settings box sends each as the command line would."""
    at = page("train", registry)
    next(t for t in at.text_input if t.label == "Publish as").set_value("alice/tuned")
    boxes = {box.label: box for box in at.selectbox}
    boxes["Schedule"].set_value("cosine")
    boxes["Metric for best"].set_value("loss")
    boxes["Weights published"].set_value("the last step's")
    numbers = {n.label: n for n in at.number_input}
    for label, value in (("Warmup ratio", 0.1), ("Gradient accumulation", 2), ("Max length", 32),
                         ("Training seed", 7), ("Eval every", 10), ("Patience", 3), ("Log every", 5)):
        numbers[label].set_value(value)
    # and what the version it publishes is labelled with (`vera job submit --tag --description`)
    next(t for t in at.text_input if t.label == "Tags (optional)").set_value(" nightly, baseline ,")
    next(t for t in at.text_input if t.label == "Description (optional)").set_value("cosine trial")
    next(b for b in at.button if b.label == "Launch").click()
    at.run()
    assert not at.exception and not at.error
    with RegistryClient(registry["url"], registry["token"]) as client:
        [job] = [j for j in client.jobs() if j.target_name == "alice/tuned"]
        assert {k: job.spec[k] for k in ("seed", "max_length")} == {"seed": 7, "max_length": 32}
        assert {k: v for k, v in job.spec["training"].items() if k not in ("epochs", "batch_size", "lr", "head_lr")
                } == {"schedule": "cosine", "warmup_ratio": 0.1, "gradient_accumulation_steps": 2,
                      "eval_every": 10, "early_stopping_patience": 3, "metric_for_best": "loss",
                      "load_best_at_end": False, "log_every": 5}
        assert (job.result_tags, job.result_description) == (["baseline", "nightly"], "cosine trial")
        client.cancel_job(job.id)
    # left as they are, the box sends the defaults (and no evaluation or patience setting)
    plain = page("train", registry)
    next(t for t in plain.text_input if t.label == "Publish as").set_value("alice/plain")
    next(b for b in plain.button if b.label == "Launch").click()
    plain.run()
    with RegistryClient(registry["url"], registry["token"]) as client:
        [job] = [j for j in client.jobs() if j.target_name == "alice/plain"]
        training = job.spec["training"]
        assert not {"eval_every", "early_stopping_patience", "log_every"} & training.keys()
        assert "load_best_at_end" not in training and training["schedule"] == "linear"
        assert training["metric_for_best"] == "accuracy" and job.spec["seed"] == 0
        assert (job.result_tags, job.result_description) == ([], "")
        client.cancel_job(job.id)


def test_the_registrys_refusal_lists_every_problem_it_found_beside_launch(registry: dict[str, Any]) -> None:
    """What only the registry checks (a base model its jobs train, a Start from the token may read) was said one
    problem per Launch: the registry lists them all (registry.domain.errors.Problems) and the page shows each, in its
    own words, as it shows its own problems."""
    at = page("train", registry)
    next(t for t in at.text_input if t.label == "Publish as").set_value("alice/both")
    next(t for t in at.text_input if t.label == "Base model").set_value("nobody/nothing")
    next(t for t in at.text_input if t.label == "Start from (optional)").set_value("alice/none@prod")
    with RegistryClient(registry["url"], registry["token"]) as client:
        before = len(client.jobs())
        next(b for b in at.button if b.label == "Launch").click()
        at.run()
        assert len(client.jobs()) == before
    assert not at.exception and not at.warning and [e.value for e in at.error] == [
        "Not launched:\n"
        "- Jobs on this registry train only 'minilm' (VERA_JOB_BASE_MODELS); got base_model='nobody/nothing'.\n"
        "- Start from alice/none@prod: no such adapter that you may read. Name a version that Browse lists "
        "(owner/name:N or owner/name@ALIAS)."]


def test_a_finished_jobs_curves_mark_the_step_whose_weights_it_published(registry: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    """As the Adapter page does (a walk, session 42): once the job published, its loss and eval metric charts draw
    a dotted rule at the step its version kept (the best evaluation's, here not the last)."""
    queue = worker_jobs(registry)
    with RegistryClient(registry["url"], registry["token"]) as client:
        client.publish(make_adapter(tmp_path / "kept", seed=3, r=4), "alice/kept", base_model="tiny-llama",
                       metrics={"kept": {"step": 50, "by": "eval_accuracy", "value": 0.8125}})
        job = client.submit_job("alice/kept", training_spec(demo=True), priority=100)
    queue.claim("test-worker")
    queue.heartbeat(job.id, "test-worker", progress={"phase": "training", "step": 100, "total_steps": 100}, events=[
        ("step", {"step": 50, "loss": 0.71}), ("evaluate", {"step": 50.0, "eval_loss": 0.63, "eval_accuracy": 0.81}),
        ("step", {"step": 100, "loss": 0.52}), ("evaluate", {"step": 100.0, "eval_loss": 0.66, "eval_accuracy": 0.8})])
    queue.finish(job.id, "test-worker", status="succeeded", result_version=("alice/kept", 1))
    at = page("train", registry, query={"job": str(job.id)})
    assert not at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert [s["title"]["text"] for s in specs] == ["Training and eval loss", "Eval accuracy"]
    for chart in specs:
        assert charts.KEPT_NOTE in chart["title"]["subtitle"]
        assert [layer for layer in chart["layer"] if layer["mark"]["type"] == "rule"]
    # the rule's step, the version's kept one: Streamlit sends the charts' data apart from their specs, as Arrow
    import pyarrow as pa

    steps = {tuple(pa.ipc.open_stream(d.data.data).read_all().to_pydict().get("step", []))
             for c in at.get("vega_lite_chart") for d in c.proto.datasets}
    assert (50.0,) in steps


def _refresh_against_a_stopped_registry() -> None:
    import streamlit as st

    from registry.client import RegistryUnavailable
    from web_ui import jobs

    st.session_state["registry_url"], st.session_state["token"] = "http://127.0.0.1:9", ""
    jobs._not_refreshed("job 2", RegistryUnavailable("Cannot reach the registry at http://127.0.0.1:9 (ConnectError)."
                                                     " Is it running? Start one with `vera up`, or set "
                                                     "VERA_REGISTRY_URL."))
    jobs._not_refreshed("the jobs", ValueError("something else"))


def test_a_live_panel_that_cannot_reach_the_registry_says_so_in_the_dashboards_words() -> None:
    """The Train page's live panels said the client's words, "set VERA_REGISTRY_URL", which a dashboard user
    cannot set; the other pages say to set the URL in the sidebar (a newcomer's walk, session 54)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_refresh_against_a_stopped_registry).run()
    assert not at.exception
    assert [w.value for w in at.warning] == [
        "Cannot refresh job 2: The registry at http://127.0.0.1:9 cannot be reached. Start one with `vera up` (or "
        "`vera serve`), or set its URL in the sidebar.", "Cannot refresh the jobs: something else"]
