from __future__ import annotations

import dataclasses

import peft
import pytest

from vera_core import PEFT_GENERATOR, PORTABLE_GENERATOR, VeraConfig, VeraConfigError
from vera_core.config import SEED_ONLY_PEFT_TYPE


def test_defaults_match_peft() -> None:
    ours, theirs = VeraConfig(), peft.VeraConfig()
    for field in dataclasses.fields(VeraConfig):
        if field.name in ("projection_generator",):
            continue
        assert getattr(ours, field.name) == getattr(theirs, field.name), field.name
    assert ours.projection_generator == PORTABLE_GENERATOR  # the portable generator is the default for new adapters


def test_reads_a_config_written_by_peft(tmp_path: object) -> None:
    theirs = peft.VeraConfig(r=16, target_modules=["q", "v"], projection_prng_key=9, task_type="SEQ_CLS")
    ours = VeraConfig.from_peft_dict(theirs.to_dict())
    assert ours.projection_generator == PEFT_GENERATOR  # no generator recorded: PEFT's own
    assert (ours.r, ours.target_modules, ours.projection_prng_key) == (16, ["q", "v"], 9)
    assert ours.modules_to_save == ["classifier", "score"]
    assert VeraConfig.from_peft_dict(ours.to_peft_dict()) == ours


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"r": 0}, "r must be a positive integer"),
        ({"r": "8"}, "r must be a positive integer"),
        ({"projection_prng_key": -3}, r"projection_prng_key must be an integer in \[0, 2\*\*64 - 1\]"),
        ({"projection_prng_key": 2**64}, "projection_prng_key must be"),
        ({"vera_dropout": 1.0}, r"vera_dropout must be in \[0, 1\)"),
        ({"vera_dropout": "0.1"}, r"vera_dropout must be in \[0, 1\), got '0.1'"),  # (float() read it: a 500 to come)
        # stored, Infinity was served back in adapter_config.json as JSON no strict parser reads (an outsider's find)
        ({"d_initial": float("inf")}, r"d_initial must be a finite number .*got inf"),
        ({"d_initial": 10**400}, r"d_initial must be a finite number .*got 10000000000+…\.$"),  # cut
        ({"d_initial": "0.1"}, "d_initial must be a finite number"),
        ({"bias": "some"}, "bias must be one of none, all, vera_only"),
        ({"projection_generator": "xorshift"}, "Unknown projection_generator 'xorshift'.*Upgrade vera-registry"),
        ({"task_type": "CLS"}, "task_type must be one of"),
        ({"target_modules": "(unclosed"}, "must be a regular expression"),
        ({"target_modules": []}, "target_modules is an empty list"),
        ({"layers_pattern": "layers"}, "layers_pattern is set but layers_to_transform is not"),
        # types (a docs audit, session 54): "false" was taken and written, "no" read as True, "1" a TypeError later
        ({"save_projection": "false"}, "save_projection must be true or false, got 'false'"),
        ({"init_weights": "no"}, "init_weights must be true or false, got 'no'"),
        ({"fan_in_fan_out": 1}, "fan_in_fan_out must be true or false, got 1"),
        ({"layers_to_transform": "1"}, r"layers_to_transform must be a layer index \(an integer, 0 or more\) or a "
                                       "list of them, got '1'"),
        ({"layers_to_transform": [0, -1]}, r"layers_to_transform must be .* got \[0, -1\]"),
        ({"layers_to_transform": [True]}, r"layers_to_transform must be .* got \[True\]"),
        ({"layers_to_transform": list(range(100_000))}, "layers_to_transform must be a list of at most 1,000 layer "
                                                        "indices, got 100000"),
        ({"layers_to_transform": [0], "layers_pattern": 3}, "layers_pattern must be a string or a list of strings, "
                                                            "got 3"),  # (a TypeError)
    ],
)
def test_invalid_values_raise_clear_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(VeraConfigError, match=message):
        VeraConfig(**changes)  # type: ignore[arg-type]


