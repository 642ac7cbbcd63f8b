"""The audit log and webhooks through the registry's API: `vera events`, `vera webhook add|ls|edit|rm|test|deliveries`
(docs/webhooks.md)."""

from __future__ import annotations

import time
from datetime import datetime
from functools import partial
from typing import Annotated

import typer

from registry.cli.common import RegistryUrl, Token, call_registry, check_failed, console
from registry.cli.output import Column, JsonOutput, fitted_table, json_text, print_json
from registry.client import RegistryClient
from registry.domain.events import NOT_SENT, WEBHOOK_EVENTS, DeliveryInfo, EventInfo, EventPage

EVENT_COLUMNS = (Column("id", justify="right"), Column("at"), Column("actor", 2), Column("action"),
                 Column("target"), Column("detail", 3))


def _event_rows(events: list[EventInfo]) -> list[list[str]]:
    return [[str(e.id), f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.target,
             ", ".join(f"{k}={v}" for k, v in e.detail.items())] for e in events]


def _print_page(page: EventPage, as_json: bool, follow: bool) -> None:
    if as_json and follow:  # JSON Lines: one event a line, as they come
        for event in page.events:
            typer.echo(json_text(event.model_dump(mode="json")))
    elif as_json:
        print_json(page)
    elif page.events or not follow:
        console.print(fitted_table(EVENT_COLUMNS, _event_rows(page.events)))


def _iso_time(value: str | None) -> str | None:
    """--since as given, once it reads as an ISO 8601 time: a usage error (exit 2) naming the option otherwise (it
    was the API's 422 naming `query.since`, exit 1: a docs audit's finding, session 52)."""
    if value is not None:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not an ISO 8601 time; give e.g. 2026-12-01T09:00 (UTC unless it "
                                     "says, e.g. 2026-12-01T09:00+02:00) or 2026-12-01.") from None
    return value


