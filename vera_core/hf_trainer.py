"""transformers' ``Trainer`` for a VeraModel, as it is for a PeftModel (it knows PEFT's classes, not this one).

``VeraTrainer`` is ``transformers.Trainer`` with three differences when its model is a VeraModel:

- the batch columns it keeps are those the wrapped model's ``forward`` names (a VeraModel's takes ``*args,
  **kwargs``, so the plain Trainer would drop them all unless ``remove_unused_columns=False``);
- its checkpoints and ``save_model()`` hold the adapter alone, in PEFT's format (``save_adapter``), not the whole
  model's state (for a 7B base: the adapter's megabytes instead of the base's gigabytes per checkpoint);
- ``resume_from_checkpoint`` and ``load_best_model_at_end`` read that adapter back, refusing one trained against
  another projection (another rank, seed, generator or base model: ``check_same_projection``).

Everything else is transformers' own (its optimizer, schedule, logging, accelerate and DDP). Imported on its own
(``from vera_core.hf_trainer import VeraTrainer``): vera_core itself needs only torch and safetensors.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from torch import nn
from transformers import Trainer

from vera_core.checkpoint import WEIGHTS_NAME, check_same_projection, read_adapter, save_adapter
from vera_core.model import VeraModel


class VeraTrainer(Trainer):
    """``transformers.Trainer`` that trains, checkpoints and resumes a ``VeraModel`` as it does a PeftModel."""

    def _vera_model(self, model: nn.Module | None = None) -> VeraModel | None:
        unwrapped = self.accelerator.unwrap_model(model or self.model, keep_torch_compile=False)
        return unwrapped if isinstance(unwrapped, VeraModel) else None

    def _set_signature_columns_if_needed(self) -> None:
        vera = self._vera_model()
        if self._signature_columns is None and vera is not None:
            names = list(inspect.signature(vera.model.forward).parameters)
            # (transformers declares it None until it fills it in)
            self._signature_columns = names + list({"label", "label_ids", *self.label_names})  # type: ignore[assignment]
        super()._set_signature_columns_if_needed()

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        vera = self._vera_model()
        if vera is None:
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return None
        folder = str(output_dir or self.args.output_dir)
        save_adapter(vera, folder)  # its files moved into the folder one by one: the checkpoint's others stay
        if self.processing_class is not None:
            self.processing_class.save_pretrained(folder)
        return None

    def _load_adapter(self, folder: str, model: nn.Module | None = None) -> bool:
        """Load the adapter a checkpoint folder holds into the VeraModel; False when there is none to load."""
        vera = self._vera_model(model)
        if vera is None or not Path(folder, WEIGHTS_NAME).is_file():
            return False
        saved = read_adapter(folder)
        check_same_projection(saved, vera, f"The checkpoint {folder}",
                              "; resume with the settings it was saved with, or start without it.")
        vera.load_adapter_state_dict(saved.tensors)
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if not self._load_adapter(os.fspath(resume_from_checkpoint), model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best is None or not self._load_adapter(best):
            super()._load_best_model()
