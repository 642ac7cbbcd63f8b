"""What the registry knows beside versions: comparisons, base models and shared projections."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from registry.api.bodies import CheckedRoute
from registry.api.deps import Caller, Options, Reader, RegistryDep, authorize
from registry.api.ratelimit import CostlyReader
from registry.domain.errors import Forbidden
from registry.domain.schemas import BaseModelInfo, Comparison
from registry.services.analysis import MAX_COMPARED

router = APIRouter(prefix="/api/v1", route_class=CheckedRoute)


class CompareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refs: list[str]


class BaseModelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200, description="the name adapters are published with (a Hub id or a name)")
    revision: str = Field("", max_length=100)
    config: dict[str, Any] = Field(description="the base model's transformers config.json (no weights)")


@router.post("/compare", response_model=Comparison)
def compare(who: CostlyReader, registry: RegistryDep, body: CompareBody) -> Comparison:
    registry.access.check_readable(who, *body.refs[:MAX_COMPARED])  # compare refuses more than that itself
    return registry.compare(body.refs)


@router.post("/base-models", response_model=BaseModelInfo, status_code=201)
def register_base_model(caller: Caller, options: Options, registry: RegistryDep, body: BaseModelBody) -> BaseModelInfo:
    """Declare a base model's exact layer shapes from its config (publish scope; audited). Seed-only adapters PEFT
    wrote can then be published, and any adapter of it exported as LoRA."""
    who = authorize(caller, options, "publish")
    return registry.register_base_model_from_config_dict(name=body.name, revision=body.revision, config=body.config,
                                                         actor=who.owner)


@router.delete("/base-models", response_model=BaseModelInfo)
def remove_base_model(caller: Caller, options: Options, registry: RegistryDep,
                      name: Annotated[str, Query(min_length=1, max_length=200)],
                      revision: Annotated[str, Query(max_length=100)] = "") -> BaseModelInfo:
    """Forget a base model's shapes that no version was published against (the registry's admins, with a token not
    limited to some owners: base models are every owner's): the remedy for wrong shapes declared under a name others
    publish with. 404 if unknown, 409 while a version uses it; audited (``base-remove``). Answers what was removed."""
    who = authorize(caller, options, "admin")
    if not who.is_registry_admin:
        raise Forbidden(f"This admin token is limited to {sorted(who.limited_to or ())}; base models are every "
                        "owner's: remove one with an admin token without a limit.")
    return registry.remove_base_model(name=name, revision=revision, actor=who.owner)


@router.get("/base-models", response_model=list[BaseModelInfo])
def base_models(who: Reader, registry: RegistryDep) -> list[BaseModelInfo]:
    return registry.list_base_models(who)


@router.get("/projections")
def projections(who: Reader, registry: RegistryDep) -> list[dict[str, Any]]:
    """The shared projections with how many versions use them (of those the caller may read)."""
    return [p.model_dump() for p in registry.list_projections(who)]