def test_layer_indices_are_plain_ints() -> None:
    """numpy's integers are layer indices (a sweep's), kept as Python ints that JSON writes; a tuple is a list."""
    import numpy as np

    assert VeraConfig(layers_to_transform=np.int64(2)).layers_to_transform == 2
    config = VeraConfig(layers_to_transform=(np.int32(0), 1))  # type: ignore[arg-type]
    assert config.layers_to_transform == [0, 1] and all(type(i) is int for i in config.layers_to_transform)


def test_numpy_scalars_are_numbers_and_are_written_as_plain_json_numbers() -> None:
    """A sweep's numpy float32 is a number (it was refused as "not a finite number"), stored as a float so that
    adapter_config.json can be written; numpy's bool is not a number, as Python's is not."""
    import json

    import numpy as np

    config = VeraConfig(d_initial=np.float32(0.25), vera_dropout=np.float64(0.1))
    assert type(config.d_initial) is float and config.d_initial == 0.25
    assert type(config.vera_dropout) is float and config.vera_dropout == 0.1
    assert json.loads(json.dumps(config.to_peft_dict()))["d_initial"] == 0.25
    assert VeraConfig(d_initial=1).to_peft_dict()["d_initial"] == 1  # a plain int is written as given, as PEFT does
    for bad in (np.float32("nan"), np.bool_(True)):
        with pytest.raises(VeraConfigError, match="d_initial must be a finite number"):
            VeraConfig(d_initial=bad)  # type: ignore[arg-type]


def test_non_vera_configs_are_refused() -> None:
    with pytest.raises(VeraConfigError, match="peft_type='LORA'; expected 'VERA'"):
        VeraConfig.from_peft_dict(peft.LoraConfig().to_dict())
    with pytest.raises(VeraConfigError, match="must hold a JSON object"):
        VeraConfig.from_peft_dict([1, 2])  # type: ignore[arg-type]


def test_seed_only_portable_config_is_marked_for_peft_and_read_back() -> None:
    seed_only = VeraConfig(r=4, target_modules=["q"], save_projection=False, projection_generator=PORTABLE_GENERATOR)
    written = seed_only.to_peft_dict()
    assert written["peft_type"] == SEED_ONLY_PEFT_TYPE and not seed_only.peft_loadable
    assert VeraConfig.from_peft_dict(written) == seed_only
    for loadable in (seed_only.replace(save_projection=True), seed_only.replace(projection_generator=PEFT_GENERATOR)):
        assert loadable.peft_loadable and loadable.to_peft_dict()["peft_type"] == "VERA"
    with pytest.raises(VeraConfigError, match="names no projection_generator"):
        VeraConfig.from_peft_dict({k: v for k, v in written.items() if k != "projection_generator"})


# ---- config regexes (vera_core.patterns): PEFT's matches, in linear time -----------------------------------------
NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.11.self_attn.v_proj", "model.layers.3.mlp.down_proj",
         "bert.encoder.layer.5.attention.self.query", "lm_head", "q", "transformer.h.2.attn.c_attn"]


@pytest.mark.parametrize("pattern", [r".*\.(q_proj|v_proj)", r".*layers\.[0-3]\..*", r"^model\..*_proj$",
                                     r".*(query|value)", r"[a-z_.]+\d+\..*", r"q", r"(?i).*ATTN.*"])
def test_config_patterns_match_what_pythons_re_and_peft_match(pattern: str) -> None:
    import re

    from vera_core.targets import matches_target

    config = VeraConfig(target_modules=pattern)
    assert [matches_target(config, n) for n in NAMES] == [re.fullmatch(pattern, n) is not None for n in NAMES]


def test_a_pattern_that_backtracks_exponentially_in_python_is_matched_at_once() -> None:
    """(a+)+b on 60 a's: 2^60 steps for a backtracking engine (the attack on a registry's publish, session 13)."""
    from vera_core.patterns import linear_time
    from vera_core.targets import matches_target

    assert linear_time()  # google-re2 is a dependency: the suite runs with it
    assert matches_target(VeraConfig(target_modules="(a+)+b"), "a" * 60) is False
    by_index = VeraConfig(target_modules=["q"], layers_to_transform=[0], layers_pattern="(a+)+")
    assert matches_target(by_index, "a" * 60 + "x.0.q") is False and matches_target(by_index, "aaa.0.q") is True


