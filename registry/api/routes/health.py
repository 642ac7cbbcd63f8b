"""Liveness, readiness and Prometheus metrics (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from registry.api.deps import RegistryDep

router = APIRouter()


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Database or storage unreachable",
                                       "content": {"application/json": {}}}})
def ready(registry: RegistryDep) -> JSONResponse:
    checks = registry.status.readiness()
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}})
def prometheus(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
