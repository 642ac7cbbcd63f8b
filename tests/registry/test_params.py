"""What a version was trained with (its parameters, MLflow's run params): recorded at publish from a metrics.json's
``params`` or ``--param``, never changed after, shown by `vera show`, compared (the ones that differ), filtered as
``params.<key>`` and gone with their version; on SQLite and PostgreSQL through the service, then through a real
server, the client and `vera`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput
from registry.domain.schemas import MAX_PARAMS, VersionUpdate, compare_params
from registry.services.derived import FileForm
from registry.services.filters import FilterError
from registry.services.registry import Registry
from registry.store import models as m
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread
from tests.registry.test_cli_mistakes import refused, vera
from vera_core.recipes import param_text, published_params


def refs(registry: Registry, text: str) -> list[str]:
    return sorted(v.ref for v in registry.list_versions(filter_text=text).items)


def test_params_are_kept_listed_filtered_and_go_with_their_version(registry: Registry, tmp_path: Path) -> None:
    source = make_adapter(tmp_path / "a")
    first = registry.publish(source, owner="ann", name="clf", base_model="tiny-llama",
                             params={"lr": "0.01", "epochs": "3", "schedule": "cosine", "demo": "true"})
    assert first.params == {"demo": "true", "epochs": "3", "lr": "0.01", "schedule": "cosine"}  # keys sorted
    registry.publish(source, owner="ann", name="clf", base_model="tiny-llama",
                     params={"lr": "0.005", "epochs": "1.5", "schedule": "linear"})
    registry.publish(source, owner="ann", name="other", base_model="tiny-llama")  # none recorded

    assert refs(registry, "params.lr = '0.01'") == ["ann/clf:1"]
    assert refs(registry, "params.lr = 0.01") == ["ann/clf:1"]  # a number compared as its text
    assert refs(registry, "params.lr = 5e-3") == ["ann/clf:2"]  # ... as recorded (0.005)
    assert refs(registry, "params.epochs in (3, 1.5)") == ["ann/clf:1", "ann/clf:2"]
    assert refs(registry, "params.schedule != 'cosine'") == ["ann/clf:2"]  # only versions that have it
    assert refs(registry, "params.schedule like 'COS%'") == ["ann/clf:1"]
    assert refs(registry, "params.lr is null") == ["ann/other:1"]
    assert refs(registry, "params.lr is not null and params.epochs = '3'") == ["ann/clf:1"]
    assert refs(registry, "params.demo = true") == ["ann/clf:1"]  # a switch compared as recorded: 'true'
    for bad, said in (("params.lr < 0.1", "params.lr takes =, !=, like, in, is null, is not null; '<' is not among "
                                          "them. Parameters are text, as recorded: name the values, e.g. params.lr "
                                          "in (0.01, 0.02)."),
                      ("params.lr = 1e999", "expected a finite number, found 1e999"),
                      ("params.LR = '1'", "params.<key> with a key of 1-64 lowercase letters, digits, '.', '_' or "
                                          "'-', found 'params.LR' (did you mean params.lr?)"),
                      (f"params.{'a' * 65} = '1'", "params.<key> with a key of 1-64")):
        with pytest.raises(FilterError, match=re.escape(said)):
            registry.list_versions(filter_text=bad)

    listed = {v.ref: v.params for v in registry.list_versions(owner="ann").items}
    assert listed["ann/clf:2"] == {"epochs": "1.5", "lr": "0.005", "schedule": "linear"} and listed["ann/other:1"] == {}
    # the fetch path reads them in the same query as the version (lookup.resolve_info)
    assert registry.derived.manifest("ann/clf:1", FileForm())[0].params == first.params
    assert registry.get("ann/clf@latest").params["lr"] == "0.005"

    with pytest.raises(ValidationError, match="params"):  # never changed after publish: no field to change them
        VersionUpdate.model_validate({"params": {"lr": "1"}})
    registry.move("ann/clf", "ann/renamed", actor="ann")
    assert registry.get("ann/renamed:1").params == first.params  # a move keeps them
    registry.delete("ann/renamed:1", actor="ann")
    with registry.db.session() as s:  # they go with their version
        assert s.scalar(select(func.count()).select_from(m.VersionParam)) == 3  # the second version's


@pytest.mark.parametrize(("given", "message"), [
    ({"LR": "0.01"}, "Parameter key 'LR' is not a valid name"),
    ({"lr": 0.01}, "params must be a JSON object of text values"),
    ({"notes": "two\nlines"}, "parameter 'notes' contains the control character '\\\\n'"),
    ({"target_modules": "x" * 501}, "parameter 'target_modules' must be text of at most 500 characters \\(it has "
                                    "501\\)"),
    ({"lr": " "}, "Parameter 'lr' has no value: give one \\(lr=...\\) or leave it out"),
    ({"lr": "\u200b\u3164"}, "Parameter 'lr' has no value"),  # nothing that shows
    ({"lr": "0.0\u200b1"}, "parameter 'lr' holds U\\+200B, a character that shows as nothing \\(ZERO WIDTH SPACE\\)"),
    ({f"k{i}": "v" for i in range(MAX_PARAMS + 1)}, f"at most {MAX_PARAMS} parameters"),
], ids=["upper-case-key", "number", "newline", "too-long", "empty", "invisible", "zero-width", "too-many"])
def test_bad_params_are_refused_and_change_nothing(registry: Registry, tmp_path: Path, given: dict[str, Any],
                                                   message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="bad", base_model="tiny-llama",
                         params=given)
    assert registry.list_versions(owner="ann").items == []
    with registry.db.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Blob)) == 0  # no orphan blob


def test_the_params_that_differ_are_those_of_versions_that_record_any() -> None:
    def version(ref: str, **params: str) -> Any:
        return type("V", (), {"ref": ref, "params": params})()

    one, two = version("a:1", lr="0.01", r="8", seed="0"), version("a:2", lr="0.02", r="8", epochs="2")
    assert compare_params([one, two]).differing == ["epochs", "lr", "seed"]  # a key one lacks differs
    assert compare_params([one, version("a:3")]).differing == []  # one records none: nothing to compare
    assert compare_params([one, version("a:4", lr="0.01", r="8", seed="0"), version("a:5")]).differing == []
    # a metrics.json's params as a version keeps them: text as it is, other values as JSON, lists joined
    assert published_params({"params": {"lr": 0.01, "unset": None, "on": True, "t": ["q", "v"], "s": "x"}}) == {
        "lr": "0.01", "on": "true", "t": "q,v", "s": "x"}  # an unset one (null) left out
    assert published_params({"params": ["lr"]}) == published_params({}) == {}
    assert len(param_text("q" * 600)) == 500 and param_text("q" * 600).endswith("...")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("params")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as base:
        yield {"url": base, "root": root, "source": make_adapter(root / "adapter")}


def test_params_through_http_the_client_and_vera(server: dict[str, Any]) -> None:
    url, root = server["url"], server["root"]
    # a metrics.json as `vera train` writes it (its params) and as another tool might (params beside the metrics)
    trained = root / "metrics.json"
    trained.write_text(json.dumps({"final_eval": {"accuracy": 0.9}, "task": "classification",
                                   "params": {"lr": "0.01", "epochs": "3", "r": "256"}}))
    published = vera("publish", str(server["source"]), "--name", "ann/http", "--base-model", "tiny-llama",
                     "--metrics", str(trained), "--param", "epochs=4", "--param", "warmup=0.1", url=url)
    assert published.returncode == 0, published.stderr
    assert "did not record the" not in published.stderr
    other = root / "other.json"
    other.write_text(json.dumps({"accuracy": 0.8, "params": {"lr": 0.02, "epochs": 4, "r": 256}}))
    second = vera("publish", str(server["source"]), "--name", "ann/http", "--base-model", "tiny-llama",
                  "--metrics", str(other), url=url)
    assert second.returncode == 0, second.stderr
    with RegistryClient(url, cache=False) as client:
        first = client.get("ann/http:1")
        assert first.params == {"epochs": "4", "lr": "0.01", "r": "256", "warmup": "0.1"}  # --param wins
        assert "params" not in first.metrics
        kept = client.get("ann/http:2")
        assert kept.params == {"epochs": "4", "lr": "0.02", "r": "256"} and kept.metrics == {"accuracy": 0.8}
        assert [v.ref for v in client.list_versions(filter="params.lr = 0.02").items] == ["ann/http:2"]
    shown = vera("show", "ann/http:1", url=url)
    rows = re.findall(r"^param (\S+) +(\S+) *$", shown.stdout, re.M)  # a row each, as metrics are
    assert rows == [("epochs", "4"), ("lr", "0.01"), ("r", "256"), ("warmup", "0.1")], shown.stdout
    compared = vera("compare", "ann/http:1", "ann/http:2", url=url)
    assert compared.returncode == 0, compared.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in compared.stdout.splitlines() if line.count("│") >= 4 and line.split("│")[1].strip()}
    assert rows["lr"] == ["0.01", "0.02"] and rows["warmup"] == ["0.1", "-"] and "epochs" not in rows
    assert "the 2 parameters all share are left out" in " ".join(compared.stdout.split())
    listed = vera("ls", "--filter", "params.warmup is not null", "--json", url=url)
    assert [v["ref"] for v in json.loads(listed.stdout)["items"]] == ["ann/http:1"]
    # chosen columns, as MLflow's runs table has them; a --sort metric shown without asking
    table = vera("ls", "ann/http", "--show", "params.lr", "--show", "params.warmup", "--sort", "-metrics.accuracy",
                 url=url)
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "params.lr" in line)
    assert header.split("┃")[-4:-1] == [" params.lr ", " params.warmup ", " metrics.accuracy "], header
    [row] = [line.split("│") for line in table.stdout.splitlines() if "ann/http:2" in line]  # only it has accuracy
    assert [cell.strip() for cell in row[-4:-1]] == ["0.02", "-", "0.8"]
    refused(vera("ls", "--show", "lr", url=url), "--show 'lr': give metrics.<key>, params.<key> or properties.<key>")
    empty = vera("ls", "--filter", "params.lr = 'nope' and properties.x = 'y'", url=url)
    assert "params.<key> and properties.<key> clauses match only versions that record" in \
        " ".join(empty.stdout.split())
    unspaced = vera("ls", "--filter", "params.lr='nope'", url=url)  # a clause without spaces hinted at as well
    assert "params.<key> clauses match only versions that record" in " ".join(unspaced.stdout.split())
    # an `is null` clause matches the versions without the key: no such hint for it (a docs audit, session 52)
    unrecorded = vera("ls", "--filter", "params.lr IS NULL and owner = 'nobody'", url=url)
    assert "no versions match" in unrecorded.stdout and "clauses match only" not in unrecorded.stdout
    # refused before anything is sent, every problem at once: no KEY=VALUE, a key given twice, a bad key, no value
    publish = ("publish", str(server["source"]), "--name", "ann/http", "--base-model", "tiny-llama")
    refused(vera(*publish, "--param", "LR=1", "--param", "x", "--param", "lr=1", "--param", "lr=2", "--param",
                 "warmup=", url=url),
            "Parameter 'x' is not KEY=VALUE, e.g. lr=0.01.", "Parameter 'lr' is given more than once ('1' and '2')",
            "Parameter key 'LR' is not a valid name", "Parameter 'warmup' has no value")
    bad_file = root / "bad.json"
    bad_file.write_text(json.dumps({"final_eval": {}, "params": {"Bad Key": "1"}}))
    refused(vera(*publish, "--metrics", str(bad_file), url=url),
            f"--metrics {bad_file}: its params: Parameter key 'Bad Key' is not a valid name", "Nothing was uploaded")
    # a key given twice in the form's JSON: refused, not one value dropped unseen (an outsider's walk)
    source = server["source"]
    with (source / "adapter_config.json").open("rb") as config, \
            (source / "adapter_model.safetensors").open("rb") as weights:
        twice = httpx.post(f"{url}/api/v1/adapters/ann/http/versions", files={
            "adapter_config": ("adapter_config.json", config), "adapter_model": ("adapter_model.safetensors", weights)},
            data={"base_model": "tiny-llama", "params": '{"lr": "0.01", "lr": "0.02"}'})
    assert twice.status_code == 422 and "params gives the key 'lr' more than once; give each key once." in twice.text
    # a form field given twice: refused, not the first dropped unsaid (an outsider's walk, session 42)
    with (source / "adapter_config.json").open("rb") as config, \
            (source / "adapter_model.safetensors").open("rb") as weights:
        doubled = httpx.post(f"{url}/api/v1/adapters/ann/http/versions", files={
            "adapter_config": ("adapter_config.json", config), "adapter_model": ("adapter_model.safetensors", weights)},
            data={"base_model": "tiny-llama", "tags": ["one", "two"], "description": ["a", "b"]})
    assert doubled.status_code == 422, doubled.text
    assert "The form gives 'description', 'tags' more than once; give each field once" in doubled.json()["detail"]
    with RegistryClient(url, cache=False) as client:
        assert [v.ref for v in client.list_versions(owner="ann").items] == ["ann/http:2", "ann/http:1"]
    plain = vera(*publish, url=url)  # a version without parameters says so
    assert plain.returncode == 0, plain.stderr
    assert re.search(r"^params +- \(none recorded\)", vera("show", "ann/http:3", url=url).stdout, re.M)
