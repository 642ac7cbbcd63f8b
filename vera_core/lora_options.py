"""How a VeRA adapter is exported as a LoRA (vera_core.lora does the export): its options, checked. Torch-free, so
that `vera fetch --as lora` checks them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from vera_core.errors import VeraConfigError

#: vLLM's max_lora_rank choices: a server started with one serves every LoRA of that rank or less (vLLM checks
#: ``lora.rank > max_lora_rank`` when it loads an adapter, and pads the others), so an export for vLLM needs a rank of
#: at most the largest.
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_MAX_RANK = max(VLLM_RANKS)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` a vLLM server needs to serve a LoRA of ``rank`` (at most VLLM_MAX_RANK)."""
    return min(v for v in VLLM_RANKS if v >= rank)
#: The dtypes an export may have.
DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoraExport:
    """How to export: exact rank r (the default), or at most ``max_rank`` per layer; in ``dtype``; with
    ``for_vllm`` at most VLLM_MAX_RANK, the most vLLM serves (it snapped the rank down to one of VLLM_RANKS until
    2026-12-05: an r=4 adapter became a rank-1 approximation, and an r=300 one rank 256, where vLLM serves both
    exactly: a rank need only be at most the server's --max-lora-rank)."""

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
        return min(k, VLLM_MAX_RANK) if self.for_vllm else k
