"""Datasets and tasks for the trainer: local CSV / JSONL files, the offline word-polarity demo, and the two tasks
(sequence classification, causal language modelling) that turn examples into model batches.

Tokenizers are passed in (any callable with the transformers tokenizer interface), so this module needs no
transformers import.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from vera_core.errors import JSONTextError, VeraError, not_unicode, parse_json


class DatasetError(VeraError, ValueError):
    """A dataset file is missing, malformed, or lacks the columns the task needs."""


@dataclass(frozen=True)
class Example:
    text: str
    label: int | None = None


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    eval: list[Example]
    test: list[Example]
    labels: list[str]


def _bucket(text: str) -> float:
    """A stable number in [0, 1) from the text alone: splits do not depend on file order or on a seed."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def split(examples: Sequence[Example], *, eval_fraction: float = 0.1, test_fraction: float = 0.1) -> tuple[
    list[Example], list[Example], list[Example]
]:
    """Deterministic train/eval/test split by a hash of each example's text."""
    train: list[Example] = []
    eval_: list[Example] = []
    test: list[Example] = []
    for ex in examples:
        u = _bucket(ex.text)
        (test if u < test_fraction else eval_ if u < test_fraction + eval_fraction else train).append(ex)
    return train, eval_, test


def demo_lexicon_path() -> Path:
    """vader_lexicon.txt from the vaderSentiment package: a word, its mean rating (-4..+4), its spread, 10 ratings."""
    try:
        path = Path(str(importlib.resources.files("vaderSentiment").joinpath("vader_lexicon.txt")))
    except ModuleNotFoundError as exc:
        raise DatasetError("The demo task needs the vaderSentiment package: pip install 'vera-registry[demo]'"
                           ) from exc
    return path


def word_polarity() -> Splits:
    """The offline demo task: is a word's human-rated sentiment positive or negative? 7,520 entries, hash split."""
    examples = []
    for line in demo_lexicon_path().read_text(encoding="utf-8").splitlines():
        word, mean, *_ = line.split("\t")
        if float(mean) != 0.0:
            examples.append(Example(word, int(float(mean) > 0)))
    train, eval_, test = split(examples)
    return Splits(train, eval_, test, ["negative", "positive"])


def read_examples(
    path: str | Path, *, text_column: str = "text", label_column: str | None = "label"
) -> tuple[list[Example], list[str]]:
    """Read a CSV or JSONL file of text (and labels). Labels may be names or integers; returns the label names."""
    file = Path(path)
    numbered = _read_rows(file)
    if not numbered:
        raise DatasetError(f"{file} holds no examples.")
    first = numbered[0][1]
    missing = [c for c in (text_column, label_column) if c and c not in first]
    if missing:
        raise DatasetError(
            f"{file} has columns {sorted(first)} but not {missing}; pass --text-column / --label-column."
        )
    for line, row in numbered:  # every row, not just the first: a later one without a column crashed (a KeyError)
        for column, what in ((text_column, "a string"), (label_column, "a string or a number")):
            value = row.get(column) if column else ""
            if not (isinstance(value, str) or (column == label_column and type(value) in (int, float))):
                found = "no such column" if column not in row else _shown(value)
                raise DatasetError(f"{file}:{line}: column {column!r} must be {what}; found {found}. Every row "
                                   "needs it.")
            if column and column == label_column and _no_label(value):  # was a class named "" (or "nan")
                shown = "empty" if isinstance(value, str) and not value.strip() else _shown(value)
                raise DatasetError(f"{file}:{line}: column {column!r} is {shown}, a missing value; every row needs a "
                                   "label, a name or a number. Fill it in or drop the row.")
    rows = [row for _, row in numbered]
    if label_column is None:
        return [Example(str(r[text_column])) for r in rows], []
    raw = [str(r[label_column]) for r in rows]
    names = sorted(set(raw), key=_label_order)
    if len(names) < 2:
        raise DatasetError(f"{file} has a single label value {names}; classification needs at least two.")
    index = {name: i for i, name in enumerate(names)}
    return [Example(str(r[text_column]), index[v]) for r, v in zip(rows, raw, strict=True)], names


def label_line(path: str | Path, label_column: str, label: str) -> int | None:
    """The line of ``path`` (a dataset read_examples reads) where the label ``label`` first appears, for a message
    about that label; None if none does."""
    return next((line for line, row in _read_rows(Path(path)) if str(row.get(label_column)) == label), None)


def _no_label(value: object) -> bool:
    """An empty (or blank) cell, "NaN" (as a missing float is written), or a JSON NaN or infinity: a missing label,
    not a class."""
    if isinstance(value, str):
        return not value.strip() or value.strip().lower() == "nan"
    return type(value) is float and not math.isfinite(value)


def _label_order(name: str) -> tuple[bool, int, str]:
    """Integer labels first, by value (-1, 2, 10), then names: ASCII digits only (int() of '²' fails, and of 5,000
    digits is refused)."""
    whole = re.fullmatch(r"-?[0-9]{1,18}", name) is not None
    return not whole, int(name) if whole else 0, name


