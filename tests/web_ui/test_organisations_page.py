"""The Organisations page through streamlit.testing.v1.AppTest against a real registry server (tokens required): alice
creates an organisation, adds bob and a misspelt name (marked), changes a role, is not offered Leave as its last admin
(told what to do instead), removes a member, makes herself a reader (the outcome said without the forms); bob, a reader
there, sees the members but no forms, and leaves; an anonymous caller is told to sign in. An admin protects an alias
(the registry's refusal of 'latest' shown), a reader sees it listed without the forms, and the admin unprotects it.
Storage is shown against the quota, which an admin sets (in words: 50GB, none) and clears there. An admin deletes an
organisation by typing its name, after the registry's refusal (it owns a job) is shown and cleared; a registry admin
gets the control too. An admin renames one, and the page follows it to its new name. On a registry with invitations
(VERA_ORG_INVITATIONS), adding a user invites them: they accept or decline under "Invitations for you", and the
organisation's admins see its pending invitations and cancel one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from registry.client import RegistryClient
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread, team_tokens


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("orgs-ui")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ANONYMOUS_READ="true",
                            VERA_OWNER_QUOTA_BYTES="1MB") as base:
        yield {"url": base, **team_tokens(url, ("alice", "bob"), admins=("root",))}


@pytest.fixture(scope="module")
def inviting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A registry with invitations on."""
    root = tmp_path_factory.mktemp("orgs-ui-invitations")
    url = f"sqlite:///{root / 'r.db'}"
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true", VERA_ORG_INVITATIONS="true") as base:
        yield {"url": base, **team_tokens(url, ("alice", "bob", "carol"))}


