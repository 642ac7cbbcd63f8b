"""A yank's reason (PEP 592's, migration 0033): kept with the version, said in its info, its yank event and a copy's
refusal; a yank again replaces it, an unyank clears it; a bad reason is refused changing nothing. Through a real
server over the registry of each database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from registry.api.app import create_app
from registry.api.deps import ApiOptions
from registry.client import RegistryClient
from registry.domain.errors import Conflict, InvalidInput
from registry.services.registry import Registry
from registry.store import models as m
from tests.registry.adapters import make_adapter
from tests.registry.servers import in_thread


@pytest.fixture
def served(registry: Registry, tmp_path: Path) -> Iterator[tuple[str, Registry]]:
    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="y", base_model="tiny-llama")
    registry.publish(make_adapter(tmp_path / "b", seed=1), owner="ann", name="y", base_model="tiny-llama")
    with in_thread(create_app(registry, ApiOptions(require_tokens=False))) as url:
        yield url, registry


def yank_events(registry: Registry) -> list[tuple[str, dict[str, object]]]:
    """The yank and unyank events, oldest first: (action, detail)."""
    with registry.db.session() as s:
        return [(e.action, e.detail) for e in s.scalars(select(m.AuditEvent).where(
            m.AuditEvent.action.in_(("yank", "unyank"))).order_by(m.AuditEvent.id))]


def test_a_reason_is_kept_said_replaced_and_cleared(served: tuple[str, Registry]) -> None:
    url, registry = served
    with RegistryClient(url) as client:
        plain = client.yank("ann/y:2")  # the body without a reason, as every client before sent it
        assert plain.yanked and plain.yank_reason is None
        said = client.yank("ann/y:2", reason="  leaked test split: use ann/y:1  ")
        assert said.yank_reason == "leaked test split: use ann/y:1"  # one line, stripped
        assert client.get("ann/y:2").yank_reason == said.yank_reason
        assert client.yank("ann/y:2", reason="tokenizer mismatch").yank_reason == "tokenizer mismatch"  # replaced
        assert client.yank("ann/y:2", reason="   ").yank_reason is None  # blank: none
        assert client.yank("ann/y:2", reason=f"  {'x' * 500}  ").yank_reason == "x" * 500  # counted once stripped
        client.yank("ann/y:2", reason="tokenizer mismatch")
        with pytest.raises(Conflict, match=r"ann/y:2 is yanked \(tokenizer mismatch\): a copy would promote"):
            client.copy_version("ann/y:2", "ann/prod")
        cleared = client.yank("ann/y:2", yanked=False)
        assert not cleared.yanked and cleared.yank_reason is None
    assert yank_events(registry) == [
        ("yank", {}), ("yank", {"reason": "leaked test split: use ann/y:1"}),
        ("yank", {"reason": "tokenizer mismatch"}), ("yank", {}), ("yank", {"reason": "x" * 500}),
        ("yank", {"reason": "tokenizer mismatch"}), ("unyank", {})]


@pytest.mark.parametrize(("body", "said"), [
    ({"yanked": False, "reason": "why"}, "A reason goes with a yank; an unyank clears the version's reason"),
    ({"reason": "x" * 501}, "The yank reason must be text of at most 500 characters"),
    ({"reason": "line one\nline two"}, "The yank reason contains the control character '\\n'"),
    ({"reason": "use \u202eevil"}, "a line separator or a bidirectional override"),
    ({"reason": 5}, "reason"),
    ({"reason": "x" * 5000}, "The yank reason must be text of at most 500 characters"),  # one message at any length
    ({"reason": "\u200b\ufeff\u00ad"}, "The yank reason holds no visible character"),  # a reason nobody sees
    ({"reason": "\u3164\u3164 \u2800"}, "The yank reason holds no visible character"),  # letters drawn blank
], ids=["with-unyank", "long", "two-lines", "bidi", "not-text", "far-too-long", "invisible", "blank-letters"])
def test_a_bad_reason_is_refused_changing_nothing(served: tuple[str, Registry], body: dict[str, object],
                                                  said: str) -> None:
    url, registry = served
    registry.yank("ann/y:1", actor="ann", reason="kept")
    before = registry.get("ann/y:1").model_dump()
    # (30 s, not httpx's 5: twice a CI run on a slow day waited over 5 s for this answer, session 54)
    answer = httpx.post(f"{url}/api/v1/adapters/ann/y/versions/1/yank", json=body, timeout=30)
    assert answer.status_code == 422 and said in answer.json()["detail"], answer.text
    assert registry.get("ann/y:1").model_dump() == before and len(yank_events(registry)) == 1


def test_the_service_checks_the_reason_too(registry: Registry, tmp_path: Path) -> None:
    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="y", base_model="tiny-llama")
    with pytest.raises(InvalidInput, match="A reason goes with a yank"):
        registry.yank("ann/y:1", actor="ann", yanked=False, reason="why")
    assert not registry.get("ann/y:1").yanked
