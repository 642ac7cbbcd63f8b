"""Liveness, readiness and Prometheus metrics: no registry token needed; /metrics asks for the operator's metrics
token when one is set (VERA_METRICS_TOKEN)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from registry.api.deps import ApiOptions, Options, bearer_token
from registry.domain.errors import Unauthorized

router = APIRouter()


@router.get("/", include_in_schema=False)
def root() -> dict[str, str]:
    """Where things are, for whoever opens the server's address (a bare 404 there said nothing: a newcomer's walk,
    session 40); the dashboard is a process of its own (`vera up` starts it on port 8501)."""
    return {"service": "vera-registry", "api": "/api/v1", "docs": "/docs", "openapi": "/openapi.json",
            "health": "/health", "hub_protocol": "/hf", "lora_hub_protocol": "/hf-lora"}


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Database or storage unreachable",
                                       "content": {"application/json": {}}}})
def ready(request: Request) -> JSONResponse:
    """Whether the registry can serve (``ready``, and each check), and whether it takes changes: ``read_only`` true
    on a read-only registry (VERA_READ_ONLY) and over a database that refuses writes (``writes`` says why: a hot
    standby, a SQLite file the process may not write), ready when it can read (its storage need not be writable)."""
    checks = request.app.state.readiness.get()  # at most one check a second (READY_TTL_S), whoever asks
    ok = all(v == "ok" for v in checks.values())
    refused = request.app.state.refused_writes.get()
    writes = "refused: VERA_READ_ONLY" if request.app.state.options.read_only else f"refused: {refused}" if refused \
        else "ok"
    return JSONResponse({"ready": ok, "checks": checks, "read_only": writes != "ok", "writes": writes},
                        status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}})
def prometheus(request: Request, options: Options,
               authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> Response:
    check_metrics_token(options, authorization)
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


def check_metrics_token(options: ApiOptions, authorization: str | None) -> None:
    """Nothing when no metrics token is set or the request brings it (``Authorization: Bearer``, compared in
    constant time); else Unauthorized. Registry tokens are not metrics tokens: a scraper holds no registry rights."""
    if options.metrics_token is None:
        return
    secret = bearer_token(authorization)
    if secret is None or not hmac.compare_digest(secret.encode(), options.metrics_token.get_secret_value().encode()):
        raise Unauthorized("/metrics needs this registry's metrics token: send 'Authorization: Bearer <the value of "
                           "VERA_METRICS_TOKEN>' (Prometheus: the scrape job's authorization.credentials).")
