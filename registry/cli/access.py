"""Who you are on a registry and who may see what: `vera login|logout|whoami`, `vera auth` (your tokens),
`vera org` (organisations and their members) and `vera visibility` (an adapter public or private)."""

from __future__ import annotations

import os
import re
from typing import Annotated

import typer
from rich.table import Table

from registry.cli.common import (
    RegistryUrl,
    Token,
    call_registry,
    confirm,
    confirm_deletion,
    console,
    err_console,
    fail,
    styled,
)
from registry.cli.output import Column, JsonOutput, fitted_table, print_json
from registry.client import DEFAULT_URL, RegistryClient
from registry.domain.errors import InvalidInput
from registry.domain.schemas import (
    MAX_QUOTA_BYTES,
    InvitationInfo,
    OrganizationInfo,
    OwnerUsage,
    TokenInfo,
    check_name,
)
from registry.domain.words import counted, parse_size

Role = Annotated[str, typer.Option(help="read (private adapters), write (also publish and manage them) or admin "
                                        "(also manage members).")]


def _url(registry: str | None) -> str:
    return (registry or os.environ.get("VERA_REGISTRY_URL") or DEFAULT_URL).rstrip("/")


def login(
    registry: RegistryUrl = None,
    token: Annotated[str | None, typer.Option("--token", help="The token (default: asked for, not echoed). "
                                              "VERA_TOKEN is not read here: this stores a token.")] = None,
) -> None:
    """Store a token for a registry (checked first), like `hf auth login`; commands use it when no --token or
    VERA_TOKEN is given."""
    from registry.credentials import store_token

    url = _url(registry)
    secret = token if token is not None else typer.prompt(f"Token for {url}", hide_input=True)
    if not secret.strip():
        fail(InvalidInput("The token is empty; create one with `vera auth create-token` or ask an administrator."))
    with RegistryClient(url, secret.strip()) as client:
        who = client.whoami()
    if who.local:  # any text "logged in" as local, a real token too: the user thought they were bob (session 40)
        fail(InvalidInput(f"{url} checks no tokens (VERA_REQUIRE_TOKENS is off, as `vera up` runs it): every caller "
                          "acts as the local user, so this token was not checked and is not stored. Log in once the "
                          "registry requires tokens."))
    path = store_token(url, secret.strip(), user=who.user)
    console.print(f"logged in to {url} as {who.user} {sorted(who.scopes)}; token stored in {path}")
    if url != _url(None):
        # the token is kept for this URL, but commands still go to VERA_REGISTRY_URL or the default (a newcomer's
        # next `vera whoami` reached 127.0.0.1): say how to make this registry theirs
        console.print(f"other commands go to {_url(None)} unless told: `export VERA_REGISTRY_URL={url}` (or pass "
                      f"--registry {url} to each)", soft_wrap=True)


def logout(registry: RegistryUrl = None) -> None:
    """Forget the token stored for a registry."""
    from registry.credentials import forget_token

    url = _url(registry)
    console.print(f"logged out of {url}" if forget_token(url) else f"no token was stored for {url}")


