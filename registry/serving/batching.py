"""Continuous batching for the model server's generation: rows join a running batch between its steps and leave
it the moment they end, instead of waiting for the batch before them to finish.

A ``RunningBatch`` decodes the rows of one ``AdapterBank`` (rows of many adapters, vera_core routes each row to its
own), one token per row per ``step``. Rows that arrive meanwhile are prefilled (``join``: their prompts, left-padded
among themselves, in one forward) and their key/value cache is merged into the batch's: caches are left-padded to a
common length (the padding masked out) and stacked, so every row's tokens end at the batch's right edge and the next
step feeds one token per row. A row that ends is dropped from the cache at once, and so are the columns no row
still uses: the cache is never longer than its longest row. Positions are each row's own (its tokens counted, as
transformers' ``generate`` counts them for a left-padded batch), so a row decodes as it would alone.

A long prompt is prefilled a chunk at a time (``join``'s ``chunk``: at most that many tokens, rows x columns, per
forward; ``prefill`` runs the next chunk) and the running rows take a step between two chunks: a row streaming its
answer pauses for one chunk's forward, not for a whole long prompt's (vLLM's chunked prefill). The rows being
prefilled join the batch when their last chunk is done. Rows that score their prompts are prefilled whole (their
scores need every position's logits, which ``SCORING_LOGITS`` bounds).

Merging needs the cache's tensors: transformers' ``DynamicCache`` of full-attention layers. A model whose cache is
another kind (sliding-window layers, recurrent state) still decodes here, but only rows that start together share a
batch (``joinable`` False): the next rows wait for the batch to end, as with ``generate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import torch

from registry.serving.decode import Row, RowState, pick, score_prompt
from vera_core import AdapterBank


class Left(NamedTuple):
    """A row that left the batch: its index then (-1: one that never joined it), its owner, and the exception its
    consumer raised (None: it ended on its own terms and its ``on_end`` was called)."""

    row: int
    owner: Any
    error: Exception | None = None


class PrefillFailed(Exception):
    """A joining rows' prefill failed (the exception is its cause): the running batch is as it was."""


class _Prefill:
    """Rows being prefilled (``RunningBatch.join``): their prompts left-padded among themselves, prefilled
    ``columns`` columns per forward; ``done`` columns so far, whose keys and values are in ``cache``."""

    def __init__(self, rows: Sequence[Row], refs: Sequence[str], owners: Sequence[Any], *, pad_id: int,
                 chunk: int | None, device: torch.device) -> None:
        self.rows, self.refs, self.owners = list(rows), list(refs), list(owners)
        longest = max(len(r.prompt_ids) for r in rows)
        self.ids = torch.tensor([[pad_id] * (longest - len(r.prompt_ids)) + r.prompt_ids for r in rows],
                                device=device)
        self.mask = torch.tensor([[0] * (longest - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows],
                                 device=device)
        self.positions = _positions(self.mask)  # each token's position in its own row
        self.scoring = any(r.score_prompt for r in rows)
        whole = chunk is None or self.scoring
        self.columns = longest if whole else max(1, cast(int, chunk) // len(rows))
        self.done = 0
        self.cache: Any = None

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])


