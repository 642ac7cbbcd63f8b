"""The README's "Quick start (library)" block runs as pasted: offline, on the bundled MiniLM, in a fresh folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from vera_core import AdapterBank, VeraModel

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## Quick start (library)"
FENCE = "```python\n"


def quick_start() -> tuple[str, int]:
    """The first ```python block after the heading, and the README line it starts on (1-based)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(FENCE, text.index(HEADING)) + len(FENCE)
    return text[start:text.index("```", start)], text.count("\n", 0, start) + 1


def test_quick_start_block_runs_as_pasted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, first_line = quick_start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict[str, Any] = {"__name__": "readme_quick_start"}
    # padded so that a traceback names the README's own line numbers
    exec(compile("\n" * (first_line - 1) + code, str(README), "exec"), namespace)

    printed = capsys.readouterr().out.splitlines()
    claimed = re.search(r"num_adapter_parameters\(\)\)\s+# ([\d,]+)", code)
    assert claimed is not None, "the block's comment on num_adapter_parameters() gives the count"
    assert printed[0] == claimed.group(1).replace(",", "")
    assert printed[-1] == "torch.Size([3, 2])"

    for folder in ("adapters/untrained", "adapters/my-adapter"):
        assert (tmp_path / folder / "adapter_config.json").is_file()
        assert (tmp_path / folder / "adapter_model.safetensors").is_file()
    bank, logits, merged, batch = (namespace[name] for name in ("bank", "logits", "merged", "batch"))
    assert isinstance(bank, AdapterBank) and bank.names() == ["you/trained", "you/untrained"]
    assert logits.shape == (3, 2)
    # the merged model is a plain transformers model, and the bank's rows that name the trained adapter are its outputs
    assert not isinstance(merged, VeraModel)
    with torch.no_grad():
        alone = merged(**batch).logits
    torch.testing.assert_close(logits[[0, 2]], alone[[0, 2]], atol=1e-4, rtol=1e-4)
