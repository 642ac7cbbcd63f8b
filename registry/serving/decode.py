"""Per-row decoding for the model server's generation batches (registry/serving/batching.py runs the batches).

A serving batch mixes requests: each row has its own adapter (vera_core.AdapterBank routes that), and here its own
sampling (greedy, or temperature, top-k and top-p with a seed of its own), its own token budget and stop strings,
and its own consumer, which hears of its text as it grows and gets its answer the moment its row ends, not when the
batch's longest row does.

- ``pick`` takes each row's next token from the batch's logits: a greedy row's likeliest (what a greedy
  ``generate`` of the row gives), a sampling row's drawn from its own ``torch.Generator``. A row draws once per
  token it generates, so a seeded row gives the same text whatever else shares its batch, and whenever it joined.
- ``RowState`` ends its row at the end-of-sequence token, at one of its stop strings (the text cut before it, as
  OpenAI's ``stop``) or at its token budget, and hands the row's new text to its ``Row`` as it is decoded: its last
  characters wait while a stop string could still begin there (the longest stop's length less one, as vLLM does),
  as does an incomplete UTF-8 character.
- Log-probabilities, for rows that ask (``Row.logprobs``): ``pick`` keeps, at each step, the log-probability of the
  token the row takes and of the ``logprobs`` likeliest, under the distribution the model gave (before
  temperature, top-k and top-p: vLLM's default, "raw" log-probabilities), reduced on the device and read back
  once a step for all the rows that ask (kept as plain numbers: a row's 512 steps of tensors cost seconds to
  free). ``score_prompt`` gives a prompt's own tokens theirs from the prefill's logits (``Row.score_prompt``:
  OpenAI's ``echo`` with ``logprobs``, how lm-evaluation-harness scores a continuation).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

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
    ``cancelled`` (set by its consumer, e.g. a client that hung up) ends it at the next token. ``on_scores``, for
    a row that asks for log-probabilities, gets those of the tokens decided since its last call just before each
    ``on_text`` (a stream's chunk carries them); what it has not had by the end is in ``scores``' tail."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: Sampling = field(default_factory=Sampling)
    stops: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None
    on_end: Callable[[list[int], str, FinishReason], None] | None = None
    on_scores: Callable[[list[Scored]], None] | None = None
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
    # what a row left with nothing to draw from takes: its likeliest before top-k and top-p (after them, an argmax
    # of all -inf was token 0: a top_p of 1e-300, zero in float32, dropped even the first token)
    likeliest = torch.nn.functional.one_hot(logits.argmax(), logits.shape[-1])
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        probs = ordered.softmax(-1)
        # drop a token when the ones before it already add up to top_p (the first always stays)
        drop = probs.cumsum(-1) - probs >= sampling.top_p
        drop[0] = False
        logits = torch.empty_like(logits).scatter_(0, order, ordered.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    usable = torch.isfinite(probs).all() & (probs.sum() > 0)
    return torch.multinomial(torch.where(usable, torch.nan_to_num(probs, nan=0.0), likeliest.to(probs.dtype)), 1,
                             generator=generator)


#: The prompt's tokens a row's new tokens are decoded after (vLLM's detokenizer starts with its last five too).
PROMPT_CONTEXT = 5


class RowState:
    """One row while it decodes: its generator, its tokens, its text so far and its log-probabilities (kept on the
    device until it ends); ``advance`` takes each new token and ends the row on its own terms (see the module's
    docstring). ``decode`` turns token ids into text; ``eos``: the ids that end a row."""

    def __init__(self, row: Row, device: torch.device, *, eos: set[int],
                 decode: Callable[[list[int]], str]) -> None:
        self.row, self.eos, self.decode = row, eos, decode
        self.seed = None if row.sampling.greedy else \
            row.sampling.seed if row.sampling.seed is not None else secrets.randbits(63)
        self.generator = None if self.seed is None else torch.Generator(device=device).manual_seed(self.seed)
        self.tokens: list[int] = []
        self.ended = False
        # the prompt's last tokens, before the new ones when they are decoded (as vLLM's detokenizer starts): a
        # SentencePiece or WordPiece decoder drops the space of the first token it decodes, so the new text began
        # "time" after "Once upon a" (an outsider's finding: prompt and completion ran together with echo)
        self._context = list(row.prompt_ids[-PROMPT_CONTEXT:])
        self._context_text = decode(self._context) if self._context else ""
        # the text so far, decoded a few tokens at a time (``_grow``): tokens[prefix:read] of the context and the
        # new tokens gave its end
        self._text, self._prefix, self._read = "", 0, len(self._context)
        # log-probabilities, when the row asks: per step, the taken token's and the likeliest ones' (id, value)
        self._scores: list[tuple[float, tuple[tuple[int, float], ...]]] = []
        self._told = 0  # the tokens whose log-probabilities ``on_scores`` has had

    def keep(self, taken: float, values: Sequence[float], ids: Sequence[float]) -> None:
        """This step's log-probability of the token taken, and of the likeliest tokens (``values``, ``ids``,
        likeliest first)."""
        top = self.row.logprobs or 0
        self._scores.append((taken, tuple(zip(map(int, ids[:top]), values[:top], strict=True))))

    def scored(self, start: int = 0) -> list[Scored] | None:
        """The row's new tokens (from the ``start``-th) with their log-probabilities (None when it asked for
        none)."""
        if self.row.logprobs is None:
            return None
        n = min(len(self.tokens), len(self._scores))
        return [Scored(token, *self._scores[start + j]) for j, token in enumerate(self.tokens[start:n])]

    def advance(self, token: int) -> bool:
        """Take the row's next ``token``; True once the row has ended (its ``on_end`` called)."""
        self.tokens.append(token)
        row, tokens = self.row, self.tokens
        if row.cancelled:
            self.finish(row.said, "stop")
        elif tokens[-1] in self.eos:
            self.finish(self.text_of(tokens[:-1]), "stop")
        elif row.on_text is None and not row.stops and len(tokens) < row.max_new_tokens:
            pass  # nobody reads its text before the end: decode it once, then
        elif len(tokens) >= row.max_new_tokens and not row.stops:
            self.finish(self.text_of(tokens), "length")
        else:
            self._search()
        return self.ended

    def _search(self) -> None:
        """Grow the text, end the row at a stop string or its budget, else hand its consumer what is decided."""
        row, tokens = self.row, self.tokens
        searched = len(self._text)
        text = self._grow()
        cut = min((at for at in (text.find(s, max(0, searched - len(s) + 1)) for s in row.stops) if at >= 0),
                  default=-1)  # only where the new text could have completed one
        if cut >= 0:
            return self.finish(text[:cut], "stop")
        if len(tokens) >= row.max_new_tokens:
            return self.finish(self.text_of(tokens), "length")
        # hold back what might begin a stop string (as vLLM does: the longest stop's length less one, not a search
        # for its prefixes, which cost most of a batch's time with long stops), and an incomplete character
        held = max((len(s) - 1 for s in row.stops), default=0)
        ready = text[:max(0, len(text) - held)].rstrip("\ufffd")
        if row.on_text is not None and len(ready) > len(row.said) and ready.startswith(row.said):
            self._tell(ready)
        return None

    def _grow(self) -> str:
        """The row's text with its new tokens, decoding only the last few (as vLLM's detokenizer): the tokens
        since the last decided text, with the one or two before them for context, whose own text is then cut off;
        text that ends in an incomplete character (U+FFFD) waits for the next token. Decoding the whole row at
        every token cost time quadratic in its length (an outsider's finding: 5x a batch's time)."""
        prefix, read, end = self._prefix, self._read, len(self._context) + len(self.tokens)
        window = self.decode(self._span(prefix, end))
        before = self.decode(self._span(prefix, read)) if read > prefix else ""
        if window.endswith("\ufffd") or len(window) <= len(before):
            return self._text
        if window.startswith(before):
            self._text += window[len(before):]
            self._prefix = read
        else:  # a tokenizer whose pieces read otherwise in context: decode the whole row, this once
            self._text = self.text_of(self.tokens)
            self._prefix = end - 1
        self._read = end
        return self._text

    def _span(self, start: int, end: int) -> list[int]:
        """Tokens ``start:end`` of the prompt's context followed by the new tokens (without joining the two)."""
        skip = len(self._context)
        return self._context[start:end] + self.tokens[max(0, start - skip):max(0, end - skip)]

    def text_of(self, tokens: list[int]) -> str:
        """The text ``tokens`` add after the prompt: decoded after its last few tokens, less their own text (alone
        where they read otherwise in company)."""
        if not self._context:
            return self.decode(tokens)
        whole = self.decode(self._context + tokens)
        return whole[len(self._context_text):] if whole.startswith(self._context_text) else self.decode(tokens)

    def _tell(self, text: str) -> None:
        """Hand the consumer ``text``'s part after what it has had, with the log-probabilities of the tokens
        decided since it last had some (``on_scores``, first)."""
        row, on_text = self.row, self.row.on_text
        if on_text is None:
            return
        if row.on_scores is not None:
            told, self._told = self._told, len(self.tokens)
            row.on_scores(self.scored(told) or [])
        on_text(text[len(row.said):])
        row.said = text

    def finish(self, text: str, reason: FinishReason) -> None:
        """End the row: its consumer gets the rest of ``text``, then its ``on_end``."""
        self.ended = True
        row = self.row
        row.scores = self.scored()
        if row.on_text is not None and text.startswith(row.said) and len(text) > len(row.said):
            self._tell(text)
        if row.on_end is not None:
            row.on_end(self.tokens, text, reason)