class RunningBatch:
    """The rows of one bank being decoded (see the module's docstring): row i uses adapter ``refs[i]`` and belongs
    to ``owners[i]`` (whatever the caller keeps per row: the server, its request)."""

    def __init__(self, bank: AdapterBank, *, pad_id: int, eos: set[int], decode: Callable[[list[int]], str],
                 device: torch.device) -> None:
        self.bank, self.pad_id, self.eos, self.decode, self.device = bank, pad_id, eos, decode, device
        self.model = cast(Any, bank.model.model)
        self._keep_arg = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.states: list[RowState]
        self.refs: list[str]
        self.owners: list[Any]
        #: False once a prefill gave a cache that cannot be merged: then rows join only an empty batch
        self.joinable = True
        #: rows being prefilled a chunk at a time (``join``), not yet in the batch; None when none are
        self.pending: _Prefill | None = None
        self._empty()

    def _empty(self) -> None:
        self.states, self.refs, self.owners = [], [], []
        #: set by the caller for a row that must run alone: nothing joins until the batch is empty
        self.sealed = False
        self._cache: Any = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # rows x cache length: 1 real, 0 pad
        self._next = torch.zeros(0, dtype=torch.long, device=self.device)  # each row's next token to feed
        self._position = torch.zeros(0, dtype=torch.long, device=self.device)  # and its position in its row

    def __len__(self) -> int:
        """The rows being decoded (not those being prefilled)."""
        return len(self.states)

    def __bool__(self) -> bool:
        """Whether the batch holds any row: one being decoded, or being prefilled to join."""
        return bool(self.states) or self.pending is not None

    @property
    def length(self) -> int:
        """The cache's length: the longest row's tokens so far."""
        return int(self._mask.shape[1])

    @property
    def open(self) -> bool:
        """Whether rows may join now (none are being prefilled, and the batch is empty or may take more)."""
        return self.pending is None and (not self.states or (self.joinable and not self.sealed))

    def join(self, rows: Sequence[Row], refs: Sequence[str], owners: Sequence[Any], *, chunk: int | None = None
             ) -> list[Left]:
        """Prefill ``rows`` (of adapters ``refs``), left-padded among themselves, score the prompts of rows that ask,
        take each row's first token and merge the rows into the batch; the rows that this first token ended
        (``Left``). With ``chunk``, the prefill runs at most ``chunk`` tokens (rows x columns) per forward: the first
        chunk now, the next ones each time ``prefill`` is called, and the rows join after their last (``pending``
        meanwhile; nothing else joins). ``PrefillFailed`` when a chunk fails (those rows are dropped, the running
        ones are as they were); any other exception leaves the batch unusable."""
        if self.pending is not None:
            raise RuntimeError("rows joined a batch whose last rows are still being prefilled")
        self.pending = _Prefill(rows, refs, owners, pad_id=self.pad_id, chunk=chunk, device=self.device)
        return self.prefill()

    def prefill(self) -> list[Left]:
        """The next chunk of the rows being prefilled; when it was their last, they join (see ``join``)."""
        pending = self.pending
        if pending is None:
            return []
        if all(row.cancelled for row in pending.rows):  # their callers left: no more chunks for nobody
            self.pending = None
            return self._end_unjoined(pending)
        try:
            ready = self._prefill(pending)
        except Exception as exc:
            self.pending = None
            raise PrefillFailed(str(exc)) from exc
        if ready is None:
            return []
        self.pending = None
        states, tokens = ready
        first = len(self.states)
        if first:
            self._merge(pending.cache, pending.mask, tokens)
        else:
            self._cache, self._mask, self._next = pending.cache, pending.mask, tokens
            self._position = pending.mask.sum(-1)
            self.joinable = _mergeable(pending.cache)
        self.states += states
        self.refs += pending.refs
        self.owners += pending.owners
        return self._advance(range(first, len(self.states)), tokens)

    def _end_unjoined(self, pending: _Prefill) -> list[Left]:
        """End rows that never joined (their prefill stopped: cancelled) with what they said, nothing."""
        left = []
        for row, owner in zip(pending.rows, pending.owners, strict=True):
            try:
                RowState(row, self.device, eos=self.eos, decode=self.decode).finish(row.said, "stop")
                left.append(Left(-1, owner))
            except Exception as exc:  # noqa: BLE001 - its caller's consumer: that row fails
                left.append(Left(-1, owner, exc))
        return left

    def abandon(self) -> list[Any]:
        """Stop prefilling the pending rows (their adapter went, or the batch does): their owners."""
        owners, self.pending = (self.pending.owners if self.pending else []), None
        return owners

    def _prefill(self, pending: _Prefill) -> tuple[list[RowState], torch.Tensor] | None:
        """One forward of ``pending``'s next columns; after the last, each row's state and first token (else None)."""
        start, end = pending.done, min(pending.done + pending.columns, pending.length)
        last = end == pending.length
        keep = {"logits_to_keep": 0 if pending.scoring else 1} if self._keep_arg else {}
        with torch.no_grad(), self.bank.route(pending.refs):
            out = self.model(input_ids=pending.ids[:, start:end], attention_mask=pending.mask[:, :end],
                             position_ids=pending.positions[:, start:end], past_key_values=pending.cache,
                             use_cache=True, **keep)
            pending.cache, pending.done = out.past_key_values, end
            if not last:
                return None
            for i, row in enumerate(pending.rows):
                if row.score_prompt:  # prefilled whole, left-padded: row i's prompt fills its last positions
                    row.prompt_scores = score_prompt(out.logits[i, pending.length - len(row.prompt_ids):],
                                                     row.prompt_ids, row.logprobs or 0)
            states = [RowState(r, self.device, eos=self.eos, decode=self.decode) for r in pending.rows]
            return states, pick(states, out.logits[:, -1])

    def step(self) -> list[Left]:
        """One token for every row (one forward of the batch); the rows that ended (``Left``)."""
        mask = torch.cat([self._mask, torch.ones_like(self._mask[:, :1])], dim=1)
        with torch.no_grad(), self.bank.route(self.refs):
            out = self.model(input_ids=self._next[:, None], attention_mask=mask, position_ids=self._position[:, None],
                             past_key_values=self._cache, use_cache=True)
            tokens = pick(self.states, out.logits[:, -1])
        self._cache, self._mask, self._next, self._position = out.past_key_values, mask, tokens, self._position + 1
        return self._advance(range(len(self.states)), tokens)

    def drop(self, rows: Sequence[int]) -> None:
        """Take rows (indices) out of the batch, and the cache's columns no remaining row uses."""
        gone = set(rows)
        kept = [i for i in range(len(self.states)) if i not in gone]
        if not kept:
            self._empty()
            return
        index = torch.tensor(kept, dtype=torch.long, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask, self._next, self._position = self._mask[index], self._next[index], self._position[index]
        self.states = [self.states[i] for i in kept]
        self.refs = [self.refs[i] for i in kept]
        self.owners = [self.owners[i] for i in kept]
        if self.joinable:
            unused = int(self._mask.any(0).int().argmax())  # leading columns only padding now
            if unused:
                for layer in self._cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
                self._mask = self._mask[:, unused:]

    def _advance(self, rows: range, tokens: torch.Tensor) -> list[Left]:
        """Rows ``rows`` take their ``tokens`` (in that order); those that end leave, and so does a row whose
        consumer raised (only that row fails: ``Left.error``)."""
        left: list[Left] = []
        for i, token in zip(rows, tokens.tolist(), strict=True):
            try:
                if self.states[i].advance(token):
                    left.append(Left(i, self.owners[i]))
            except Exception as exc:  # noqa: BLE001 - its caller's consumer: that row fails, not the batch
                left.append(Left(i, self.owners[i], exc))
        if left:
            self.drop([x.row for x in left])
        return left

    def _merge(self, cache: Any, mask: torch.Tensor, tokens: torch.Tensor) -> None:
        """Stack rows (their ``cache``, ``mask`` and next ``tokens``) under the batch's, both left-padded to the
        longer of the two."""
        if not (self.joinable and _mergeable(cache)):
            raise RuntimeError("rows joined a batch whose cache cannot be merged")
        length = max(self.length, int(mask.shape[1]))
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad(old.keys, length), _pad(new.keys, length)])
            old.values = torch.cat([_pad(old.values, length), _pad(new.values, length)])
        self._mask = torch.cat([_pad_mask(self._mask, length), _pad_mask(mask, length)])
        self._next = torch.cat([self._next, tokens])
        self._position = torch.cat([self._position, mask.sum(-1)])


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Each token's position in its own row of a left-padded batch, as ``generate`` counts them (padding: 1)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def _pad(states: torch.Tensor, length: int) -> torch.Tensor:
    """Keys or values (rows x heads x tokens x head size) left-padded with zeros to ``length`` tokens."""
    return torch.nn.functional.pad(states, (0, 0, length - states.shape[-2], 0))


def _pad_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (length - mask.shape[1], 0))


def _mergeable(cache: Any) -> bool:
    """Whether ``cache`` is transformers' ``DynamicCache`` of full-attention layers (rows x heads x tokens x size
    tensors, nothing else), whose rows can be padded and stacked."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    layers: list[Any] = list(getattr(cache, "layers", None) or [])
    return isinstance(cache, DynamicCache) and bool(layers) and all(
        type(layer) is DynamicLayer and isinstance(getattr(layer, "keys", None), torch.Tensor) for layer in layers)
