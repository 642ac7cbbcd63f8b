"""Protected aliases (`vera org protect ORG ALIAS`): in every adapter of an organisation, only its admins (and the
registry's) point a protected alias such as ``prod`` at a version, remove it, or delete the version or the adapter
it names; its writers get 403 saying who may, and nothing changes. Through a real server and the real client, then
the service on SQLite and PostgreSQL (an organisation's rename keeps its protections, its deletion drops them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from registry.client import RegistryClient
from registry.domain.errors import Forbidden, InvalidInput, NotFound
from registry.domain.schemas import AdapterUpdate
from registry.services.registry import Registry
from registry.services.tokens import Principal, Role, create_token
from registry.store import models as m
from registry.store.database import Database
from tests.commands import wide_vera as vera
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread

USERS = {"alice": ["read", "publish"], "bob": ["read", "publish"], "alice-read": ["read"], "root": ["admin"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("protected")
    url = f"sqlite:///{root / 'r.db'}"
    source = make_adapter(root / "adapter")
    with registry_in_thread(url, root / "blobs", VERA_REQUIRE_TOKENS="true") as base:
        db = Database(url)
        tokens = {user: create_token(db, owner=user.removesuffix("-read"), scopes=scopes)[1]
                  for user, scopes in USERS.items()}
        db.engine.dispose()
        with RegistryClient(base, tokens["alice"], cache=False) as alice:
            alice.create_organization("acme")
            alice.set_member("acme", "bob", "write")
        yield {"url": base, "tokens": tokens, "source": source, "database": url}


def client(server: dict[str, Any], who: str) -> RegistryClient:
    return RegistryClient(server["url"], server["tokens"][who], cache=False, retries=0)


def versions_of(client_: RegistryClient, adapter: str) -> list[int]:
    owner, name = adapter.split("/")
    return sorted(v.version for v in client_.list_versions(owner=owner, name=name).items)


def test_only_admins_move_remove_or_delete_under_a_protected_alias(server: dict[str, Any]) -> None:
    with client(server, "alice") as alice, client(server, "bob") as bob:
        for _ in range(3):
            bob.publish(server["source"], "acme/clf", base_model="tiny-llama")
        bob.set_alias("acme/clf:1", "prod")  # not protected yet: a writer moves it
        bob.set_alias("acme/clf:1", "staging")
        org = alice.protect_alias("acme", "prod")
        assert org.protected_aliases == ["prod"]
        assert alice.protect_alias("acme", "prod").protected_aliases == ["prod"]  # again: no change

        with pytest.raises(Forbidden, match=r"The alias 'prod' is protected in acme: only its admins point it at a "
                                            r"version \(here acme/clf:2\)\. Ask one of them"):
            bob.set_alias("acme/clf:2", "prod")
        with pytest.raises(Forbidden, match="only its admins remove it"):
            bob.remove_alias("acme/clf", "prod")
        with pytest.raises(Forbidden, match=r"only its admins delete the version it names \(acme/clf:1\)"):
            bob.delete("acme/clf:1")
        with pytest.raises(Forbidden, match="only its admins delete the adapter"):
            bob.delete_adapter("acme/clf")
        with pytest.raises(Forbidden, match="only its admins rename or move acme/clf, which holds it"):
            bob.move("acme/clf", "acme/clf-renamed")  # acme/clf@prod would answer 404 to its consumers
        with pytest.raises(Forbidden, match=r"only its admins make private the adapter that holds it \(acme/clf: its "
                                            r"readers would lose it\)"):
            bob.set_visibility("acme/clf", "private")  # outsiders reading acme/clf@prod would get 404
        bob.update_adapter("acme/clf", description="sentiment")  # the rest of the adapter stays the writers'
        assert bob.adapter("acme/clf").visibility == "public"
        bob.publish(server["source"], "bob/own", base_model="tiny-llama")
        bob.set_alias("bob/own:1", "prod")  # his own prod, brought into acme, would be acme's production
        with pytest.raises(Forbidden, match=r"only its admins bring in an adapter that holds it \(remove the alias "
                                            r"from bob/own first\)"):
            bob.move("bob/own", "acme/own")
        bob.remove_alias("bob/own", "prod")
        bob.move("bob/own", "acme/own")  # without it, a writer moves it in as before
        with client(server, "root") as root:  # the registry's admins may, as the organisation's do
            root.set_alias("acme/clf:2", "prod")
            root.set_alias("acme/clf:1", "prod")
        alice.move("acme/clf", "acme/clf-renamed")
        alice.move("acme/clf-renamed", "acme/clf")
        assert alice.set_visibility("acme/clf", "private").visibility == "private"  # an admin may
        assert bob.set_visibility("acme/clf", "public").visibility == "public"  # making it public takes nothing away
        # nothing changed: every version is there (the adapter's delete refused whole, not newest first), prod on 1
        assert versions_of(alice, "acme/clf") == [1, 2, 3]
        assert alice.get("acme/clf@prod").version == 1

        bob.set_alias("acme/clf:3", "staging")  # other aliases, and versions prod does not name, stay the writers'
        bob.delete("acme/clf:3")
        alice.set_alias("acme/clf:2", "prod")  # an admin moves it
        assert alice.get("acme/clf@prod").version == 2
        events = alice.events(owner="acme", action="alias-protect").events
        assert [(e.actor, e.target, e.detail) for e in events] == [("alice", "acme", {"alias": "prod"})]

        alice.unprotect_alias("acme", "prod")
        bob.set_alias("acme/clf:1", "prod")  # writers move it again
        assert alice.organization("acme").protected_aliases == []


def test_protecting_is_for_the_organisations_admins_and_says_what_is_wrong(server: dict[str, Any]) -> None:
    with client(server, "alice") as alice, client(server, "bob") as bob, client(server, "alice-read") as reader, \
            client(server, "root") as root:
        with pytest.raises(Forbidden, match="Only admins of acme protect its aliases; your role is 'write'"):
            bob.protect_alias("acme", "prod")
        with pytest.raises(Forbidden, match="Only admins of acme protect its aliases"):  # alice, with a read token
            reader.protect_alias("acme", "prod")
        with pytest.raises(InvalidInput, match="'latest' is moved by the registry itself"):
            alice.protect_alias("acme", "latest")
        with pytest.raises(InvalidInput, match="Alias"):
            alice.protect_alias("acme", "Not An Alias!")
        with pytest.raises(NotFound, match="No organisation 'alice'"):  # a user's own namespace: only they write
            alice.protect_alias("alice", "prod")
        with pytest.raises(NotFound, match=r"acme does not protect the alias 'gold' \(it protects: none\)"):
            alice.unprotect_alias("acme", "gold")
        assert root.protect_alias("acme", "gold").protected_aliases == ["gold"]  # the registry's admins may
        with pytest.raises(Forbidden, match="Only admins of acme unprotect its aliases"):
            bob.unprotect_alias("acme", "gold")
        assert alice.unprotect_alias("acme", "gold").protected_aliases == []


def test_vera_org_protect_and_show(server: dict[str, Any]) -> None:
    def as_(who: str, *args: str) -> Any:
        return vera(*args, "--registry", server["url"], "--token", server["tokens"][who])

    protected = as_("alice", "org", "protect", "acme", "release")
    assert protected.returncode == 0, protected.stderr
    assert "release is protected in acme: only its admins move it" in protected.stdout
    assert "protected aliases (only admins move them): release" in as_("alice", "org", "show", "acme").stdout
    refused = as_("bob", "org", "protect", "acme", "release")
    assert refused.returncode == 1 and "Only admins of acme protect its aliases" in refused.stderr
    assert as_("alice", "org", "unprotect", "acme", "release").returncode == 0


def test_protections_follow_a_rename_and_go_with_the_organisation(registry: Registry) -> None:
    def member(org: str, role: Role) -> Principal:
        return Principal(owner="alice" if role == "admin" else "bob", scopes=frozenset({"read", "publish"}),
                         roles={org: role})

    registry.access.create_organization("team", creator="alice")
    registry.access.set_member("team", "bob", "write", viewer=member("team", "admin"))
    assert registry.access.protect_alias("team", "prod", viewer=member("team", "admin")).protected_aliases == ["prod"]
    with pytest.raises(Forbidden, match="Only admins of team protect its aliases; your role is 'write'"):
        registry.access.protect_alias("team", "canary", viewer=member("team", "write"))
    renamed = registry.access.rename_organization("team", "crew", viewer=member("team", "admin"))
    assert renamed.protected_aliases == ["prod"]
    registry.access.delete_organization("crew", viewer=member("crew", "admin"))
    with registry.db.session() as s:
        assert s.scalar(select(func.count()).select_from(m.ProtectedAlias)) == 0


def test_the_services_refuse_unless_told_the_caller_administers_the_owner(registry: Registry,
                                                                          tmp_path: Path) -> None:
    """The safe default: a service call that does not say the caller administers the owner (a route that forgot
    to decide) is refused as a writer's would be; told so (protected_too, protected_at), it goes ahead."""
    admin = Principal(owner="alice", scopes=frozenset({"read", "publish"}), roles={"team": "admin"})
    registry.access.create_organization("team", creator="alice")
    source = make_adapter(tmp_path / "a")
    for _ in range(2):
        registry.publish(source, owner="team", name="clf", base_model="tiny-llama")
    registry.set_alias("team/clf:1", "prod", actor="alice")
    registry.access.protect_alias("team", "prod", viewer=admin)
    refusals: list[Callable[[], object]] = [
        lambda: registry.set_alias("team/clf:2", "prod", actor="bob"),
        lambda: registry.remove_alias("team/clf", "prod", actor="bob"),
        lambda: registry.delete("team/clf:1", actor="bob"),
        lambda: registry.delete_adapter("team/clf", actor="bob"),
        lambda: registry.move("team/clf", "team/other", actor="bob"),
        lambda: registry.update_adapter("team/clf", AdapterUpdate(visibility="private"), actor="bob"),
    ]
    for refused in refusals:
        with pytest.raises(Forbidden, match="The alias 'prod' is protected in team"):
            refused()
    assert registry.get("team/clf@prod").version == 1 and registry.adapter("team/clf").visibility == "public"
    assert registry.set_alias("team/clf:2", "prod", actor="alice", protected_too=True).version == 2
    registry.move("team/clf", "team/other", actor="alice", protected_at=frozenset())
    assert registry.get("team/other@prod").version == 2