def page(registry: dict[str, Any], who: str | None, query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_string("from web_ui import organisations, session\nsession.guarded(organisations.page)()\n",
                             default_timeout=60)
    at.session_state["registry_url"] = registry["url"]
    at.session_state["token"] = registry[who] if who else ""
    for key, value in (query or {}).items():
        at.query_params[key] = value
    return at.run()


def texts(at: AppTest, kind: str) -> str:
    return " ".join(str(e.value) for e in getattr(at, kind))


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    return at.run()


def members(registry: dict[str, Any], org: str) -> dict[str, str]:
    with RegistryClient(registry["url"], registry["alice"]) as client:
        return {x.member: x.role for x in client.organization(org).members}


def test_an_admin_creates_an_organisation_and_manages_its_members(registry: dict[str, Any]) -> None:
    at = page(registry, "alice")
    assert not at.exception
    assert "You belong to no organisation yet" in texts(at, "info")
    at.text_input(key="orgs_new_name").set_value("acme")
    at.text_area(key="orgs_new_about").set_value("the team")
    click(at, "Create")
    assert "Created acme; you (alice) are its admin." in texts(at, "success")
    assert at.query_params["org"] == "acme"
    assert list(at.dataframe[0].value["member"]) == ["alice"]

    for member, role in (("bob", "read"), ("bbo", "write")):
        at.text_input(key="orgs_member").set_value(member)
        at.radio(key="orgs_role").set_value(role)
        click(at, "Add or change")
        assert f"{member}'s role in acme is now {role}." in texts(at, "success")
    frame = at.dataframe[0].value
    assert dict(zip(frame["member"], frame["registry token"], strict=True)) == {"alice": "created", "bob": "created",
                                                                                "bbo": "none yet"}
    assert "No token was ever created on this registry for bbo" in texts(at, "warning")

    at.text_input(key="orgs_member").set_value("acme")  # an organisation is not a member: the registry says so
    click(at, "Add or change")
    assert "'acme' is an organisation; members are users" in texts(at, "error")
    assert sorted(at.selectbox(key="orgs_remove").options) == ["bbo", "bob"]  # not yourself: Leave is for that
    # its only admin is not offered Leave (the registry would refuse it) and is told what to do instead
    assert "Leave acme" not in [b.label for b in at.button]
    assert "You are acme's only admin, so you cannot leave it: make another member an admin" in texts(at, "caption")
    at.selectbox(key="orgs_remove").set_value("bbo")
    click(at, "Remove")
    assert "Removed bbo from acme." in texts(at, "success")
    assert members(registry, "acme") == {"alice": "admin", "bob": "read"}

    # with a second admin, alice makes herself a reader: the outcome is said though the forms are gone with her role
    for member, role in (("bob", "admin"), ("alice", "read")):
        at.text_input(key="orgs_member").set_value(member)
        at.radio(key="orgs_role").set_value(role)
        click(at, "Add or change")
    assert "alice's role in acme is now read." in texts(at, "success")
    assert "Add or change" not in [b.label for b in at.button] and "Leave acme" in [b.label for b in at.button]
    assert members(registry, "acme") == {"alice": "read", "bob": "admin"}


def test_a_reader_sees_the_members_and_may_leave(registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["alice"]) as client:
        client.create_organization("beta")
        client.set_member("beta", "bob", "read")
    at = page(registry, "bob", {"org": "beta"})
    assert not at.exception
    assert at.selectbox(key="orgs_chosen").value == "beta"
    assert set(at.dataframe[0].value["member"]) == {"alice", "bob"}
    assert "Your role in beta: read" in texts(at, "caption")
    assert "Invitations for you" not in texts(at, "subheader")  # a registry without invitations: as before
    assert not [b for b in at.button if b.label in ("Add or change", "Remove", "Delete beta")]  # no forms for a reader
    click(at, "Leave beta")  # asks first: Stay changes nothing
    assert "Leave beta? You lose your read role" in texts(at, "warning") and "bob" in members(registry, "beta")
    click(at, "Stay")
    assert "bob" in members(registry, "beta") and "Leave beta?" not in texts(at, "warning")
    click(at, "Leave beta")
    click(at, "Yes, leave beta")
    assert "You left beta." in texts(at, "success")
    assert "bob" not in members(registry, "beta")
    assert at.query_params.get("org") != "beta"  # another of bob's, or none: not "You belong to no organisation"
    assert "You belong to no organisation" not in texts(at, "warning")


def test_an_anonymous_caller_is_told_to_sign_in(registry: dict[str, Any]) -> None:
    at = page(registry, None)
    assert not at.exception
    assert "Sign in with a token" in texts(at, "info")


def progress(at: AppTest) -> list[str]:
    return [e.proto.text for e in at.get("progress")]


def test_storage_is_shown_against_the_quota_which_an_admin_sets_there(registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["alice"]) as client:
        client.create_organization("gamma")
    at = page(registry, "alice", {"org": "gamma"})
    assert not at.exception
    assert progress(at) == ["gamma: 0 adapters, 0 versions, 0 B stored (0% of its 1.0 MB quota, from "
                            "VERA_OWNER_QUOTA_BYTES)",
                            "alice: 0 adapters, 0 versions, 0 B stored (0% of its 1.0 MB quota, from "
                            "VERA_OWNER_QUOTA_BYTES)"]
    assert not [b for b in at.button if b.label == "Set quota"]  # alice is no registry admin

    at = page(registry, "root", {"org": "gamma"})
    at.text_input(key="orgs_quota_gamma").set_value("5 parsecs")
    click(at, "Set quota")
    assert "Type the quota again: '5 parsecs' is not a size" in texts(at, "warning")
    # Markdown's emphasis escaped: "50*10^9 bytes, 50GiB = 50*2^30" read "5010^9 bytes, 50GiB = 502^30" with italics
    assert r"(50GB = 50\*10^9 bytes, 50GiB = 50\*2^30, 1.5TB)" in texts(at, "warning"), texts(at, "warning")
    at.text_input(key="orgs_quota_gamma").set_value("2GiB")
    click(at, "Set quota")
    assert "gamma's quota is now 2.1 GB." in texts(at, "success")
    assert progress(at)[0].startswith("gamma: 0 adapters, 0 versions, 0 B stored (0% of its 2.1 GB quota, set by "
                                      "root on ")
    with RegistryClient(registry["url"], registry["root"]) as client:
        assert client.usage("gamma").quota_bytes == 2 * 2**30
    at.text_input(key="orgs_quota_gamma").set_value("none")
    click(at, "Set quota")
    assert "gamma: 0 adapters, 0 versions, 0 B stored (no quota, set by root on " in texts(at, "caption")
    click(at, "Clear")
    assert "The quota set for gamma is cleared" in texts(at, "success")
    assert progress(at)[0].endswith("(0% of its 1.0 MB quota, from VERA_OWNER_QUOTA_BYTES)")


def test_an_admin_protects_an_alias_and_a_reader_sees_it(registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["alice"]) as client:
        client.create_organization("shield")
        client.set_member("shield", "bob", "read")
    at = page(registry, "alice", {"org": "shield"})
    assert not at.exception
    click(at, "Protect")  # nothing typed: said, nothing asked of the registry
    assert "Type the alias to protect, e.g. prod." in texts(at, "warning")
    at.text_input(key="orgs_protect_shield").set_value("latest")
    click(at, "Protect")
    assert "'latest' is moved by the registry itself" in texts(at, "error")
    at.text_input(key="orgs_protect_shield").set_value("prod")
    click(at, "Protect")
    assert "prod is protected in shield: only its admins move it from now on." in texts(at, "success")
    assert "**Protected aliases**: prod (only its admins move them)" in texts(at, "markdown")
    with RegistryClient(registry["url"], registry["alice"]) as client:
        assert client.organization("shield").protected_aliases == ["prod"]
    reader = page(registry, "bob", {"org": "shield"})
    assert "prod (only its admins move them)" in texts(reader, "markdown")
    assert not [b for b in reader.button if b.label in ("Protect", "Unprotect")]  # no forms for a reader
    at.selectbox(key="orgs_unprotect_shield").set_value("prod")
    click(at, "Unprotect")
    assert "prod is no longer protected in shield" in texts(at, "success")
    with RegistryClient(registry["url"], registry["alice"]) as client:
        assert client.organization("shield").protected_aliases == []
        client.create_organization("fresh")  # within the 5 s the page's reads are cached: a link to it still opens it
    linked = page(registry, "alice", {"org": "fresh"})
    assert linked.selectbox(key="orgs_chosen").value == "fresh" and linked.query_params["org"] == "fresh"
    assert "You belong to no organisation" not in texts(linked, "warning")
    missing = page(registry, "alice", {"org": "nowhere"})
    assert "You belong to no organisation 'nowhere'" in texts(missing, "warning")


def test_an_admin_deletes_an_organisation_typing_its_name(registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["alice"]) as client:
        client.create_organization("delta")
        client.set_member("delta", "bob", "read")
        job = client.submit_job("delta/j", {"demo": True}).id  # no worker here: it stays queued
    at = page(registry, "alice", {"org": "delta"})
    assert not at.exception
    assert "Deleting it takes away the roles of its 2 members" in texts(at, "caption")
    at.text_input(key="orgs_delete_delta").set_value("delt")
    click(at, "Delete delta")
    assert "Type delta to delete it: its name, exactly." in texts(at, "warning")
    at.text_input(key="orgs_delete_delta").set_value("delta")
    click(at, "Delete delta")  # the registry refuses: the job is in the way, and what to do is said
    assert f"delta still owns 1 queued or running job (#{job}), which would be left without an owner" \
        in texts(at, "error")
    assert "`vera job cancel ID`" in texts(at, "error")
    shown = [(node.type, getattr(node, "label", "")) for node in at.main if node.type in ("error", "expander")]
    section = shown.index(("expander", "Delete delta"))  # the error is in the Delete section, not at the top
    assert shown[section + 1] == ("error", "") and ("error", "") not in shown[:section], shown
    assert members(registry, "delta") == {"alice": "admin", "bob": "read"}  # nothing changed
    assert at.query_params["org"] == "delta"

    with RegistryClient(registry["url"], registry["alice"]) as client:
        client.cancel_job(job)
    at.text_input(key="orgs_delete_delta").set_value("delta")
    click(at, "Delete delta")
    assert not at.exception
    assert "Deleted delta: its members lost their roles in it." in texts(at, "success")
    assert "org" not in at.query_params or at.query_params["org"] != "delta"
    with RegistryClient(registry["url"], registry["alice"]) as client:
        assert "delta" not in [o.name for o in client.organizations()]


def test_an_admin_renames_an_organisation(registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["alice"]) as client:
        client.create_organization("zeta")
        client.set_member("zeta", "bob", "read")
    st.cache_data.clear()  # alice's roles as they are now, not as an earlier test's page cached them
    at = page(registry, "alice", {"org": "zeta"})
    assert not at.exception
    click(at, "Rename zeta")
    assert "Type the name zeta should have from now on." in texts(at, "warning")
    at.text_input(key="orgs_rename_zeta").set_value("bob")
    click(at, "Rename zeta")  # the registry refuses: the name is a user's
    assert "The owner name 'bob' is taken (by a user)" in texts(at, "error")
    at.text_input(key="orgs_rename_zeta").set_value("zeta-two")
    click(at, "Rename zeta")
    assert not at.exception
    assert "Renamed zeta to zeta-two: its adapters are zeta-two/NAME now" in texts(at, "success")
    assert at.query_params["org"] == "zeta-two"
    assert members(registry, "zeta-two") == {"alice": "admin", "bob": "read"}
    assert "Rename zeta-two" in [e.label for e in at.expander]  # the page shows it under its new name
    bob = page(registry, "bob", {"org": "zeta-two"})
    assert "Rename zeta-two" not in [e.label for e in bob.expander]  # a reader there gets no form


def test_a_registry_admin_may_delete_any_organisation_there(registry: dict[str, Any]) -> None:
    with RegistryClient(registry["url"], registry["alice"]) as client:
        client.create_organization("epsilon")
    at = page(registry, "root", {"org": "epsilon"})
    assert not at.exception
    at.text_input(key="orgs_delete_epsilon").set_value("epsilon")
    click(at, "Delete epsilon")
    assert "Deleted epsilon" in texts(at, "success")
    with RegistryClient(registry["url"], registry["root"]) as client:
        assert "epsilon" not in [o.name for o in client.organizations()]


def test_with_invitations_adding_invites_and_the_user_accepts_or_declines(inviting: dict[str, Any]) -> None:
    with RegistryClient(inviting["url"], inviting["alice"]) as client:
        client.create_organization("inv")
    at = page(inviting, "alice", {"org": "inv"})
    for member, role in (("bob", "write"), ("carol", "read")):
        at.text_input(key="orgs_member").set_value(member)
        at.radio(key="orgs_role").set_value(role)
        click(at, "Add or change")
        assert f"Invited {member} as {role} to inv: pending until they accept" in texts(at, "success")
    assert list(at.dataframe[0].value["member"]) == ["alice"]  # no members yet
    pending = at.dataframe[1].value
    assert [list(row) for row in pending[["member", "role", "invited by"]].values] == [["bob", "write", "alice"],
                                                                                       ["carol", "read", "alice"]]
    assert "Pending invitations" in texts(at, "markdown")

    at = page(inviting, "bob")
    assert not at.exception
    assert "Invitations for you" in texts(at, "subheader")
    assert "**inv** invites you as **write** (invited by alice; expires " in texts(at, "markdown")
    assert "You belong to no organisation yet" in texts(at, "info")
    click(at, "Accept")
    assert not at.exception
    assert "You joined inv as write." in texts(at, "success")
    assert at.query_params["org"] == "inv" and at.selectbox(key="orgs_chosen").value == "inv"
    assert set(at.dataframe[0].value["member"]) == {"alice", "bob"}
    assert "Invitations for you" not in texts(at, "subheader")
    assert len(at.dataframe) == 1 and "Pending invitations" not in texts(at, "markdown")  # bob is no admin there

    at = page(inviting, "carol")
    click(at, "Decline")
    assert "You declined the invitation to inv." in texts(at, "success")
    assert "Invitations for you" not in texts(at, "subheader")
    with RegistryClient(inviting["url"], inviting["alice"]) as client:
        assert {x.member: x.role for x in client.organization("inv").members} == {"alice": "admin", "bob": "write"}
        assert client.organization("inv").invitations == []


def test_an_admin_cancels_a_pending_invitation(inviting: dict[str, Any]) -> None:
    with RegistryClient(inviting["url"], inviting["alice"]) as client:
        client.create_organization("inv2")
        client.set_member("inv2", "bob", "read")
        client.set_member("inv2", "carol", "admin")
    at = page(inviting, "alice", {"org": "inv2"})
    assert not at.exception
    at.selectbox(key="orgs_uninvite").set_value("carol")
    click(at, "Cancel invitation")
    assert "Cancelled the invitation of carol to inv2." in texts(at, "success")
    assert list(at.dataframe[1].value["member"]) == ["bob"]
    with RegistryClient(inviting["url"], inviting["carol"]) as client:
        assert client.invitations() == []


def test_in_local_mode_storage_is_shown_for_the_owners_that_published(tmp_path: Path) -> None:
    """A new user's walk (session 23): on a registry without tokens Your storage showed the local user's, "local: 0
    adapters ... 0 B", while the adapters they published under their own name stored 240 KB. The local user is an
    admin there: the page offers the owners that published (newest first) and shows the chosen one's storage."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with registry_in_thread(url, tmp_path / "blobs") as base:
        with RegistryClient(base) as client:
            client.publish(make_adapter(tmp_path / "a", seed=1), "you/polarity", base_model="tiny-llama")
            stored = client.usage("you").stored_bytes
        at = page({"url": base}, None)
        assert not at.exception
        assert [s.value for s in at.subheader][-1] == "Storage"
        assert at.selectbox(key="orgs_storage_owner").value == "you"
        assert texts(at, "caption").count("you: 1 adapter, 1 version, ") == 1 and stored > 0
        assert at.query_params["storage"] == "you"


def test_an_organisation_made_seconds_ago_shows_its_creators_role(registry: dict[str, Any]) -> None:
    """The page's reads are cached 5 s: an organisation created (or joined) just after the page was last read was
    shown with "Your role in it: none" and no admin forms (the final CI of session 28)."""
    assert not page(registry, "alice").exception  # whoami read and cached, before the organisation exists
    with RegistryClient(registry["url"], registry["alice"]) as client:
        client.create_organization("newest")
    at = page(registry, "alice", {"org": "newest"})
    assert not at.exception
    assert "**Add a member to newest, or change a role**" in texts(at, "markdown")  # its admin's forms
    assert "Your role in newest: none" not in texts(at, "caption")
    with RegistryClient(registry["url"], registry["alice"]) as client:
        client.delete_organization("newest")