def whoami(registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Who the registry takes you for: user, scopes, organisations and roles, the token's limit and expiry."""
    who = call_registry(registry, token, lambda c: c.whoami())
    if as_json:
        print_json(who)
        return
    if who.read_only:
        console.print("this registry is read-only (VERA_READ_ONLY): reads only; changes go to the registry that "
                      "takes them")
    if who.anonymous:
        console.print("anonymous (no token): public adapters only. `vera login` stores a token.")
        return
    orgs = ", ".join(f"{o} ({r})" for o, r in who.organizations.items()) or "none"
    console.print(f"{who.user}  scopes {', '.join(who.scopes)}  organisations {orgs}")
    if who.local:
        console.print("this registry checks no tokens (VERA_REQUIRE_TOKENS is off): every caller acts as the local "
                      "user, whatever token it sends")
    if who.limited_to is not None:
        console.print(f"this token is limited to: {', '.join(who.limited_to)}")
    if who.expires_at is not None:
        console.print(f"this token expires {who.expires_at:%Y-%m-%d %H:%M} UTC")
    if who.pending_invitations:
        console.print(f"{counted(who.pending_invitations, 'invitation')} to organisations waiting for your answer: "
                      "`vera org invitations`")


def usage(owner: Annotated[str | None, typer.Argument(help="A user or organisation (default: you).")] = None,
          registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """What an owner's adapters store, and its storage quota (yours, an organisation's you belong to; admins:
    anyone's)."""
    def read(c: RegistryClient) -> OwnerUsage:
        return c.usage(owner or c.whoami().user)

    _print_usage(call_registry(registry, token, read), as_json)


def quota(owner: Annotated[str, typer.Argument(help="A user or organisation.")],
          words: Annotated[list[str] | None, typer.Argument(
              metavar="[SIZE]", help="The quota: bytes, or a size with a unit (50GB = 50*10^9 bytes, 50GiB = "
                                     "50*2^30; `50 GB` too), or none (no quota for this owner). Left out: show it.",
              show_default=False)] = None,
          clear: Annotated[bool, typer.Option("--clear", help="Drop the quota set here: the registry's settings "
                                                           "(VERA_OWNER_QUOTAS, VERA_OWNER_QUOTA_BYTES) hold again.")]
          = False,
          registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Set an owner's storage quota (admins): it overrides the registry's settings until --clear; nothing stored is
    removed by a lower one (its next publish is refused). Shows the owner's usage after."""
    check_name(owner, "Owner")  # a/b, '..', 'Bad Name!': said here, not answered "Not Found"
    # "200 KB" as two words was Click's "unexpected extra argument (KB)" (an operator's walk, session 48); only a
    # number and its unit are read as one: "1 50GB" read as 150GB (a re-check's finding)
    if words and len(words) > 1 and not (len(words) == 2 and re.fullmatch(r"[0-9.]+", words[0])
                                         and words[1].isalpha()):
        fail(InvalidInput(f"{' '.join(words)!r}: give one size, a number with its unit (200KB, '200 KB', 50GiB), or "
                          "none."))
    new = "".join(words) if words else None
    if clear and new is not None:
        fail(InvalidInput(f"Give a SIZE or --clear, not both: `vera quota {owner} {new}` sets it, `vera quota "
                          f"{owner} --clear` goes back to the registry's settings."))
    wanted = None if new is None or new.strip().lower() == "none" else _size(new)

    def change(c: RegistryClient) -> OwnerUsage:
        if clear:
            return c.clear_quota(owner)
        return c.usage(owner) if new is None else c.set_quota(owner, wanted)

    _print_usage(call_registry(registry, token, change), as_json)


def _size(text: str) -> int:
    try:
        return parse_size(text, most=MAX_QUOTA_BYTES)
    except ValueError as exc:
        fail(InvalidInput(f"{exc}; or none for no quota."))


def _print_usage(used: OwnerUsage, as_json: bool) -> None:
    if as_json:
        print_json(used)
    else:
        console.print(used.summary())


def create_token(
    scope: Annotated[list[str], typer.Option(help="read, publish, hub or admin; repeat for several (at most "
                                                  "your own token's).")],
    name: Annotated[str, typer.Option(help="What the token is for.")] = "",
    expires_days: Annotated[float | None, typer.Option(
        help="Days until it stops working (default: never, or the registry's longest token life where it sets one, "
             "VERA_MAX_TOKEN_DAYS).")] = None,
    limit_to: Annotated[list[str] | None, typer.Option(help="Only these owner namespaces (you or your "
                                                            "organisations); repeat for several.")] = None,
    user: Annotated[str | None, typer.Option(help="Admins: create it for this user.")] = None,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Create a token through the registry; its secret is printed once.

    As you, from any machine: at most your own token's scopes and limit (admins: for any --user). On the registry's
    machine, without a token (the first admin's): `vera token create`."""
    from registry.domain.schemas import expiry_in

    try:
        expiry_in(expires_days)  # NaN, infinities and negatives said here, not as a JSON error
    except InvalidInput as exc:
        fail(exc)
    info, secret = call_registry(registry, token, lambda c: c.create_token(
        scope, name=name, expires_days=expires_days, limited_to=limit_to, user=user))
    console.print(f"token {info.id} for {info.owner} {info.scopes}"
                  + (f", limited to {', '.join(info.limited_to)}" if info.limited_to else "")
                  + (f", expires {info.expires_at:%Y-%m-%d}" if info.expires_at else ""))
    typer.echo(secret)
    if user is None and info.owner == "local" and call_registry(registry, token, lambda c: c.whoami()).local:
        err_console.print(styled("note:", "yellow", " this registry checks no tokens now (VERA_REQUIRE_TOKENS is off): "
                                 "the token is for 'local', the user every caller acts as. For a person's token, give "
                                 "--user NAME."), soft_wrap=True)


#: What a GitHub Actions runner gives a job with `permissions: id-token: write`: where to ask for its identity token.
GITHUB_REQUEST_URL, GITHUB_REQUEST_TOKEN = "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"


def exchange(
    id_token: Annotated[str | None, typer.Option("--id-token", envvar="VERA_ID_TOKEN", show_envvar=True, help=(
        "The CI job's OpenID Connect identity token (GitLab CI: an `id_tokens:` entry). Default on GitHub Actions: "
        "asked of the runner."))] = None,
    audience: Annotated[str, typer.Option(help="The audience asked of GitHub Actions: the trusted publisher's "
                                               "(VERA_TRUSTED_PUBLISHERS' `audience`).")] = "vera",
    registry: RegistryUrl = None,
) -> None:
    """Trusted publishing: trade this CI job's identity token for a short-lived registry token, printed alone on
    stdout (`export VERA_TOKEN=$(vera auth exchange)`), so that CI keeps no registry secret.

    The registry's administrator declares which CI jobs may (VERA_TRUSTED_PUBLISHERS: issuer, audience, claims such as
    the repository and branch) and what their tokens may do (user, owners, scopes, minutes); docs/security.md,
    "Trusted publishing"."""
    secret = id_token.strip() if id_token else _github_identity_token(audience)
    info, registry_token = call_registry(registry, "", lambda c: c.exchange_identity_token(secret))
    err_console.print(f"token {info.id} for {info.owner} {info.scopes}, limited to {', '.join(info.limited_to or [])}"
                      + (f", expires {info.expires_at:%H:%M:%S} UTC" if info.expires_at else ""))
    typer.echo(registry_token)


def publishers(registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """The registry's trusted publishers (VERA_TRUSTED_PUBLISHERS) you may see: which CI runs' identity tokens it
    trades for tokens of which user, for which owners, and when each last did (administrators see every one; an
    organisation's admins those that publish into it)."""
    found = call_registry(registry, token, lambda c: c.trusted_publishers())
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("no trusted publisher you may see: the registry's administrators see every one, an "
                      "organisation's admins those that publish into it (an administrator declares them in "
                      "VERA_TRUSTED_PUBLISHERS: docs/deployment.md, \"Publishing from CI\")")
        return
    table = Table("name", "issuer", "audience", "claims", "tokens of", "for", "minutes", "last exchange", "kept")
    for column in table.columns[1:4]:  # an issuer's URL and the claims are read whole, wrapped, never cut
        column.overflow = "fold"
    for p in found:
        claims = "; ".join(f"{k}={v if isinstance(v, str) else ' | '.join(v)}" for k, v in p.claims.items())
        table.add_row(p.name, p.issuer, p.audience, claims, f"{p.user} ({','.join(p.scopes)})", ", ".join(p.owners),
                      f"{p.minutes:g}", f"{p.last_exchange_at:%Y-%m-%d %H:%M}" if p.last_exchange_at else "never",
                      str(p.tokens_kept))
    console.print(table)


def _github_identity_token(audience: str) -> str:
    """The job's identity token for ``audience``, asked of the GitHub Actions runner; exits saying what to do
    anywhere else."""
    import httpx

    url, bearer = os.environ.get(GITHUB_REQUEST_URL), os.environ.get(GITHUB_REQUEST_TOKEN)
    if not url or not bearer:
        fail(InvalidInput(f"No identity token: give one with --id-token or VERA_ID_TOKEN (GitLab CI: an `id_tokens:` "
                          f"entry), or run on GitHub Actions with `permissions: id-token: write` (which sets "
                          f"{GITHUB_REQUEST_URL} and {GITHUB_REQUEST_TOKEN})."))
    try:
        answer = httpx.get(url, params={"audience": audience}, headers={"Authorization": f"bearer {bearer}"},
                           timeout=30)
        answer.raise_for_status()
        value = answer.json()["value"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        fail(InvalidInput(f"GitHub Actions did not give an identity token ({type(exc).__name__}: {str(exc)[:200]}); "
                          "does the job have `permissions: id-token: write`?"))
    if not isinstance(value, str) or not value:
        fail(InvalidInput("GitHub Actions answered an empty identity token."))
    return value


def list_tokens(user: Annotated[str | None, typer.Option(help="Admins: this user's tokens.")] = None,
                registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Your tokens, never their secrets (a registry admin, or anyone where the registry checks no tokens: every
    user's, or --user's)."""
    tokens = call_registry(registry, token, lambda c: c.tokens(user=user))
    if as_json:
        print_json(tokens)
        return
    console.print(token_table(tokens))


#: A token list's columns, by priority: at 80 columns scopes and dates were cut to "publish,re…" and "2026-12-…"
#: (an operator's walk, session 48); a column that does not fit now goes whole, named under the table.
TOKEN_COLUMNS = (Column("id", 0, "right"), Column("user"), Column("name", 2), Column("scopes"),
                 Column("limited to", 3), Column("expires", 4), Column("last used", 5), Column("state", 1))


def token_table(tokens: list[TokenInfo]) -> Table:
    """Tokens as `vera auth tokens` and `vera token list` show them (never their secrets)."""
    return fitted_table(TOKEN_COLUMNS, [
        [str(t.id), t.owner, t.name, ",".join(t.scopes), ",".join(t.limited_to or []) or "-",
         f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never",  # a CI token lives minutes
         f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never",
         "revoked" if t.revoked else "active"]
        for t in tokens])


def revoke(token_id: Annotated[int, typer.Argument(help="The token's id (`vera auth tokens`).")],
           yes: Annotated[bool, typer.Option("--yes", "-y", help=(
               "Do not ask first when tokens made from it go too."))] = False,
           registry: RegistryUrl = None, token: Token = None) -> None:
    """Revoke one of your tokens, and the tokens made from it (its dashboard sign-ins, those `vera auth
    create-token` made with it): asked first when there are such tokens (--yes: not asked)."""

    def going(client: RegistryClient) -> tuple[list[TokenInfo], int | None]:
        """The live tokens made from ``token_id`` (and from those) that go with it, and the one this command runs
        with; both asked before the revocation, which may sign this command out."""
        live = {t.id: t for t in client.tokens() if not t.revoked}
        ids, grown = {token_id}, True
        while grown:
            more = {t.id for t in live.values() if t.parent_id in ids} - ids
            ids, grown = ids | more, bool(more)
        return [live[i] for i in sorted(ids - {token_id})], client.whoami().token_id

    offspring, current = call_registry(registry, token, going)
    if offspring:  # revoking a token to rotate it took a CI token made from it, unasked (an operator's walk, 48)
        named = ", ".join(f"{t.id} ({t.name})" if t.name else str(t.id) for t in offspring[:10]) + (
            ", ..." if len(offspring) > 10 else "")
        confirm(yes, f"Revoke token {token_id} and the {counted(len(offspring), 'token')} made from it: {named}?",
                f"Token {token_id} was not revoked; pass --yes to revoke it and them without asking. A token that must "
                "outlive it is made by an administrator (`vera token create`), not from it")
    call_registry(registry, token, lambda c: c.revoke_token(token_id))
    gone = [t.id for t in offspring]
    console.print(f"revoked token {token_id}" + (f" and the tokens made from it: {', '.join(map(str, gone))}"
                                                 if gone else ""), soft_wrap=True)
    if current is not None and (current == token_id or current in gone):
        # a token made with `vera auth create-token` is its maker's child: rotating by making one, logging in with
        # it and revoking the old one signed its user out (a team admin's walk)
        err_console.print(styled("warning:", "yellow", f" token {current}, which this command ran with (the one "
                                 "`vera login` stored, or VERA_TOKEN), was among them: you are signed out. Ask an "
                                 "administrator for a new token (`vera auth create-token --user YOU`: not made from "
                                 "yours), then `vera login` with it (docs/api.md, Rotating a token)."), soft_wrap=True)


def _print_org(org: OrganizationInfo, as_json: bool, *, said: str = "") -> None:
    """The organisation as JSON, or as a table of members after ``said`` (what the command did)."""
    if as_json:
        print_json(org)
        return
    if said:
        console.print(said)
    console.print(f"{org.name}: {org.description or '(no description)'}; created by {org.created_by}")
    table = Table("member", "role", "since")
    for x in org.members:
        table.add_row(x.member + (" (no token yet)" if x.has_token is False else ""), x.role, f"{x.added_at:%Y-%m-%d}")
    console.print(table)
    if org.invitations:
        console.print(_invitations_table(org.invitations, "pending invitations", "member"))
    if org.protected_aliases:
        console.print(f"protected aliases (only admins move them): {', '.join(org.protected_aliases)}")


def _invitations_table(invitations: list[InvitationInfo], title: str, who: str) -> Table:
    """Pending invitations, one a row: the organisation (``who`` "organisation") or the member invited, the role,
    who invited and until when."""
    table = Table(who, "role", "invited by", "expires", title=title, title_justify="left")
    for i in invitations:
        table.add_row(i.organization if who == "organisation" else i.member, i.role, i.invited_by,
                      f"{i.expires_at:%Y-%m-%d %H:%M} UTC")
    return table


def org_create(name: Annotated[str, typer.Argument(help="The organisation's name (an owner namespace).")],
               description: Annotated[str, typer.Option(help="What it is.")] = "",
               registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Create an organisation; you become its first admin."""
    _print_org(call_registry(registry, token, lambda c: c.create_organization(name, description=description)),
               as_json)


def org_ls(registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """The organisations you belong to."""
    orgs = call_registry(registry, token, lambda c: c.organizations())
    if as_json:
        print_json(orgs)
        return
    table = Table("organisation", "members", "description")
    for o in orgs:
        table.add_row(o.name, str(len(o.members)), o.description)
    console.print(table)


def org_show(name: Annotated[str, typer.Argument(help="Organisation.")], registry: RegistryUrl = None,
             token: Token = None, as_json: JsonOutput = False) -> None:
    """An organisation and its members."""
    _print_org(call_registry(registry, token, lambda c: c.organization(name)), as_json)


def org_add(name: Annotated[str, typer.Argument(help="Organisation.")],
            member: Annotated[str, typer.Argument(help="User to add (or whose role to change).")],
            role: Role = "read", registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False
            ) -> None:
    """Add a member with a role, or change a member's role (organisation admins). A name no token was ever created
    for is added too (an operator may create its token later), with a warning to check its spelling. On a registry
    with invitations on (VERA_ORG_INVITATIONS), a user who is not a member is invited instead, and joins by
    accepting (`vera org accept ORG`); in local mode (no tokens, nobody else to accept) they are added at once."""
    org = call_registry(registry, token, lambda c: c.set_member(name, member, role))
    _print_org(org, as_json)
    invitation = org.invited(member)
    if invitation is not None and not as_json:
        console.print(f"invited {member} as {invitation.role} (pending until they accept: `vera org accept {name}`); "
                      f"the invitation expires {invitation.expires_at:%Y-%m-%d %H:%M} UTC")
    if any(x.member == member and x.has_token is False for x in org.members):
        err_console.print(styled("warning:", "yellow", f" no token was ever created for {member!r} on this registry: "
                                 f"check the spelling (`vera org remove {name} {member}` undoes this). They get the "
                                 f"role once an operator runs `vera token create --owner {member} --scope read"
                                 + (" --scope publish" if role != "read" else "") + "`, or, for a CI user, once its "
                                 "trusted publisher's first exchange mints one (docs/deployment.md, \"Publishing from "
                                 "CI\")."))


def org_invitations(registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Your pending invitations to organisations: accept one with `vera org accept ORG`, decline with `vera org
    decline ORG`."""
    invitations = call_registry(registry, token, lambda c: c.invitations())
    if as_json:
        print_json(invitations)
    elif not invitations:
        console.print("no invitations to organisations wait for your answer")
    else:
        console.print(_invitations_table(invitations, "your invitations (`vera org accept ORG`, `vera org decline "
                                                       "ORG`)", "organisation"))


def org_accept(name: Annotated[str, typer.Argument(help="The organisation that invited you.")],
               registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Accept an invitation: you become a member of the organisation, with the role you were invited to."""
    def accept(c: RegistryClient) -> tuple[OrganizationInfo, str]:
        return c.accept_invitation(name), c.whoami().user

    org, user = call_registry(registry, token, accept)
    _print_org(org, as_json, said=f"you joined {name} as {org.role_of(user) or 'a member'}")


def org_decline(name: Annotated[str, typer.Argument(help="The organisation that invited you.")],
                registry: RegistryUrl = None, token: Token = None) -> None:
    """Decline an invitation to an organisation (its admins may invite you again)."""
    call_registry(registry, token, lambda c: c.decline_invitation(name))
    console.print(f"declined the invitation to {name}")


def org_uninvite(name: Annotated[str, typer.Argument(help="Organisation.")],
                 member: Annotated[str, typer.Argument(help="The user whose pending invitation to cancel.")],
                 registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Cancel a pending invitation (organisation admins)."""
    _print_org(call_registry(registry, token, lambda c: c.cancel_invitation(name, member)), as_json,
               said=f"cancelled the invitation of {member} to {name}")


def org_protect(name: Annotated[str, typer.Argument(help="Organisation.")],
                alias: Annotated[str, typer.Argument(help="The alias name, e.g. prod.")],
                registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Protect an alias in every adapter of the organisation (its admins): only admins then point it at a version,
    remove it, or delete the version it names; writers still publish and move other aliases."""
    _print_org(call_registry(registry, token, lambda c: c.protect_alias(name, alias)), as_json,
               said=f"{alias} is protected in {name}: only its admins move it")


def org_unprotect(name: Annotated[str, typer.Argument(help="Organisation.")],
                  alias: Annotated[str, typer.Argument(help="A protected alias name.")],
                  registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Let the organisation's writers move an alias again (its admins)."""
    _print_org(call_registry(registry, token, lambda c: c.unprotect_alias(name, alias)), as_json,
               said=f"{alias} is no longer protected in {name}")


def org_remove(name: Annotated[str, typer.Argument(help="Organisation.")],
               member: Annotated[str, typer.Argument(help="User to remove.")],
               registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Remove a member (organisation admins; an organisation keeps at least one admin)."""
    _print_org(call_registry(registry, token, lambda c: c.remove_member(name, member)), as_json)


def org_delete(name: Annotated[str, typer.Argument(help="Organisation.")],
               yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
               registry: RegistryUrl = None, token: Token = None) -> None:
    """Delete an organisation (its admins; the registry's admins). Asks first unless --yes. Refused while it owns
    adapters, queued or running jobs or webhooks (the refusal names them and how to clear them); its members lose
    their roles, the quota set for it goes, and its name is retired (no user or new organisation takes it; a
    registry admin may revive it)."""
    org = call_registry(registry, token, lambda c: c.organization(name))  # one that is not there: said before asking
    confirm_deletion(yes, f"Delete organisation {name} ({counted(len(org.members), 'member')})? Its members lose "
                          "their roles in it, and its name is retired.", f"Organisation {name}")
    call_registry(registry, token, lambda c: c.delete_organization(name))
    console.print(f"deleted organisation {name} ({counted(len(org.members), 'member')} removed)")


def org_rename(name: Annotated[str, typer.Argument(metavar="OLD", help="The organisation's name now.")],
               new_name: Annotated[str, typer.Argument(metavar="NEW", help="Its name from now on (an owner name "
                                                                         "nobody has).")],
               registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False) -> None:
    """Rename an organisation (its admins; the registry's admins). Its members, adapters (OLD/NAME becomes
    NEW/NAME, with every version, alias and tag), ended jobs, webhooks, quota and the tokens limited to it follow;
    OLD/NAME then answers "moved to NEW/NAME" (`vera fetch` follows it, with a warning), publishes to it are
    refused, and OLD is retired (no user or new organisation takes it). Refused while it has queued or running
    jobs."""
    check_name(new_name, "New organisation name")  # a/b, 'Bad Name!': said here, before any request
    org = call_registry(registry, token, lambda c: c.rename_organization(name, new_name))
    _print_org(org, as_json, said=f"renamed organisation {name} to {org.name}: its adapters are {org.name}/NAME now")


def visibility(adapter: Annotated[str, typer.Argument(help="owner/name")],
               choice: Annotated[str, typer.Argument(metavar="public|private", help="public: whoever may read the "
                                                     "registry; private: the owner's members and admins.")],
               registry: RegistryUrl = None, token: Token = None) -> None:
    """Make an adapter public or private (audited); every version follows."""
    if choice not in ("public", "private"):
        fail(InvalidInput(f"Choose public or private, got {choice!r}."))
    info = call_registry(registry, token, lambda c: c.set_visibility(adapter, choice))
    console.print(f"{info.owner}/{info.name} is {info.visibility}")
