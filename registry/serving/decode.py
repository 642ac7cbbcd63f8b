"""Per-row decoding for the model server's generation batches, on top of transformers' ``generate``.

``generate`` decodes one batch with one set of settings. A serving batch mixes requests: each row has its own
adapter (vera_core.AdapterBank routes that), and here its own sampling (greedy, or temperature, top-k and top-p
with a seed of its own), its own token budget and stop strings, and its own consumer, which hears of its text as it
grows and gets its answer the moment its row ends, not when the batch's longest row does.

- ``RowSampler`` (a logits processor) draws each sampling row's token from that row's own ``torch.Generator`` and
  leaves the row's scores -inf but for the token drawn; ``generate`` runs greedy, so its argmax takes it. A greedy
  row's scores pass unchanged (exactly what a greedy ``generate`` of the row gives). A row draws once per token it
  generates, so a seeded row gives the same text whatever else shares its batch.
- ``RowStops`` (a stopping criterion) ends each row at the end-of-sequence token, at one of its stop strings (the
  text cut before it, as OpenAI's ``stop``) or at its token budget, and hands each row's new text to its ``Row``
  as it is decoded: its last characters wait while a stop string could still begin there (the longest stop's length
  less one, as vLLM does), as does an incomplete UTF-8 character.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import LogitsProcessor, StoppingCriteria

FinishReason = Literal["stop", "length"]

#: What a caller may ask of one row (the HTTP layer checks them against these bounds before anything is queued).
MAX_STOPS, MAX_STOP_CHARS = 4, 200
#: Temperatures below this are greedy (vLLM's bound): dividing logits by less overflows float32.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class Sampling:
    """How one row picks its tokens: ``temperature`` 0 is greedy (top_k, top_p and seed unused); above 0 it
    samples from the top ``top_k`` tokens (0: all) whose probabilities add up to ``top_p``, with ``seed`` (None: a
    random one)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass
