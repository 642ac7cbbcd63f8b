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
- Log-probabilities, for rows that ask (``Row.logprobs``): ``RowSampler`` keeps, at each step, the log-probability
  of the token the row takes and of the ``logprobs`` likeliest, under the distribution the model gave (before
  temperature, top-k and top-p: vLLM's default, "raw" log-probabilities), on the device, read back once when the
  row ends. ``PromptScorer`` gives a prompt's own tokens theirs from the prefill's logits (``Row.score_prompt``:
  OpenAI's ``echo`` with ``logprobs``, how lm-evaluation-harness scores a continuation).
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
#: The most likeliest tokens a row may ask log-probabilities of, at each place (vLLM's default ``max_logprobs``).
MAX_LOGPROBS = 20
#: A prompt is scored this many positions at a time (each a float32 copy of the vocabulary's logits).
SCORE_CHUNK = 512


@dataclass(frozen=True)
class Scored:
    """One token of a row and its log-probability under the model at its place, with the ``top`` likeliest
    tokens' (id, log-probability), likeliest first. ``logprob`` is None for a prompt's first token (nothing came
    before it to predict it); a log-probability may be -inf (a token the base's own settings rule out)."""

    token: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


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
    #: None: no log-probabilities; k (0 to MAX_LOGPROBS): each new token's, with the k likeliest at its place
    logprobs: int | None = None
    #: also the prompt's own tokens' log-probabilities (``logprobs`` likeliest with each), from its prefill
    score_prompt: bool = False
    #: set before ``on_end`` is called, for a row that asked: its prompt's tokens, and its new tokens, scored
    prompt_scores: list[Scored] | None = None
    scores: list[Scored] | None = None


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
        # log-probabilities, when a row asks: per row and step, the taken token's, and the top ones' (ids, values)
        self.top = max((row.logprobs for row in rows if row.logprobs is not None), default=None)
        self.steps = max((row.max_new_tokens for row in rows), default=0)
        self.step = 0
        self._taken = self._top_values = self._top_ids = torch.empty(0)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        model = scores.float().log_softmax(-1) if self.top is not None and self.step < self.steps else None
        for i, (row, generator) in enumerate(zip(self.rows, self.generators, strict=True)):
            if generator is None or self.ended[i]:
                continue
            token = _draw(scores[i].float(), row.sampling, generator)
            scores[i] = float("-inf")
            scores[i].index_fill_(0, token, 0.0)
        if model is not None:
            self._keep(model, scores.argmax(-1))  # generate takes the argmax next: each row's own token
        return scores

    def _keep(self, model: torch.Tensor, taken: torch.Tensor) -> None:
        """Step ``self.step``'s log-probabilities (``model``: rows x vocabulary) of the tokens ``taken`` and of each
        row's likeliest, written on the device (nothing is read back before a row ends)."""
        assert self.top is not None
        if self.step == 0:
            rows, top = len(self.rows), min(self.top, model.shape[-1])
            self._taken = torch.empty(rows, self.steps, device=model.device)
            self._top_values = torch.empty(rows, self.steps, top, device=model.device)
            self._top_ids = torch.empty(rows, self.steps, top, dtype=torch.long, device=model.device)
        self._taken[:, self.step] = model.gather(1, taken[:, None])[:, 0]
        if self._top_ids.shape[-1]:
            values, ids = model.topk(self._top_ids.shape[-1], dim=-1)
            self._top_values[:, self.step], self._top_ids[:, self.step] = values, ids
        self.step += 1

    def scored(self, i: int, tokens: list[int]) -> list[Scored] | None:
        """Row ``i``'s new ``tokens`` with their log-probabilities (None when the row asked for none)."""
        row = self.rows[i]
        if row.logprobs is None:
            return None
        n = min(len(tokens), self.step)
        taken = self._taken[i, :n].tolist()
        values = self._top_values[i, :n, :row.logprobs].tolist()
        ids = self._top_ids[i, :n, :row.logprobs].tolist()
        return [Scored(token, taken[j], tuple(zip(ids[j], values[j], strict=True))) for j, token in
                enumerate(tokens[:n])]


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
        row.scores = self.sampler.scored(i, tokens)
        if row.on_text is not None and text.startswith(row.said) and len(text) > len(row.said):
            row.on_text(text[len(row.said):])
            row.said = text
        if row.on_end is not None:
            row.on_end(tokens, text, reason)


class PromptScorer:
    """Scores the prompts of rows that ask (``Row.score_prompt``) from the logits of ``generate``'s first forward,
    the prefill, which then keeps every position's logits (``logits_to_keep=0``) instead of the last one only: a
    forward hook on the model reads them, once, and lets them go. ``start``: the padded prompts' length (prompts
    are left-padded, so row i's prompt fills the last ``len(prompt_ids)`` positions)."""

    def __init__(self, rows: Sequence[Row], *, start: int) -> None:
        self.rows, self.start, self.done = rows, start, False

    def __call__(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if self.done:
            return
        self.done = True
        logits = output.logits
        if logits.shape[1] != self.start:
            raise RuntimeError(f"the prefill kept {logits.shape[1]} positions' logits, not the prompt's {self.start}")
        for i, row in enumerate(self.rows):
            if row.score_prompt:
                ids = row.prompt_ids
                row.prompt_scores = score_prompt(logits[i, self.start - len(ids):], ids, row.logprobs or 0)


def score_prompt(logits: torch.Tensor, ids: list[int], top: int) -> list[Scored]:
    """Each of ``ids`` (a prompt) with its log-probability after the ones before it, from ``logits`` (its
    positions', ``len(ids)`` x vocabulary: position p's predict token p + 1), and the ``top`` likeliest there;
    the first token has none."""
    scored = [Scored(ids[0], None)]
    for start in range(0, len(ids) - 1, SCORE_CHUNK):  # a float32 copy of SCORE_CHUNK positions' logits at a time
        end = min(start + SCORE_CHUNK, len(ids) - 1)
        model = logits[start:end].float().log_softmax(-1)
        following = torch.tensor(ids[start + 1:end + 1], dtype=torch.long, device=model.device)
        taken = model.gather(1, following[:, None])[:, 0].tolist()
        values, indices = model.topk(min(top, model.shape[-1]), dim=-1) if top else (model[:, :0],
                                                                                    model[:, :0].long())
        values_l, ids_l = values.tolist(), indices.tolist()
        scored += [Scored(token, taken[j], tuple(zip(ids_l[j], values_l[j], strict=True)))
                   for j, token in enumerate(ids[start + 1:end + 1])]
    return scored
