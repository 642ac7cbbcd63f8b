"""The audit log: GET /api/v1/events, filtered and keyset paged, showing each caller only what it may read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from registry.api.bodies import CheckedRoute
from registry.api.deps import Reader
from registry.api.routes.adapters import MAX_ID
from registry.domain.events import MAX_EVENTS_PAGE, EventPage
from registry.services.events import Events

router = APIRouter(prefix="/api/v1/events", route_class=CheckedRoute)


async def _events(request: Request) -> Events:
    events: Events = request.app.state.events
    return events


EventsDep = Annotated[Events, Depends(_events)]


@router.get("", response_model=EventPage)
def list_events(
    who: Reader, events: EventsDep,
    owner: Annotated[str | None, Query(description="only events about this owner's adapters (and webhooks)")] = None,
    adapter: Annotated[str | None, Query(description="only events about this adapter, owner/name")] = None,
    action: Annotated[str | None, Query(description="only this action: publish, alias, yank, delete, job-end, ...")
                      ] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="events after this id (the next_after of the "
                                       "page before); without after and since: the newest")] = None,
    since: Annotated[datetime | None, Query(description="events at or after this time (ISO 8601; UTC if no zone)")
                     ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 50,
) -> EventPage:
    return events.page(who, owner=owner, adapter=adapter, action=action, after=after, since=since, limit=limit)