def pick(states: Sequence[RowState], logits: torch.Tensor) -> torch.Tensor:
    """The next token of each row (``logits``: rows x vocabulary, the rows of ``states`` in order): a greedy
    row's likeliest, a sampling row's drawn from its own generator; the log-probabilities of rows that ask are
    kept (``RowState.keep``, under the model's distribution, before temperature, top-k and top-p: vLLM's "raw"
    log-probabilities). A 1-D tensor of token ids, on the logits' device."""
    logits = logits.float()
    taken = logits.argmax(-1)
    for i, state in enumerate(states):
        if state.generator is not None:
            taken[i] = _draw(logits[i], state.row.sampling, state.generator)[0]
    asking = [i for i, state in enumerate(states) if state.row.logprobs is not None]
    if asking:
        index = torch.tensor(asking, device=logits.device)
        model = logits.index_select(0, index).log_softmax(-1)
        chosen = model.gather(1, taken.index_select(0, index)[:, None])
        top = min(max(states[i].row.logprobs or 0 for i in asking), model.shape[-1])
        values, ids = model.topk(top, dim=-1) if top else (model[:, :0], model[:, :0].long())
        # read back once for every asking row (float64 holds the ids exactly): plain numbers, not a row's tensor
        # per step, which took seconds to free when 46 rows of 512 steps ended together (an outsider's finding)
        read = torch.cat([chosen.double(), values.double(), ids.double()], 1).tolist()
        for j, i in enumerate(asking):
            states[i].keep(read[j][0], read[j][1:1 + top], read[j][1 + top:])
    return taken


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
