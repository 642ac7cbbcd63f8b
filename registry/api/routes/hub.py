"""HuggingFace Hub sync: push a version, pull a repo, and a version's sync state."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from registry.api.bodies import CheckedRoute
from registry.api.deps import Caller, HubDep, Options, OwnerPublisher, Reader, authorize, ref_of
from registry.domain.schemas import HubSyncInfo, HubSyncResult, Ref
from registry.services.tokens import Principal

router = APIRouter(prefix="/api/v1", route_class=CheckedRoute)

def may_use_server_token(who: Principal) -> bool:
    """The server's VERA_HUB_TOKEN acts on the Hub in the operator's name: only for callers granted the ``hub`` scope
    (admins and the local user have it); others bring their own token or reach the Hub anonymously."""
    return bool(who.scopes & {"hub", "admin"})


#: The Hub token of one request; never stored or logged (the server's VERA_HUB_TOKEN is used without it).
HubToken = Annotated[str | None, Header(alias="X-Hub-Token", description="a HuggingFace token for this request")]


class HubPushBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a field it has not (hub_token, subfolder) is refused, not ignored
    repo_id: str = Field(max_length=200, description="namespace/name on the Hub")
    revision: str = Field("main", max_length=200)
    private: bool = False
    with_projection: bool = Field(True, description="materialise A and B, so any PEFT loads it from the repo id")
    format: Literal["vera", "lora"] = Field("vera", description="lora: push the equivalent rank-r LoRA")


class HubPullBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo_id: str = Field(max_length=200)
    target: str = Field(max_length=200, description="owner/name to record the adapter as")
    revision: str = Field("main", max_length=200)
    base_model: str | None = Field(None, max_length=200, description="default: the adapter config's")
    base_revision: str | None = Field(None, max_length=100)


@router.post("/adapters/{owner}/{name}/versions/{selector}/hub/push", response_model=HubSyncResult)
def hub_push(who: OwnerPublisher, hub: HubDep, owner: str, name: str, selector: str, body: HubPushBody,
             hub_token: HubToken = None) -> HubSyncResult:
    return hub.push(ref_of(owner, name, selector), body.repo_id, actor=who.owner, token=hub_token,
                    revision=body.revision, private=body.private, with_projection=body.with_projection,
                    as_lora=body.format == "lora", server_token=may_use_server_token(who))


@router.get("/adapters/{owner}/{name}/versions/{selector}/hub", response_model=list[HubSyncInfo])
def hub_status(_: Reader, hub: HubDep, owner: str, name: str, selector: str) -> list[HubSyncInfo]:
    return hub.status(ref_of(owner, name, selector))


@router.post("/hub/pull", response_model=HubSyncResult,
             responses={201: {"description": "Pulled as a new version", "model": HubSyncResult}})
def hub_pull(caller: Caller, options: Options, hub: HubDep, body: HubPullBody, response: Response,
             hub_token: HubToken = None) -> HubSyncResult:
    who = authorize(caller, options, "publish", Ref.parse(body.target).owner)
    result = hub.pull(body.repo_id, target=body.target, actor=who.owner, token=hub_token,
                      revision=body.revision, base_model=body.base_model, base_revision=body.base_revision,
                      server_token=may_use_server_token(who))
    response.status_code = 201 if result.changed else 200
    return result
