"""The inference API of `vera serve-model`: classify or generate with any registry adapter, and manage the
resident set (list, pin, unpin, evict); OpenAI's API beside it (registry.serving.openai). Errors are the registry's
problem details (OpenAI's error objects on OpenAI's routes); the caller's bearer token is passed on to the registry,
which decides what it may read. Bodies are bounded (MAX_BODY_BYTES) before they are read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, BeforeValidator, Field
from starlette.concurrency import run_in_threadpool

from registry.api.gate import BodyLimit
from registry.api.head import HeadAsGet
from registry.api.problems import PROBLEM_RESPONSES, install_problem_handlers
from registry.logs import AccessLog
from registry.serving.decode import MAX_STOP_CHARS, MAX_STOPS, Sampling
from registry.serving.openai import router as openai_router
from registry.serving.server import NEW_TOKENS_CEILING, ModelServer, caller_token, generated, serving_status

#: The largest request body: a classification of 256 texts of 20,000 characters, or a chat of 100,000 characters,
#: with room for JSON's escapes.
MAX_BODY_BYTES = 8 * 2**20


def _not_a_bool(value: Any) -> Any:
    """JSON's true and false are not numbers (pydantic reads them as 1 and 0: ``max_new_tokens: true`` was one
    token, ``temperature: true`` 1.0). Numbers and numeric strings pass, as they did, for the clients that send them."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


#: Numbers, never true or false (OpenAI's routes take JSON numbers only; this older API stays as lenient as it was
#: otherwise).
Whole = Annotated[int, BeforeValidator(_not_a_bool)]
Real = Annotated[float, BeforeValidator(_not_a_bool)]


def _one_or_many(value: object) -> object:
    """One text as a list of one, as HuggingFace's inference API takes ``inputs`` (a newcomer's walk, session 33)."""
    return [value] if isinstance(value, str) else value


class ClassifyBody(BaseModel):
    adapter: str = Field(max_length=300, description="owner/name, owner/name:VERSION or owner/name@ALIAS")
    inputs: Annotated[list[Annotated[str, Field(max_length=20_000)]], BeforeValidator(_one_or_many)] = Field(
        min_length=1, max_length=256, description="the texts to classify (one text alone is a list of one)")


class GenerateBody(BaseModel):
    adapter: str = Field(max_length=300)
    prompt: str = Field(max_length=20_000)
    max_new_tokens: Whole = Field(32, ge=1, le=NEW_TOKENS_CEILING, description="at most the server's --max-tokens "
                                  "(512 by default)")
    temperature: Real = Field(0.0, ge=0.0, le=2.0, description="0 (the default): greedy; above: sampled")
    top_p: Real = Field(1.0, gt=0.0, le=1.0)
    top_k: Whole = Field(0, ge=0, le=1_000_000, description="sample from the k likeliest tokens (0: all)")
    seed: Whole | None = Field(None, ge=-(2**63), lt=2**64, description="the same seed, prompt and server: the same "
                             "text, whatever else shares the batch (None: a random one)")
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] = Field([], max_length=MAX_STOPS)


class PinBody(BaseModel):
    adapter: str = Field(max_length=300)


#: The caller's Authorization header, passed on to the registry.
Auth = Annotated[str | None, Header(description="Bearer token, checked by the registry")]


async def _server(request: Request) -> ModelServer:
    server: ModelServer = request.app.state.server
    return server


Server = Annotated[ModelServer, Depends(_server)]
router = APIRouter()


def create_serving_app(server: ModelServer) -> FastAPI:
    app = FastAPIOffline(title="vera serve-model", version="1", responses=PROBLEM_RESPONSES,  # docs without a CDN
                         description=f"Many VeRA adapters of the registry on one base model ({server.base_name}).")
    app.state.server = server
    install_problem_handlers(app, serving_status)
    app.include_router(router)
    app.include_router(openai_router)
    app.add_middleware(HeadAsGet, router=app.router)  # HEAD of /health, /ready, /v1/models (a 405 before)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)  # before any body is read
    app.add_middleware(AccessLog)  # the request id also goes with the registry requests made for this request
    return app


@router.get("/health")
async def health(server: Server) -> dict[str, Any]:  # on the event loop: answered while every thread generates
    return {"status": "ok", "base_model": server.base_name, "task": server.task}


@router.get("/ready")
async def ready(server: Server) -> JSONResponse:
    """Whether requests can be answered: the registry that resolves each one answers (its /health, asked at most
    every 5 s), else 503 saying why; /health is the process's liveness alone (restarting it would not help)."""
    problem = await run_in_threadpool(server.registry_problem)
    # (no count of the adapters loaded: it said to anyone when a private one was in use, an outsider's finding)
    body = {"status": "ready" if problem is None else "not ready", "registry": problem or "ok",
            "base_model": server.base_name}
    return JSONResponse(body, status_code=200 if problem is None else 503,
                        headers={} if problem is None else {"Retry-After": "5"})


# classify and generate wait on the event loop (ModelServer.gather), not in a thread each: what blocks (resolving
# the adapter, loading it, tokenizing) runs in the thread pool first

@router.post("/v1/classify")
async def classify(server: Server, body: ClassifyBody, request: Request, authorization: Auth = None
                   ) -> dict[str, Any]:
    future = await run_in_threadpool(server.start_classify, body.adapter, body.inputs, caller_token(authorization))
    # a client that goes away takes its texts out of the queue (an outsider queued costly ones and hung up)
    result: dict[str, Any] = (await server.gather([future], gone=request.is_disconnected))[0]
    return result


@router.post("/v1/generate")
async def generate(server: Server, body: GenerateBody, request: Request, authorization: Auth = None
                   ) -> dict[str, Any]:
    resident, row, future = await run_in_threadpool(
        lambda: server.start_generate(body.adapter, body.prompt, max_new_tokens=body.max_new_tokens,
                                      token=caller_token(authorization), stops=body.stop,
                                      sampling=Sampling(body.temperature, body.top_p, body.top_k, body.seed)))
    return generated(resident, (await server.gather([future], [row], request.is_disconnected))[0])


@router.get("/v1/adapters")
def adapters(server: Server, authorization: Auth = None) -> dict[str, Any]:
    """What is resident: version, base model, family, pinned, requests served, load time (private adapters only
    to callers whose token reads them)."""
    listed = server.listing(caller_token(authorization))
    return {"base_model": server.base_name, "task": server.task, "adapters": listed,
            "bytes_per_adapter": server.bytes_per_adapter(listed)}


@router.post("/v1/adapters/pin")
def pin(server: Server, body: PinBody, authorization: Auth = None) -> dict[str, Any]:
    """Load (if needed) and pin: a pinned adapter is never evicted. For those who may publish under the adapter's
    owner (and registry admins)."""
    resident = server.pin(body.adapter, caller_token(authorization))
    return {"ref": resident.ref, "pinned": True}


@router.post("/v1/adapters/unpin")
def unpin(server: Server, body: PinBody, authorization: Auth = None) -> dict[str, Any]:
    """For those who may publish under the adapter's owner (and registry admins)."""
    return {"ref": server.unpin(body.adapter, caller_token(authorization)), "pinned": False}


@router.post("/v1/adapters/evict")
def evict(server: Server, body: PinBody, authorization: Auth = None) -> dict[str, Any]:
    """Evict now (a pinned adapter: unpin it first); for those who may publish under the adapter's owner (and
    registry admins)."""
    return {"ref": server.evict_for(body.adapter, caller_token(authorization)), "evicted": True}
