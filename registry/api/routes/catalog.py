"""What the registry knows beside versions: comparisons, base models and shared projections."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from registry.api.deps import Reader, RegistryDep
from registry.api.ratelimit import CostlyReader
from registry.domain.schemas import BaseModelInfo, Comparison

router = APIRouter(prefix="/api/v1")


class CompareBody(BaseModel):
    refs: list[str]


@router.post("/compare", response_model=Comparison)
def compare(_: CostlyReader, registry: RegistryDep, body: CompareBody) -> Comparison:
    return registry.compare(body.refs)


@router.get("/base-models", response_model=list[BaseModelInfo])
def base_models(_: Reader, registry: RegistryDep) -> list[BaseModelInfo]:
    return registry.list_base_models()


@router.get("/projections")
def projections(_: Reader, registry: RegistryDep) -> list[dict[str, Any]]:
    return [p.model_dump() for p in registry.list_projections()]
