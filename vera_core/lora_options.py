"""How a VeRA adapter is exported as a LoRA (vera_core.lora does the export): its options, checked. Torch-free, so
that `vera fetch --as lora` checks them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from vera_core.errors import VeraConfigError

#: The LoRA ranks vLLM accepts (its max_lora_rank choices).
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: The dtypes an export may have.
DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoraExport:
    """How to export: exact rank r (the default), or at most ``max_rank`` per layer; in ``dtype``; with
    ``for_vllm`` the rank is snapped down to one vLLM accepts."""

    max_rank: int | None = None
    dtype: str = "float32"
    for_vllm: bool = False

    def __post_init__(self) -> None:
        if self.max_rank is not None and (isinstance(self.max_rank, bool) or self.max_rank < 1):
            raise VeraConfigError(f"max_rank must be a positive integer, got {self.max_rank!r}.")
        if self.dtype not in DTYPE_NAMES:
            raise VeraConfigError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {self.dtype!r}.")

    def rank(self, r: int) -> int:
        """The rank the export has for an adapter of rank ``r``."""
        if self.max_rank is not None and self.max_rank > r:
            raise VeraConfigError(f"max_rank={self.max_rank} is larger than the adapter's r={r}; the exact export "
                                  "already has rank r (leave max_rank out).")
        k = self.max_rank or r
        return max(v for v in VLLM_RANKS if v <= k) if self.for_vllm else k