@pytest.mark.parametrize(("changes", "message"), [
    ({"target_modules": "(?=q)q"}, "needs a backtracking regular expression engine"),
    ({"target_modules": r"(a)\1"}, "needs a backtracking regular expression engine"),
    ({"target_modules": r"q\Z"}, r"\\z for the end"),
    ({"target_modules": ["q"], "layers_to_transform": [0], "layers_pattern": "(?<=x)layers"}, "layers_pattern"),
])
def test_patterns_that_need_backtracking_load_but_a_server_refuses_them(changes: dict[str, object],
                                                                        message: str) -> None:
    """A config read back (one's own, or one a registry accepted before the check) loads and matches as PEFT does,
    with Python's re; what a server takes from callers must match in linear time (vera_core.patterns.require_linear:
    publish and job submission)."""
    from vera_core.patterns import require_linear

    config = VeraConfig(**changes)  # type: ignore[arg-type]
    with pytest.raises(VeraConfigError, match=message):
        require_linear(config.target_modules, config.layers_pattern)


def test_a_lookahead_pattern_of_ones_own_matches_as_peft_matches_it() -> None:
    import re

    from vera_core.targets import matches_target

    pattern = r"^(?!.*lm_head).*_proj$"  # a PEFT user's usual "every projection but the head's"
    config = VeraConfig(target_modules=pattern)
    for name in ("model.layers.0.self_attn.q_proj", "lm_head_proj", "model.lm_head.out_proj", "x.v_proj"):
        assert matches_target(config, name) is (re.fullmatch(pattern, name) is not None), name


@pytest.mark.parametrize(("changes", "message"), [
    ({"target_modules": "q|" * 600 + "q"}, "1,201 characters; the limit is 1,000"),
    # the length as written: the 27 characters vera_core wraps it in were counted (a docs audit, session 54)
    ({"target_modules": ["q"], "layers_to_transform": [0], "layers_pattern": "h" * 1001},
     "layers_pattern is a regular expression of 1,001 characters; the limit is 1,000"),
    ({"target_modules": "(" * 400 + ")" * 399}, "must be a regular expression"),
    ({"target_modules": ["q"], "layers_to_transform": [0], "layers_pattern": [3]}, "layers_pattern must be a string"),
])
def test_config_patterns_that_cannot_be_patterns_are_refused_clearly(changes: dict[str, object], message: str) -> None:
    with pytest.raises(VeraConfigError, match=message):
        VeraConfig(**changes)  # type: ignore[arg-type]
    assert VeraConfig(target_modules=["q"], layers_to_transform=[0], layers_pattern="h" * 1000).layers_pattern


def test_modules_to_save_match_as_peft_matches_them_without_a_regex_per_entry() -> None:
    """PEFT's rule is re.match(rf"(^|.*\\.){re.escape(m)}($|\\..*)", name); the same answers from string tests (a
    20,000-entry list cost a publish 7.6 s of CPU through the regex, session 13's second attack round)."""
    import re

    from vera_core.targets import is_module_to_save

    saved = ["classifier", "score", "head.dense", "a.b"]
    config = VeraConfig(target_modules=["q"], modules_to_save=saved)
    for name in ["classifier", "model.classifier", "classifier.dense", "model.classifier.out", "xclassifier",
                 "classifierx", "model.head.dense", "head.dense.x", "head", "dense", "a.b", "xa.b", "a.bc", "q"]:
        peft = any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", name) for m in saved)
        assert is_module_to_save(config, name) is bool(peft), name
    with pytest.raises(VeraConfigError, match="at most 1,000 module names, got 20000"):
        VeraConfig(target_modules=["q"], modules_to_save=[f"m{i}" for i in range(20_000)])
    with pytest.raises(VeraConfigError, match="target_modules must be a list of at most 1,000"):
        VeraConfig(target_modules=[f"t{i}" for i in range(1001)])
