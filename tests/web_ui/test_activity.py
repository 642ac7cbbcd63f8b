"""The Activity page's detail in words: 'name: value' instead of JSON, numbers with separators, ids as written,
digests shortened in the table and whole under it, an edit as before -> after, and Markdown kept as text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from registry.domain.events import EventInfo
from web_ui import activity, formats, tables

SHA = "ab" * 32


@pytest.mark.parametrize(("detail", "line"), [
    ({"vectors": SHA, "base_model": "tiny-llama"}, "vectors: abababab…; base model: tiny-llama"),
    ({"job": 1234, "status": "succeeded", "result": "alice/x:1"}, "job: 1234; status: succeeded; result: alice/x:1"),
    ({"version": 3, "previous_version_id": None}, "version: 3; previous version id: —"),
    ({"layers": 12345, "fingerprint": SHA}, "layers: 12,345; fingerprint: abababab…"),
    ({"before": {"description": "", "tags": ["a"]}, "after": {"description": "a\nb", "tags": ["c"]}},
     "description: (empty) → a ↵ b; tags: a → c"),
    ({"url": "http://x/h", "events": [], "active": True}, "url: http://x/h; events: none; active: yes"),
    ({}, ""),
], ids=["publish", "job-end", "alias", "base-register", "edit", "webhook", "none"])
def test_an_event_detail_reads_as_words(detail: dict[str, Any], line: str) -> None:
    assert "; ".join(activity.lines(detail, short=True)) == line
    assert activity.detail(detail) == formats.fit(line, activity.DETAIL_PX)  # the table's cell: cut to its column


def test_a_long_detail_is_cut_to_its_column_and_whole_under_the_table() -> None:
    detail = {"error": "x" * 500, "digest": SHA}
    cut = activity.detail(detail)
    assert cut.endswith("…") and formats.cell_width(cut) <= activity.DETAIL_PX
    assert activity.lines(detail, short=False) == [f"error: {'x' * 500}", f"digest: {SHA}"]


def event(target: str) -> EventInfo:
    return EventInfo(id=1, at=datetime(2026, 11, 30, tzinfo=UTC), actor="alice", action="publish", target=target,
                     owner=target.split("/")[0], adapter=target.split(":")[0], detail={})


@pytest.mark.parametrize(("target", "px"), [("a/b:1", (90, 140, 400)), ("alice/sentiment-review:1", (90, 185, 355)),
                                           ("o" * 30 + "/" + "n" * 30 + ":1", (90, 300, 240))],
                         ids=["short", "middling", "long"])
def test_the_target_is_as_wide_as_its_names_and_the_detail_takes_the_rest(target: str,
                                                                          px: tuple[int, int, int]) -> None:
    assert activity.widths([event(target)]) == px
    assert sum(c["width"] for c in activity.columns(*px).values()) == activity.TABLE_PX  # what fits 1,400 px


def test_the_target_is_sized_by_what_its_link_reads() -> None:
    """A walk's finding (session 31): a webhook's event ('alice/webhooks/12') links to alice's events and reads
    'alice', but its column was sized for the whole target, and the detail beside it was cut."""
    hook = event("a/b:1").model_copy(update={"action": "webhook-update", "adapter": None, "owner": "some-team-name",
                                             "target": "some-team-name/webhooks/123456"})
    _, target, detail = activity.widths([hook])
    assert target == max(activity.TARGET_PX[0], formats.cell_width("some-team-name")) < formats.cell_width(hook.target)
    fixed = sum(c["width"] for c in activity.COLUMNS.values())
    assert detail == activity.TABLE_PX - fixed - activity.WHO_PX[0] - target  # the rest: the detail's


def test_who_is_as_wide_as_its_longest_name_within_bounds() -> None:
    """A new user's walk: "trusted-publisher:nlp-main" was cut to "trusted-publisl", with no sign of it."""
    ci = event("a/b:1").model_copy(update={"actor": "trusted-publisher:nlp-main"})
    who, target, detail = activity.widths([event("a/b:1"), ci])
    assert who >= formats.cell_width("trusted-publisher:nlp-main") and who + target + detail < activity.TABLE_PX
    assert list(activity.table([ci], who_px=who)["who"]) == ["trusted-publisher:nlp-main"]  # whole
    huge = event("a/b:1").model_copy(update={"actor": "w" * 64})
    assert activity.widths([huge])[0] == activity.WHO_PX[1]
    assert activity.table([huge], who_px=activity.WHO_PX[1])["who"][0].endswith("…")  # cut, and says so


def test_markdown_in_a_detail_is_shown_as_text() -> None:
    assert activity.markdown_text("a *b* [c](d) $x #h") == r"a \*b\* \[c\]\(d\) \$x \#h"


def test_every_target_links_somewhere_the_dashboard_has() -> None:
    """A bare name in the link column was a link to /NAME ("Page not found", a new user's walk)."""
    org = event("acme").model_copy(update={"action": "org-create", "owner": "acme", "adapter": None})
    base = event("llama-7b@main").model_copy(update={"action": "base-register", "owner": None, "adapter": None})
    assert activity.target_link(org).startswith("activity?adapter=acme")
    assert activity.target_link(base).startswith("activity?action=base-register")
    assert [tables.link_text(activity.target_link(e)) for e in (org, base)] == ["acme", "llama-7b@main"]
    # a registry-wide webhook's change: no owner's events to open (?adapter=* is refused), its kind's instead
    every = event("*/webhooks/3").model_copy(update={"action": "webhook-create", "owner": "*", "adapter": None})
    assert activity.target_link(every).startswith("activity?action=webhook-create")
