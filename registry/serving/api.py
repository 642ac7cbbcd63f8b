"""The inference API of `vera serve-model`: classify or generate with any registry adapter, and manage the
resident set (list, pin, unpin, evict). Errors are the registry's problem details."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from registry.api.app import PROBLEM_RESPONSES, problem
from registry.client import RegistryUnavailable
from registry.domain.errors import RegistryError, status_of
from registry.serving.server import ModelServer


class ClassifyBody(BaseModel):
    adapter: str = Field(max_length=300, description="owner/name, owner/name:VERSION or owner/name@ALIAS")
    inputs: list[Annotated[str, Field(max_length=20_000)]] = Field(min_length=1, max_length=256)


class GenerateBody(BaseModel):
    adapter: str = Field(max_length=300)
    prompt: str = Field(max_length=20_000)
    max_new_tokens: int = Field(32, ge=1, le=512)


#: The caller's Authorization header, passed on to the registry.
Auth = Annotated[str | None, Header(description="Bearer token, checked by the registry")]


class PinBody(BaseModel):
    adapter: str = Field(max_length=300)


def _token(authorization: str | None) -> str | None:
    """The caller's bearer token, passed on to the registry (which decides what it may read)."""
    if not authorization:
        return None
    scheme, _, secret = authorization.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


def create_serving_app(server: ModelServer) -> FastAPI:
    app = FastAPI(title="vera serve-model", version="1", responses=PROBLEM_RESPONSES,
                  description=f"Many VeRA adapters of the registry on one base model ({server.base_name}).")

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        status = 503 if isinstance(exc, RegistryUnavailable) else status_of(exc)
        return problem(status, exc.code, str(exc), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return problem(422, "invalid_input", details, request.url.path)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "base_model": server.base_name, "task": server.task}

    @app.post("/v1/classify")
    def classify(body: ClassifyBody, authorization: Auth = None) -> dict[str, Any]:
        return server.classify(body.adapter, body.inputs, token=_token(authorization))

    @app.post("/v1/generate")
    def generate(body: GenerateBody, authorization: Auth = None) -> dict[str, Any]:
        return server.generate(body.adapter, body.prompt, max_new_tokens=body.max_new_tokens,
                               token=_token(authorization))

    @app.get("/v1/adapters")
    def adapters() -> dict[str, Any]:
        """What is resident: version, base model, family, pinned, requests served, load time."""
        return {"base_model": server.base_name, "task": server.task, "adapters": server.listing(),
                "bytes_per_adapter": server.bytes_per_adapter()}

    @app.post("/v1/adapters/pin")
    def pin(body: PinBody, authorization: Auth = None) -> dict[str, Any]:
        """Load (if needed) and pin: a pinned adapter is never evicted."""
        resident = server.activate(body.adapter, _token(authorization), pin=True)
        return {"ref": resident.ref, "pinned": True}

    @app.post("/v1/adapters/unpin")
    def unpin(body: PinBody, authorization: Auth = None) -> dict[str, Any]:
        ref = server.resolve(body.adapter, _token(authorization)).ref
        server.unpin(ref)
        return {"ref": ref, "pinned": False}

    @app.post("/v1/adapters/evict")
    def evict(body: PinBody, authorization: Auth = None) -> dict[str, Any]:
        """Evict now; like every route that names an adapter, the caller must be able to read it."""
        ref = server.resolve(body.adapter, _token(authorization)).ref
        server.evict(ref)
        return {"ref": ref, "evicted": True}

    return app
