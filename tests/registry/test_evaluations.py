"""Evaluations recorded after publish (registry/services/evaluations.py): their numbers join the version's metrics
under their name, where search, sort and listings read them as any metric; a name is taken once (published metrics
and earlier evaluations never change); deleting one removes only what it added; recordings at the same moment lose
none of each other's numbers; each change audited. On SQLite and PostgreSQL, then over HTTP with tokens, and the
`vera eval` command line with lm-evaluation-harness's results file."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from registry.cli import app
from registry.client import RegistryClient
from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.schemas import EvaluationRecord
from registry.services.registry import Registry
from registry.store.models import VersionEvaluation
from tests.registry.adapters import make_adapter
from tests.registry.servers import issued_tokens, registry_in_thread

#: what `lm_eval --output_path` writes, in brief: two tasks, a metric with another filter, a standard error "N/A"
LM_EVAL_RESULTS: dict[str, Any] = {
    "results": {"hellaswag": {"alias": "hellaswag", "acc,none": 0.41, "acc_stderr,none": 0.0049,
                              "acc_norm,none": 0.53, "acc_norm_stderr,none": 0.005},
                "gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.12, "exact_match_stderr,strict-match": "N/A",
                          "exact_match,flexible-extract": 0.15}},
    "versions": {"hellaswag": 1.0, "gsm8k": 3.0}, "n-shot": {"hellaswag": 0, "gsm8k": 5},
    "n-samples": {"hellaswag": {"original": 10042, "effective": 10042}, "gsm8k": {"original": 1319, "effective": 100}},
    "config": {"model": "local-completions", "model_args": "model=alice/e:1,base_url=http://h:8766/v1/completions",
               "limit": None, "batch_size": 1},
    "lm_eval_version": "0.4.13", "date": 1764670000.0,
}


@pytest.fixture
def published(registry: Registry, tmp_path: Path) -> Registry:
    source = make_adapter(tmp_path / "a")
    registry.publish(source, owner="alice", name="e", base_model="tiny-llama",
                     metrics={"accuracy": 0.9, "arc.easy": 0.5, "mmlu": 0.3})  # arc.easy: a dotted published key
    registry.publish(source, owner="alice", name="f", base_model="tiny-llama")
    return registry


def test_an_evaluation_joins_the_versions_metrics_where_search_and_sort_find_it(published: Registry) -> None:
    info = published.evaluations.record("alice/e:1", EvaluationRecord(
        name="hellaswag", metrics={"acc": 0.41, "acc_norm": 0.53, "by_split": {"val": 0.4}, "note": "zero-shot"},
        details={"harness": "lm-evaluation-harness", "n_shot": 0}), actor="alice")
    assert (info.ref, info.name, info.recorded_by, info.details["n_shot"]) == ("alice/e:1", "hellaswag", "alice", 0)
    assert published.get("alice/e:1").metrics == {
        "accuracy": 0.9, "arc.easy": 0.5, "mmlu": 0.3,
        "hellaswag": {"acc": 0.41, "acc_norm": 0.53, "by_split": {"val": 0.4}, "note": "zero-shot"}}
    published.evaluations.record("alice/f:1", EvaluationRecord(name="hellaswag", metrics={"acc": 0.3}),
                                 actor="alice")
    found = published.list_versions(filter_text="metrics.hellaswag.acc > 0.35")
    assert [v.ref for v in found.items] == ["alice/e:1"]
    assert [v.ref for v in published.list_versions(filter_text="metrics.hellaswag.by_split.val = 0.4").items] == [
        "alice/e:1"]
    assert [v.ref for v in published.list_versions(sort="metrics.hellaswag.acc").items] == ["alice/f:1", "alice/e:1"]
    assert [e.name for e in published.evaluations.evaluations("alice/e@latest")] == ["hellaswag"]
    events = [e for e in published.audit("alice/e") if e.action == "version-evaluate"]
    assert events[0].actor == "alice" and events[0].detail["name"] == "hellaswag"


def test_a_name_is_taken_once_and_published_metrics_never_change(published: Registry) -> None:
    record = EvaluationRecord(name="arc_easy", metrics={"acc": 0.6})
    published.evaluations.record("alice/e:1", record, actor="alice")
    with pytest.raises(Conflict, match=r"already has 'arc_easy': an evaluation recorded by alice on .* delete that "
                                       r"evaluation first \(vera eval delete alice/e:1 arc_easy\)"):
        published.evaluations.record("alice/e:1", EvaluationRecord(name="arc_easy", metrics={"acc": 0.9}),
                                     actor="bob")
    with pytest.raises(Conflict, match="'mmlu': a metric it was published with.*published metrics never change"):
        published.evaluations.record("alice/e:1", EvaluationRecord(name="mmlu", metrics={"x": 1}), actor="alice")
    with pytest.raises(NotFound, match="no evaluation named 'mmlu' \\(it is a metric the version was published"):
        published.evaluations.delete("alice/e:1", "mmlu", actor="alice")
    assert published.get("alice/e:1").metrics == {"accuracy": 0.9, "arc.easy": 0.5, "mmlu": 0.3,
                                                  "arc_easy": {"acc": 0.6}}
    with pytest.raises(Conflict, match="was published with the metric 'arc.easy', under the name 'arc'"):
        published.evaluations.record("alice/e:1", EvaluationRecord(name="arc", metrics={"easy": 1}), actor="alice")
    published.evaluations.delete("alice/e:1", "arc_easy", actor="alice")
    assert published.get("alice/e:1").metrics == {"accuracy": 0.9, "arc.easy": 0.5, "mmlu": 0.3}
    assert [v.ref for v in published.list_versions(filter_text="metrics.`arc.easy` = 0.5").items] == ["alice/e:1"]
    assert published.list_versions(filter_text="metrics.arc_easy.acc > 0").items == []
    assert [v.ref for v in published.list_versions(filter_text="metrics.accuracy > 0.5").items] == ["alice/e:1"]
    published.evaluations.record("alice/e:1", EvaluationRecord(name="arc_easy", metrics={"acc": 0.7}),
                                 actor="alice")  # recorded again once deleted
    assert published.get("alice/e:1").metrics["arc_easy"] == {"acc": 0.7}
    actions = [e.action for e in published.audit("alice/e")]
    assert actions[:3] == ["version-evaluate", "version-evaluation-delete", "version-evaluate"]


@pytest.mark.parametrize(("metrics", "details", "says"), [
    ({"note": "no numbers"}, {}, "metrics holds no number"),
    ({"a": {"b": {"c": {"d": 1}}}}, {}, "a.b.c.d is nested 4 levels deep; numbers may be at most 3 levels deep"),
    ({"acc": 1, "blob": "x" * 70_000}, {}, "the limit is 65,536"),
    ({"acc": 1}, {"log": "x" * 70_000}, "details is 70,"),
    ({f"m{i}": i for i in range(1001)}, {}, "has 3 numeric metrics and this evaluation adds 1,001: at most 1,000"),
    ({"acc": float("nan")}, {}, "metrics must be JSON of finite numbers, strings, lists and objects: NaN at acc is "
                                "not a number JSON has; drop that entry, or write it as null"),
    ({"acc": 1}, {"curve": [0.5, float("-inf")]}, "details must be JSON .*: -Infinity at curve\\[1\\] is not a number"),
    ({"a": {"b" * 200: 1}}, {}, r"characters as a dotted key \(name included\); at most 200"),
    # what a terminal would run: `vera show` and `vera eval ls` print keys and texts (an outsider's, session 38)
    ({"\x1b[2J\x1b[31mRED": 0.5}, {}, r"metrics's key '\\x1b\[2J.*' contains the control character '\\x1b'"),
    ({"line1\nFAKE: 1.0": 0.7}, {}, r"metrics's key 'line1\\nFAKE: 1.0' contains the control character '\\n'"),
    ({"p\u202es": 0.7}, {}, "a line separator or a bidirectional override"),
    ({"": 1}, {}, "metrics has an empty key; name each value"),
    ({"acc\u200buracy": 0.99}, {}, r"metrics's key .* contains '.u200b', a character that does not show"),
    ({"acc": 1, "run": "a\x07"}, {}, r"metrics\.run's text 'a.x07' contains the control character"),
    ({"acc": 1}, {"\x1b]8;;http://evil/\x1b\\": "x"}, "details's key .* contains the control character"),
    ({"acc": 1}, {"log": "ok\x1b[2J"}, r"details\.log's text 'ok.x1b\[2J' contains the control character"),
])
def test_bad_evaluations_are_refused_and_change_nothing(published: Registry, metrics: dict[str, Any],
                                                        details: dict[str, Any], says: str) -> None:
    before = published.get("alice/e:1").metrics
    with pytest.raises(InvalidInput, match=says):
        published.evaluations.record("alice/e:1", EvaluationRecord(name="bad", metrics=metrics, details=details),
                                     actor="alice")
    assert published.get("alice/e:1").metrics == before and published.evaluations.evaluations("alice/e:1") == []


def test_details_may_hold_lines_and_metrics_their_labels(published: Registry) -> None:
    """What the plain-text check leaves: details of several lines (a harness's settings), label names as text."""
    details = {"command": "lm_eval --tasks arc_easy\n--num_fewshot 0\tbatch 8", "labels": ["négatif", "positif"]}
    published.evaluations.record("alice/e:1", EvaluationRecord(name="lines", metrics={"acc": 0.5, "note": "ok"},
                                                               details=details), actor="alice")
    assert published.evaluations.evaluations("alice/e:1")[0].details == details


def test_names_the_registry_reads_are_reserved_and_limits_are_exact(published: Registry) -> None:
    """train_loss, eval, labels and the like are read by the registry and the dashboard (a loss curve, labels):
    an evaluation may not take them, even on a version published without them. A version takes exactly 1,000
    numbers; its evaluations are deleted with it."""
    for name in ("train_loss", "eval", "labels", "final_eval"):
        with pytest.raises(InvalidInput, match=f"'{name}' is a name the registry reads in metrics itself"):
            published.evaluations.record("alice/f:1", EvaluationRecord(name=name, metrics={"acc": 1}), actor="alice")
    published.evaluations.record("alice/f:1", EvaluationRecord(name="wide", metrics={f"m{i}": i for i in range(1000)}),
                                 actor="alice")
    assert len(published.get("alice/f:1").metrics["wide"]) == 1000
    published.delete("alice/f:1", actor="alice")
    with published.db.session() as s:
        assert s.scalar(select(func.count()).select_from(VersionEvaluation)) == 0


def test_recordings_at_the_same_moment_lose_none_of_each_others_numbers(published: Registry) -> None:
    errors: list[BaseException] = []
    together = threading.Barrier(6)

    def record(i: int) -> None:
        together.wait()
        try:
            published.evaluations.record("alice/f:1", EvaluationRecord(name=f"task{i}", metrics={"acc": i / 10}),
                                         actor="alice")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert published.get("alice/f:1").metrics == {f"task{i}": {"acc": i / 10} for i in range(6)}
    assert len(published.list_versions(filter_text="metrics.task5.acc = 0.5").items) == 1


def test_evaluations_over_http_and_the_command_line(tmp_path: Path) -> None:
    """Who may record (those who may publish under the owner), who may read (readers of the adapter: a private
    one's are not found by others), the API's statuses, and `vera eval record --lm-eval` with a results file."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        alice, bob = issued_tokens(url, ("alice", ["read", "publish"]), ("bob", ["read", "publish"]))
        source = make_adapter(tmp_path / "a")
        with RegistryClient(base, alice) as client:
            client.publish(source, "alice/e", base_model="tiny-llama")
            client.publish(source, "alice/hidden", base_model="tiny-llama", visibility="private")
            client.set_alias("alice/e:1", "prod")
        path = "/api/v1/adapters/alice/e/versions/prod/evaluations"
        as_bob = {"Authorization": f"Bearer {bob}"}
        refused = httpx.post(f"{base}{path}", json={"name": "x", "metrics": {"acc": 1}}, headers=as_bob)
        assert refused.status_code == 403
        as_alice = {"Authorization": f"Bearer {alice}"}
        for body, status in (({"name": "Bad.Name", "metrics": {"acc": 1}}, 422),
                             ({"name": "x", "metrics": {"acc": 1}, "extra": 1}, 422),
                             ({"name": "x", "metrics": {"acc": 1}}, 201), ({"name": "x", "metrics": {"acc": 2}}, 409)):
            answer = httpx.post(f"{base}{path}", json=body, headers=as_alice)
            assert answer.status_code == status, answer.text
        # a key given twice was recorded with its last value, unsaid (an outsider's finding, session 43)
        for raw in (b'{"name": "y", "metrics": {"acc": 0.3, "acc": 0.9}}',
                    b'{"name": "y", "metrics": {"acc": 0.3}, "details": {"n": {"k": 1, "k": 2}}}'):
            twice = httpx.post(f"{base}{path}", content=raw, headers={**as_alice, "Content-Type": "application/json"})
            assert twice.status_code == 422, twice.text
            assert "gives the key " in twice.json()["detail"] and "more than once" in twice.json()["detail"]
        stranger = httpx.post(f"{base}{path}", content=b'{"name": "y", "metrics": {"a": 1, "a": 2}}',
                              headers={**as_bob, "Content-Type": "application/json"})
        assert stranger.status_code == 422  # read as JSON first, as any body is (registry.api.bodies)
        assert httpx.post(f"{base}{path}", content=b'{"name": "y", "metrics": {"a": 1}}', headers={
            **as_bob, "Content-Type": "application/json"}).status_code == 403
        listed = httpx.get(f"{base}{path}", headers=as_bob).json()
        assert [(e["ref"], e["name"], e["metrics"]) for e in listed] == [("alice/e:1", "x", {"acc": 1})]
        hidden = "/api/v1/adapters/alice/hidden/versions/1/evaluations"
        assert httpx.get(f"{base}{hidden}", headers=as_bob).status_code == 404
        assert httpx.post(f"{base}{hidden}", json={"name": "x", "metrics": {"a": 1}}, headers=as_bob).status_code in (
            403, 404)  # as any write to another's adapter
        conflict = httpx.post(f"{base}{path}", json={"name": "x", "metrics": {"acc": 3}}, headers=as_alice)
        assert "already has 'x': an evaluation recorded by alice" in conflict.json()["detail"]
        assert httpx.get(f"{base}{hidden}", headers=as_alice).json() == []
        assert httpx.delete(f"{base}{path}/x", headers=as_bob).status_code == 403
        assert httpx.delete(f"{base}{path}/x", headers=as_alice).status_code == 204
        assert httpx.delete(f"{base}{path}/x", headers=as_alice).status_code == 404

        results = tmp_path / "results.json"
        results.write_text(json.dumps(LM_EVAL_RESULTS))
        runner = CliRunner()
        done = runner.invoke(app, ["eval", "record", "alice/e@prod", "--lm-eval", str(results), "--registry", base,
                                   "--token", alice])
        assert done.exit_code == 0, done.output
        assert "alice/e:1: recorded hellaswag (acc 0.41, acc_stderr 0.0049, acc_norm 0.53" in done.output
        with RegistryClient(base, bob) as client:
            metrics = client.get("alice/e:1").metrics
            assert metrics["gsm8k"] == {"exact_match_strict-match": 0.12, "exact_match_flexible-extract": 0.15}
            assert metrics["hellaswag"]["acc_norm"] == 0.53
            gsm8k = next(e for e in client.evaluations("alice/e:1") if e.name == "gsm8k")
            assert gsm8k.details["n_shot"] == 5 and gsm8k.details["samples"] == {"original": 1319, "effective": 100}
            assert gsm8k.details["harness"] == "lm-evaluation-harness" and gsm8k.details["lm_eval_version"] == "0.4.13"
            assert [v.ref for v in client.list_versions(filter="metrics.hellaswag.acc_norm > 0.5").items] == [
                "alice/e:1"]
        listing = runner.invoke(app, ["eval", "ls", "alice/e:1", "--registry", base, "--token", bob])
        assert listing.exit_code == 0 and "hellaswag" in listing.output and "gsm8k" in listing.output
        again = runner.invoke(app, ["eval", "record", "alice/e:1", "--lm-eval", str(results), "--registry", base,
                                    "--token", alice])
        assert again.exit_code != 0 and "alice/e:1 already has gsm8k, hellaswag: delete those" in again.output
        for args, says in ((["alice/e:1", "--lm-eval", str(results), "name"], "leave NAME and --details out"),
                           (["alice/e:1"], "Give --metrics FILE with a NAME, or --lm-eval"),
                           (["alice/e:1", "--metrics", str(results)], "Name the evaluation")):
            wrong = runner.invoke(app, ["eval", "record", *args, "--registry", base, "--token", alice])
            assert wrong.exit_code != 0 and says in wrong.output, wrong.output
        (tmp_path / "other.json").write_text("{\"acc\": 0.5}")
        bare = runner.invoke(app, ["eval", "record", "alice/e:1", "--lm-eval", str(tmp_path / "other.json"),
                                   "--registry", base, "--token", alice])
        assert bare.exit_code != 0 and "not an lm-evaluation-harness results file" in bare.output
        gone = runner.invoke(app, ["eval", "delete", "alice/e:1", "gsm8k", "--registry", base, "--token", alice])
        assert gone.exit_code == 0
        with RegistryClient(base, alice) as client:
            assert "gsm8k" not in client.get("alice/e:1").metrics


def test_lm_eval_results_keep_numbers_only_and_no_credentials() -> None:
    """NaN (lm-eval's mean of nothing) and "N/A" are no numbers; a credential in model_args is masked (readers of
    the adapter see the details); two tasks that would share one name are refused, not merged."""
    from registry.cli.evals import lm_eval_results

    data = {"results": {"tiny": {"alias": "tiny", "acc,none": 0.5, "ppl,none": float("nan"), "sample_len": 6,
                                 "acc_stderr,none": "N/A"}},
            "config": {"model": "local-completions",
                       "model_args": "model=a/b:1,base_url=http://h/v1/completions,api_key=sk-secret,auth_token=t0k"}}
    metrics, details = lm_eval_results(data)["tiny"]
    assert metrics == {"acc": 0.5} and details["sample_len"] == 6
    assert "sk-secret" not in details["model_args"] and "t0k" not in details["model_args"]
    assert details["model_args"].startswith("model=a/b:1,base_url=http://h/v1/completions,api_key=***")
    with pytest.raises(InvalidInput, match="Tasks 'ARC' and 'arc' would both be recorded as 'arc'"):
        lm_eval_results({"results": {"ARC": {"acc,none": 1.0}, "arc": {"acc,none": 0.5}}})
