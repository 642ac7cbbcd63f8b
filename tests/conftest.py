"""Shared fixtures: tiny transformers models built from configs (no weights are downloaded)."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Each pytest-xdist worker gets its share of the cores for torch's threads, and so do the processes it starts
# (servers, workers, `vera train`: they inherit the variables); registry.cpu_share says why. Set before torch is
# imported; OMP_NUM_THREADS already set is kept.
from registry.cpu_share import share_cores  # noqa: E402 - imports nothing heavy

os.environ.update(share_cores(dict(os.environ), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

import httpx  # noqa: E402
import pytest  # noqa: E402 - after the thread variables
import torch  # noqa: E402
from torch import nn  # noqa: E402

# Nothing in the tests may reach the real HuggingFace Hub: code that would (Hub sync, the base-config lookup) talks to
# a port where nothing listens, refused at once, unless a test points it at the Hub stand-in. Servers that tests
# start inherit this.
os.environ.setdefault("VERA_HUB_ENDPOINT", "http://127.0.0.1:9")
# The registry client's download cache (registry.local_cache) goes to a folder of this test run, never ~/.cache.
os.environ.setdefault("VERA_CACHE_DIR", tempfile.mkdtemp(prefix="vera-test-cache-"))
# never the user's stored logins (registry.credentials): tests that log in write here
os.environ.setdefault("VERA_CONFIG_DIR", tempfile.mkdtemp(prefix="vera-test-config-"))


#: The files that take longest, heaviest first (seconds summed per file from `bash .ci/test --junitxml=...`, session
#: 50: jobs 298, the browser 246, recipes 236, hub 193, the GPU check 143, worker 135, ...). .ci/test runs whole
#: files on each worker (--dist loadfile) in collection order (--no-loadscope-reorder; xdist's own order is by number
#: of tests, which started the 15-test browser file near the end, one worker busy with it while the others had
#: finished): starting these first keeps every worker busy to the end. A file not listed keeps its place after them.
HEAVIEST_FILES = (
    "tests/registry/test_jobs.py", "tests/web_ui/test_browser.py", "tests/registry/test_recipes.py",
    "tests/registry/test_hub.py", "tests/vera_core/test_gpu_check.py", "tests/registry/test_worker.py",
    "tests/registry/test_access.py", "tests/registry/test_cli_mistakes.py", "tests/registry/test_database.py",
    "tests/web_ui/test_pages.py", "tests/registry/test_read_only.py", "tests/registry/test_cli.py",
    "tests/vera_core/test_distributed.py", "tests/registry/test_serving_scores.py", "tests/registry/test_topology.py",
    "tests/web_ui/test_metadata_pages.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heaviest files' tests first (HEAVIEST_FILES), every file's tests in their own order."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test that failed waiting on a server of its own process (an HTTP client's timeout) gets the stack of every
    thread of the process in its report: where that server was when the client gave up (two such waits failed CI
    on a slow day, session 54, and each passed alone at once)."""
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(TimeoutError | httpx.TimeoutException):
        names, this = {thread.ident: thread.name for thread in threading.enumerate()}, threading.get_ident()
        stacks = "\n".join(f"--- thread {names.get(ident, ident)}:\n{''.join(traceback.format_stack(frame))}"
                           for ident, frame in sys._current_frames().items() if ident != this)
        report.sections.append(("threads when the wait failed", stacks))
    return report


@dataclass(frozen=True)
class TinyModel:
    """How to build one tiny model and feed it, and which modules the interop tests adapt."""

    name: str
    build: Callable[[], nn.Module]
    targets: list[str]
    task_type: str | None

    def make(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.build().eval()

    def inputs(self, seed: int = 1, batch: int = 2, seq: int = 7) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return {"input_ids": torch.randint(0, 96, (batch, seq), generator=gen)}


def _roberta() -> nn.Module:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    return RobertaForSequenceClassification(RobertaConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=40, num_labels=3,
    ))


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=2, n_positions=40))


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=40,
    ))


TINY_MODELS = [
    TinyModel("roberta", _roberta, ["query", "value"], "SEQ_CLS"),
    TinyModel("gpt2", _gpt2, ["c_attn", "c_proj"], "CAUSAL_LM"),
    TinyModel("llama", _llama, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
              "CAUSAL_LM"),
]


@pytest.fixture(params=TINY_MODELS, ids=[m.name for m in TINY_MODELS])
def tiny(request: pytest.FixtureRequest) -> TinyModel:
    return request.param


def output_of(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits
