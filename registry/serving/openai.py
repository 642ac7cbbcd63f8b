"""OpenAI's API on `vera serve-model`: ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models``, so that
OpenAI's client libraries, and what is built on them, use any registry adapter by name as they use a LoRA that vLLM
serves: ``model`` is ``owner/name``, ``owner/name:N`` or ``owner/name@alias``, resolved through the registry with
the caller's token (the client's ``api_key``), hot-loaded, and batched with every other request whatever adapter
it names (registry.serving.server).

What is OpenAI's here: the request fields below, the answers' shapes (``text_completion``, ``chat.completion``,
their ``.chunk`` streams as server-sent events ending in ``data: [DONE]``, ``usage``), and errors as OpenAI's
error object (``{"error": {"message", "type", "param", "code"}}``: its clients show that message). Sampling:
``temperature`` (0: greedy), ``top_p``, vLLM's ``top_k``, ``seed`` (the same seed, prompt and server give the same
text, whatever else is in the batch), ``n``, ``stop``, ``max_tokens``, ``echo``, ``logprobs`` (with ``echo``: the
prompt's tokens' too, as lm-evaluation-harness scores a continuation), prompts as token ids. A field this server
cannot honour (penalties, ``logit_bias``, ``suffix``, ``best_of``, tools) is a 400 naming it, never silently ignored.
vLLM's ``/tokenize``, ``/detokenize`` and ``/tokenizer_info`` give the base model's tokenizer to clients that ask
(lm-evaluation-harness's ``local-completions`` then needs no tokenizer of its own).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException  # FastAPI's is a subclass; a body that does not parse raises this

from registry.domain.errors import Busy, Conflict, ContentTooLarge, InvalidInput, NotFound, RegistryError
from registry.serving.decode import MAX_LOGPROBS, MAX_STOP_CHARS, MAX_STOPS, Row, Sampling, Scored
from registry.serving.server import (
    NEW_TOKENS_CEILING,
    PIECE_CONTEXT,
    Evicted,
    Generated,
    ModelServer,
    Resident,
    caller_token,
    check_unicode,
    serving_status,
    tokens_refusal,
)

log = logging.getLogger("vera.serving")
#: the most choices one request may ask for (prompts times n); the most tokens one choice may generate is the
#: server's ``max_tokens`` (vera serve-model --max-tokens), checked with the prompt against the context
MAX_CHOICES = 64
#: the most characters of a prompt sent as text, and ids of one sent as token ids
MAX_PROMPT_CHARS, MAX_PROMPT_IDS = 20_000, 32_768
#: the most log-probabilities one completions answer may carry (choices x tokens scored x (logprobs + 1)): its JSON
#: stays within tens of MB (lm-evaluation-harness's largest, 64 prompts of 2,048 tokens with logprobs 1, is 262,272)
MAX_LOGPROB_ENTRIES = 500_000
#: the most characters /tokenize takes (the tokenizer is shared with generation: a long text would stall it)
MAX_TOKENIZE_CHARS = 100_000
#: what JSON carries for a log-probability of -inf (or NaN): vLLM's stand-in, a number every client parses
NO_CHANCE = -9999.0
_SEED = Field(None, ge=-(2**63), lt=2**64, description="the same seed, prompt and server: the same text")
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


class OpenAIRoute(APIRoute):
    """A route whose errors are OpenAI's error objects (what OpenAI's clients read), its invalid requests 400s as
    OpenAI's are, instead of the registry's problem documents."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0]
                where = [str(part) for part in first.get("loc", ()) if part != "body"]
                said = str(first.get("msg", "invalid")).removeprefix("Value error, ")  # pydantic's, for a validator
                if first.get("type") == "json_invalid":  # said "1: JSON decode error", param "1" (session 47)
                    at, why = where[-1] if where else "?", (first.get("ctx") or {}).get("error", "")
                    return openai_error(400, f"The body is not JSON at character {at}{f' ({why})' if why else ''}; "
                                             "send a JSON object.")
                if not where and first.get("type") in ("missing", "model_attributes_type", "dict_type"):
                    # a body of null, none, or not an object: "Field required", "a valid dictionary ..."
                    return openai_error(400, "The body must be a JSON object with the request's fields (model, ...).")
                if where and where[-1] in TOKEN_FIELDS and first.get("type") == "less_than_equal":
                    # the server's own limit, as for a count under the schema's bound: max_tokens 100000 was told
                    # "less than or equal to 32768", 600 "at most 512" (an inference engineer's walk, session 47)
                    most = min(request.app.state.server.max_tokens, NEW_TOKENS_CEILING)
                    # (it names the field: not prefixed again, "max_tokens: max_tokens is 40000", a docs audit)
                    return openai_error(400, tokens_refusal(".".join(where), first.get("input"), most),
                                        param=".".join(where))
                return openai_error(400, f"{'.'.join(where)}: {said}" if where else said, param=".".join(where) or None)
            except HTTPException as exc:  # a body that does not parse, is over its limit or stalled (gate.BodyLimit)
                return openai_error(exc.status_code, str(exc.detail))
            except RegistryError as exc:
                return openai_error(_status(exc), str(exc), code=exc.code)
            except Exception:  # noqa: BLE001 - OpenAI's clients read only OpenAI's error object
                log.exception(f"{request.method} {request.url.path} failed")
                return openai_error(500, "The model server failed on this request (its log says why).")

        return route


#: The request fields that count new tokens (ModelServer.check_tokens says their limit).
TOKEN_FIELDS = frozenset({"max_tokens", "max_completion_tokens"})


def _status(exc: RegistryError) -> int:
    """OpenAI's status for ``exc``: an invalid request is a 400 (the registry's 422), and so is a conflict that
    sending again cannot resolve (an adapter for another base, every bank pinned): OpenAI's clients retry a 409
    by themselves, right for an adapter evicted meanwhile only; the registry out of reach is a 503."""
    if isinstance(exc, Conflict) and not isinstance(exc, Evicted):
        return 400
    return 400 if isinstance(exc, InvalidInput) and not isinstance(exc, ContentTooLarge) else serving_status(exc)


def _error_object(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(_error_object(status, message, param=param, code=code), status_code=status)


#: vLLM's own request fields, each with the values that ask for nothing this server does not do (none listed: any
#: value but null is refused). A vLLM client sends them (this server takes vLLM's top_k): a value that would change
#: vLLM's answer is a 400 naming the field, never silently ignored.
VLLM_FIELDS: dict[str, tuple[Any, ...]] = {
    "repetition_penalty": (1,), "length_penalty": (1,), "min_p": (0,), "typical_p": (1,), "min_tokens": (0,),
    "ignore_eos": (False,), "stop_token_ids": ([],), "bad_words": ([],), "allowed_token_ids": (),
    "prompt_logprobs": (), "include_stop_str_in_output": (False,), "skip_special_tokens": (True,),
    "spaces_between_special_tokens": (True,), "use_beam_search": (False,), "truncate_prompt_tokens": (),
    "guided_json": (), "guided_regex": (), "guided_choice": (), "guided_grammar": (), "structural_tag": (),
    "structured_outputs": (), "logprobs_mode": (), "return_tokens_as_token_ids": (False,),
    "return_token_ids": (False,), "mm_processor_kwargs": (), "vllm_xargs": (),
}
_SHAPES = "expected a text, a list of texts, a list of token ids, or a list of lists of token ids"


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Sampled(BaseModel):
    """The fields both completion routes share."""

    model_config = ConfigDict(extra="ignore")  # as OpenAI's own API: a newer client's extra fields do no harm
    #: fields (vLLM's, another route's) refused unless null or one of their values here (none: always refused)
    REFUSED: ClassVar[dict[str, tuple[Any, ...]]] = VLLM_FIELDS

    model: str = Field(max_length=300, description="the adapter: owner/name, owner/name:N or owner/name@alias")
    # numbers only, as OpenAI takes them: "0.5" (text) was taken (an inference engineer's walk, session 47)
    temperature: float = Field(1.0, ge=0.0, le=2.0, strict=True)
    top_p: float = Field(1.0, gt=0.0, le=1.0, strict=True)
    top_k: StrictInt = Field(0, ge=-1, le=1_000_000, description="vLLM's: sample from the k likeliest (0 or -1: all)")
    n: StrictInt = Field(1, ge=1, le=MAX_CHOICES)
    stop: Annotated[Any, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {
        "type": "string"}, "maxItems": MAX_STOPS}]})] = Field(None, description=f"up to {MAX_STOPS} texts")
    seed: StrictInt | None = _SEED
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=256)
    # accepted at their defaults only: a value this server would not honour is refused (never silently ignored)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Any = None
    response_format: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        """An explicit null is the field's default, as in OpenAI's API (clients send unset options as null); a
        field of REFUSED with a value it does not allow is refused by name."""
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if v is not None}
        refused = sorted(k for k in cls.REFUSED.keys() & data.keys() if data[k] not in cls.REFUSED[k])
        if refused:
            raise ValueError(f"{', '.join(refused)} {'is' if len(refused) == 1 else 'are'} not supported by vera "
                             f"serve-model{' with the value sent' if any(cls.REFUSED[k] for k in refused) else ''}:"
                             " leave it out")
        options = data.get("stream_options")
        if isinstance(options, dict) and options.get("continuous_usage_stats"):
            raise ValueError("stream_options.continuous_usage_stats is not supported by vera serve-model: leave it "
                             "out (include_usage sends the usage at the end)")
        return data

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else value
        if value is not None and (not isinstance(texts, list) or len(texts) > MAX_STOPS or any(
                not isinstance(t, str) or not 1 <= len(t) <= MAX_STOP_CHARS for t in texts)):
            raise ValueError(f"stop must be a text or a list of at most {MAX_STOPS} texts, each of 1 to "
                             f"{MAX_STOP_CHARS} characters")
        for text in texts or []:  # as prompts and messages are (a lone surrogate never matched: taken, in vain)
            check_unicode(text, "A stop string")
        return value

    @model_validator(mode="after")
    def _honoured(self) -> _Sampled:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported by vera serve-model: leave it out or send 0")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by vera serve-model: leave it out")  # its size: the body's
        unsupported = {  # what each may be when it asks for nothing this server does not do
            "response_format": self.response_format in (None, {"type": "text"}),
            "tool_choice": self.tool_choice in (None, "none"), "functions": not self.functions,
            "function_call": self.function_call in (None, "none"), "modalities": self.modalities in (None, ["text"]),
            "audio": self.audio is None, "prediction": self.prediction is None,
            "reasoning_effort": self.reasoning_effort is None}
        refused = [name for name, fine in unsupported.items() if not fine]
        if refused:
            raise ValueError(f"{', '.join(refused)} {'is' if len(refused) == 1 else 'are'} not supported by vera "
                             "serve-model (plain text generation only): leave it out")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def sampling(self, index: int, defaults: Mapping[str, float]) -> Sampling:
        """Choice ``index``'s sampling (its seed the request's plus the index: n choices differ, reproducibly); a
        field the request leaves out (or sends as null) takes its value in ``defaults`` where there is one (the
        server's ``sampling_defaults``: its base's generation config), else OpenAI's."""
        seed = None if self.seed is None else (self.seed + index) % 2**64
        value = {name: getattr(self, name) if name in self.model_fields_set else defaults.get(name, getattr(self, name))
                 for name in ("temperature", "top_p", "top_k")}
        return Sampling(float(value["temperature"]), float(value["top_p"]), max(int(value["top_k"]), 0), seed)


_Ids = Annotated[list[StrictInt], Field(max_length=MAX_PROMPT_IDS)]
_IDS_SCHEMA = {"type": "array", "items": {"type": "integer"}, "maxItems": MAX_PROMPT_IDS}
_PROMPT_SCHEMA = {"anyOf": [
    {"type": "string", "maxLength": MAX_PROMPT_CHARS},
    {"type": "array", "items": {"type": "string", "maxLength": MAX_PROMPT_CHARS}, "maxItems": MAX_CHOICES},
    _IDS_SCHEMA, {"type": "array", "items": _IDS_SCHEMA, "maxItems": MAX_CHOICES}]}


def _check_text(text: Any, where: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{_SHAPES}; {where} is a {type(text).__name__}, not a text as the first is")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"{where} is {len(text):,} characters; at most {MAX_PROMPT_CHARS:,}")


def _check_ids(ids: Any, where: str) -> None:
    if not isinstance(ids, list):
        raise ValueError(f"{_SHAPES}; {where} is a {type(ids).__name__}")
    if len(ids) > MAX_PROMPT_IDS:
        raise ValueError(f"{where} is {len(ids):,} token ids; at most {MAX_PROMPT_IDS:,}")
    if not all(map(_is_id, ids)):
        raise ValueError(f"{_SHAPES}; {where} holds something other than whole numbers")


def check_prompt(value: Any) -> Any:
    """``prompt`` in one of its four shapes, within its limits, its items looked at only once its length is known
    to be within them (a union's errors, one per item of a long list, cost seconds and gigabytes); each failure is
    one sentence naming the shape or limit (OpenAIRoute puts "prompt: " before it)."""
    if isinstance(value, str):
        _check_text(value, "the text")
    elif not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else type(value).__name__
        raise ValueError(f"{_SHAPES}; got {got}")
    elif _is_id(value[0]):
        _check_ids(value, "the list of token ids")
    elif len(value) > MAX_CHOICES:
        raise ValueError(f"a list of {len(value):,} prompts; at most {MAX_CHOICES}")
    else:
        for i, item in enumerate(value):
            if isinstance(value[0], str):
                _check_text(item, f"prompt[{i}]")
            else:
                _check_ids(item, f"prompt[{i}]")
    return value


class CompletionBody(_Sampled):
    # tools: chat's field, refused there; sent to completions it was ignored, a 200 (a docs audit, session 53)
    REFUSED: ClassVar[dict[str, tuple[Any, ...]]] = {**VLLM_FIELDS, "add_special_tokens": (True,),
                                                     "max_completion_tokens": (), "tools": ([],)}

    # checked by hand (_prompt): a union's errors, one per item of a long list, cost seconds and gigabytes
    prompt: Annotated[Any, WithJsonSchema(_PROMPT_SCHEMA)] = Field(
        description="a text, a list of texts, a prompt's token ids, or a list of them")
    max_tokens: StrictInt = Field(16, ge=0, le=NEW_TOKENS_CEILING, description=(
        "0: none (with echo and logprobs: score only); at most the server's --max-tokens (512 by default)"))
    echo: StrictBool = False
    logprobs: StrictInt | None = Field(None, ge=0, le=MAX_LOGPROBS, description=(
        "each token's log-probability, and the N likeliest at its place; with echo, the prompt's tokens' too"))
    top_logprobs: Any = None
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        return check_prompt(value)

    @model_validator(mode="after")
    def _completion_only(self) -> CompletionBody:
        if self.max_tokens == 0 and not (self.echo and self.logprobs is not None):
            raise ValueError("max_tokens 0 asks for nothing: it scores the prompt only, with echo: true and logprobs")
        if self.top_logprobs is not None:
            raise ValueError("top_logprobs is the chat API's: on /v1/completions send logprobs: N (the N "
                             "likeliest tokens at each place)")
        if self.suffix:
            raise ValueError("suffix is not supported by vera serve-model: leave it out")
        if self.best_of not in (None, self.n):
            raise ValueError("best_of is not supported by vera serve-model: leave it out")
        return self

    @property
    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or self.prompt and isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: Annotated[Any, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {
        "type": "object"}, "maxItems": 256}]})] = Field(
        description="a text, or text parts ({'type': 'text', 'text': ...})")

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> Any:
        if not isinstance(value, str) and not (isinstance(value, list) and len(value) <= 256 and all(
                isinstance(part, dict) for part in value)):
            raise ValueError("content must be a text or a list of at most 256 text parts ({'type': 'text', "
                             "'text': ...})")
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in self.content):
            raise InvalidInput("Only text message parts ({'type': 'text', 'text': ...}) are taken by vera "
                               "serve-model.")
        return "".join(part["text"] for part in self.content)


class ChatBody(_Sampled):
    REFUSED: ClassVar[dict[str, tuple[Any, ...]]] = {
        **VLLM_FIELDS, "echo": (False,), "add_generation_prompt": (True,), "continue_final_message": (False,),
        "add_special_tokens": (False,), "chat_template": (), "chat_template_kwargs": (), "documents": ()}

    messages: list[Message] = Field(min_length=1, max_length=256)
    max_tokens: StrictInt | None = Field(None, ge=1, le=NEW_TOKENS_CEILING, description=(
        "at most the server's --max-tokens (512 by default); left out: as many as the context leaves, up to that"))
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=NEW_TOKENS_CEILING)
    logprobs: StrictBool = Field(False, description="each new token's log-probability")
    top_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_LOGPROBS, description="and the N likeliest at its place")
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _chat_only(self) -> ChatBody:
        if self.tools:
            raise ValueError("tools are not supported by vera serve-model: leave them out")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if sum(len(m.content) if isinstance(m.content, str) else len(json.dumps(m.content)) for m in self.messages
               ) > 100_000:
            raise ValueError("messages must hold at most 100,000 characters in all")
        return self


async def _server(request: Request) -> ModelServer:
    server: ModelServer = request.app.state.server
    return server


Server = Annotated[ModelServer, Depends(_server)]
Auth = Annotated[str | None, Header(description="Bearer token (the OpenAI client's api_key), checked by the registry")]
router = APIRouter(route_class=OpenAIRoute)


@router.get("/v1/models")
def models(server: Server, authorization: Auth = None) -> dict[str, Any]:
    """The adapters loaded now (private ones only to callers whose token reads them); any other adapter of the
    registry for this base model is loaded on its first request."""
    return {"object": "list", "data": [
        {"id": r["ref"], "object": "model", "created": int(r["loaded_at"]), "owned_by": r["ref"].split("/")[0]}
        for r in server.listing(caller_token(authorization))]}


@router.get("/v1/models/{model:path}")
def model(server: Server, model: str, authorization: Auth = None) -> dict[str, Any]:
    """One model, as OpenAI's ``models.retrieve`` asks: any adapter of the registry for this base model that the
    caller's token reads, loaded or not (``root``: the version it names now); 404 otherwise (it was a problem
    document OpenAI's clients could not read: an inference engineer's walk, session 47)."""
    info = server.resolve(model, caller_token(authorization))
    if info.base_model != server.base_name:
        raise NotFound(f"{info.ref} was published for base model {info.base_model!r}; this server serves "
                       f"{server.base_name!r}.")
    return {"id": model, "object": "model", "created": int(info.created_at.timestamp()), "owned_by": info.owner,
            "root": info.ref}


# completions wait on the event loop (ModelServer.gather, an asyncio queue for a stream), not in a thread each: what
# blocks (resolving and loading the adapter, tokenizing, a chat template, reading log-probabilities' texts) runs in
# the thread pool