def _shown(value: object) -> str:
    """A JSON value as the file wrote it (null, true, [1]), cut to 60 characters."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:59] + "…"


def _json_line(file: Path, number: int, line: str) -> Any:
    try:
        return parse_json(line, keys_once=True)
    except JSONTextError as exc:
        raise DatasetError(f"{file}:{number} {exc}; expected a flat JSON object per line (text and label).") from None


def _read_rows(file: Path) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a .csv or .jsonl file, as dicts of column -> value, each with its line number."""
    if not file.is_file():
        raise DatasetError(f"Dataset file {file} does not exist.")
    suffix = file.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise DatasetError(f"{file} has suffix {file.suffix!r}; expected .csv or .jsonl.")
    raw = file.read_bytes()
    try:  # UTF-8, with or without the byte-order mark spreadsheets write
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{file}:{line} is not UTF-8 text ({exc.reason} at byte {exc.start:,}); save the file "
                           "as UTF-8.") from None
    return _csv_rows(file, text) if suffix == ".csv" else _jsonl_rows(file, text)


def _unclosed_quote(text: str) -> int | None:
    """The line where a quoted field opens that never closes, or None: csv reads such a field on to the end of the
    file, where its row looks whole (a label holding every later line, "too few examples") or has too few fields at
    the last line, none of which named the quote (a re-check's findings, session 44). Only the strict reader tells
    an end of data inside quotes; any other error of its (a stray quote csv reads leniently) leaves the file to the
    lenient reading."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    last = 0
    try:
        for _ in reader:
            last = reader.line_num
    except csv.Error as exc:
        return last + 1 if "unexpected end of data" in str(exc) else None
    return None


def _csv_rows(file: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    if (opened := _unclosed_quote(text)) is not None:
        raise DatasetError(f"{file}:{opened} opens a quoted field ('\"') that never closes: the rest of the file was "
                           "read into it. Close the quote (a quote inside a quoted field is written twice, \"\"), or "
                           "remove it.")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = reader.fieldnames or []
        if (twice := sorted(name for name, n in Counter(header).items() if n > 1)):  # csv keeps the last silently
            raise DatasetError(f"{file}:1 names the column{'s' if len(twice) > 1 else ''} "
                               f"{', '.join(map(repr, twice))} more than once; expected one header line of distinct "
                               "column names.")
        last = reader.line_num
        for row in reader:
            first, last = last + 1, reader.line_num  # (a quoted field may hold line breaks: a row of several lines)
            if None in row or None in row.values():  # more fields than the header (restkey None), or fewer
                fields = len(reader.fieldnames or ())
                if last > first:  # a quote that never closed ran on: it was told as the file's last line's fault
                    raise DatasetError(
                        f"{file}:{first} opens a quoted field ('\"') that runs on to line {last:,} (its quote closes "
                        "there, or never), and that row has the wrong number of fields; close the quote on its own "
                        "line (a quote inside a quoted field is written twice, \"\").")
                raise DatasetError(f"{file}:{reader.line_num} has {'more' if None in row else 'fewer'} fields than "
                                   f"the header's {fields}; expected {fields} comma-separated fields on each line "
                                   "(quote a field that holds a comma).")
            if header and list(row.values()) == header:  # two files joined: the second's header became a row
                raise DatasetError(f"{file}:{reader.line_num} repeats the header line ({','.join(header)}); remove "
                                   "it (files joined with their headers?).")
            rows.append((reader.line_num, row))
    except csv.Error as exc:  # a field over csv's limit (128 KiB), a NUL byte, a broken quote
        raise DatasetError(f"{file} cannot be read as CSV after line {reader.line_num} ({exc}); expected "
                           f"comma-separated rows under a header line, each field under "
                           f"{csv.field_size_limit():,} characters.") from exc
    return rows


def _jsonl_rows(file: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = _json_line(file, number, line)
        if not isinstance(row, dict):
            raise DatasetError(f"{file}:{number} is a JSON {type(row).__name__}; expected an object per line.")
        if (bad := not_unicode(row)) is not None:  # no tokenizer reads it, no registry stores it as a label
            raise DatasetError(f"{file}:{number} holds {bad!r}, half of a UTF-16 surrogate pair, which is not text; "
                               "expected valid Unicode.")
        rows.append((number, row))
    return rows


class Task(Protocol):
    """Turns examples into model inputs and model outputs into metrics."""

    name: str

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]: ...

    def batch_stats(self, output: Any, batch: dict[str, torch.Tensor]) -> dict[str, float]: ...

    def finalize(self, sums: dict[str, float]) -> dict[str, float]: ...


class SequenceClassification:
    """Text -> label. Metrics: loss and accuracy."""

    name = "sequence-classification"

    def __init__(self, tokenizer: Any, *, max_length: int = 128) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([e.text for e in examples], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        labels = [e.label for e in examples]
        if any(label is None for label in labels):
            raise DatasetError("Sequence classification needs a label for every example.")
        return {**dict(enc), "labels": torch.tensor(labels, dtype=torch.long)}

    def batch_stats(self, output: Any, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        n = batch["labels"].shape[0]
        correct = (output.logits.argmax(-1) == batch["labels"]).sum().item()
        return {"loss": float(output.loss) * n, "correct": float(correct), "n": float(n)}

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums.get("n", 0.0), 1.0)
        return {"loss": sums["loss"] / n, "accuracy": sums["correct"] / n}


class CausalLM:
    """Text -> next-token prediction on the same text (padding ignored). Metrics: loss and perplexity."""

    name = "causal-lm"

    def __init__(self, tokenizer: Any, *, max_length: int = 128) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length
        if getattr(tokenizer, "pad_token", None) is None:
            tokenizer.pad_token = tokenizer.eos_token

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([e.text for e in examples], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return {**dict(enc), "labels": labels}

    def batch_stats(self, output: Any, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        tokens = float((batch["labels"][:, 1:] != -100).sum().item())
        return {"loss": float(output.loss) * tokens, "tokens": tokens}

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss"] / max(sums.get("tokens", 0.0), 1.0)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