class Row:
    """One row of a generation batch: its prompt's token ids, settings, and what hears of its progress.
    ``on_text(delta)`` gets text as it is decided; ``on_end(tokens, text, reason)`` once, when the row ends;
    ``cancelled`` (set by its consumer, e.g. a client that hung up) ends it at the next token."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    stops: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None
    on_end: Callable[[list[int], str, FinishReason], None] | None = None
    cancelled: bool = False
    said: str = ""  # the text ``on_text`` has had


def _draw(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
    """One token from ``logits`` (1-D, float32) as ``sampling`` says: a 1-element tensor on their device (read
    nothing back, so a GPU is not waited for row by row). It cannot fail on the numbers it is given: NaN is never
    drawn, +inf is the largest float, and a row left with nothing to draw from (all -inf: an adapter with absurd
    vectors) takes its likeliest token, so that one row's numbers never fail the batch it shares."""
    logits = torch.nan_to_num(logits / sampling.temperature, nan=float("-inf"), neginf=float("-inf"))
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        probs = ordered.softmax(-1)
        # drop a token when the ones before it already add up to top_p (the first always stays)
        drop = probs.cumsum(-1) - probs >= sampling.top_p
        logits = torch.empty_like(logits).scatter_(0, order, ordered.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    usable = torch.isfinite(probs).all() & (probs.sum() > 0)
    likeliest = torch.nn.functional.one_hot(logits.argmax(), logits.shape[-1]).to(probs.dtype)
    return torch.multinomial(torch.where(usable, torch.nan_to_num(probs, nan=0.0), likeliest), 1,
                             generator=generator)


class RowSampler(LogitsProcessor):
    """Samples each sampling row with its own settings and generator (see the module's docstring)."""

    def __init__(self, rows: Sequence[Row], device: torch.device) -> None:
        self.rows = rows
        self.generators: list[torch.Generator | None] = []
        for row in rows:
            generator = None
            if not row.sampling.greedy:
                seed = row.sampling.seed if row.sampling.seed is not None else secrets.randbits(63)
                generator = torch.Generator(device=device).manual_seed(seed)
            self.generators.append(generator)
        self.ended = [False] * len(rows)  # RowStops marks them: an ended row draws nothing more

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for i, (row, generator) in enumerate(zip(self.rows, self.generators, strict=True)):
            if generator is None or self.ended[i]:
                continue
            token = _draw(scores[i].float(), row.sampling, generator)
            scores[i] = float("-inf")
            scores[i].index_fill_(0, token, 0.0)
        return scores


class RowStops(StoppingCriteria):
    """Ends each row on its own terms and tells its consumer (see the module's docstring). ``start``: where the
    generated tokens begin in ``input_ids`` (the padded prompt's length)."""

    def __init__(self, rows: Sequence[Row], *, start: int, eos: set[int], decode: Callable[[list[int]], str],
                 sampler: RowSampler) -> None:
        self.rows, self.start, self.eos, self.decode, self.sampler = rows, start, eos, decode, sampler
        self.ended = [False] * len(rows)
        # each row's text so far, decoded a few tokens at a time (``_grow``): tokens[prefix:read] gave its end
        self._text, self._prefix, self._read = [""] * len(rows), [0] * len(rows), [0] * len(rows)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        new = input_ids[:, self.start:].tolist()
        for i, row in enumerate(self.rows):
            if not self.ended[i]:
                self._advance(i, row, new[i])
        return torch.tensor(self.ended, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    def _advance(self, i: int, row: Row, tokens: list[int]) -> None:
        if row.cancelled:
            return self.finish(i, row, tokens, row.said, "stop")
        if tokens and tokens[-1] in self.eos:
            return self.finish(i, row, tokens, self.decode(tokens[:-1]), "stop")
        if row.on_text is None and not row.stops and len(tokens) < row.max_new_tokens:
            return None  # nobody reads its text before the end: decode it once, then
        if len(tokens) >= row.max_new_tokens and not row.stops:
            return self.finish(i, row, tokens, self.decode(tokens), "length")
        searched = len(self._text[i])
        text = self._grow(i, tokens)
        cut = min((at for at in (text.find(s, max(0, searched - len(s) + 1)) for s in row.stops) if at >= 0),
                  default=-1)  # only where the new text could have completed one
        if cut >= 0:
            return self.finish(i, row, tokens, text[:cut], "stop")
        if len(tokens) >= row.max_new_tokens:
            return self.finish(i, row, tokens, self.decode(tokens), "length")
        # hold back what might begin a stop string (as vLLM does: the longest stop's length less one, not a search
        # for its prefixes, which cost most of a batch's time with long stops), and an incomplete character
        held = max((len(s) - 1 for s in row.stops), default=0)
        ready = text[:max(0, len(text) - held)].rstrip("\ufffd")
        if row.on_text is not None and len(ready) > len(row.said) and ready.startswith(row.said):
            row.on_text(ready[len(row.said):])
            row.said = ready
        return None

    def _grow(self, i: int, tokens: list[int]) -> str:
        """Row ``i``'s text with ``tokens``' new ones, decoding only the last few (as vLLM's detokenizer): the
        tokens since the last decided text, with the one or two before them for context, whose own text is then
        cut off; text that ends in an incomplete character (U+FFFD) waits for the next token. Decoding the whole
        row at every token cost time quadratic in its length (an outsider's finding: 5x a batch's time)."""
        prefix, read = self._prefix[i], self._read[i]
        window = self.decode(tokens[prefix:])
        before = self.decode(tokens[prefix:read]) if read > prefix else ""
        if window.endswith("\ufffd") or len(window) <= len(before):
            return self._text[i]
        if window.startswith(before):
            self._text[i] += window[len(before):]
            self._prefix[i] = read
        else:  # a tokenizer whose pieces read otherwise in context: decode the whole row, this once
            self._text[i] = self.decode(tokens)
            self._prefix[i] = len(tokens) - 1
        self._read[i] = len(tokens)
        return self._text[i]

    def finish(self, i: int, row: Row, tokens: list[int], text: str, reason: FinishReason) -> None:
        self.ended[i] = self.sampler.ended[i] = True
        if row.on_text is not None and text.startswith(row.said) and len(text) > len(row.said):
            row.on_text(text[len(row.said):])
            row.said = text
        if row.on_end is not None:
            row.on_end(tokens, text, reason)
