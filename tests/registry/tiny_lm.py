"""A tiny causal language model on disk with a real (word-level) tokenizer, for generation tests offline."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast

from tests.conftest import TINY_MODELS

WORDS = ["the", "a", "cat", "dog", "runs", "far", "sits", "on", "mat", "and", "red", "blue", "big", "small",
         "house", "tree", "sun", "moon", "eats", "sleeps", "jumps", "over", "under", "near", "fast", "slow", "green"]


def save_tiny_llama_in_hub_cache(cache: Path, repo_id: str = "tiny/llama") -> str:
    """save_tiny_llama as the one snapshot of ``repo_id`` in a Hub cache at ``cache`` (what `HF_HUB_CACHE` names),
    so that jobs, which train Hub ids and never paths, find it offline; returns the repo id."""
    folder, commit = cache / f"models--{repo_id.replace('/', '--')}", "0" * 40
    save_tiny_llama(folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return repo_id


def save_tiny_llama(directory: Path, *, positions: int = 40) -> Path:
    """TINY_MODELS' Llama (vocabulary 96) with a word-level tokenizer over WORDS, saved like any HF model; its
    context ``positions`` tokens (rotary positions: the weights are the same whatever it is)."""
    vocab = {"[UNK]": 0, "[PAD]": 1, "[EOS]": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    vocab.update({f"w{i}": i for i in range(len(vocab), 96)})  # the rest of the model's 96 ids, as words
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="[EOS]")
    model = TINY_MODELS[2].make(seed=3)
    model.config.pad_token_id, model.config.eos_token_id = 1, 2
    model.config.max_position_embeddings = positions
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
