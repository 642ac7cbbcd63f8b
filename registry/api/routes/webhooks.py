"""Webhooks of an owner namespace: create, list, read, change, delete, test-deliver, and the delivery log. Managing
an owner's webhooks needs the publish scope for that owner (as publishing under it does); the registry-wide ones
(owner ``*``), an administrator."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from registry.api.bodies import CheckedRoute
from registry.api.deps import Caller, Options, authorize
from registry.api.ratelimit import spend
from registry.api.routes.adapters import MAX_ID
from registry.domain.errors import Forbidden
from registry.domain.events import (
    EVERY_OWNER,
    DeliveryInfo,
    WebhookChange,
    WebhookCreated,
    WebhookForm,
    WebhookInfo,
)
from registry.services.tokens import Principal
from registry.services.webhooks import MAX_LOG_PAGE, Webhooks, webhook_not_found

router = APIRouter(prefix="/api/v1/webhooks", route_class=CheckedRoute)
WebhookId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


async def _webhooks(request: Request) -> Webhooks:
    webhooks: Webhooks = request.app.state.webhooks
    return webhooks


WebhooksDep = Annotated[Webhooks, Depends(_webhooks)]


def _manager(caller: Caller, options: Options, webhooks: WebhooksDep, webhook_id: WebhookId) -> Principal:
    """A caller that may manage the path's webhook: one with the publish scope for its owner. The scope is checked
    first, and to a caller that may not write under the webhook's owner it does not exist (404, as for a missing
    one), so that walking ids reveals neither which webhooks exist nor whose they are."""
    who = authorize(caller, options, "publish")
    if not who.can_write(webhooks.get(webhook_id).owner):
        raise webhook_not_found(webhook_id)
    return who


Manager = Annotated[Principal, Depends(_manager)]


@router.get("", response_model=list[WebhookInfo])
def list_webhooks(caller: Caller, options: Options, webhooks: WebhooksDep,
                  owner: Annotated[str | None, Query(description="default: the caller's own namespace")] = None,
                  ) -> list[WebhookInfo]:
    who = authorize(caller, options, "publish")
    owner = owner or who.owner
    _authorize_owner(caller, options, owner)
    return webhooks.for_owner(owner)


@router.post("", response_model=WebhookCreated, status_code=201,
             description="The answer holds the webhook's signing secret: the only time it is shown.")
def create_webhook(caller: Caller, options: Options, webhooks: WebhooksDep, form: WebhookForm) -> WebhookCreated:
    who = _authorize_owner(caller, options, form.owner)
    return webhooks.create(form, actor=who.owner)


def _authorize_owner(caller: Caller, options: Options, owner: str) -> Principal:
    """A caller that may manage ``owner``'s webhooks: one with the publish scope there; for the registry-wide
    webhooks (EVERY_OWNER), an administrator (whose token no --owner limits)."""
    if owner == EVERY_OWNER:
        who = authorize(caller, options, "publish")
        if not who.can_write(EVERY_OWNER):
            raise Forbidden("Only the registry's administrators manage registry-wide webhooks (owner '*': every "
                            "owner's adapter events); name an owner whose adapters you publish instead.")
        return who
    return authorize(caller, options, "publish", owner)


@router.get("/{webhook_id}", response_model=WebhookInfo)
def get_webhook(_: Manager, webhooks: WebhooksDep, webhook_id: WebhookId) -> WebhookInfo:
    return webhooks.get(webhook_id)


@router.patch("/{webhook_id}", response_model=WebhookInfo)
def change_webhook(who: Manager, webhooks: WebhooksDep, webhook_id: WebhookId, change: WebhookChange) -> WebhookInfo:
    return webhooks.change(webhook_id, change, actor=who.owner)


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(who: Manager, webhooks: WebhooksDep, webhook_id: WebhookId) -> Response:
    webhooks.delete(webhook_id, actor=who.owner)
    return Response(status_code=204)


@router.post("/{webhook_id}/test", response_model=DeliveryInfo,
             description="Sends a ping event now, once, and answers with its delivery (what the receiver answered).")
def test_webhook(request: Request, who: Manager, webhooks: WebhooksDep, webhook_id: WebhookId) -> DeliveryInfo:
    spend(request, who)  # a costly request: it holds a thread for up to VERA_WEBHOOK_TIMEOUT_S
    return webhooks.test(webhook_id, actor=who.owner)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryInfo])
def webhook_deliveries(_: Manager, webhooks: WebhooksDep, webhook_id: WebhookId,
                       before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="deliveries before this id "
                                                           "(the last of the page before)")] = None,
                       limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE)] = 50) -> list[DeliveryInfo]:
    return webhooks.deliveries(webhook_id, before=before, limit=limit)
