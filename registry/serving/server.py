"""Serving many registry adapters at once on one base model: hot-loaded on first use, resident until evicted,
and batched together whatever adapter each request names.

Adapters that share (generator, seed, r, targets, head shapes) share one projection and one ``AdapterBank``: a
mixed batch costs about one adapter's arithmetic (vera_core.bank). Adapters of another family get a bank of their
own (one more copy of the base, up to ``max_banks``). Every request names ``owner/name[:version|@alias]``; the
name is resolved through the registry with the caller's token (so the caller needs read access to it), at most
``resolve_ttl_s`` stale, so moving an alias switches the version served.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import logging
import math
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, NamedTuple, TypeVar, cast

import httpx
import torch

from registry.client import RegistryClient
from registry.domain.errors import (
    Busy,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RegistryError,
    Unauthorized,
    status_of,
)
from registry.domain.schemas import Ref, VersionInfo, WhoAmI
from registry.services.tokens import Principal, Role
from registry.serving.batching import Left, PrefillFailed, RunningBatch
from registry.serving.decode import (
    FinishReason,
    Row,
    Sampling,
    Scored,
    score_prompt,
)
from vera_core import AdapterBank, AdapterFiles, VeraConfig, VeraError, VeraModel, read_adapter
from vera_core.keys import module_path
from vera_core.recipes import resolve_base

Task = Literal["classification", "causal-lm"]
K = TypeVar("K")
V = TypeVar("V")
log = logging.getLogger("vera.serving")
#: After a registry could not look the residents up (an older release, an outage): how long listings go on without
#: asking it again (each private resident is then asked about alone, as before the lookup existed).
LOOKUP_RETRY_S = 60
#: Rows that score their prompts (``echo`` with ``logprobs``) keep every prompt position's logits in their prefill:
#: such rows are batched so that rows x longest prompt x vocabulary stays under this (2**28: 1 GiB of float32), and
#: one prompt alone may hold at most SCORING_ROW_LOGITS (2**30: 4 GiB of float32; 8,192 tokens of a 128k vocabulary).
SCORING_LOGITS, SCORING_ROW_LOGITS = 2**28, 2**30
#: A token's text in a log-probability answer is read with this many tokens before it (token_pieces), and the
#: pieces are decoded this many a call (a few milliseconds)
PIECE_CONTEXT, PIECES_PER_CALL = 4, 4_096
#: A classified text's tokens read (special ones included): its first CLASSIFY_TOKENS. It is tokenized a prefix of
#: CLASSIFY_PREFIX characters at a time (doubled until that prefix holds CUT_MARGIN more tokens, so that where it is
#: cut cannot change the tokens read, or is the whole text).
CLASSIFY_TOKENS, CLASSIFY_PREFIX, CUT_MARGIN = 256, 2_048, 8
#: The most new tokens a row may ask for, by default (vera serve-model --max-tokens), and whatever the setting: the
#: schema's bound, checked before a request's rows are built.
MAX_NEW_TOKENS, NEW_TOKENS_CEILING = 512, 32_768
#: How many callers the queue remembers when it last served (the rest count as never served: they were served before
#: every one it remembers, so they keep their place).
SERVED_KEPT = 4_096
#: How often a request waiting for its answer asks whether its client is still there (ModelServer.gather).
GONE_POLL_S = 0.2
#: How long /ready's answer about the registry is kept, and how long the registry has to give one
#: (ModelServer.registry_problem).
READY_TTL_S, READY_TIMEOUT_S = 5.0, 3.0
#: The most requests that wait on the registry at once (resolving an adapter, loading it, a listing's lookup); the
#: rest are told to retry, and the threads of routes that need no registry stay free.
REGISTRY_QUESTIONS = 24
#: How long a request's claim on its adapter (ModelServer.activate) keeps it from eviction at most, before its work
#: is queued: its prompt's tokenizing and checks take well under that; a request that fails meanwhile gives it back.
CLAIM_S = 30.0
#: How long the registry's word on whose a token is counts for the queue's turns (ModelServer._turn_of).
TURN_TTL_S = 60.0


class GenerationFailed(RegistryError):
    """``generate`` failed for a row even on its own (the server's log has the exception)."""

    code = "generation_failed"


class Evicted(Conflict):
    """The adapter was evicted between its activation and its forward: sending the request again loads it again
    (the one conflict worth retrying)."""


def serving_status(exc: RegistryError) -> int:
    """The model server's status for ``exc``: the registry out of reach is its 503; other errors keep theirs."""
    from registry.client import RegistryUnavailable

    return 503 if isinstance(exc, RegistryUnavailable) else status_of(exc)


def caller_token(authorization: str | None) -> str | None:
    """The bearer secret of an ``Authorization`` header, refused (401) unless it is printable ASCII, as every token
    is: anything else could not even be passed on to the registry in a header."""
    from registry.api.deps import bearer_token

    secret = bearer_token(authorization)
    if secret is not None and not (secret.isascii() and secret.isprintable()):
        raise Unauthorized("The token is unknown or revoked, or another registry's; pass one of this "
                           "registry's (`vera login`, VERA_TOKEN or --token).")
    return secret


def check_unicode(text: str, what: str) -> str:
    """``text`` if it is Unicode that UTF-8 can write (not a lone surrogate, which JSON's \\ud800 escapes allow)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} holds a lone UTF-16 surrogate (an escape from \\ud800 to \\udfff without its "
                           "pair), which is not text: send UTF-8.") from None
    return text


#: A bank's identity: adapters with equal keys share its projection and its base copy.
class BankKey(NamedTuple):
    """What adapters must share to sit in one AdapterBank (one projection, one copy of the base with its heads)."""

    generator: str
    seed: int
    r: int
    targets: tuple[str, ...]
    heads: tuple[tuple[str, tuple[int, ...]], ...]  # (module path, shape) of each head tensor


@dataclass
class Resident:
    """One adapter version held in a bank."""

    ref: str  # owner/name:N, pinned to a version
    base_model: str
    bank: BankKey
    labels: list[str]
    load_s: float
    private: bool = False  # listed only to callers whose token reads it
    pinned: bool = False
    pinned_by: str | None = None  # the user whose pin it is: who may unpin it once the registry no longer has it
    requests: int = 0
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    #: when the registry last said what it is (loaded, asked for, or looked up by a listing: time.monotonic())
    checked: float = field(default_factory=time.monotonic)
    #: its requests' works queued or being run: it is not evicted for capacity while any is (ModelServer._enqueue)
    holds: int = 0
    #: when each request that took it (activate) and has not queued its work yet stops counting (time.monotonic():
    #: CLAIM_S after): a request tokenizing its prompt keeps it too; one that fails meanwhile gives its claim back
    claims: list[float] = field(default_factory=list)


@dataclass
class _Work:
    kind: Literal["classify", "generate"]
    resident: Resident
    payload: Any  # classify: the texts; generate: its Row
    future: Future[Any] = field(default_factory=Future)
    alone: bool = False  # a generation row that failed in company: it runs again in a batch of its own
    counted: bool = True  # counts as a request served (a classify request's later forwards do not)


@dataclass(frozen=True)
class Generated:
    """One generated row: its new token ids (the end-of-sequence token included when it ended there), its text
    (without that token, cut before a stop string) and why it ended; with their log-probabilities, and its
    prompt's, when the row asked (decode.Row.logprobs, score_prompt)."""

    tokens: list[int]
    text: str
    finish_reason: FinishReason
    scores: list[Scored] | None = None
    prompt_scores: list[Scored] | None = None


class _Recent(Generic[K, V]):
    """Answers kept for a while: ``get`` gives one younger than ``ttl_s`` seconds, or None; past ``most`` keys it
    starts over rather than grow (many callers times many names)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._kept: dict[K, tuple[float, V]] = {}

    def get(self, key: K, ttl_s: float) -> V | None:
        hit = self._kept.get(key)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < ttl_s else None

    def put(self, key: K, value: V) -> None:
        if len(self._kept) >= self.most:
            self._kept.clear()
        self._kept[key] = (time.monotonic(), value)


class _Waiting:
    """The rows waiting for the batcher: a first-in-first-out queue per caller (its token), taken in turn, so that
    a caller who sends many rows delays others by at most one row per turn instead of all of them; at most
    ``limit`` rows wait, at most ``per_caller`` of one caller's (the rest are a 503 to retry: room is always left
    for the others). The turn is the waiting caller served longest ago (one never served, or not within the last
    SERVED_KEPT turns, first; then in order of arrival): a caller who arrives while another's row is being worked
    on goes before that caller's next row (it went after it: behind an outsider's 64-text forwards, another caller's
    one text waited for two of them, 12 s on a CPU), and a caller whose rows all went and who sends again at once
    keeps its place behind those it was served before."""

    def __init__(self, limit: int, per_caller: int) -> None:
        self.limit, self.per_caller = limit, per_caller
        self._by: dict[str, deque[_Work]] = {}
        self._mine: dict[str, int] = {}  # each caller's rows waiting (a classify request's texts are rows each)
        self._turns: list[str] = []  # callers with rows waiting, in order of arrival
        self._served: dict[str, int] = {}  # the last turn of each caller served lately (the oldest first)
        self._count, self._closed, self._turn = 0, False, 0
        self._ready = threading.Condition()

    def put(self, caller: str, works: Sequence[_Work]) -> None:
        rows = sum(map(_rows, works))
        if rows > self.per_caller:  # a 503 to retry would be refused again whenever it came (a docs audit, session 53)
            raise InvalidInput(f"This request has {rows} rows (texts or prompts); a caller may have at most "
                               f"{self.per_caller} waiting on this model server (of its --max-queue {self.limit}): "
                               f"send at most {self.per_caller} a request.")
        with self._ready:
            mine = self._mine.get(caller, 0)
            if self._count + rows > self.limit or mine + rows > self.per_caller:
                raise Busy(f"{self._count} rows are waiting for this model server ({mine} of them yours; at most "
                           f"{self.limit}, {self.per_caller} of one caller's; this request has {rows}); retry in a "
                           "moment.")
            if caller not in self._by:
                self._by[caller] = deque()
                self._turns.append(caller)
            self._by[caller].extend(works)
            self._count += rows
            self._mine[caller] = mine + rows
            self._ready.notify()

    def get(self, timeout: float | None = None, *, taking: Callable[[_Work], bool] | None = None,
            oldest: bool = False) -> _Work | None:
        """The next caller's oldest row; None once closed, or when ``timeout`` passes with nothing waiting. With
        ``taking``, the oldest row it takes of the next caller who has one (a caller's rows of a family whose batch
        is full wait, in order, while its rows of another family go; callers without one keep their turn), or None
        when it takes none of those waiting; with ``oldest`` too, only each caller's oldest row is looked at."""
        found: tuple[str, int] | None = None

        def ready() -> bool:  # a row to take (its caller, its place), or closed
            nonlocal found
            order = sorted(self._turns, key=lambda caller: self._served.get(caller, -1))  # stable: then arrival
            found = next(((caller, j) for caller in order
                          for j, row in enumerate(itertools.islice(self._by[caller], 1 if oldest else None))
                          if taking is None or taking(row)), None)
            return found is not None or self._closed

        with self._ready:
            if not self._ready.wait_for(ready, timeout=timeout) or self._closed or found is None:
                return None
            caller, at = found
            rows = self._by[caller]
            work = rows[at]
            del rows[at]
            self._count -= _rows(work)
            self._mine[caller] -= _rows(work)
            if not rows:
                del self._by[caller], self._mine[caller]
                self._turns.remove(caller)
            self._turn += 1
            self._served.pop(caller, None)
            self._served[caller] = self._turn  # the most recent last
            if len(self._served) > SERVED_KEPT:
                del self._served[next(iter(self._served))]
            return work

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


