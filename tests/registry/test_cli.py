"""The `vera` command as a user runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from registry.cli.common import ExitCode
from registry.domain.training_spec import parse_target_modules, training_spec
from tests.commands import VERA  # the console script installed beside this interpreter
from tests.conftest import TINY_MODELS
from tests.registry.servers import free_port
from vera_core import PORTABLE_GENERATOR, ProjectionSpec, VeraConfig, VeraModel, fingerprint, generate, save_adapter
from vera_core.recipes import TrainSpec
from vera_core.trainer import TrainingArguments


def vera(*args: str) -> subprocess.CompletedProcess[str]:
    assert VERA.exists(), "the vera console script is not installed (run .ci/setup)"
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(VERA), *args], capture_output=True, text=True, timeout=900, env=env, check=False)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    llama = TINY_MODELS[2]
    model = VeraModel(llama.make(), VeraConfig(r=8, target_modules=llama.targets, save_projection=False))
    return save_adapter(model, tmp_path_factory.mktemp("cli") / "adapter")


def test_inspect_verify_reports_a_reproducible_seed(adapter: Path) -> None:
    result = vera("inspect", str(adapter), "--verify", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["seed_reproducible"] is True
    assert report["regenerated_fingerprint"] == report["recorded_fingerprint"]
    assert report["projection_generator"] == PORTABLE_GENERATOR and report["peft_loadable"] is False
    assert report["adapter_parameters"] == 14 * 8 + 2 * (32 + 16 + 16 + 32 + 48 + 48 + 32)


def test_inspect_verify_fails_when_stored_projections_are_not_the_seeds(adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    result = vera("export-peft", str(adapter), str(out))
    assert result.returncode == 0, result.stderr
    tensors = load_file(str(out / "adapter_model.safetensors"))
    tensors["base_model.vera_B"] = -tensors["base_model.vera_B"]
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    result = vera("inspect", str(out), "--verify")
    assert result.returncode == ExitCode.CHECK_FAILED == 3  # not 2: Click's usage errors
    assert "seed_reproducible        False" in result.stdout
    # and a line that says what failed, as every failed check has (a table row alone: a newcomer's walk, session 38)
    assert " ".join(result.stderr.split()) == (
        f"failed: the seed does not regenerate {out}'s stored projections (the adapter's A and B, or its config's "
        "seed, rank or generator, changed after it was saved); do not trust it, fetch or train it again.")


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    result = vera("inspect", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path} has no adapter_config.json; expected a PEFT adapter folder."
    assert "Traceback" not in result.stderr


def test_projection_fingerprint_and_params() -> None:
    result = vera("projection", "fingerprint", "--r", "16", "--max-in", "64", "--max-out", "48", "--seed", "4294967301")
    assert result.returncode == 0, result.stderr
    spec = ProjectionSpec(PORTABLE_GENERATOR, 2**32 + 5, 16, 64, 48)
    assert result.stdout.strip() == fingerprint(*generate(spec))
    result = vera("params", "--layers", "12", "--d-model", "768", "--r", "1024")
    assert "43,008" in result.stdout


def test_export_lora(adapter: Path, tmp_path: Path) -> None:
    result = vera("export-lora", str(adapter), str(tmp_path / "lora"))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "lora/adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"] == 8
    keys = set(load_file(str(tmp_path / "lora/adapter_model.safetensors")))
    assert "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight" in keys
    assert not any("vera_lambda" in k for k in keys)


def test_a_remote_command_reports_an_unreachable_registry_in_one_line() -> None:
    result = vera("ls", "--registry", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    (None, None), ("", None), (" , ", None),
    ("q_proj,v_proj", ["q_proj", "v_proj"]), (" query , value,", ["query", "value"]),
    ("^.*attn.*$", "^.*attn.*$"), (" ^layers\\.0\\.", "^layers\\.0\\."),
], ids=["none", "empty", "only-commas", "names", "spaces-and-trailing-comma", "regex", "regex-with-space"])
def test_target_modules_are_names_or_one_regex(text: str | None, expected: list[str] | str | None) -> None:
    assert parse_target_modules(text) == expected


def test_the_training_spec_leaves_unset_options_to_the_trainer_and_is_what_train_spec_accepts() -> None:
    spec = training_spec(base_model="minilm", demo=True, r=16, projection_seed=2**64 - 1, generator=PORTABLE_GENERATOR,
                         target_modules="query, value", epochs=0.5, grad_accum=2, patience=3, max_grad_norm=0)
    assert spec == {"base_model": "minilm", "demo": True, "r": 16, "projection_prng_key": 2**64 - 1,
                    "projection_generator": PORTABLE_GENERATOR, "target_modules": ["query", "value"],
                    "training": {"epochs": 0.5, "gradient_accumulation_steps": 2, "early_stopping_patience": 3,
                                 "max_grad_norm": None}}
    checked = TrainSpec(**spec)
    assert TrainingArguments(**checked.training).max_grad_norm is None  # 0: clipping off
    assert training_spec(demo=True, max_grad_norm=0.5)["training"] == {"max_grad_norm": 0.5}
    assert training_spec(demo=True)["training"] == {}  # unset: TrainingArguments' defaults (clipping at 1.0)


def test_version_and_module_entry_points() -> None:
    from importlib.metadata import version

    want = f"vera-registry {version('vera-registry')}"
    assert vera("--version").stdout.strip() == want
    for module in ("registry", "registry.cli"):
        run = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=False)
        assert run.returncode == 0 and run.stdout.strip() == want, (module, run.stderr)
    usage = vera("no-such-command")
    assert usage.returncode == ExitCode.USAGE and "No such command" in usage.stderr
    doctor = subprocess.run([sys.executable, "-m", "vera_core"], capture_output=True, text=True, check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.count(": ok") == 2 and "all devices give the documented projection bits" in doctor.stdout


#: The `vera` script's main, printing at exit which of registry/cli's modules it imported.
VERA_MAIN = ("import atexit, sys; atexit.register(lambda: print('COMMAND MODULES', *sorted(m.rsplit('.', 1)[1] "
             "for m in sys.modules if m.startswith('registry.cli.')), file=sys.stderr)); sys.argv[0] = 'vera'; "
             "from registry.cli import main; main()")


def test_registry_commands_start_without_torch_or_the_database_layer(tmp_path: Path) -> None:
    """`vera ls`, `vera fetch` (of a LoRA export too), `vera job ls` and `vera eval ls` talk HTTP only: they import
    neither torch nor SQLAlchemy (torch alone is a second of start-up), nor the modules of the other commands, so they
    start in a fraction of a second (`vera ls`: 0.42 s here, bench/RESULTS.md)."""
    from registry.cli import COMMANDS
    from registry.client import RegistryClient
    from tests.registry.adapters import make_adapter
    from tests.registry.servers import running_server

    command_modules = {target.split(".")[0] for group in COMMANDS.values() for target in group.values()}
    assert len(command_modules) == 11  # access, admin, catalog, cluster, evals, events, hub, jobs, local, remote, run
    with running_server(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url:
        with RegistryClient(url) as client:
            client.publish(make_adapter(tmp_path / "a"), "kim/fast", base_model="tiny")
        for args in (["ls"], ["fetch", "kim/fast", "--out", str(tmp_path / "out")], ["job", "ls"],
                     ["alias", "kim/fast:1", "prod"], ["eval", "ls", "kim/fast"],
                     ["fetch", "kim/fast", "--as", "lora", "--max-rank", "2", "--out", str(tmp_path / "lora")]):
            run = subprocess.run([sys.executable, "-X", "importtime", "-c", VERA_MAIN, *args, "--registry", url],
                                 capture_output=True, text=True, check=False)
            assert run.returncode == 0, (args, run.stderr[-2000:])
            imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line}
            assert not {"torch", "sqlalchemy", "transformers"} & imported, args
            # of the commands' modules, only the named command's is imported (registry.cli.named)
            modules = set(run.stderr.rsplit("COMMAND MODULES", 1)[1].split())
            assert modules & command_modules == {{"job": "jobs", "eval": "evals"}.get(args[0], "remote")}, (
                args, modules)
        assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
        assert (tmp_path / "lora" / "README.md").is_file()  # a rank-capped LoRA export, its options checked here


def test_the_vera_script_builds_only_the_command_its_arguments_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.cli import COMMANDS, named

    monkeypatch.delenv("_VERA_COMPLETE", raising=False)
    assert named(["ls", "--json"]) == {"": {"ls": "remote.list_versions"}}
    assert named(["job", "ls", "--status", "queued"]) == {"job": {"ls": "jobs.job_ls"}}
    assert named(["job", "--help"]) == {"job": COMMANDS["job"]}
    for everything in ([], ["--help"], ["--version"], ["lss"], ["job-ls"]):
        assert named(everything) is COMMANDS, everything
    for args, code, says in ((["ls", "--help"], 0, "Usage: vera ls"),  # still a group: `vera ls`, not `vera`
                             (["job", "ls", "--help"], 0, "Usage: vera job ls"), (["lss"], 2, "Did you mean 'ls'")):
        run = subprocess.run([sys.executable, "-m", "registry", *args], capture_output=True, text=True, check=False,
                             env={**os.environ, "COLUMNS": "120"})
        assert run.returncode == code and says in run.stdout + run.stderr, (args, run.stdout, run.stderr)
    monkeypatch.setenv("_VERA_COMPLETE", "bash_complete")  # shell completion offers every command
    assert named(["ls"]) is COMMANDS


def test_help_reads_on_80_columns_and_tells_vera_auth_from_vera_token() -> None:
    """Every line within the terminal, option names whole, a command's summary wrapped where the terminal ends (not
    where its docstring's source broke lines), and `vera auth` and `vera token` listed together, each pointing at
    the other."""
    helps = {}
    for args in (["--help"], ["auth", "--help"], ["token", "--help"], ["job", "submit", "--help"], ["train", "--help"],
                 ["token", "create", "--help"], ["auth", "create-token", "--help"]):
        done = subprocess.run([str(VERA), *args], capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "COLUMNS": "80"})
        assert done.returncode == 0 and done.stderr == "", (args, done.stderr)
        assert max(len(line) for line in done.stdout.splitlines()) <= 80, args
        helps[" ".join(args[:-1])] = done.stdout
    assert "--save-projection / --no-save-projection" in helps["train"] and "--text-column <str>" in helps["job submit"]
    listed = " ".join(helps[""].split())
    assert ("auth You, over HTTP from any machine: log in, who you are, your own tokens (any user's, on the "
            "registry's machine: `vera token`). token Any user's tokens, on the registry's machine") in listed
    assert "gc Delete blobs and projections that no version references. serve Run" in listed  # the first sentence
    assert "`vera auth`" in helps["token"] and "`vera token`" in helps["auth"]
    assert "`vera auth create-token`" in helps["token create"] and "`vera token create`" in helps["auth create-token"]


def test_a_registry_that_checks_no_tokens_says_so_and_login_stores_none(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`vera up`'s registry takes every caller for the local user: `vera login --token garbage` said "logged in ...
    as local" and stored it, and a real token of bob's also "as local" (a newcomer's walk, session 40)."""
    from registry.credentials import credentials_path
    from tests.registry.servers import running_server

    monkeypatch.setenv("VERA_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("VERA_TOKEN", raising=False)
    with running_server(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url:
        login = vera("login", "--registry", url, "--token", "garbage")
        who = vera("whoami", "--registry", url)
        minted = vera("auth", "create-token", "--scope", "read", "--registry", url)
    assert login.returncode == 1 and "logged in" not in login.stdout, login.stdout
    assert (f"{url} checks no tokens (VERA_REQUIRE_TOKENS is off, as `vera up` runs it): every caller acts as the "
            "local user, so this token was not checked and is not stored") in " ".join(login.stderr.split())
    assert not credentials_path().exists()
    assert who.returncode == 0 and "this registry checks no tokens (VERA_REQUIRE_TOKENS is off): every caller acts " \
        "as the local user" in " ".join(who.stdout.split())
    assert minted.returncode == 0 and minted.stdout.splitlines()[0].startswith("token 1 for local")
    assert "the token is for 'local', the user every caller acts as. For a person's token, give --user NAME." in \
        " ".join(minted.stderr.split())


def test_vera_compare_of_adapters_peft_wrote_says_to_declare_the_base_then_compares_them(tmp_path: Path) -> None:
    """A PEFT user's walk (session 47): a version PEFT saved (with its projection, PEFT's default) compared with
    itself had '-' for every cosine and "adapts none of its layers" (another base model, or other modules), where its
    layers' input sizes are unknown until the base's shapes are declared."""
    from registry.client import RegistryClient
    from tests.registry.adapters import LLAMA
    from tests.registry.servers import running_server
    from tests.vera_core.test_peft_interop import peft_model, train_a_little

    theirs = peft_model(LLAMA)
    train_a_little(theirs, LLAMA)
    theirs.save_pretrained(tmp_path / "peft")
    with running_server(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url:
        with RegistryClient(url) as client:
            client.publish(tmp_path / "peft", "jo/peft", base_model="llama-peft")
        before = vera("compare", "jo/peft:1", "jo/peft:1", "--registry", url)
        with RegistryClient(url) as client:
            client.register_base_model("llama-peft", LLAMA.make().config.to_dict())
        after = vera("compare", "jo/peft:1", "jo/peft:1", "--registry", url)
    said = " ".join(before.stdout.split())
    assert before.returncode == 0 and "adapts none" not in said, said
    assert ("No cosine with jo/peft:1: a weight delta needs each layer's input size, which adapters PEFT wrote do not "
            "record, and base model llama-peft's layer shapes are not declared. Declare them (`vera base register "
            "llama-peft --config config.json`") in said
    cosines = [line.split("│")[2].strip() for line in after.stdout.splitlines() if line.count("│") >= 3
               and "layers." in line]
    assert after.returncode == 0 and len(cosines) == 14 and set(cosines) == {"1.000"}, after.stdout
    assert "No cosine" not in after.stdout


def test_vera_compare_shows_the_layers_the_first_shares_and_names_a_version_on_another_base_model(
        tmp_path: Path) -> None:
    """One version on another base model shares no layer with the first: the others' cosines are still shown
    (the API's ``with_first``), and that version is named, instead of an empty table."""
    from registry.client import RegistryClient
    from tests.conftest import TINY_MODELS
    from tests.registry.adapters import make_adapter, make_model
    from tests.registry.servers import running_server

    with running_server(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs") as url:
        with RegistryClient(url) as client:
            for seed in (1, 2):
                client.publish(make_adapter(tmp_path / f"l{seed}", seed=seed), f"jo/l{seed}", base_model="tiny-llama",
                               metrics={"test": {"accuracy": 0.9 + seed / 1000}, **({"a_long_metric_name": 1234.5678}
                                                                                      if seed == 1 else {})})
            client.publish(make_adapter(tmp_path / "rob", seed=3, tiny=TINY_MODELS[0]), "jo/rob",
                           base_model="tiny-roberta")
            client.publish(make_adapter(tmp_path / "r4", seed=4, r=4), "jo/r4", base_model="tiny-llama")
            client.publish(tmp_path / "l2", "jo/typo", base_model="tiny-lama")  # a typo: a new base, its shapes
            untrained = make_model(5)
            with torch.no_grad():
                for key, vector in untrained.trainable_parameters().items():
                    if "lambda_b" in key:
                        vector.zero_()  # as VeRA starts: b = 0, no delta
            client.publish(save_adapter(untrained, tmp_path / "zero"), "jo/zero", base_model="tiny-llama")
            expected = client.compare(["jo/l1:1", "jo/l2:1"]).layers
        done = vera("compare", "jo/l1:1", "jo/l2:1", "jo/rob:1", "--registry", url)
        as_json = vera("compare", "jo/l1:1", "jo/l2:1", "--json", "--registry", url)
        apart = vera("compare", "jo/l1:1", "jo/r4:1", "--registry", url)
        typo = vera("compare", "jo/l1:1", "jo/typo:1", "--registry", url)
        zero_second, zero_first = (vera("compare", *refs, "--registry", url) for refs in (("jo/l1:1", "jo/zero:1"),
                                                                                           ("jo/zero:1", "jo/l1:1")))
    assert done.returncode == 0, done.stderr
    # an untrained version is said to be one, first or not (first, it was "adapts none of its layers (other
    # modules)", which the layer table beside it contradicted: a docs audit's finding, session 52)
    assert "jo/zero:1's weight deltas are zero (its b vectors are all zeros: an untrained adapter): no cosine." in \
        " ".join(zero_second.stdout.split()), zero_second.stdout
    assert "jo/zero:1's weight deltas are zero (its b vectors are all zeros: an untrained adapter): no cosine with " \
        "jo/l1:1." in " ".join(zero_first.stdout.split()), zero_first.stdout
    assert "adapts none" not in zero_first.stdout + zero_second.stdout
    # cosines across two base model names of the same shapes are shown, and the names said (a newcomer's walk,
    # session 51: a typo published as a new base compared silently, cosines of 1.000)
    assert typo.returncode == 0 and "jo/typo:1 is for base model tiny-lama, jo/l1:1 for tiny-llama: their layers " \
        "have the same shapes, so the deltas compare, but they were learned on different base models" in " ".join(
            typo.stdout.split()), typo.stdout
    assert "base model" in typo.stdout.splitlines()[1] and "tiny-lama " in typo.stdout
    assert "another projection" not in done.stdout  # the same generator, seed and rank: cosines that mean something
    # another rank: its cosines are about 0 whatever it learned, said (a newcomer read them as a finding, session 40)
    assert apart.returncode == 0 and ("jo/r4:1 is on another projection than jo/l1:1 (another rank): deltas built "
                                      "on independent random matrices are nearly orthogonal") in " ".join(
                                          apart.stdout.split()), apart.stdout
    rows = {line.split("│")[1].strip(): line.split("│")[2:4] for line in done.stdout.splitlines()
            if line.count("│") >= 4 and "layers." in line}
    assert len(rows) == len(expected) == 14
    for layer in expected:  # the pair's cosine, and '-' for the RoBERTa version
        assert [c.strip() for c in rows[layer.module]] == [f"{layer.delta_cosine[0][1]:.3f}", "-"]
    assert "jo/rob:1 adapts none of jo/l1:1's layers: it is for base model tiny-roberta, jo/l1:1 for tiny-llama." \
        in " ".join(done.stdout.split())
    # metrics side by side, a row each, whole (they were one JSON string per version cut at 60 characters)
    metrics = {cells[0]: cells[1:] for line in done.stdout.splitlines()
               if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 4}
    assert metrics["test.accuracy"] == ["0.901", "0.902", "-"]
    assert metrics["a_long_metric_name"] == ["1234.57", "-", "-"]
    compared = json.loads(as_json.stdout)
    assert [v["metrics"]["test"]["accuracy"] for v in compared["versions"]] == [0.901, 0.902]