@router.post("/v1/completions", response_model=None)
async def completions(server: Server, body: CompletionBody, request: Request, authorization: Auth = None
                      ) -> dict[str, Any] | Response:
    token = caller_token(authorization)
    resident, rows, reply, choice, echoed = await run_in_threadpool(_completion, server, body, token)
    if body.stream:
        return reply.stream(server, rows, body, token, _completion_chunks(server, rows),
                            first=lambda k: choice(k, echoed[k // body.n], None) if body.echo else None)
    done = await server.gather(server.start(resident, rows, token), rows, request.is_disconnected)
    return await run_in_threadpool(  # the answer's JSON too: 500,000 log-probabilities take a second to write
        lambda: reply.response([choice(k, echoed[k // body.n] + g.text, g) for k, g in enumerate(done)], done))


def _completion(server: ModelServer, body: CompletionBody, token: str | None) -> tuple[
        Resident, list[Row], _Reply, Callable[[int, str, Generated | None], dict[str, Any]], list[str]]:
    """A completion's rows, checked, and how its choices read: its resident, rows, reply, ``choice(k, text,
    ended)`` and each prompt's echo."""
    resident = server.generator_for(body.model, token)
    with server.unclaimed_on_error(resident):
        return _completion_for(server, body, resident)


def _completion_for(server: ModelServer, body: CompletionBody, resident: Resident) -> tuple[
        Resident, list[Row], _Reply, Callable[[int, str, Generated | None], dict[str, Any]], list[str]]:
    prompts = body.prompts
    if len(prompts) * body.n > MAX_CHOICES:
        raise InvalidInput(f"{len(prompts)} prompts times n={body.n} is {len(prompts) * body.n} choices; at most "
                           f"{MAX_CHOICES} per request.")
    server.check_tokens(body.max_tokens, "max_tokens")
    ids = [server.given_ids(p, body.max_tokens) if isinstance(p, list) else server.prompt_ids(p, body.max_tokens)
           for p in prompts]
    scoring = body.echo and body.logprobs is not None
    if body.logprobs is not None:  # each scored token and its likeliest are entries of the answer: bounded
        _check_entries(body.n * sum((len(i) if scoring else 0) + body.max_tokens for i in ids), body.logprobs)
    if scoring:
        for prompt_ids in ids:
            server.check_scoring(len(prompt_ids))
    rows = [Row(ids[i], body.max_tokens, body.sampling(i * body.n + j, server.sampling_defaults), body.stops,
                logprobs=body.logprobs, score_prompt=scoring) for i in range(len(prompts)) for j in range(body.n)]
    echoed = [(p if isinstance(p, str) else server.decode_ids(p)) if body.echo else "" for p in prompts]
    reply = _Reply("cmpl", "text_completion", resident, sum(map(len, ids)), chunks="text_completion")

    def choice(k: int, text: str, ended: Generated | None) -> dict[str, Any]:
        parts = None if ended is None or ended.scores is None else \
            [p for p in (ended.prompt_scores, ended.scores) if p is not None]
        logprobs = None if parts is None else _completion_logprobs(server, parts, before=rows[k].prompt_ids)
        return {"index": k, "text": text, "logprobs": logprobs,
                "finish_reason": None if ended is None else ended.finish_reason}

    return resident, rows, reply, choice, echoed


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(server: Server, body: ChatBody, request: Request, authorization: Auth = None
                           ) -> dict[str, Any] | Response:
    token = caller_token(authorization)
    resident, rows, reply, logprobs = await run_in_threadpool(_chat, server, body, token)
    if body.stream:
        return reply.stream(server, rows, body, token, _chat_chunks(server, rows),
                            first=lambda k: {"index": k, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None})
    done = await server.gather(server.start(resident, rows, token), rows, request.is_disconnected)
    return await run_in_threadpool(lambda: reply.response(
        [{"index": k, "message": {"role": "assistant", "content": g.text}, "logprobs": logprobs(g),
          "finish_reason": g.finish_reason} for k, g in enumerate(done)], done))


def _chat(server: ModelServer, body: ChatBody, token: str | None) -> tuple[
        Resident, list[Row], _Reply, Callable[[Generated | None], dict[str, Any] | None]]:
    """A chat's rows, checked: its resident, rows, reply and how a choice's log-probabilities read."""
    resident = server.generator_for(body.model, token)
    with server.unclaimed_on_error(resident):
        return _chat_for(server, body, resident)


def _chat_for(server: ModelServer, body: ChatBody, resident: Resident) -> tuple[
        Resident, list[Row], _Reply, Callable[[Generated | None], dict[str, Any] | None]]:
    if body.n > MAX_CHOICES:
        raise InvalidInput(f"n is at most {MAX_CHOICES}.")
    if body.max_completion_tokens or body.max_tokens:
        server.check_tokens(body.max_completion_tokens or body.max_tokens or 0,
                            "max_completion_tokens" if body.max_completion_tokens else "max_tokens")
    # the template writes the special tokens itself (a second beginning-of-sequence token would change the answer)
    ids = server.prompt_ids(server.chat_prompt([{"role": m.role, "content": m.text()} for m in body.messages]),
                            special_tokens=False)
    # without max_tokens: as many as the context leaves, up to the server's max_tokens
    asked = body.max_completion_tokens or body.max_tokens
    wanted = asked or max(1, min(server.max_tokens, server.room(len(ids))))
    server.check_room(len(ids), wanted, asked=bool(asked))
    top = (body.top_logprobs or 0) if body.logprobs else None
    if top is not None:
        _check_entries(body.n * wanted, top)
    rows = [Row(ids, wanted, body.sampling(j, server.sampling_defaults), body.stops, logprobs=top)
            for j in range(body.n)]
    reply = _Reply("chatcmpl", "chat.completion", resident, len(ids), chunks="chat.completion.chunk")

    def logprobs(ended: Generated | None) -> dict[str, Any] | None:
        return None if ended is None or ended.scores is None else _chat_logprobs(server, ended.scores, ids)

    return resident, rows, reply, logprobs


def _completion_chunks(server: ModelServer, rows: list[Row]) -> _Chunk:
    """A streamed completion's chunks: each carries the log-probabilities of its choice's tokens decided since the
    one before (with ``echo``, the prompt's come first, in the first chunk that carries any), read in context and
    with text offsets going on from there, so that together they are the answer's ``logprobs``."""
    before: dict[int, list[int]] = {}
    at: dict[int, int] = {}

    def chunk(k: int, text: str, ended: Generated | None, scores: list[Scored] | None) -> dict[str, Any]:
        logprobs = None
        if scores:
            prompt = rows[k].prompt_scores if k not in at else None
            logprobs = _completion_logprobs(server, [p for p in (prompt, scores) if p],
                                            before=before.get(k, rows[k].prompt_ids), at=at.get(k, 0))
            before.setdefault(k, rows[k].prompt_ids[-PIECE_CONTEXT:]).extend(s.token for s in scores)
            at[k] = logprobs["text_offset"][-1] + len(logprobs["tokens"][-1])
        return {"index": k, "text": text, "logprobs": logprobs,
                "finish_reason": None if ended is None else ended.finish_reason}

    return chunk


def _chat_chunks(server: ModelServer, rows: list[Row]) -> _Chunk:
    """A streamed chat completion's chunks: each carries the log-probabilities of its choice's tokens decided since
    the one before (read in context: the prompt's, then theirs), so that together they are the answer's
    ``logprobs.content``."""
    before: dict[int, list[int]] = {}

    def chunk(k: int, delta: str, ended: Generated | None, scores: list[Scored] | None) -> dict[str, Any]:
        logprobs = None
        if scores:
            logprobs = _chat_logprobs(server, scores, before.get(k, rows[k].prompt_ids))
            before.setdefault(k, rows[k].prompt_ids[-PIECE_CONTEXT:]).extend(s.token for s in scores)
        return {"index": k, "delta": {"content": delta} if delta else {}, "logprobs": logprobs,
                "finish_reason": None if ended is None else ended.finish_reason}

    return chunk


def _check_entries(tokens: int, top: int) -> None:
    """An answer with ``tokens`` scored tokens, each with its ``top`` likeliest, within MAX_LOGPROB_ENTRIES."""
    entries = tokens * (top + 1)
    if entries > MAX_LOGPROB_ENTRIES:
        raise InvalidInput(f"This request asks for up to {entries:,} log-probabilities (choices x tokens scored x "
                           f"(logprobs + 1)); at most {MAX_LOGPROB_ENTRIES:,} per request: send fewer prompts or "
                           "choices at a time, fewer tokens, or fewer likeliest tokens.")


def _number(logprob: float) -> float:
    """A log-probability JSON can carry: -inf (a token ruled out) and NaN are NO_CHANCE, as vLLM sends them."""
    return logprob if math.isfinite(logprob) else NO_CHANCE


def _texts(server: ModelServer, scored: list[Scored], before: Sequence[int] = ()) -> list[tuple[str, list[str]]]:
    """Each scored token's text where it stands (after ``before``, the tokens of the same text before them: a
    stream's earlier chunks), and each of its likeliest alternatives' text in its place."""
    context = list(before[max(0, len(before) - PIECE_CONTEXT):])
    pieces = server.token_pieces([*context, *(s.token for s in scored)],
                                 [[]] * len(context) + [[s.token, *(t for t, _ in s.top)] for s in scored])
    return [(piece[0], piece[1:]) for piece in pieces[len(context):]]


def _completion_logprobs(server: ModelServer, parts: list[list[Scored]], *, before: Sequence[int] = (), at: int = 0
                         ) -> dict[str, Any]:
    """OpenAI's completions ``logprobs`` over ``parts`` (the prompt's tokens, then the new ones, each read as its
    own text: they join into the prompt's text, and into the new text): each token's text, log-probability (None
    for a prompt's first), the likeliest tokens' at its place by text (the token itself among them: up to logprobs
    + 1, as OpenAI's), and where its text begins counting from the first token's. A stream's later chunk passes
    the new tokens before its own (``before``) and where its first token's text begins (``at``)."""
    tokens: list[str] = []
    logprobs: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    for scored in parts:
        for s, (text, alternatives) in zip(scored, _texts(server, scored, before if scored is parts[-1] else ()),
                                           strict=True):
            tokens.append(text)
            offsets.append(at)
            at += len(text)
            if s.logprob is None:
                logprobs.append(None)
                tops.append(None)
                continue
            logprobs.append(_number(s.logprob))
            top: dict[str, float] = {}
            for (_, value), alternative in zip(s.top, alternatives, strict=True):  # two of one text: the likelier
                top.setdefault(alternative, _number(value))
            top.setdefault(text, _number(s.logprob))
            tops.append(top)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def _chat_logprobs(server: ModelServer, scored: list[Scored], before: Sequence[int] = ()) -> dict[str, Any]:
    """OpenAI's chat ``logprobs``: each new token's text where it stands (after ``before``: see ``_texts``), its
    UTF-8 bytes and log-probability, with the likeliest tokens' in its place."""
    def entry(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": _number(logprob), "bytes": list(text.encode("utf-8", "replace"))}

    return {"content": [{**entry(text, s.logprob if s.logprob is not None else NO_CHANCE),
                         "top_logprobs": [entry(alt, v) for (_, v), alt in zip(s.top, alternatives, strict=True)]}
                        for s, (text, alternatives) in zip(scored, _texts(server, scored, before), strict=True)],
            "refusal": None}


class TokenizeBody(BaseModel):
    """vLLM's ``/tokenize``: a ``prompt``, or chat ``messages`` written with the base's chat template."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, max_length=300, description="ignored: every adapter shares the base's tokenizer")
    prompt: str | None = Field(None, max_length=MAX_TOKENIZE_CHARS)
    add_special_tokens: bool = True
    messages: list[Message] | None = Field(None, min_length=1, max_length=256)
    add_generation_prompt: bool = True
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one(self) -> TokenizeBody:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send a prompt or messages (one of them)")
        if self.messages and sum(len(m.text()) for m in self.messages) > MAX_TOKENIZE_CHARS:
            raise ValueError(f"messages must hold at most {MAX_TOKENIZE_CHARS:,} characters in all")
        return self


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, max_length=300, description="ignored: every adapter shares the base's tokenizer")
    tokens: _Ids


@router.post("/tokenize")
def tokenize(server: Server, body: TokenizeBody) -> dict[str, Any]:
    """The base model's token ids for a text (vLLM's route: clients such as lm-evaluation-harness tokenize here
    instead of loading the tokenizer themselves)."""
    if body.messages is not None:
        text = server.chat_prompt([{"role": m.role, "content": m.text()} for m in body.messages],
                                  generation_prompt=body.add_generation_prompt)
        ids = server.prompt_ids(text, special_tokens=False)
    else:
        ids = server.prompt_ids(str(body.prompt), special_tokens=body.add_special_tokens, allow_empty=True)
    strs = list(map(server.token_texts(ids).__getitem__, ids)) if body.return_token_strs else None
    return {"count": len(ids), "max_model_len": server.context_length, "tokens": ids, "token_strs": strs}


@router.post("/detokenize")
def detokenize(server: Server, body: DetokenizeBody) -> dict[str, Any]:
    """The text of token ids (vLLM's route), special tokens' text included."""
    return {"prompt": server.decode_ids(server.given_ids(body.tokens, allow_empty=True))}


@router.get("/tokenizer_info")
def tokenizer_info(server: Server) -> dict[str, Any]:
    """The base model's tokenizer in brief (vLLM's route): its special tokens, chat template and context."""
    tokenizer = server.tokenizer
    return {"tokenizer_class": type(tokenizer).__name__, "eos_token": tokenizer.eos_token,
            "bos_token": tokenizer.bos_token, "pad_token": tokenizer.pad_token, "unk_token": tokenizer.unk_token,
            "chat_template": getattr(tokenizer, "chat_template", None) or None,
            "model_max_length": server.context_length, "vocab_size": server.vocab_size}


class _Reply:
    """One answer's identity (id, object, created, model) and its two forms: a body, or a stream of chunks."""

    def __init__(self, prefix: str, kind: str, resident: Resident, prompt_tokens: int, *, chunks: str) -> None:
        self.head = {"id": f"{prefix}-{secrets.token_hex(12)}", "object": kind, "created": int(time.time()),
                     "model": resident.ref}
        self.resident, self.prompt_tokens, self.chunks = resident, prompt_tokens, chunks

    def usage(self, done: list[Generated]) -> dict[str, int]:
        completion = sum(len(g.tokens) for g in done)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    def body(self, choices: list[dict[str, Any]], done: list[Generated]) -> dict[str, Any]:
        return {**self.head, "choices": choices, "usage": self.usage(done)}

    def response(self, choices: list[dict[str, Any]], done: list[Generated]) -> Response:
        """``body`` as JSON, written a choice at a time: one ``json.dumps`` of an answer with 500,000
        log-probabilities (35 MB) holds the interpreter's lock for most of a second, and every other caller's
        stream with it (an outsider's finding); a choice's takes milliseconds."""
        def dump(value: Any) -> str:
            return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))

        text = (f'{dump(self.head)[:-1]},"choices":[{",".join(dump(c) for c in choices)}],'
                f'"usage":{dump(self.usage(done))}}}')
        return Response(text.encode(), media_type="application/json")

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        return f"data: {json.dumps({**self.head, 'object': self.chunks, 'choices': choices, **extra})}\n\n"

    def stream(self, server: ModelServer, rows: list[Row], body: _Sampled, caller: str | None, chunk: _Chunk,
               first: Callable[[int], dict[str, Any] | None]) -> StreamingResponse:
        """Server-sent events: each choice's text as it is decided (with the log-probabilities of the tokens decided
        since its last chunk, when asked for), its finish_reason as soon as it ends (with the log-probabilities
        not sent yet), usage last when ``stream_options.include_usage``, then ``[DONE]``; an error after the first
        event is an event with OpenAI's error object. A client that goes away ends its rows at their next token.
        Called on the event loop: the batcher's thread hands each row's text to it (``call_soon_threadsafe``), and
        no thread waits. ``chunk(k, text, ended, scores)`` writes choice k's chunk."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[_Event] = asyncio.Queue()
        for k, row in enumerate(rows):
            row.on_text, on_scores = _teller(loop, events, k)
            if row.logprobs is not None:
                row.on_scores = on_scores
        futures = server.start(self.resident, rows, caller)
        for k, future in enumerate(futures):
            future.add_done_callback(_ender(loop, events, k))
        with_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(self._events(server, rows, futures, events, chunk, first, with_usage=with_usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _events(self, server: ModelServer, rows: list[Row], futures: list[Future[Generated]],
                      events: asyncio.Queue[_Event], chunk: _Chunk, first: Callable[[int], dict[str, Any] | None],
                      *, with_usage: bool) -> AsyncIterator[str]:
        deadline = time.monotonic() + server.timeout_s
        try:
            openings = [c for c in map(first, range(len(rows))) if c is not None]
            if openings:
                yield self._event(openings)
            done: dict[int, Generated] = {}
            sent = [0] * len(rows)  # each choice's tokens whose log-probabilities went out
            while len(done) < len(rows):
                try:
                    k, delta, scores = await asyncio.wait_for(events.get(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise Busy(f"This model server did not finish within {server.timeout_s:.0f} s; retry "
                               "later.") from None
                if delta is None:
                    done[k] = ended = futures[k].result()
                    scores = None if ended.scores is None else ended.scores[sent[k]:]
                    delta = ""
                elif scores is not None:
                    sent[k] += len(scores)
                # log-probabilities' texts are read in the thread pool (a tokenizer call)
                yield self._event([await run_in_threadpool(chunk, k, delta, done.get(k), scores) if scores else
                                   chunk(k, delta, done.get(k), None)])
            if with_usage:
                yield self._event([], usage=self.usage(list(done.values())))
            yield "data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001 - the stream has begun, its status sent: the error is an event
            status = _status(exc) if isinstance(exc, RegistryError) else 500
            if not isinstance(exc, RegistryError):
                log.exception("a stream failed")
            message = str(exc) if isinstance(exc, RegistryError) else \
                "The model server failed on this request (its log says why)."
            yield f"data: {json.dumps(_error_object(status, message))}\n\n"
        finally:
            for row in rows:
                row.cancelled = True


#: a stream's event: choice k's new text and the log-probabilities of the tokens decided since its last (None: it
#: asked for none), or (k, None, None): it ended
_Event = tuple[int, str | None, list[Scored] | None]
#: writes choice k's chunk: ``(k, text, ended or None, its log-probabilities in this chunk or None)``
_Chunk = Callable[[int, str, Generated | None, list[Scored] | None], dict[str, Any]]


def _teller(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[_Event], k: int
            ) -> tuple[Callable[[str], None], Callable[[list[Scored]], None]]:
    """Row ``k``'s ``on_text`` and ``on_scores`` (called in the batcher's thread, log-probabilities just before the
    text they go with): its new text, with them, onto ``events``, on ``loop``."""
    heard: list[list[Scored]] = []

    def tell(delta: str) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (k, delta, heard.pop() if heard else None))

    return tell, heard.append


def _ender(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[_Event], k: int
           ) -> Callable[[Future[Generated]], None]:
    """Row ``k``'s future's done-callback: its end (answer or failure) onto ``events``, on ``loop``."""
    def end(_: Future[Generated]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (k, None, None))
    return end
