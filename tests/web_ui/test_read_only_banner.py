"""The dashboard on a read-only registry (VERA_READ_ONLY): the sidebar says so under who you are, and a change it
tries is shown as the registry's refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from registry.client import RegistryClient
from registry.domain.errors import ReadOnly
from registry.domain.schemas import WhoAmI
from tests.commands import vera as run_vera
from tests.registry.servers import registry_in_thread
from web_ui import app

pytestmark = pytest.mark.slow


def test_the_sidebar_says_the_registry_is_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs", VERA_READ_ONLY="true",
                            VERA_PRIMARY_URL="https://primary.example.org") as url:
        monkeypatch.setenv("VERA_REGISTRY_URL", url)
        monkeypatch.setenv("VERA_TOKEN", "")
        at = AppTest.from_file(str(Path(__file__).parents[2] / "web_ui" / "streamlit_app.py"),
                               default_timeout=60).run()
        assert any("local mode" in m.value and "read-only registry" in m.value for m in at.sidebar.markdown)
        with RegistryClient(url, "") as client, pytest.raises(ReadOnly, match="https://primary.example.org"):
            client.create_organization("acme")  # what the dashboard's forms show as the error's message


def test_identity_has_the_banner_only_on_a_read_only_registry() -> None:
    who = WhoAmI(user="bob", anonymous=False, scopes=["read"], organizations={}, token_id=3, limited_to=None)
    assert "read-only" not in app.identity(who)
    assert app.identity(who.model_copy(update={"read_only": True})).endswith(app.READ_ONLY_BANNER)


def test_no_forms_are_offered_on_a_read_only_registry(tmp_path: Path) -> None:
    """Forms the registry would only refuse are not drawn: the Organisations page says why instead of offering to
    create one (a team lead's walk, session 15)."""
    from web_ui.editing import READ_ONLY_EDITS

    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs", VERA_READ_ONLY="true") as url:
        at = AppTest.from_string("from web_ui import organisations, session\nsession.guarded(organisations.page)()\n",
                                 default_timeout=60)
        at.session_state["registry_url"], at.session_state["token"] = url, ""
        at.run()
        assert not at.exception
        assert READ_ONLY_EDITS in [c.value for c in at.caption]
        assert not [b for b in at.button if b.label in ("Create", "Add or change", "Remove")]


def test_vera_whoami_says_the_registry_is_read_only(tmp_path: Path) -> None:
    import os

    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs", VERA_READ_ONLY="true") as url:
        done = run_vera(["whoami", "--registry", url], env={**os.environ, "COLUMNS": "200", "VERA_TOKEN": ""})
    assert done.returncode == 0 and "this registry is read-only (VERA_READ_ONLY)" in done.stdout, done.stderr


def test_verify_on_a_read_only_registry_says_its_result_is_not_recorded(tmp_path: Path) -> None:
    """A read-only registry answers a verification without recording it: the tab said "passed" while the header kept
    "not yet", and nothing said why (a newcomer's walk, session 54)."""
    from registry.client import RegistryClient
    from tests.registry.adapters import make_adapter

    url, blobs = f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs"
    with registry_in_thread(url, blobs) as base, RegistryClient(base, cache=False) as client:
        client.publish(make_adapter(tmp_path / "a"), "alice/m", base_model="tiny-llama")
    with registry_in_thread(url, blobs, VERA_READ_ONLY="true") as base:
        at = AppTest.from_string("from web_ui import session, adapter\nsession.guarded(adapter.page)()\n",
                                 default_timeout=60)
        at.session_state["registry_url"], at.session_state["token"] = base, ""
        at.session_state["adapter_tab"] = "Verify"
        at.query_params["ref"] = "alice/m:1"
        at.run()
        next(b for b in at.button if b.label == "Verify now").click()
        at.run()
        assert not at.exception
        assert any("alice/m:1: passed" in s.value for s in at.success)
        assert {m.label: m.value for m in at.metric}["Verification"] == "not yet"
        assert "This registry is read-only: the result is not recorded, and the version keeps the status it had " \
               "(the header's)." in [c.value for c in at.caption], [c.value for c in at.caption]