Specials = tuple[tuple[int, ...], tuple[int, ...]]


def _specials_added_alike(tokenizer: Any) -> Specials | None:
    """The special tokens the tokenizer puts before and after one text's (a BERT tokenizer's [CLS] and [SEP]), if
    putting them around ids it truncated without them gives what its own truncation with them gives, so that a
    classified text is tokenized once; None otherwise (truncation from the left, specials that depend on the text)."""
    if getattr(tokenizer, "truncation_side", "right") != "right":
        return None
    empty = list(tokenizer("")["input_ids"])
    one = list(tokenizer("a")["input_ids"])
    plain_one = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    cut = next((i for i in range(len(one) - len(plain_one) + 1) if one[i:i + len(plain_one)] == plain_one), None)
    if not plain_one or cut is None:
        return None
    specials = (tuple(one[:cut]), tuple(one[cut + len(plain_one):]))
    if list(specials[0] + specials[1]) != empty:
        return None
    added = len(specials[0]) + len(specials[1])
    for text in ("a", "two words, and more: 123 ünï", "ab " * 40):
        plain = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        for keep in {len(plain), max(len(plain) - 1, 1), max(len(plain) // 2, 1)}:
            built = [*specials[0], *plain[:keep], *specials[1]]
            try:
                truncated = list(tokenizer(text, truncation=True, max_length=keep + added)["input_ids"])
            except (ValueError, TypeError):  # a tokenizer that cannot truncate so far: read as before
                return None
            if built != truncated:
                return None
    return specials


class ModelServer:
    """One base model, many adapters. ``client_for(token)`` gives a registry client acting as the caller."""

    def __init__(
        self, base: str, *, task: Task = "classification", base_name: str | None = None,
        client_for: Callable[[str | None], RegistryClient], max_resident: int = 10_000, max_banks: int = 4,
        max_batch: int = 64, batch_window_s: float = 0.004, resolve_ttl_s: float = 2.0, device: str = "cpu",
        max_queue: int = 1024, timeout_s: float = 600.0, prefill_chunk: int | None = 512,
        classify_tokens: int | None = 2048, max_tokens: int = MAX_NEW_TOKENS, pinned_banks_per_user: int = 1,
        generation_config: Literal["auto", "none"] = "none",
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.base_path, self.task, self.base_name = resolve_base(base), task, base_name or base
        self.client_for, self.max_resident, self.max_banks = client_for, max_resident, max_banks
        self.max_batch, self.batch_window_s, self.resolve_ttl_s = max_batch, batch_window_s, resolve_ttl_s
        self.max_queue, self.timeout_s = max_queue, timeout_s
        #: the banks one user's pins may hold (registry admins: up to max_banks - 1, as all pins together): one
        #: publisher pinning three families kept three copies of the base and left every other caller one bank
        self.pinned_banks_per_user = pinned_banks_per_user
        #: tokens per prefill forward (rows x columns): a longer prompt is prefilled in chunks, the running rows
        #: taking a step between two (None: whole)
        self.prefill_chunk = prefill_chunk
        #: tokens per classification forward (texts x the longest; a text alone may hold more): another caller's
        #: text waits for one such forward at most (None: max_batch texts, whatever their length)
        self.classify_tokens = classify_tokens
        #: the most new tokens one row (a choice) may ask for
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        #: OpenAI's routes' sampling for what a request leaves out: the base's generation_config.json values with
        #: ``generation_config="auto"`` (vLLM's ``--generation-config auto``), else OpenAI's defaults (empty)
        self.sampling_defaults = sampling_defaults(self.base_path) if generation_config == "auto" else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_path, local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if task == "causal-lm":
            self.tokenizer.padding_side = "left"  # generation continues every row from the batch's right edge
        # a Rust tokenizer refuses to be used from two threads while one changes its padding ("Already borrowed")
        self._tokenizer_lock = threading.Lock()
        # a copy that only decodes (its padding and truncation never change, so threads share it without the
        # lock): the batcher's text between steps and log-probabilities' texts never wait for a request's
        # tokenizing, nor for one another (an outsider's 500,000 log-probabilities held every stream 5 to 11 s)
        self._decoder = copy.deepcopy(self.tokenizer)
        #: the special tokens a classified text gets, when adding them to truncated ids gives what the tokenizer's
        #: own truncation does (checked here: a tokenizer whose post-processing differs is asked twice instead)
        self._classify_specials = _specials_added_alike(self.tokenizer)
        config = AutoConfig.from_pretrained(self.base_path, local_files_only=True)
        #: prompt plus new tokens may not exceed the positions the base was trained for (None: it sets no limit)
        self.context_length: int | None = next((int(v) for v in (getattr(config, "max_position_embeddings", None),
                                                                  getattr(config, "n_positions", None)) if v), None)
        #: the token ids a prompt may hold: those both the tokenizer and the model's embedding know
        self.logits_width = int(getattr(config, "vocab_size", None) or len(self.tokenizer))
        self.vocab_size = min(len(self.tokenizer), self.logits_width)
        self.banks: dict[BankKey, AdapterBank] = {}
        self.residents: dict[str, Resident] = {}
        # the registry's answers, each kept resolve_ttl_s: (token, ref) -> its version, (token, ref) it refused,
        # token -> its caller
        self._resolved: _Recent[tuple[str | None, str], VersionInfo] = _Recent(100_000)
        self._unreadable: _Recent[tuple[str | None, str], bool] = _Recent(100_000)
        self._who: _Recent[str | None, WhoAmI] = _Recent(10_000)
        self._refused: _Recent[str | None, bool] = _Recent(10_000)
        self._lookup_again_at = 0.0  # (time.monotonic()) a registry that could not look residents up: when to again
        self._registry_seen: _Recent[None, str] = _Recent(1)  # the registry's reachability, for READY_TTL_S
        self._asking_registry = threading.Lock()  # one /ready question to the registry at a time
        self._questions = threading.BoundedSemaphore(REGISTRY_QUESTIONS)  # requests waiting on the registry
        self._loading: dict[str, threading.Lock] = {}
        self._building = threading.Lock()  # one base copy built at a time, outside ``lock``
        self.lock = threading.RLock()  # guards banks and residents; forwards hold it too
        #: guards residents' holds and claims, and their removal for capacity (taken under ``lock`` there, alone
        #: elsewhere: a request's thread and the event loop never wait for a forward to count them)
        self._holds_lock = threading.Lock()
        # half of the queue for any one caller: room is always left for the others
        self._queue = _Waiting(max_queue, per_caller=max(1, max_queue // 2))
        # the batcher's: each bank's rows being decoded, and generation rows taken from the queue that have not
        # joined yet (at most max_batch per family); changed under ``lock`` only
        self._running: dict[BankKey, RunningBatch] = {}
        self._joining: list[_Work] = []
        self._draining: set[BankKey] = set()  # banks to go for a new family: they take no rows meanwhile
        self._prefilled: set[BankKey] = set()  # banks whose rows began a prefill this turn (``_admit``)
        self._thread = threading.Thread(target=self._run, name="vera-batcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._queue.close()
        self._thread.join(timeout=10)

    @contextmanager
    def _asking(self, token: str | None) -> Iterator[RegistryClient]:
        """A registry client acting as ``token``'s caller, while at most REGISTRY_QUESTIONS requests wait on the
        registry at once: past that, Busy at once. A registry that hung held a thread for each request that asked
        it something (resolving, an anonymous listing), until none was left for any route, /tokenize included
        (an outsider's re-check, session 47)."""
        if not self._questions.acquire(blocking=False):
            raise Busy(f"This model server has {REGISTRY_QUESTIONS} requests waiting on its registry already (it "
                       "answers slowly, or not at all: /ready says); retry in a few seconds.")
        try:
            with self.client_for(token) as client:
                yield client
        finally:
            self._questions.release()

    def registry_problem(self) -> str | None:
        """Why the registry this server resolves every request through does not answer (its /health), or None when
        it does. Without it no request can be answered (each is resolved with its caller's token), while /health
        said "ok": a load balancer kept sending requests (an inference engineer's walk, session 47). /ready says
        it. One question at a time, within READY_TIMEOUT_S and never retried, asked at most once per READY_TTL_S;
        meanwhile callers get the last answer (probes of a registry that hung held a thread each for minutes, and
        took every thread the server has: an outsider's finding)."""
        seen = self._registry_seen.get(None, READY_TTL_S)
        if seen is not None:
            return seen or None
        if not self._asking_registry.acquire(blocking=False):  # another caller is asking: the last answer
            last = self._registry_seen.get(None, math.inf)
            return "its /health is being asked (no answer yet)" if last is None else last or None
        try:
            try:
                with self.client_for(None) as client:
                    client.retries = 0
                    client.http.timeout = httpx.Timeout(READY_TIMEOUT_S)
                    client.health()
                seen = ""
            except RegistryError as exc:  # unreachable, slow, or answering an error: either way requests fail
                seen = str(exc)[:300]
            self._registry_seen.put(None, seen)
        finally:
            self._asking_registry.release()
        return seen or None

    # ---- resolving and loading ---------------------------------------------------------------------------------
    def resolve(self, name: str, token: str | None) -> VersionInfo:
        """The version ``name`` means now, checked with the caller's token (cached for ``resolve_ttl_s``)."""
        ref = Ref.parse(name)
        key = (token, str(ref))
        hit = self._resolved.get(key, self.resolve_ttl_s)
        if hit is not None:
            return hit
        with self._asking(token) as client:
            info = client.get(ref)
        self._resolved.put(key, info)
        return info

    def activate(self, name: str, token: str | None) -> Resident:
        """The resident adapter ``name`` resolves to, loading it from the registry on first use."""
        try:
            info = self.resolve(name, token)
        except (NotFound, Forbidden):
            self._hide(name)
            raise
        if token is not None and self._who.get(token, TURN_TTL_S) is None:
            with suppress(RegistryError):  # who the caller is, for its turns in the queue (_turn_of), once a minute
                self._whoami(token)
        if info.base_model != self.base_name:
            raise Conflict(f"{info.ref} was published for base model {info.base_model!r}; this server serves "
                           f"{self.base_name!r}. Its vectors would not fit (or would silently mean nothing) on another "
                           f"model. If {self.base_name!r} is that model under another name (a folder of it), start "
                           f"the server with --base-name {info.base_model}.")
        # no ``lock`` here (dict reads and setdefault are atomic): a request must not wait for the running batch to
        # join the queue, where callers take turns
        # claimed from here until its work is queued (or CLAIM_S passes): a resident found, at once; one loaded, as it
        # is added (a load's adapter was evicted before its request could claim it, under contention: a re-check)
        resident = self._claim(info.ref)
        if resident is None:
            with self._loading.setdefault(info.ref, threading.Lock()):  # one download per version, however many
                resident = self._claim(info.ref) or self._load(info, token)  # requests ask at once
        resident.private = info.visibility != "public"  # made private since it loaded: listed no more
        resident.last_used = resident.checked = time.monotonic()
        return resident

    def _claim(self, ref: str) -> Resident | None:
        """``ref``'s resident, claimed for one request (kept from eviction until its work is queued), or None when
        it is not loaded."""
        with self._holds_lock:
            resident = self.residents.get(ref)
            if resident is not None:
                resident.claims.append(time.monotonic() + CLAIM_S)
            return resident

    def _hide(self, name: str) -> None:
        """A caller was refused ``name`` (a version, or an adapter's latest): the residents it names may have been
        made private or deleted since they loaded, so they are listed only to callers the registry lets read them
        (asked then) until a request that may read them comes again (an outsider saw a version made private, and
        one deleted, listed to everyone for good)."""
        try:
            ref = Ref.parse(name)
        except InvalidInput:
            return
        if ref.alias is not None:  # a missing alias says nothing of the versions resident
            return
        with self.lock:
            for resident in self.residents.values():
                owner, _, rest = resident.ref.partition("/")
                adapter, _, number = rest.partition(":")
                if (owner, adapter) == (ref.owner, ref.name) and ref.version in (None, int(number)):
                    resident.private = True

    def _turn_of(self, token: str | None) -> str:
        """Whose turn ``token``'s rows take in the queue: its user's (as the registry named it when the token's
        adapter was resolved), so that a user's several tokens share one turn and one share of the queue (minting
        tokens gave more); a token not seen within a minute stands for itself. Never asks the registry: this runs
        on the event loop."""
        if token is None:
            return ""
        # whatever its age: a token's user never changes, and an entry activate() refreshed may pass TURN_TTL_S
        # while the request's texts are tokenized (an outsider's minted token then stood for itself: a second share)
        who = self._who.get(token, math.inf)
        return f"user:{who.user}" if who is not None and not who.anonymous else f"token:{token}"

    def _whoami(self, token: str | None) -> WhoAmI:
        hit = self._who.get(token, self.resolve_ttl_s)
        if hit is not None:
            return hit
        with self._asking(token) as client:
            who = client.whoami()
        self._who.put(token, who)
        return who

    def _managed(self, name: str, token: str | None, verb: str) -> tuple[str, WhoAmI]:
        """The version ``name`` means (owner/name:N) and the caller, if the caller may ``verb`` it: pinning,
        unpinning and evicting change what every caller of this server waits for, so they are for those who may
        publish under its owner (as the registry's rules say: the owner, an organisation's writers, registry
        admins), not for every reader. A resident the registry no longer has (deleted, or moved) is a registry
        admin's, and its pinner's, by its exact ref."""
        try:
            info = self.resolve(name, token)
        except NotFound:
            self._hide(name)  # (deleted, or unreadable to this caller: listed only to those it may read it for)
            resident = self.residents.get(name)
            if resident is not None:
                who = self._whoami(token)
                if "admin" in who.scopes or (resident.pinned_by is not None and resident.pinned_by == who.user
                                             and not who.anonymous):
                    return name, who
            raise
        owner = info.ref.split("/")[0]
        who = self._whoami(token)
        caller = Principal(owner=who.user, scopes=frozenset(who.scopes), roles=cast(dict[str, Role], who.organizations),
                           limited_to=None if who.limited_to is None else frozenset(who.limited_to),
                           anonymous=who.anonymous)
        if not caller.can_write(owner):  # the registry's own rule for who publishes under an owner
            raise Forbidden(f"Only those who may publish under {owner}/ (and registry admins) may {verb} {info.ref}; "
                            "your token may read it.")
        return info.ref, who

    def pin(self, name: str, token: str | None) -> Resident:
        """Load (if needed) and pin ``name``: never evicted. At most half of ``max_resident`` adapters are pinned,
        and pins hold at most ``max_banks - 1`` banks, so that adapters nobody pinned always have one."""
        _, who = self._managed(name, token, "pin")
        resident = self.activate(name, token)
        try:
            self._pin(resident, who)
        finally:  # a pin queues no work: its claim goes back, refused or not (a refused pin's claim kept
            self._unclaim(resident)  # adapters loaded past --max-resident: an outsider's finding)
        return resident

    def _pin(self, resident: Resident, who: WhoAmI) -> None:
        """Pin ``resident`` for ``who``, within the server's limits on pins (Conflict otherwise)."""
        with self.lock:
            if not resident.pinned:
                pinned = [r for r in self.residents.values() if r.pinned]
                families = {r.bank for r in pinned}
                if len(pinned) >= max(1, self.max_resident // 2):
                    raise Conflict(f"{len(pinned)} adapters are pinned, the most this server pins (half of "
                                   "--max-resident); unpin one first.")
                if self.max_banks > 1 and resident.bank not in families and len(families) >= self.max_banks - 1:
                    raise Conflict(f"Pinned adapters hold {len(families)} of this server's {self.max_banks} banks; "
                                   "the last is kept for adapters nobody pinned. Unpin one of another projection "
                                   "family, or raise --max-banks.")
                own = {r.bank for r in pinned if r.pinned_by == who.user}
                if "admin" not in who.scopes and resident.bank not in own and len(own) >= self.pinned_banks_per_user:
                    raise Conflict(f"Your pins hold {len(own)} of this server's banks, the most one user's pins may "
                                   f"(--pinned-banks-per-user {self.pinned_banks_per_user}; each is a copy of the "
                                   f"base): {resident.ref} is of another projection family. Unpin one of yours, or "
                                   "ask the operator.")
                resident.pinned, resident.pinned_by = True, who.user

    def _load(self, info: VersionInfo, token: str | None) -> Resident:
        """Download ``info``'s files and add it to its family's bank (built first if the family is new)."""
        started = time.perf_counter()
        with self._asking(token) as client, tempfile.TemporaryDirectory(prefix="vera-serve-") as tmp:
            projection = not info.seed_reproducible  # the seed regenerates them here: never download them for nothing
            for filename in ("adapter_config.json", "adapter_model.safetensors"):
                (Path(tmp) / filename).write_bytes(client.download(info.ref, filename, with_projection=projection,
                                                                   seed_only=not projection))
            try:
                files = read_adapter(tmp)
            except VeraError as exc:
                raise Conflict(f"{info.ref} cannot be read as a VeRA adapter: {exc}") from exc
        key = _bank_key(files)
        labels = [str(x) for x in info.metrics.get("labels", [])] if isinstance(info.metrics.get("labels"), list) \
            else []
        bank, added = self._bank_for(key, files, info.ref)
        with self.lock:
            if self.banks.get(key) is not bank:
                raise Evicted(f"{info.ref}'s projection family was dropped while it loaded; send it again.")
            if not added:
                self._add(bank, files, info.ref)
            resident = Resident(ref=info.ref, base_model=info.base_model, bank=key, labels=labels,
                                load_s=time.perf_counter() - started, private=info.visibility != "public",
                                claims=[time.monotonic() + CLAIM_S])  # its request's claim, from the start
            self.residents[info.ref] = resident
            self._evict_over_capacity(keep=info.ref)
        return resident

    def _bank_for(self, key: BankKey, files: AdapterFiles, ref: str) -> tuple[AdapterBank, bool]:
        """``key``'s bank, and whether ``ref`` was added to it: a new family's bank is built (a copy of the base:
        seconds for a big one) and ``ref`` added to it outside ``lock``, which every forward holds, one build at a
        time; an adapter that does not fit fails there, having dropped no other bank."""
        with self.lock:
            if (bank := self.banks.get(key)) is not None:
                return bank, False
            self._room_for_bank(ref, drop=False)  # refused before any work when no bank may go
        with self._building:
            with self.lock:
                if (bank := self.banks.get(key)) is not None:
                    return bank, False
            config = files.config.replace(inference_mode=True)
            try:
                model = VeraModel(self._base_model(dict(key.heads)), config).to(self.device).eval()
            except VeraError as exc:
                raise Conflict(f"{ref} does not fit the served base {self.base_name!r}: {exc}") from exc
            bank = AdapterBank(model)
            self._add(bank, files, ref)
            draining = self._drain_for(ref)
            try:
                with self.lock:
                    self._room_for_bank(ref, drop=True)
                    self.banks[key] = bank
            finally:
                if draining is not None:
                    with self.lock:
                        self._draining.discard(draining)
            return bank, True

    def _drain_for(self, ref: str) -> BankKey | None:
        """When every bank is taken and each one that may go is decoding, the least recently used of those takes no
        more rows (its rows waiting to join are told to send again once it goes) and this waits, up to the
        server's time limit, for its rows to end: a new family gets a bank in turn instead of a 503 for as long as
        others keep every bank busy, and no row is cut off mid-answer. The bank drained (None: none needed)."""
        with self.lock:
            if len(self.banks) < self.max_banks:
                return None
            idle = self._droppable()
            if not idle or any(not self._running.get(k) for k in idle):
                return None
            victim = min(idle, key=self._last_used)
            self._draining.add(victim)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if not self._running.get(victim):
                    log.info(f"{ref} needed a bank: {victim.generator}/seed={victim.seed}/r={victim.r} drained")
                    break
            time.sleep(0.02)
        return victim

    def _droppable(self) -> list[BankKey]:
        """Banks that hold no pinned adapter."""
        return [k for k in self.banks if not any(r.pinned for r in self.residents.values() if r.bank == k)]

    def _last_used(self, key: BankKey) -> float:
        return max((r.last_used for r in self.residents.values() if r.bank == key), default=0.0)

    def _add(self, bank: AdapterBank, files: AdapterFiles, ref: str) -> None:
        try:
            bank.add(ref, files)
        except VeraError as exc:
            raise Conflict(f"{ref} does not fit the served base {self.base_name!r}: {exc}") from exc

    def _room_for_bank(self, ref: str, *, drop: bool) -> None:
        """Conflict when all ``max_banks`` banks hold pinned adapters; with ``drop``, make room for one more bank
        by dropping a bank that holds no pinned adapter and decodes no rows: one whose adapters no request is
        waiting for first, the least recently used of those (else of them all)."""
        if len(self.banks) < self.max_banks:
            return
        idle = self._droppable()
        if not idle:
            raise Conflict(f"{ref} needs a projection family of its own (generator, seed, rank, targets or heads "
                           f"differ) and every bank holds pinned adapters; retry once some are unpinned, or ask "
                           "the operator for more --max-banks.")
        if not drop:
            return
        idle = [k for k in idle if not self._running.get(k)]  # a bank whose rows are being decoded never goes
        if not idle:  # none drained within the time limit (_drain_for)
            raise Busy(f"{ref} needs a projection family of its own (generator, seed, rank, targets or heads differ) "
                       f"and each of this server's {self.max_banks} banks kept decoding other requests for "
                       f"{self.timeout_s:.0f} s; retry later, or ask the operator for more --max-banks.")
        # a bank none of whose adapters has requests queued or being prepared goes first: dropping the least recently
        # used one told its queued requests to send again while a bank nobody was waiting for stayed
        # (with the holds' lock from the look to the drop: no request claims an adapter of the bank meanwhile)
        with self._holds_lock:
            quiet = [k for k in idle if not self._in_use(k)]
            self._drop_bank(min(quiet or idle, key=self._last_used))

    def _in_use(self, key: BankKey) -> bool:
        """Whether an adapter of bank ``key`` has requests queued or running, or taken and being prepared (the caller
        holds ``_holds_lock``)."""
        now = time.monotonic()
        return any(r.holds or any(t > now for t in r.claims) for r in self.residents.values() if r.bank == key)

    def _base_model(self, heads: dict[str, tuple[int, ...]]) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        if self.task == "causal-lm":
            return cast(torch.nn.Module, AutoModelForCausalLM.from_pretrained(self.base_path, local_files_only=True))
        # the output layer of the head is its 2-D weight with the fewest rows (classifier.weight, out_proj.weight)
        outputs = [shape[0] for name, shape in heads.items() if name.endswith("weight") and len(shape) == 2]
        num_labels = min(outputs, default=2)
        return cast(torch.nn.Module, AutoModelForSequenceClassification.from_pretrained(
            self.base_path, num_labels=num_labels, local_files_only=True))

    def _drop_bank(self, key: BankKey) -> None:
        for ref in [r for r, res in self.residents.items() if res.bank == key]:
            del self.residents[ref]
        del self.banks[key]

    def _evict_over_capacity(self, keep: str) -> None:
        """Past ``max_resident``, unload the least recently used adapters that no request holds (queued or running
        work, or a claim still counting), under ``lock``. An adapter in use is never evicted for another: the queued
        requests of one were told "evicted meanwhile; send it again" (an inference engineer's walk, session 47: 38 of
        48 requests over 4 adapters at --max-resident 2). So more than ``max_resident`` stay loaded while more are in
        use at once, and the next load evicts those that are idle by then."""
        now = time.monotonic()
        while len(self.residents) > self.max_resident:
            with self._holds_lock:
                for r in self.residents.values():
                    r.claims = [t for t in r.claims if t > now]
                victims = [r for r in self.residents.values()
                           if not r.pinned and r.ref != keep and not r.holds and not r.claims]
                if not victims:
                    return
                victim = min(victims, key=lambda r: r.last_used)
                del self.residents[victim.ref]  # with the holds' lock: no request claims it meanwhile
            self.banks[victim.bank].remove(victim.ref)

    def _enqueue(self, resident: Resident, caller: str | None, works: list[_Work]) -> None:
        """Queue ``works`` of one request for ``resident``, which its claim held until now and they hold until each
        is answered (or cancelled: a caller gone, or a queue that refused them)."""
        with self._holds_lock:
            if resident.claims:
                resident.claims.pop(0)
            resident.holds += len(works)
        for work in works:
            work.future.add_done_callback(functools.partial(self._release, resident))
        try:
            self._queue.put(self._turn_of(caller), works)
        except BaseException:
            for work in works:
                work.future.cancel()  # (its callback releases its hold)
            raise

    @contextmanager
    def unclaimed_on_error(self, resident: Resident) -> Iterator[None]:
        """The block that prepares a request's work after ``activate``: if it raises (a prompt too long, a bad
        field), the request's claim on ``resident`` is given back at once. Left to lapse (CLAIM_S), one caller's
        failing requests over many adapters kept each loaded past --max-resident meanwhile."""
        try:
            yield
        except BaseException:
            self._unclaim(resident)
            raise

    def _unclaim(self, resident: Resident) -> None:
        """Give one request's claim on ``resident`` back (it queued no work: it failed, or pinned it)."""
        with self._holds_lock:
            if resident.claims:
                resident.claims.pop(0)

    def _release(self, resident: Resident, _: Future[Any]) -> None:
        with self._holds_lock:
            resident.holds -= 1

    def evict(self, ref: str) -> None:
        """Unload ``ref`` now (its pin too: the server's own capacity rule; a caller's eviction is ``evict_for``)."""
        with self.lock:
            resident = self.residents.pop(ref, None)
            if resident is None:
                raise NotFound(f"{ref} is not loaded; GET /v1/adapters lists what is.")
            self.banks[resident.bank].remove(ref)

    def evict_for(self, name: str, token: str | None) -> str:
        """Evict ``name`` for a caller who may publish under its owner; a pinned adapter is unpinned first."""
        ref, _ = self._managed(name, token, "evict")
        with self.lock:
            if ref in self.residents and self.residents[ref].pinned:
                raise Conflict(f"{ref} is pinned; unpin it first (POST /v1/adapters/unpin).")
            self.evict(ref)
        return ref

    def unpin(self, name: str, token: str | None) -> str:
        ref, _ = self._managed(name, token, "unpin")
        with self.lock:
            if ref not in self.residents:
                raise NotFound(f"{ref} is not loaded; GET /v1/adapters lists what is.")
            self.residents[ref].pinned, self.residents[ref].pinned_by = False, None
        return ref

    def listing(self, token: str | None = None) -> list[dict[str, Any]]:
        """The residents ``token`` may read: public ones, and private ones it reads. What the registry said of
        each is kept ``resolve_ttl_s``; older answers are asked again in one lookup for all of them (so a version
        made private or deleted after it loaded is listed no more, though nobody asks for it)."""
        with self.lock:
            residents = sorted(self.residents.values(), key=lambda r: r.ref)
        if token is not None and not self._known(token):  # a caller the registry does not know is asked about once
            token = None  # and sees what a caller without a token sees
        if token is None and not self._known(None):  # tokens required: such a caller reads nothing there, or here
            return []
        answered = self._look_up(residents, token)
        if answered is None:  # the registry refused the token meanwhile (revoked): a caller without one
            return self.listing(None) if token is not None else []

        def shown(r: Resident) -> bool:
            readable = answered.get(r.ref)
            return readable if readable is not None else not r.private or self._readable(r.ref, token)

        return [{"ref": r.ref, "base_model": r.base_model, "pinned": r.pinned, "requests": r.requests,
                 "load_s": round(r.load_s, 4), "loaded_at": r.loaded_at,
                 "family": {"generator": r.bank.generator, "seed": r.bank.seed, "r": r.bank.r}}
                for r in residents if shown(r)]

    def _look_up(self, residents: Sequence[Resident], token: str | None) -> dict[str, bool] | None:
        """Ask the registry in one lookup (POST /api/v1/adapters/lookup, 500 a request) about the residents whose
        answer is older than ``resolve_ttl_s``: public ones (still public? any reader is told) and private ones that
        ``token`` was not told of lately. Their answers are cached as a request's are; a version ``token`` may not
        read (missing, or not public any more) is hidden as a refused request hides it. Whether ``token`` reads
        each one asked about; None when the registry refused ``token`` itself (remembered). A registry that cannot
        answer (an older release without the route, an outage) leaves them as they were: each private one is then
        asked about alone (``_readable``)."""
        now, ttl = time.monotonic(), self.resolve_ttl_s

        def stale(r: Resident) -> bool:
            if not r.private:
                return now - r.checked > ttl
            return self._resolved.get((token, r.ref), ttl) is None and not self._unreadable.get((token, r.ref), ttl)

        asked = [r for r in residents if stale(r)]
        if not asked or now < self._lookup_again_at:
            return {}
        try:
            with self._asking(token) as client:
                found = client.lookup((r.ref for r in asked), follow_moves=False)  # (an old name is no resident's)
        except (Unauthorized, Forbidden) as exc:
            if token is not None:  # this caller's token (revoked meanwhile): unknown for resolve_ttl_s
                self._refused.put(token, True)
                return None
            # without a token, where the registry answers anonymous reads (_known): one older than the lookup,
            # whose gate takes no POST without a token (a reviewer's finding, session 36)
            return self._without_lookup(exc, len(asked), now)
        except RegistryError as exc:  # an older registry, an outage
            return self._without_lookup(exc, len(asked), now)
        for resident in asked:
            info = found.get(resident.ref)
            if info is None:
                self._unreadable.put((token, resident.ref), True)
                resident.private = True  # (not public now: any reader would be told of a public one)
            else:
                self._resolved.put((token, resident.ref), info)
                resident.private = info.visibility != "public"
            resident.checked = now
        return {r.ref: found.get(r.ref) is not None for r in asked}

    def _without_lookup(self, exc: RegistryError, count: int, now: float) -> dict[str, bool]:
        """Listings go on from what the registry said before, not asking it again for LOOKUP_RETRY_S; said once."""
        self._lookup_again_at = now + LOOKUP_RETRY_S
        log.warning("the registry could not look up %d resident adapters (%s); listing them from what it said "
                    "before, for %d s", count, exc, LOOKUP_RETRY_S)
        return {}

    def _known(self, token: str | None) -> bool:
        """Whether the registry lets ``token`` read (None: whether it takes callers without one, as its local mode,
        VERA_REQUIRE_TOKENS=false and VERA_ANONYMOUS_READ do), a refusal remembered for ``resolve_ttl_s`` as an
        answer is. A token without the read scope (publish or hub only) reads nothing there, so it is not known
        here either: its listings are an anonymous caller's (a publish-only token's listing asked the registry,
        and was refused, on every call: an outsider's finding, session 36)."""
        if self._refused.get(token, self.resolve_ttl_s):
            return False
        try:
            who = self._whoami(token)
        except Unauthorized:
            self._refused.put(token, True)
            return False
        if not {"read", "admin"} & set(who.scopes):
            self._refused.put(token, True)
            return False
        return True

    def _readable(self, ref: str, token: str | None) -> bool:
        """Whether ``token`` reads ``ref`` (a refusal remembered for ``resolve_ttl_s``, as an answer is, so that
        listings do not ask the registry again for every private resident on every call)."""
        if self._unreadable.get((token, ref), self.resolve_ttl_s):
            return False
        try:
            self.resolve(ref, token)
        except (NotFound, Unauthorized, Forbidden):
            self._unreadable.put((token, ref), True)
            return False
        return True

    def bytes_per_adapter(self, listed: Sequence[dict[str, Any]] | None = None) -> dict[str, int]:
        """Bytes per adapter of each bank; with ``listed`` (a listing's entries) only the banks of those residents,
        so that nobody learns the family (its projection seed) of a private adapter it cannot see."""
        families = None if listed is None else {(e["family"]["generator"], e["family"]["seed"], e["family"]["r"])
                                                for e in listed}
        with self.lock:
            return {f"{k.generator}/seed={k.seed}/r={k.r}": bank.bytes_per_adapter() for k, bank in self.banks.items()
                    if families is None or (k.generator, k.seed, k.r) in families}

    # ---- requests ----------------------------------------------------------------------------------------------
    def classify(self, name: str, texts: Sequence[str], token: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.wait([self.start_classify(name, texts, token)])[0]
        return result

    def start_classify(self, name: str, texts: Sequence[str], token: str | None = None) -> Future[dict[str, Any]]:
        """Queue ``texts`` for adapter ``name`` (loaded first if need be); the future holds the answer."""
        if self.task != "classification":
            raise InvalidInput(f"This server serves {self.task}; use /v1/generate.")
        resident = self.activate(name, token)
        with self.unclaimed_on_error(resident):
            ids = [self._classify_ids(text) for text in texts]
            # a forward's worth (max_batch texts, classify_tokens) per queued work: callers take turns between two of
            # a request's forwards (an outsider's 256 texts ran as four forwards in a row, others waiting for all)
            works = [_Work("classify", resident, part, counted=not at) for at, part in enumerate(self._forwards(ids))]
        self._enqueue(resident, token, works)
        return _all_of(resident.ref, [work.future for work in works])

    def _classify_ids(self, text: str) -> list[int]:
        """What the classifier reads of ``text``: its first CLASSIFY_TOKENS tokens (special ones included), as the
        whole text truncated gives them, tokenized here (the caller's thread, the tokenizer taken text by text, so
        that callers' texts interleave) and only as far as needed: a prefix of CLASSIFY_PREFIX characters, doubled
        until it holds more tokens than that or is the whole text. An outsider's 256 texts of 20,000 one-token
        characters were tokenized whole, in the batcher, and held every other caller's request for 10 to 36 s."""
        specials = self._classify_specials
        words = CLASSIFY_TOKENS - (len(specials[0]) + len(specials[1]) if specials is not None else 0)  # its own
        size = CLASSIFY_PREFIX
        while True:
            part = text[:size]
            with self._tokenizer_lock:
                ids = self.tokenizer(part, truncation=True, max_length=words + CUT_MARGIN,
                                     add_special_tokens=specials is None)["input_ids"]
            if size >= len(text) or len(ids) == words + CUT_MARGIN:  # the cut is past what is read
                break
            size *= 2
        if specials is not None:  # the text's first tokens with the special ones around them, as truncation adds
            return [*specials[0], *ids[:words], *specials[1]]
        if len(ids) <= CLASSIFY_TOKENS:  # the whole text, within what is read
            return list(ids)
        with self._tokenizer_lock:
            return list(self.tokenizer(part, truncation=True, max_length=CLASSIFY_TOKENS)["input_ids"])

    def generate(self, name: str, prompt: str, *, max_new_tokens: int = 32, token: str | None = None,
                 sampling: Sampling | None = None, stops: Sequence[str] = ()) -> dict[str, Any]:
        """``prompt`` continued by adapter ``name``: greedy unless ``sampling`` says otherwise, up to
        ``max_new_tokens``, the end-of-sequence token or one of ``stops``."""
        resident, _, future = self.start_generate(name, prompt, max_new_tokens=max_new_tokens, token=token,
                                                  sampling=sampling, stops=stops)
        return generated(resident, self.wait([future])[0])

    def start_generate(self, name: str, prompt: str, *, max_new_tokens: int = 32, token: str | None = None,
                       sampling: Sampling | None = None, stops: Sequence[str] = ()
                       ) -> tuple[Resident, Row, Future[Generated]]:
        """``generate``'s row queued: the adapter's resident, the row and its future."""
        resident = self.generator_for(name, token)
        with self.unclaimed_on_error(resident):
            row = Row(self.prompt_ids(prompt, max_new_tokens), max_new_tokens, sampling or Sampling(), tuple(stops))
        return resident, row, self.start(resident, [row], token)[0]

    def generator_for(self, name: str, token: str | None) -> Resident:
        """The resident adapter ``name`` means, on a server that generates (the caller must be able to read it)."""
        if self.task != "causal-lm":
            raise InvalidInput(f"This server serves {self.task}; use /v1/classify.")
        return self.activate(name, token)

    def prompt_ids(self, prompt: str, max_new_tokens: int | None = None, *, special_tokens: bool = True,
                   allow_empty: bool = False) -> list[int]:
        """``prompt``'s token ids (with the tokenizer's special tokens unless ``special_tokens`` is False: a chat
        template writes them itself), checked to leave room for ``max_new_tokens`` in the base's context; a prompt
        of no tokens starts from the beginning-of-sequence token (no tokens at all if ``allow_empty``)."""
        check_unicode(prompt, "The prompt")
        with self._tokenizer_lock:
            ids: list[int] = self.tokenizer(prompt, add_special_tokens=special_tokens)["input_ids"]
        if not ids and not allow_empty:
            start = self.tokenizer.bos_token_id
            if start is None:
                raise InvalidInput("The prompt is empty (no tokens), and this base model's tokenizer has no "
                                   "beginning-of-sequence token to start from: send some text.")
            ids = [int(start)]
        if max_new_tokens is not None:
            self.check_room(len(ids), max_new_tokens)
        return ids

    def given_ids(self, ids: Sequence[int], max_new_tokens: int | None = None, *, allow_empty: bool = False
                  ) -> list[int]:
        """A prompt sent as token ids (OpenAI's API takes them; lm-evaluation-harness sends them), checked: at
        least one (unless ``allow_empty``), each one this base's tokenizer and model know, room left for
        ``max_new_tokens``."""
        if not ids and not allow_empty:
            raise InvalidInput("A prompt of token ids must hold at least one id.")
        wrong = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if wrong is not None:
            raise InvalidInput(f"Token id {wrong} is not one of this base model's: ids run from 0 to "
                               f"{self.vocab_size - 1}. Tokenize with the server's /tokenize, or send text.")
        if max_new_tokens is not None:
            self.check_room(len(ids), max_new_tokens)
        return list(ids)

    def decode_ids(self, ids: Sequence[int], *, special_tokens: bool = True) -> str:
        """The text of ``ids`` (with the special tokens' text unless ``special_tokens`` is False)."""
        return str(self._decoder.decode(list(ids), skip_special_tokens=not special_tokens))

    def token_texts(self, ids: Sequence[int]) -> dict[int, str]:
        """Each distinct token id of ``ids`` with its own text (special tokens' included), in one tokenizer call."""
        distinct = sorted(set(ids))
        if not distinct:
            return {}
        texts = self._decoder.batch_decode([[t] for t in distinct], skip_special_tokens=False)
        return dict(zip(distinct, map(str, texts), strict=True))

    def token_pieces(self, sequence: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[list[str]]:
        """For each place j of ``sequence``, the text each token of ``candidates[j]`` adds there: the decode of the
        few tokens before it and that token, less the decode of those before it (as vLLM's detokenizer reads a
        token in context: its space included, a special token's text empty), so that the pieces of the tokens
        taken join into the sequence's text. In one tokenizer call."""
        texts: list[list[int]] = []
        for j, tokens in enumerate(candidates):
            before = list(sequence[max(0, j - PIECE_CONTEXT):j])
            texts += [before] + [before + [t] for t in tokens]
        if not texts:
            return []
        decoded: list[str] = []
        for start in range(0, len(texts), PIECES_PER_CALL):  # other threads run between two calls
            decoded += map(str, self._decoder.batch_decode(texts[start:start + PIECES_PER_CALL],
                                                           skip_special_tokens=True))
        pieces, at = [], 0
        for tokens in candidates:
            base = decoded[at]
            pieces.append([full[len(base):] if full.startswith(base) else full
                           for full in decoded[at + 1:at + 1 + len(tokens)]])
            at += 1 + len(tokens)
        return pieces

    def check_scoring(self, prompt_tokens: int) -> None:
        """A prompt of ``prompt_tokens`` whose own tokens are scored keeps that many positions' logits: at most
        SCORING_ROW_LOGITS."""
        if prompt_tokens * self.logits_width > SCORING_ROW_LOGITS:
            raise InvalidInput(f"Scoring a prompt of {prompt_tokens:,} tokens keeps {prompt_tokens:,} x "
                               f"{self.logits_width:,} logits (this base's vocabulary); at most {SCORING_ROW_LOGITS:,}"
                               f": score at most {SCORING_ROW_LOGITS // self.logits_width:,} tokens per prompt.")

    def room(self, prompt_tokens: int) -> int:
        """How many tokens the base's context leaves after a prompt of ``prompt_tokens`` (no limit: 2**31)."""
        return 2**31 if self.context_length is None else self.context_length - prompt_tokens

    def check_tokens(self, count: int, field: str = "max_new_tokens") -> None:
        """``count`` new tokens (the request's ``field``) are no more than this server gives a row."""
        if count > self.max_tokens:
            raise InvalidInput(tokens_refusal(field, count, self.max_tokens))

    def check_room(self, prompt_tokens: int, max_new_tokens: int, *, asked: bool = True) -> None:
        """A prompt of ``prompt_tokens`` may be continued by ``max_new_tokens``: no more than this server gives a row,
        and within the base's context. ``asked``: the caller gave the count (a chat without max_tokens did not:
        "1 new tokens were asked for" was said to one who asked none, an inference engineer's walk, session 47)."""
        self.check_tokens(max_new_tokens)
        if not asked and self.room(prompt_tokens) < 1:
            raise InvalidInput(f"The prompt is {prompt_tokens} tokens, which leaves no room for an answer in this "
                               f"base model's context of {self.context_length} tokens. Shorten the messages.")
        if max_new_tokens > self.room(prompt_tokens):
            raise InvalidInput(f"The prompt is {prompt_tokens} tokens and {max_new_tokens} new tokens were asked "
                               f"for: {prompt_tokens + max_new_tokens} in all, over this base model's context of "
                               f"{self.context_length} tokens. Shorten the prompt or ask for fewer tokens.")

    def chat_prompt(self, messages: list[dict[str, str]], *, generation_prompt: bool = True) -> str:
        """``messages`` written as the base model's chat template writes them, ready for the assistant's turn
        (unless ``generation_prompt`` is False)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInput(f"The tokenizer of this server's base model ({self.base_name}) has no chat template, "
                               "so chat messages cannot be written as its prompt: use /v1/completions with a "
                               "prompt instead.")
        from jinja2 import TemplateError

        for message in messages:
            check_unicode(message["content"], "A message")
        try:
            with self._tokenizer_lock:
                return str(self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                              add_generation_prompt=generation_prompt))
        except TemplateError as exc:  # the template's own refusal ("Conversation roles must alternate ...")
            raise InvalidInput(f"This base model's chat template refused the messages: {exc}") from exc

    def start(self, resident: Resident, rows: Sequence[Row], caller: str | None = None) -> list[Future[Generated]]:
        """Queue ``rows`` for ``resident``'s adapter, as ``caller``'s (its token: users take turns); each future
        holds its row's answer once the row ends (a row's ``on_text`` hears of its text meanwhile). Busy when the
        queue, or the caller's share of it, is full."""
        works = [_Work("generate", resident, row) for row in rows]
        self._enqueue(resident, caller, works)
        return [work.future for work in works]

    def wait(self, futures: Sequence[Future[Any]]) -> list[Any]:
        """The results of ``futures``, within this server's time limit for a request."""
        deadline = time.monotonic() + self.timeout_s
        try:
            return [future.result(timeout=max(0.0, deadline - time.monotonic())) for future in futures]
        except FutureTimeout:
            raise Busy(f"This model server did not answer within {self.timeout_s:.0f} s (too much waiting work); "
                       "retry later.") from None

    async def gather(self, futures: Sequence[Future[Any]], rows: Sequence[Row] = (),
                     gone: Callable[[], Awaitable[bool]] | None = None) -> list[Any]:
        """``wait`` for the event loop: the results of ``futures`` awaited, no thread held meanwhile (a thread per
        waiting request capped the requests in flight at the thread pool's 40). When the time limit passes, or
        ``gone`` says the client went away (asked every GONE_POLL_S), ``rows`` are cancelled: they end at their
        next token instead of decoding for nobody."""
        waiting = asyncio.ensure_future(asyncio.gather(*map(asyncio.wrap_future, futures)))
        deadline = time.monotonic() + self.timeout_s
        try:
            while not (await asyncio.wait({waiting}, timeout=min(GONE_POLL_S, deadline - time.monotonic())))[0]:
                if time.monotonic() >= deadline:
                    raise Busy(f"This model server did not answer within {self.timeout_s:.0f} s (too much waiting "
                               "work); retry later.")
                if gone is not None and await gone():
                    raise Busy("The client went away before its answer was ready.")
            return list(waiting.result())
        finally:
            if not waiting.done():
                waiting.cancel()
                waiting.add_done_callback(lambda f: None if f.cancelled() else f.exception())  # read: no log
                for row in rows:
                    row.cancelled = True

    def _run(self) -> None:
        """The batcher. Classification, and prompts scored without generating, run as they arrive; generation rows
        join their bank's running batch between its steps (registry.serving.batching), and the running batches
        take a step each in turn: a request that arrives while others decode starts at the next step, not after
        them, and each row leaves (and is answered) the moment it ends."""
        while True:
            if self._running or self._joining:
                arrived = self._arrivals(block=not self._running)
            else:
                first = self._queue.get()
                arrived = None if first is None else self._window(first)
            if arrived is None:  # closed
                break
            try:
                self._sort(arrived)
                self._admit()
                self._step_all()
            except Exception:  # noqa: BLE001 - a bug of ours: the rows in flight fail, the batcher lives on
                log.exception("the batcher failed; the rows it held fail")
                self._drop_all(_generation_failed())
            if len(self.residents) > self.max_resident:  # more were in use at once: those idle now go (not only
                with self.lock:  # at the next load: traffic to loaded adapters kept them all, an outsider's finding)
                    self._evict_over_capacity(keep="")
            time.sleep(0)  # let a thread waiting for ``lock`` (a load, an eviction) take it between steps
        self._drop_all(Busy("This model server stopped before answering; retry."))

    def _drop_all(self, error: RegistryError) -> None:
        """Every row running or waiting to join fails with ``error``."""
        with self.lock:
            held = [w for batch in self._running.values() for w in [*batch.owners, *batch.abandon()]]
            for work in held + self._joining:
                _settle(work.future, error=error)
            self._running.clear()
            self._joining.clear()

    def _forwards(self, texts: list[list[int]]) -> list[list[list[int]]]:
        """``texts`` (token ids) in order, in forwards of at most max_batch texts and classify_tokens tokens (texts
        x the longest; a text alone may hold more)."""
        parts: list[list[list[int]]] = []
        for ids in texts:
            if parts and self._fits(len(parts[-1]) + 1, max(len(ids), *map(len, parts[-1]))):
                parts[-1].append(ids)
            else:
                parts.append([ids])
        return parts

    def _fits(self, rows: int, longest: int) -> bool:
        return rows <= self.max_batch and (self.classify_tokens is None or rows * longest <= self.classify_tokens)

    def _window(self, first: _Work) -> list[_Work]:
        """``first`` and what else arrives within batch_window_s that fits in one forward with it (max_batch rows;
        texts to classify within classify_tokens too), callers in turn: a caller's work that does not fit waits
        for the next forward, its turn kept (a caller's one text went in a window with another's 64, and waited
        for both forwards)."""
        batch, rows, longest = [first], _rows(first), _longest(first)

        def fitting(work: _Work) -> bool:
            return self._fits(rows + _rows(work), max(longest, _longest(work)))

        deadline = time.monotonic() + self.batch_window_s
        while rows < self.max_batch:
            item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()), taking=fitting, oldest=True)
            if item is None:  # the window closed (or the server did)
                break
            batch.append(item)
            rows, longest = rows + _rows(item), max(longest, _longest(item))
        return batch

    def _arrivals(self, *, block: bool) -> list[_Work] | None:
        """What waits now (callers in turn), but for generation rows of a family whose running batch has no room for
        them: those stay in the queue (whose limits, ``max_queue`` and a caller's share, hold, and where callers take
        turns), and never keep another family's rows there. Rows taken ahead of the room waited to join first come,
        first served: an outsider's 64 rows taken while the batch ran full went before another caller's one that
        arrived a moment later, which waited a whole batch of theirs. None once the server closed."""
        waiting = Counter(w.resident.bank for w in self._joining)

        def taking(work: _Work) -> bool:
            joins = work.kind == "generate" and bool(work.payload.max_new_tokens)  # score-only rows join nothing
            return not joins or waiting[work.resident.bank] < self._room(work.resident.bank)

        arrived: list[_Work] = []
        while (item := self._queue.get(timeout=0.05 if block and not arrived else 0, taking=taking)) is not None:
            arrived.append(item)
            if item.kind == "generate" and item.payload.max_new_tokens:
                waiting[item.resident.bank] += 1
        return None if self._queue.closed else arrived

    def _room(self, key: BankKey) -> int:
        """How many rows ``key``'s running batch takes now: max_batch less those running; none while it is closed
        to joins (prefilling, sealed for a row that runs alone, or draining for another family)."""
        batch = self._running.get(key)
        if batch is None:
            return self.max_batch
        if not batch.open or key in self._draining:
            return 0
        return max(0, self.max_batch - len(batch))

    def _sort(self, arrived: list[_Work]) -> None:
        """Classify and score-only rows now, one forward per bank; generation rows to those waiting to join."""
        groups: dict[tuple[BankKey, str], list[_Work]] = {}
        for work in arrived:
            if work.kind == "generate":
                work.payload.on_end = _answer(work.future, work.payload)
            if work.kind == "generate" and work.payload.max_new_tokens:
                self._joining.append(work)
            else:
                groups.setdefault((work.resident.bank, work.kind), []).append(work)
        for (key, kind), works in groups.items():
            try:
                with self.lock:
                    (self._classify if kind == "classify" else self._score)(key, works)
            except Exception as exc:  # noqa: BLE001 - the caller gets the error, the batcher lives on
                for work in works:
                    _settle(work.future, error=exc)

    def _routable(self, key: BankKey, works: list[_Work]) -> tuple[AdapterBank, list[_Work]]:
        bank = self.banks.get(key)
        ready = []
        for work in works:
            if bank is None or work.resident.ref not in bank:  # evicted between activation and the forward
                _settle(work.future, error=_evicted_meanwhile(work))
            elif not work.future.done():
                work.resident.requests += work.counted
                ready.append(work)
        assert bank is not None or not ready
        return bank, ready  # type: ignore[return-value]

    def _classify(self, key: BankKey, works: list[_Work]) -> None:
        """Classify ``works``' texts (token ids) in forwards of at most max_batch rows and classify_tokens tokens,
        in order; each request is answered after the forward that holds its last text (not after the last forward:
        a caller's one text that shared a window with another's 64 waited for all of their forwards)."""
        bank, works = self._routable(key, works)
        rows = [(work, ids) for work in works for ids in work.payload]
        pad = int(self.tokenizer.pad_token_id or 0)
        got: dict[int, list[torch.Tensor]] = {}
        start = 0
        for part in self._forwards([ids for _, ids in rows]):
            forward, start = rows[start:start + len(part)], start + len(part)
            longest = max(len(ids) for _, ids in forward)
            ids = torch.tensor([t + [pad] * (longest - len(t)) for _, t in forward], device=self.device)
            mask = torch.tensor([[1] * len(t) + [0] * (longest - len(t)) for _, t in forward], device=self.device)
            probs = bank([work.resident.ref for work, _ in forward], input_ids=ids, attention_mask=mask
                         ).logits.float().softmax(-1).cpu()  # (rows, labels)
            for (work, _), row in zip(forward, probs, strict=True):
                mine = got.setdefault(id(work), [])
                mine.append(row)
                if len(mine) == len(work.payload):
                    scores = torch.stack(got.pop(id(work)))
                    if not bool(torch.isfinite(scores).all()):  # NaN was "null" and its label an argmax of NaN
                        _settle(work.future, error=_not_finite(work.resident.ref, scores))
                    else:
                        _settle(work.future, result=_classified(work.resident, scores))

    def _score(self, key: BankKey, works: list[_Work]) -> None:
        """Rows that score their prompts and generate nothing, in forwards within the logits budget; a failed
        forward of several rows runs each of them again alone, so that only a row that fails alone fails."""
        bank, works = self._routable(key, works)
        for part in self._fitted(works, logits_budget=SCORING_LOGITS):
            failure = self._score_rows(bank, part)
            for work in part if failure is not None else ():
                alone = self._score_rows(bank, [work]) if len(part) > 1 else failure
                if alone is not None:
                    _settle(work.future, error=alone)

    def _fitted(self, works: list[_Work], *, logits_budget: int) -> list[list[_Work]]:
        """``works`` (sorted by prompt length) in groups whose prefill logits (rows x longest prompt x vocabulary)
        stay within ``logits_budget`` (a row alone may exceed it)."""
        parts: list[list[_Work]] = []
        for work in sorted(works, key=lambda w: len(w.payload.prompt_ids)):
            if parts and (len(parts[-1]) + 1) * len(work.payload.prompt_ids) * self.logits_width <= logits_budget:
                parts[-1].append(work)
            else:
                parts.append([work])
        return parts

    def _admit(self) -> None:
        """Rows waiting to join go into their bank's running batch while it is open and has room (max_batch
        rows): rows that score their prompts in prefills within the logits budget, the others in one prefill
        (its first chunk now: see ``prefill_chunk``)."""
        joining, self._joining = self._joining, []
        self._prefilled.clear()
        by_bank: dict[BankKey, list[_Work]] = {}
        for work in joining:
            by_bank.setdefault(work.resident.bank, []).append(work)
        for key, works in by_bank.items():
            with self.lock:
                self._joining += self._admit_to(key, works)

    def _admit_to(self, key: BankKey, works: list[_Work]) -> list[_Work]:
        """Admit ``works`` to ``key``'s running batch (made if none runs); those that must wait, in order. A row
        that failed in company (``_Work.alone``) runs only in a batch of its own."""
        bank = self.banks.get(key)
        ready = []
        for work in works:
            if bank is None or work.resident.ref not in bank:  # evicted between activation and now
                _settle(work.future, error=_evicted_meanwhile(work))
            elif not work.future.done():
                ready.append(work)
        batch = self._batch_for(key)
        if batch is None or not ready:
            return []
        if key in self._draining:  # it is to go for a new family: its rows end, nothing joins
            return ready
        alone = next((w for w in ready if w.alone), None)
        if alone is not None:  # it runs as soon as the batch has drained: nothing else joins meanwhile
            batch.sealed = True
            if batch:
                return ready
            self._join(key, batch, [alone])
            return [w for w in ready if w is not alone]
        company = [w for w in ready if not w.alone][:self.max_batch - len(batch)] if batch.open else []
        plain = [w for w in company if not w.payload.score_prompt]
        scoring = [w for w in company if w.payload.score_prompt]
        joined: list[_Work] = []
        for group in ([plain] if plain else []) + self._fitted(scoring, logits_budget=SCORING_LOGITS):
            if self._running.get(key) is not batch or not batch.open:  # it failed, or cannot take more now
                break
            self._join(key, batch, group)
            joined += group
        return [w for w in ready if not any(w is j for j in joined)]

    def _batch_for(self, key: BankKey) -> RunningBatch | None:
        """``key``'s running batch, made if none runs (None when its bank is gone); one whose bank was dropped
        under it is dropped, its rows told so."""
        batch, bank = self._running.get(key), self.banks.get(key)
        if batch is not None and batch.bank is not bank:
            self._evict_pending(key, batch)
            self._evicted(key, batch, range(len(batch)))
            batch = None
        if batch is None and bank is not None:
            model = cast(Any, bank.model.model)
            eos = {self.tokenizer.eos_token_id, *_ids(model.generation_config.eos_token_id)} - {None}
            batch = self._running[key] = RunningBatch(bank, pad_id=int(self.tokenizer.pad_token_id or 0), eos=eos,
                                                      decode=self._decode, device=self.device)
        return batch

    def _join(self, key: BankKey, batch: RunningBatch, group: list[_Work]) -> None:
        for work in group:
            work.resident.requests += 1
        self._prefilled.add(key)
        self._prefill(key, batch, group, lambda: batch.join(
            [w.payload for w in group], [w.resident.ref for w in group], group, chunk=self.prefill_chunk))

    def _prefill(self, key: BankKey, batch: RunningBatch, group: list[_Work], chunk: Callable[[], list[Left]]
                 ) -> None:
        """Run ``chunk`` (a chunk of ``group``'s prefill); when it fails, only the joining rows fail."""
        try:
            self._left(chunk())
        except PrefillFailed:  # only the joining rows: the running ones go on as they were
            self._failed(group)
        except Exception:  # noqa: BLE001 - the rows' callers get the error, the batcher lives on
            self._running.pop(key, None)
            self._failed([*batch.owners, *batch.abandon(), *group])

    def _step_all(self) -> None:
        """A turn of every running batch, each under ``lock`` (loads and evictions go between turns): the next
        chunk of the rows it is prefilling (unless a prefill began this turn), then one step of its rows."""
        for key, batch in list(self._running.items()):
            with self.lock:
                if not batch:  # every row ended (or failed) as it joined
                    del self._running[key]
                    continue
                self._evict_pending(key, batch)
                if batch.bank is not self.banks.get(key):  # its bank was dropped under it
                    self._evicted(key, batch, range(len(batch)))
                    continue
                gone = [i for i, ref in enumerate(batch.refs) if ref not in batch.bank]
                if gone:
                    self._evicted(key, batch, gone)
                if batch.pending is not None and key not in self._prefilled:
                    self._prefill(key, batch, list(batch.pending.owners), batch.prefill)
                if self._running.get(key) is not batch:  # every row was evicted, or the batch failed
                    continue
                if len(batch):
                    try:
                        self._left(batch.step())
                    except Exception:  # noqa: BLE001 - the rows' callers get the error, the batcher lives on
                        self._running.pop(key, None)
                        self._failed([*batch.owners, *batch.abandon()])
                        continue
                if not batch:
                    del self._running[key]

    def _evict_pending(self, key: BankKey, batch: RunningBatch) -> None:
        """Rows being prefilled when an adapter of theirs (or their bank) went: those whose adapter went fail,
        saying to send again; the others wait to be prefilled again."""
        pending, bank = batch.pending, self.banks.get(key)
        if pending is None or (batch.bank is bank and all(ref in bank for ref in pending.refs)):
            return
        for work in reversed(batch.abandon()):
            work.resident.requests -= 1
            if batch.bank is bank and work.resident.ref in bank:
                self._joining.insert(0, work)
            else:
                _settle(work.future, error=_evicted_meanwhile(work))

    def _evicted(self, key: BankKey, batch: RunningBatch, rows: Sequence[int]) -> None:
        """Rows (indices) of ``batch`` whose adapter (or bank) went meanwhile: they fail, saying to send again."""
        for i in rows:
            work = batch.owners[i]
            _settle(work.future, error=_evicted_meanwhile(work))
        if len(rows) == len(batch) and batch.pending is None:
            self._running.pop(key, None)
        else:
            batch.drop(rows)

    def _failed(self, works: list[_Work]) -> None:
        """A forward of ``works``' rows failed (logged): each that has sent no text yet runs again alone (a seeded
        row gives the same text), the others fail, so that one caller's request never fails another's."""
        log.exception(f"generation of {len(works)} rows ({', '.join(sorted({w.resident.ref for w in works}))}) "
                      "failed")
        works = list({id(w): w for w in works}.values())
        for work in works:
            if work.future.done():
                continue
            if len(works) > 1 and not work.payload.said and not work.alone:
                work.alone = True
                self._joining.insert(0, work)
            else:
                _settle(work.future, error=_generation_failed())

    @staticmethod
    def _left(left: list[Left]) -> None:
        """Rows that left a batch: one whose consumer raised fails (logged); the others have their answers."""
        for row in left:
            if row.error is not None and not row.owner.future.done():
                log.error(f"a consumer of {row.owner.resident.ref}'s row failed", exc_info=row.error)
                _settle(row.owner.future, error=_generation_failed())

    def _score_rows(self, bank: AdapterBank, works: list[_Work]) -> Exception | None:
        """Rows that score their prompts and generate nothing (``max_tokens`` 0): one forward of the batch, padded
        on the right (a causal model's real positions never see the padding, and count from 0 as alone), each
        prompt scored from its own positions' logits; the exception it raised (logged), or None."""
        rows: list[Row] = [w.payload for w in works]
        try:
            longest = max(len(r.prompt_ids) for r in rows)
            pad = int(self.tokenizer.pad_token_id or 0)
            ids = torch.tensor([r.prompt_ids + [pad] * (longest - len(r.prompt_ids)) for r in rows], device=self.device)
            mask = torch.tensor([[1] * len(r.prompt_ids) + [0] * (longest - len(r.prompt_ids)) for r in rows],
                                device=self.device)
            with torch.no_grad(), bank.route([w.resident.ref for w in works]):
                logits = cast(Any, bank.model.model)(input_ids=ids, attention_mask=mask).logits
                for i, row in enumerate(rows):
                    row.prompt_scores = score_prompt(logits[i, :len(row.prompt_ids)], row.prompt_ids,
                                                     row.logprobs or 0)
            del logits
        except Exception:  # noqa: BLE001 - the caller decides whose rows it fails
            log.exception(f"scoring {len(rows)} prompts ({', '.join(sorted({w.resident.ref for w in works}))}) failed")
            return GenerationFailed("This model server failed to score this prompt (its log says why); retry, or "
                                    "change the request.")
        for row in rows:
            row.scores = []
            if row.on_end is not None:
                row.on_end([], "", "length")
        return None

    def _decode(self, tokens: list[int]) -> str:
        return self.decode_ids(tokens, special_tokens=False)


#: what ``sampling_defaults`` takes from a base's generation_config.json, and the values each may have
SAMPLING_DEFAULTS: dict[str, tuple[float, float]] = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0),
                                                     "top_k": (0, 1_000_000)}


def sampling_defaults(base_path: str) -> dict[str, float]:
    """The sampling values (``SAMPLING_DEFAULTS``) that the base's generation_config.json sets, as vLLM's
    ``--generation-config auto`` reads them (``do_sample`` aside, as there); the other sampling settings it sets,
    which this server does not do (repetition_penalty, min_p, ...), are named in a warning. None there: empty. A
    value out of range is refused, saying how to go on."""
    from transformers import GenerationConfig

    if not (Path(base_path) / "generation_config.json").is_file():
        log.warning(f"--generation-config auto: {base_path} has no generation_config.json; OpenAI's sampling "
                    "defaults apply")
        return {}
    config = GenerationConfig.from_pretrained(base_path, local_files_only=True).to_diff_dict()
    found = {name: config[name] for name in SAMPLING_DEFAULTS if config.get(name) is not None}
    for name, value in found.items():
        low, high = SAMPLING_DEFAULTS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high or (
                name == "top_p" and value == 0):
            raise InvalidInput(f"{base_path}/generation_config.json sets {name} {value!r}, outside what a request "
                               f"may send ({low} to {high}): correct it there, or serve with --generation-config "
                               "none.")
    ignored = sorted({"repetition_penalty", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
                      "no_repeat_ngram_size", "length_penalty", "max_new_tokens"} & config.keys())
    if ignored:
        log.warning(f"--generation-config auto: {', '.join(ignored)} in generation_config.json are not applied "
                    "(vera serve-model does not do them)")
    log.info(f"--generation-config auto: requests that leave them out sample with {found or 'OpenAI defaults'}")
    return {name: float(value) for name, value in found.items()}


def generated(resident: Resident, done: Generated) -> dict[str, Any]:
    """``/v1/generate``'s answer."""
    return {"adapter": resident.ref, "tokens": done.tokens, "text": done.text, "finish_reason": done.finish_reason}


def _answer(future: Future[Generated], row: Row) -> Callable[[list[int], str, FinishReason], None]:
    """A row's ``on_end`` that answers its request's ``future`` (after the row's own ``on_end``)."""
    then = row.on_end

    def end(tokens: list[int], text: str, reason: FinishReason) -> None:
        if then is not None:
            then(tokens, text, reason)
        _settle(future, result=Generated(tokens, text, reason, row.scores, row.prompt_scores))
    return end


def _not_finite(ref: str, probs: torch.Tensor) -> Conflict:
    """An adapter whose scores for a text are not numbers (vectors that overflow float32 on this base): refused, its
    text named, rather than answered with null scores and a label picked among them."""
    text = int((~torch.isfinite(probs)).any(-1).nonzero()[0])
    return Conflict(f"{ref} gave scores that are not finite numbers for text {text} (its vectors overflow on this "
                    "base): it cannot classify it. Check the version's vectors (`vera inspect`), or use another.")


def _classified(resident: Resident, probs: torch.Tensor) -> dict[str, Any]:
    """A classify answer: each text's likeliest label and every label's probability (``probs``: texts x labels;
    labels are the version's ``labels`` metric when it names each output once, else their indices: a name given
    twice lost one of its scores)."""
    named = len(resident.labels) == probs.shape[1] == len(set(resident.labels))
    labels = resident.labels if named else [str(i) for i in range(probs.shape[1])]
    return {"adapter": resident.ref, "predictions": [
        {"label": labels[int(row.argmax())], "scores": dict(zip(labels, (round(float(p), 6) for p in row),
                                                                strict=True))} for row in probs]}


def _all_of(ref: str, parts: list[Future[dict[str, Any]]]) -> Future[dict[str, Any]]:
    """One classify answer from its parts' (the predictions in order): the first failure of a part fails it, and
    cancelling it (its client gone, its time up) cancels the parts not yet done."""
    if len(parts) == 1:
        return parts[0]
    whole: Future[dict[str, Any]] = Future()

    def part_done(_: Future[dict[str, Any]]) -> None:
        failed = next((p for p in parts if p.done() and (p.cancelled() or p.exception() is not None)), None)
        if failed is not None:
            if failed.cancelled():
                whole.cancel()
            else:
                _settle(whole, error=failed.exception())
        elif all(p.done() for p in parts):
            predictions = [x for p in parts for x in p.result()["predictions"]]
            _settle(whole, result={"adapter": ref, "predictions": predictions})

    for part in parts:
        part.add_done_callback(part_done)
    whole.add_done_callback(lambda w: [p.cancel() for p in parts] if w.cancelled() else None)
    return whole


def tokens_refusal(field: str, count: object, most: int) -> str:
    """The refusal of ``count`` new tokens asked in ``field`` from a server that gives a row at most ``most``."""
    return (f"{field} is {count}; this server generates at most {most} new tokens per choice (vera serve-model "
            "--max-tokens). Ask for fewer.")


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Answer ``future`` (its ``result``, or its ``error``), unless it has its answer or was cancelled meanwhile:
    a caller that hung up or ran out of time cancels its futures from the event loop's thread, at any moment, even
    during the forward that answers them (an outsider's finding: the error of setting a cancelled future's result
    failed the other callers' requests of that forward with a 500)."""
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass


def _evicted_meanwhile(work: _Work) -> Evicted:
    return Evicted(f"{work.resident.ref} was evicted meanwhile; send it again.")


def _generation_failed() -> GenerationFailed:
    return GenerationFailed("This model server failed to generate this answer (its log says why); retry, or "
                            "change the request.")


def _ids(value: int | list[int] | None) -> list[int]:
    return [] if value is None else [value] if isinstance(value, int) else list(value)


def _rows(work: _Work) -> int:
    return len(work.payload) if work.kind == "classify" else 1


def _longest(work: _Work) -> int:
    """The longest text of a classify work, in tokens (0 for a generation row: only its row counts in a window)."""
    return max(map(len, work.payload)) if work.kind == "classify" else 0


def _bank_key(files: AdapterFiles) -> BankKey:
    config: VeraConfig = files.config
    heads = tuple(sorted((module_path(k), tuple(v.shape)) for k, v in files.tensors.items()
                         if ".vera_lambda_" not in k and not k.startswith("base_model.vera_")))
    targets = config.target_modules if isinstance(config.target_modules, list) else [str(config.target_modules)]
    return BankKey(config.projection_generator, config.projection_prng_key, config.r, tuple(sorted(targets)), heads)