def events(
    owner: Annotated[str | None, typer.Option(help="Only events about this owner's adapters.")] = None,
    adapter: Annotated[str | None, typer.Option(help="Only events about this adapter (owner/name).")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action: publish, alias, yank, delete, job-end, ...")
                      ] = None,
    after: Annotated[int | None, typer.Option(help="Events after this id (default: the newest).")] = None,
    since: Annotated[str | None, typer.Option(callback=_iso_time, help=(
        "Events at or after this time, ISO 8601 (e.g. 2026-12-01T09:00, UTC unless it says)."))] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Events per page.")] = 50,
    follow: Annotated[bool, typer.Option(help="Keep printing new events until interrupted.")] = False,
    as_json: JsonOutput = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Audit events you may read (publishes, alias moves, yanks, deletes, jobs, ...), oldest first."""
    page = call_registry(registry, token, lambda c: c.events(owner=owner, adapter=adapter, action=action,
                                                             after=after, since=since, limit=limit))
    _print_page(page, as_json, follow)
    while follow:
        time.sleep(2)
        page = call_registry(registry, token, partial(_next_page, page.next_after, owner, adapter, action, limit))
        _print_page(page, as_json, follow)


def _next_page(after: int, owner: str | None, adapter: str | None, action: str | None, limit: int,
               client: RegistryClient) -> EventPage:
    return client.events(owner=owner, adapter=adapter, action=action, after=after, limit=limit)


Owner = Annotated[str, typer.Argument(help="The user or organisation whose adapters' events are sent.")]
EventChoice = Annotated[list[str] | None, typer.Option(
    "--event", help=f"An event to send: {', '.join(WEBHOOK_EVENTS)}; repeat for several (default: all).")]
WebhookId = Annotated[int, typer.Argument(help="The webhook's id (`vera webhook ls`).")]


def webhook_add(
    owner: Owner,
    url: Annotated[str, typer.Argument(help="http(s) URL that receives a signed POST per event.")],
    event: EventChoice = None,
    description: Annotated[str, typer.Option(help="A note for people.")] = "",
    as_json: JsonOutput = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Add a webhook: each event of OWNER's adapters is POSTed to URL, signed with a secret printed once."""
    hook = call_registry(registry, token, lambda c: c.create_webhook(owner, url, events=event,
                                                                    description=description))
    if as_json:
        print_json(hook)
        return
    console.print(f"webhook {hook.id} for {hook.owner}: {hook.url} ({', '.join(hook.events)}). Its signing secret, "
                  "shown this once (receivers check X-Vera-Signature with it; docs/webhooks.md):")
    print(hook.secret)


def webhook_ls(
    owner: Annotated[str | None, typer.Option(help="Whose webhooks (default: your token's namespace).")] = None,
    as_json: JsonOutput = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """List an owner's webhooks (never their secrets)."""
    hooks = call_registry(registry, token, lambda c: c.webhooks(owner))
    if as_json:
        print_json(hooks)
        return
    columns = (Column("id", justify="right"), Column("owner", 1), Column("url"), Column("events", 2),
               Column("active", 1), Column("description", 3))
    console.print(fitted_table(columns, [[str(h.id), h.owner, h.url, ",".join(h.events), "yes" if h.active else "no",
                                          h.description] for h in hooks]))


def webhook_edit(
    webhook_id: WebhookId,
    url: Annotated[str | None, typer.Option(help="A new URL.")] = None,
    event: EventChoice = None,
    description: Annotated[str | None, typer.Option(help="A new note.")] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive", help="Send deliveries, or pause them.",
                                                show_default=False)] = None,
    as_json: JsonOutput = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Change a webhook's URL, events, note, or whether it is active; what is not given stays."""
    hook = call_registry(registry, token, lambda c: c.update_webhook(webhook_id, url=url, events=event,
                                                                    description=description, active=active))
    if as_json:
        print_json(hook)
        return
    console.print(f"webhook {hook.id} for {hook.owner}: {hook.url} ({', '.join(hook.events)}), "
                  f"{'active' if hook.active else 'inactive'}")


def webhook_rm(webhook_id: WebhookId, registry: RegistryUrl = None, token: Token = None) -> None:
    """Remove a webhook with its delivery log."""
    call_registry(registry, token, lambda c: c.delete_webhook(webhook_id))
    console.print(f"removed webhook {webhook_id}")


def _outcome(delivery: DeliveryInfo) -> str:
    if not delivery.log:
        return "-"
    last = delivery.log[-1]
    if last.answer == "not sent":
        return f"not sent: {(last.error or '').removeprefix(NOT_SENT)}"
    return f"{last.answer} in {last.duration_ms} ms" + (f": {last.error}" if last.error else "")


def webhook_test(webhook_id: WebhookId, as_json: JsonOutput = False, registry: RegistryUrl = None,
                 token: Token = None) -> None:
    """Send a ping event to the webhook now and say what its receiver answered (exit code 3 if it failed)."""
    delivery = call_registry(registry, token, lambda c: c.test_webhook(webhook_id))
    if as_json:
        print_json(delivery)
    else:
        console.print(f"test delivery {delivery.id} {delivery.status}: {_outcome(delivery)}")
    if delivery.status != "succeeded":
        check_failed()


def webhook_deliveries(
    webhook_id: WebhookId,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many, newest first.")] = 20,
    before: Annotated[int | None, typer.Option(help="Deliveries before this id (the next page).")] = None,
    as_json: JsonOutput = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """A webhook's delivery log: each event sent, its status, attempts and the last answer."""
    log = call_registry(registry, token, lambda c: c.webhook_deliveries(webhook_id, before=before, limit=limit))
    if as_json:
        print_json(log)
        return
    columns = (Column("id", justify="right"), Column("event"), Column("event id", 2, "right"), Column("status"),
               Column("attempts", 1, "right"), Column("last attempt", 1), Column("created", 3))
    console.print(fitted_table(columns, [[str(d.id), d.event, str(d.event_id or "-"), d.status, str(d.attempts),
                                          _outcome(d), f"{d.created_at:%Y-%m-%d %H:%M:%S}"] for d in log]))
