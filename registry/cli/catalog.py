"""Commands about what the registry holds, over HTTP: show a version, tag it, describe it, an adapter's model card,
yank, delete, and lineage. Metadata changes need the publish scope for the owner; the server audits each one."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from registry.cli.common import (
    ExitCode,
    RegistryUrl,
    Token,
    VersionRef,
    call_registry,
    confirm_deletion,
    console,
    err_console,
    fail,
    key_values,
    shown,
    styled,
)
from registry.cli.output import JsonOutput, print_json
from registry.client import RegistryClient
from registry.credentials import stored_token
from registry.domain.errors import InvalidInput, NotFound, RegistryError, Unauthorized, protected_alias
from registry.domain.metric_names import flat_metrics, metric_text
from registry.domain.schemas import (
    MAX_RETENTION_DAYS,
    AdapterInfo,
    LineageGraph,
    Ref,
    RetentionInfo,
    RetentionPreview,
    VersionInfo,
    check_name,
)
from registry.domain.words import RULES_OFF, ci_run, counted, kept_by

TextFile = Annotated[Path | None, typer.Option("--file", "-f", help="Read the text from this file ('-': stdin).")]


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's content (universal newlines), or stdin for '-'."""
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{what} {path}: not a readable UTF-8 text file ({exc}).") from exc


def _text_of(text: str | None, file: Path | None, what: str) -> str:
    """The text given as an argument, or read from --file; exactly one of them."""
    if text is not None and file is None:
        return text
    if file is not None and text is None:
        return _read_text(file, "--file")
    fail(InvalidInput(f"Give the {what} either as an argument or with --file PATH (--file - reads stdin), not "
                      "both and not neither."))


def _lineage_text(lineage: dict[str, Any]) -> str:
    parts = [*_linked_text(lineage, "copied_from", "copied from"), *_linked_text(lineage, "parent", "fine-tuned from")]
    return "; ".join([*parts, *_made_by(lineage)]) or "-"


def _made_by(lineage: dict[str, Any]) -> list[str]:
    """What made the version, besides the versions it comes from: its job, data, code, Hub repo or CI run."""
    parts = []
    if "job_id" in lineage:
        parts.append(f"job {lineage['job_id']}")
    if "dataset_sha256" in lineage:
        size = f", {lineage['dataset_bytes']:,} bytes" if lineage.get("dataset_bytes") is not None else ""
        parts.append(f"dataset sha256 {lineage['dataset_sha256'][:16]}…{size}")
    if "code_revision" in lineage:
        parts.append(f"code {lineage['code_revision']}")
    if "hub_repo" in lineage:
        parts.append(f"pulled from {lineage['hub_repo']}@{str(lineage.get('hub_commit', ''))[:12]}")
    if isinstance(lineage.get("published_via"), dict):
        parts.append(f"published by CI: {ci_run(lineage['published_via'])}")
    return parts


def _linked_text(lineage: dict[str, Any], key: str, said: str) -> list[str]:
    """The version the lineage names under ``key`` (the parent, the one a copy copies), or what became of it."""
    if key in lineage:
        return [f"{said} {lineage[key]}"]
    if f"{key}_deleted" in lineage:
        return [f"{said} {lineage[f'{key}_deleted']} (since deleted)"]
    return [f"{said} a private version you may not read"] if lineage.get(f"{key}_private") else []


def _show_table(v: VersionInfo, adapter: AdapterInfo) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    verified = v.verification_status + (f" at {v.verified_at:%Y-%m-%d %H:%M}" if v.verified_at else "")
    rows = [
        ("aliases", ", ".join(v.aliases) or "-"),
        ("state", ("YANKED (hidden from listings and latest; fetchable by number)"
                   + (f": {v.yank_reason}" if v.yank_reason else "")) if v.yanked else "published"),
        ("description", v.description or "-"),
        ("adapter", (adapter.description or "-") + f" ({counted(adapter.versions, 'version')}"
                    + (f", model card {len(adapter.card.splitlines())} lines: `vera card {v.owner}/{v.name}`"
                       if adapter.card else ", no model card") + ")"),
        *([("retention", kept_by(adapter.retention))] if adapter.retention is not None else []),
        ("base model", v.base_model + (f" @ {v.base_revision}" if v.base_revision else "")),
        ("rank, seed", f"r={v.r}, seed={v.seed}, generator {v.generator}"),
        ("projection", f"fingerprint {v.projection_fingerprint} "
                       f"({'seed-reproducible' if v.seed_reproducible else 'stored'})"),
        ("size", f"{v.adapter_parameters:,} adapter parameters, {v.trainable_parameters:,} trainable"),
        ("stored", f"{v.stored_bytes:,} bytes, vectors sha256 {v.vectors_sha256}"),
        ("targets", v.target_modules if isinstance(v.target_modules, str) else ", ".join(v.target_modules or [])
         or "-"),
        ("verified", verified),
        ("tags", ", ".join(v.tags) or "-"),
        ("properties", ", ".join(f"{k}={value}" for k, value in v.properties.items()) or "-"),
        ("published", f"by {v.published_by} at {v.created_at:%Y-%m-%d %H:%M:%S %Z}"),
        ("lineage", _lineage_text(v.lineage)),
    ]
    rows += [(f"metric {key}", metric_text(value)) for key, value in flat_metrics(v.metrics)]
    # what it was trained with, a row each as metrics are (one line of them all wrapped mid-value: a walk's finding)
    rows += [(f"param {key}", value) for key, value in v.params.items()] or [("params", "- (none recorded)")]
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def show(ref: VersionRef, as_json: JsonOutput = False, registry: RegistryUrl = None, token: Token = None) -> None:
    """Everything about a version: identity, aliases, projection, sizes, verification, tags, properties,
    description, what it was trained with, metrics and lineage (--json: the version as the API gives it)."""
    info = call_registry(registry, token, lambda c: c.get(ref))
    if as_json:
        print_json(info)
        return
    adapter = call_registry(registry, token, lambda c: c.adapter(f"{info.owner}/{info.name}"))
    console.print(Text(info.ref, style="bold"))
    console.print(_show_table(info, adapter))


def resolve(
    refs: Annotated[list[str], typer.Argument(metavar="REF", show_default=False, help=(
        "owner/name:VERSION, owner/name@ALIAS or owner/name (its latest), as many as you like."))],
    as_json: JsonOutput = False, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Print the version each reference names now, one "REF<TAB>owner/name:N" line each (owner/name@prod ->
    owner/name:3), asked in one request per 500: pin a deployment to exact versions. An adapter's old name (`vera
    mv`) gives its version under the name it has now, with a warning. Exit 3, naming them, when any names no version
    you may read ('-' in its line); 1 when the registry could not answer."""
    for i, ref in enumerate(refs, 1):  # all checked before any is sent (the server counts within each 500)
        try:
            Ref.parse(ref)
        except InvalidInput as exc:
            fail(InvalidInput(f"REF {i} of {len(refs)}: {exc}"))
    found, reasons = call_registry(registry, token, lambda c: _looked_up(c, refs))
    if as_json:  # the API's shape (POST /api/v1/adapters/lookup), moves followed: one result per reference given
        versions = [found[ref] for ref in refs]
        print_json({"results": [{"requested": ref, "version": None if v is None else v.model_dump(mode="json")}
                                for ref, v in zip(refs, versions, strict=True)]})
    else:
        for ref in refs:  # a line per reference given, in their order (one given twice: twice)
            version = found[ref]
            typer.echo(f"{ref}\t{version.ref if version is not None else '-'}")
    missing = [ref for ref, version in found.items() if version is None]
    if missing:
        listed = f"{', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}"
        why = " ".join(f"{reason}{'' if reason.endswith('.') else '.'}" for reason in reasons)
        more = (" `vera ls OWNER/NAME` lists an adapter's versions; `vera show OWNER/NAME` its aliases."
                if len(missing) > len(reasons) else "")
        fail(NotFound(f"No version you may read for {listed} ({counted(len(missing), 'distinct reference')} of "
                      f"{len(found)}). {why}{more}".rstrip()), ExitCode.CHECK_FAILED)


#: How many of the references `vera resolve` found nothing for it asks about one by one, for the reason.
EXPLAINED_MISSES = 3


def _looked_up(client: RegistryClient, refs: list[str]) -> tuple[dict[str, VersionInfo | None], list[str]]:
    """What each of ``refs`` names (one lookup for all), and why the first EXPLAINED_MISSES that name nothing do not
    (each asked for alone: no such adapter, no such alias and the ones it has, the versions it holds), which the
    lookup's answer does not say."""
    found = client.lookup(refs)
    reasons = []
    for ref in [ref for ref, version in found.items() if version is None][:EXPLAINED_MISSES]:
        try:
            client.get(ref)
        except NotFound as exc:
            reasons.append(str(exc))
        else:  # published between the two requests
            reasons.append(f"{ref} names a version now (published since the lookup): run `vera resolve` again")
    return found, reasons


def tag(
    ref: VersionRef,
    tags: Annotated[list[str], typer.Argument(help="Tags to add (or, with --remove, to remove).")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove these tags instead.")] = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Add tags to a version (or remove them); its bytes never change."""
    info = call_registry(registry, token, lambda c: c.update_version(
        ref, add_tags=None if remove else tags, remove_tags=tags if remove else None))
    console.print(f"{info.ref} tags: {', '.join(info.tags) or '(none)'}")


def property_(
    ref: VersionRef,
    pairs: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE properties to set (a key the version has "
                                                      "takes the new value; each key once).",
                                                      show_default=False)] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="A key to remove; repeat for several.")
                      ] = None,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Set key=value properties of a version (validation=passed, ticket=ML-42), or remove some; its bytes never
    change. Without either, print them. Filter on them with `vera ls --filter "properties.KEY = 'VALUE'"`."""
    setting = key_values(pairs or [])
    if setting or remove:
        info = call_registry(registry, token, lambda c: c.update_version(ref, set_properties=setting,
                                                                          remove_properties=remove))
    else:
        info = call_registry(registry, token, lambda c: c.get(ref))
    shown = ", ".join(f"{k}={value}" for k, value in info.properties.items())
    console.print(f"{info.ref} properties: {shown or '(none)'}")


def describe(
    ref: Annotated[str, typer.Argument(help="owner/name (the adapter's description) or owner/name:VERSION / "
                                       "owner/name@ALIAS (that version's).")],
    text: Annotated[str | None, typer.Argument(help="The new description (or use --file).")] = None,
    file: TextFile = None, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Set the description of an adapter (owner/name) or of one version (owner/name:N, owner/name@ALIAS)."""
    parsed = Ref.parse(ref)
    description = _text_of(text, file, "description")
    if parsed.version is None and parsed.alias is None:
        adapter = call_registry(registry, token, lambda c: c.update_adapter(ref, description=description))
        console.print(f"{adapter.owner}/{adapter.name}: description set ({len(description):,} characters)")
    else:
        info = call_registry(registry, token, lambda c: c.update_version(ref, description=description))
        console.print(f"{info.ref}: description set ({len(description):,} characters)")


def card(
    adapter: Annotated[str, typer.Argument(help="owner/name")],
    file: TextFile = None, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Print an adapter's model card (Markdown), or set it from --file (at most 64 KiB; an empty file clears it).
    A Hub push puts it at the top of the repo's README.md."""
    if file is None:
        info = call_registry(registry, token, lambda c: c.adapter(adapter))
        if info.card:  # as written into a file or a pipe (`> README.md`, to edit and set again); on a terminal,
            # what does not print as escapes (a card's bidirectional override and C1 controls ran: an outsider's
            # finding, session 54)
            card_text = shown(info.card) if sys.stdout.isatty() else info.card
            typer.echo(card_text, nl=not card_text.endswith("\n"))
        else:
            console.print(f"{adapter} has no model card; set one with `vera card {adapter} --file README.md`.")
        return
    text = _read_text(file, "--file")
    info = call_registry(registry, token, lambda c: c.update_adapter(adapter, card=text))
    console.print(f"{info.owner}/{info.name}: model card " + (f"set ({len(text.encode()):,} bytes)" if text
                                                             else "cleared"))


def retention(
    adapter: Annotated[str, typer.Argument(help="owner/name")],
    keep_last: Annotated[int | None, typer.Option(help="Keep the newest N versions (by number, yanked ones "
                                                       "included).")] = None,
    keep_days: Annotated[float | None, typer.Option(help="Keep the versions published in the last D days.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the adapter's rule: no version is deleted by it.")
                     ] = False,
    dry_run: Annotated[bool, typer.Option(help="List what the rule (the one given, else the adapter's own) would "
                                               "delete now; set nothing.")] = False,
    registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False,
) -> None:
    """Print an adapter's own retention rule, or set it (--keep-last N, --keep-days D: a version either keeps stays)
    or remove it (--clear). About once an hour the registry deletes the versions the rule does not keep, never the
    newest nor one an alias (latest included) points at; each deletion is audited, as a `vera delete` is."""
    if clear and (keep_last is not None or keep_days is not None):
        fail(InvalidInput("--clear removes the rule; leave out --keep-last and --keep-days, or --clear."))
    if keep_days is not None and not (math.isfinite(keep_days) and 1 <= keep_days <= MAX_RETENTION_DAYS):
        fail(InvalidInput(f"--keep-days takes a number of days from 1 to {MAX_RETENTION_DAYS:,}, got {keep_days:g}."))
    if dry_run:
        if clear:
            fail(InvalidInput("--dry-run lists what a rule would delete; --clear deletes nothing. Leave one out."))
        preview = call_registry(registry, token, lambda c: c.retention_preview(adapter, keep_last=keep_last,
                                                                               keep_days=keep_days))
        _print_preview(preview, as_json)
        return
    before = None
    if clear or keep_last is not None or keep_days is not None:
        before, info = call_registry(registry, token, lambda c: (c.adapter(adapter).retention, c.set_retention(
            adapter, keep_last=keep_last, keep_days=keep_days)))
    else:
        info = call_registry(registry, token, lambda c: c.adapter(adapter))
    if not clear and (dropped := _dropped(before, {"keep_last": keep_last, "keep_days": keep_days})):
        err_console.print(styled("note:", "yellow", f" the rule no longer has {' or '.join(dropped)} (a rule is set "
                                 "whole: give every part it should have)."), soft_wrap=True)
    if as_json:
        print_json({"adapter": f"{info.owner}/{info.name}",
                    "retention": None if info.retention is None else info.retention.model_dump(exclude_none=True)})
        return
    console.print(f"{info.owner}/{info.name}: {kept_by(info.retention)}", soft_wrap=True)
    if info.retention is not None and (keep_last is not None or keep_days is not None):  # just set: what it will do
        preview = call_registry(registry, token, lambda c: c.retention_preview(adapter))
        going = preview.would_delete
        when = "within the hour" if preview.applied is not False else "once the registry applies rules again"
        console.print(f"it will delete {counted(preview.total, 'version')} {when} ({', '.join(going[:5])}"
                      f"{', ...' if preview.total > 5 else ''}); `vera retention {info.owner}/{info.name} --dry-run` "
                      "lists them" if going else "it deletes no version now", soft_wrap=True)
        _note_unapplied(preview)


def _note_unapplied(preview: RetentionPreview) -> None:
    """A note when the registry applies no rule now (VERA_RETENTION_RULES=false): "deleted within the hour" is then
    untrue."""
    if preview.applied is False:
        err_console.print(styled("note:", "yellow", f" {RULES_OFF}"), soft_wrap=True)


def _print_preview(preview: RetentionPreview, as_json: bool) -> None:
    """What a rule would delete now, as `vera retention --dry-run` says it."""
    if as_json:
        print_json(preview)
        return
    if preview.rule is None:
        console.print(f"{preview.adapter} has no retention rule: it deletes nothing (give --keep-last or --keep-days "
                      "to preview one)")
        return
    for ref in preview.would_delete:
        console.print(f"would delete {ref}")
    for ref, aliases in preview.kept_for_aliases.items():
        console.print(f"kept {ref}: alias {', '.join(aliases)} points at it")
    console.print(f"{preview.adapter}: the rule would delete {counted(preview.total, 'version')} now "
                  "(dry run: nothing was set or deleted)")
    _note_unapplied(preview)


def _dropped(before: RetentionInfo | None, given: dict[str, float | None]) -> list[str]:
    """The options of the rule ``before`` that a new rule of the parts ``given`` leaves out: a rule is set whole,
    and a part left out keeps fewer versions (a review, session 55)."""
    had = before.model_dump(exclude_none=True) if before is not None else {}
    return [f"--{part.replace('_', '-')} {value:g}" for part, value in had.items() if given.get(part) is None]


def yank(
    ref: VersionRef,
    undo: Annotated[bool, typer.Option("--undo", help="Un-yank: list it again (and let latest move back).")] = False,
    reason: Annotated[str | None, typer.Option(help=(
        "Why, one line (at most 500 characters): `vera fetch` and `vera show` say it to whoever uses the version "
        "still, as pip says a yanked release's reason. Yanking again replaces it; --undo clears it."))] = None,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Yank a version: hidden from listings and from latest, still fetchable by number (--undo reverses it)."""
    if undo and reason is not None:
        fail(InvalidInput("--reason goes with a yank; --undo clears the version's reason. Leave --reason out."))
    info = call_registry(registry, token, lambda c: c.yank(ref, yanked=not undo, reason=reason))
    console.print(f"{info.ref} {'yanked' if info.yanked else 'no longer yanked'}"
                  + (f": {info.yank_reason}" if info.yank_reason else ""), soft_wrap=True)
    if reason and reason.strip() and info.yank_reason is None:  # a registry before 2026-12-06 ignores the field
        err_console.print(styled("warning:", "yellow", f" the registry did not record the --reason on {info.ref} (it "
                                 "is older than yank reasons): the version is yanked without one."), soft_wrap=True)
    if info.yanked and (held := [a for a in info.aliases if a != "latest"]):
        adapter = f"{info.owner}/{info.name}"
        console.print(styled(f"{adapter}@{held[0]}", "yellow", f"{' and ' + ', '.join(held[1:]) if held[1:] else ''}"
                             f" still point{'s' if len(held) == 1 else ''} at it: a yank moves only latest. Move "
                             f"{'it' if len(held) == 1 else 'them'} with `vera alias {adapter}:N {held[0]}`."),
                      soft_wrap=True)


def delete(
    ref: Annotated[str, typer.Argument(help="owner/name:VERSION or owner/name@ALIAS (a version, named explicitly); "
                                            "owner/name with --all.")],
    every: Annotated[bool, typer.Option("--all", help="Delete every version of owner/name, and the adapter.")
                     ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Delete one version for good (its aliases go with it; latest moves back), or with --all a whole adapter. Asks
    first unless --yes. Version numbers are never given again."""
    parsed = Ref.parse(ref)
    if every:
        if parsed.version is not None or parsed.alias is not None:
            fail(InvalidInput(f"--all deletes a whole adapter: name it as owner/name, not {ref!r}."))
        adapter = f"{parsed.owner}/{parsed.name}"
        _refuse_protected(registry, token, parsed.owner, list(call_registry(
            registry, token, lambda c: c.adapter(adapter)).aliases), "delete the adapter, and with it the version it "
                          "names", adapter)
        count = call_registry(registry, token, lambda c: c.list_versions(
            owner=parsed.owner, name=parsed.name, include_yanked=True, limit=1, with_total=True).total)
        confirm_deletion(yes, f"Delete {adapter} and all its {count} versions?", adapter)
        call_registry(registry, token, lambda c: c.delete_adapter(adapter))
        console.print(f"deleted {adapter} ({counted(count or 0, 'version')})")
        return
    if parsed.version is None and parsed.alias is None:
        fail(InvalidInput(f"{ref!r} names no version; say which to delete: {ref}:VERSION or {ref}@ALIAS (or every "
                          f"version: vera delete {ref} --all)."))
    info = call_registry(registry, token, lambda c: c.get(ref))
    _refuse_protected(registry, token, info.owner, info.aliases, f"delete the version it names ({info.ref})",
                      info.ref)
    aliases = f" (aliases: {', '.join(info.aliases)})" if info.aliases else ""
    confirm_deletion(yes, f"Delete {info.ref}{aliases}?", info.ref)
    call_registry(registry, token, lambda c: c.delete(info.ref))
    console.print(f"deleted {info.ref}")


def _refuse_protected(registry: str | None, token: str | None, owner: str, aliases: list[str], doing: str,
                      what: str) -> None:
    """Exit before asking to delete ``what`` when one of its ``aliases`` is protected from the caller: it was asked,
    confirmed, then refused (an operator's walk, session 48); the registry's own words (refuse_protected)."""
    if held := call_registry(registry, token, lambda c: c.protected_from_me(owner, aliases)):
        fail(InvalidInput(f"{protected_alias(owner, held, doing)} {what} was not deleted."))


def move(
    adapter: Annotated[str, typer.Argument(help="owner/name: the adapter to move.")],
    to: Annotated[str, typer.Argument(help="owner/name: its new name (another owner transfers it: you need to write "
                                           "there too).")],
    registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False,
) -> None:
    """Rename an adapter or transfer it to another owner, with every version, alias, tag and its card. You need to
    write under both owners; moving it out of an organisation needs the organisation's admin role, and the new
    owner's storage quota must hold it. Its old name then answers "moved to" its new one (HuggingFace tools
    follow it), and publishing to the old name is refused. After a rename, jobs that were to publish to it publish
    to the new name; a transfer to another owner cancels them (their logs say why). Version numbers go on."""
    source, destination = Ref.parse_adapter(adapter), Ref.parse_adapter(to)
    info = call_registry(registry, token, lambda c: c.move(str(source), str(destination)))
    if as_json:
        print_json(info)
        return
    console.print(f"moved {source} to {info.owner}/{info.name} ({counted(info.versions, 'version')}"
                  + (f"; aliases {', '.join(sorted(info.aliases))}" if info.aliases else "") + ")")
    if info.jobs_retargeted:
        console.print(f"{_jobs(info.jobs_retargeted)} "
                      f"{'publishes' if len(info.jobs_retargeted) == 1 else 'publish'} to {info.owner}/{info.name} now")
    if info.jobs_cancelled:
        console.print(f"cancelled {_jobs(info.jobs_cancelled)}: their rights were {source.owner}'s; submit them "
                      f"again under {info.owner} (`vera job show N` shows what they were)")


def copy(
    source: Annotated[str, typer.Argument(help="The version to copy: owner/name:N, owner/name@ALIAS (owner/name: "
                                               "its latest).")],
    to: Annotated[str, typer.Argument(help="owner/name: the adapter the copy becomes the next version of (made when "
                                           "it does not exist; you need to publish there).")],
    description: Annotated[str | None, typer.Option(help="The copy's description (default: the source's).")] = None,
    private: Annotated[bool | None, typer.Option(
        "--private/--public", help="Who may read the adapter when the copy makes it (default: the registry's).",
        show_default=False)] = None,
    alias: Annotated[str | None, typer.Option(help="Then point this alias of the destination at the copy (a second "
                                                   "request, checked before the copy: one refused after it leaves the "
                                                   "copy there, and says so).")] = None,
    to_registry: Annotated[str | None, typer.Option(
        help="Copy into this other registry (promotion from staging to production): the weights are downloaded from "
             "--registry and published there.", show_default=False)] = None,
    to_token: Annotated[str | None, typer.Option(envvar="VERA_TO_TOKEN", show_default=False,
                                                 help="The token for --to-registry (default: the one `vera login` "
                                                      "stored for it).")] = None,
    registry: RegistryUrl = None, token: Token = None, as_json: JsonOutput = False,
) -> None:
    """Copy a version into another adapter (or its own) as the next version there: promote a staging adapter's
    version into production, as MLflow's copy_model_version does. The copy has the same bytes (nothing is stored
    again; the owner's quota counts them), metrics, evaluations, parameters, properties, tags, verification and
    lineage, and says which version it copies. A yanked version is refused. With --to-registry the copy goes to
    another registry: published there with its metrics, tags, properties, parameters, code revision and dataset
    hash, and the URL of what it copies."""
    Ref.parse(source)
    destination = Ref.parse_adapter(to)
    if alias is not None:
        check_name(alias, "alias")  # before anything is asked, so that a mistyped alias copies nothing
    visibility = None if private is None else "private" if private else "public"
    if to_registry is None:
        if alias is not None:
            _refuse_alias(call_registry(registry, token, lambda c: c.alias_problem(str(destination), alias)))
        info = call_registry(registry, token, lambda c: c.copy_version(
            source, str(destination), description=description, visibility=visibility))
        if alias is not None:
            info = _aliased(info, source, alias, lambda: call_registry(registry, token,
                                                                       lambda c: c.set_alias(info.ref, alias)))
    else:  # never this registry's token (--token, VERA_TOKEN) sent to the other (a re-check's finding, session 46)
        with RegistryClient(to_registry, to_token if to_token is not None else stored_token(to_registry) or "") \
                as there:
            if _anonymous_at(there):  # before anything is downloaded
                fail(InvalidInput(f"No token that {there.url} accepts: give one of that registry's with --to-token (or "
                                  f"VERA_TO_TOKEN), or store it with `vera login {there.url}`. Nothing was copied."))
            if alias is not None:
                _refuse_alias(there.alias_problem(str(destination), alias))
            info = call_registry(registry, token, lambda c: c.copy_to(
                source, there, str(destination), description=description, visibility=visibility))
            if alias is not None:
                info = _aliased(info, source, alias, lambda: there.set_alias(info.ref, alias))
    if as_json:
        print_json(info)
        return
    console.print(_copied_line(info, source)
                  + (f" ({info.owner}/{info.name}@{alias} -> {info.version})" if alias is not None else ""))


def _aliased(copied: VersionInfo, source: str, alias: str, set_alias: Callable[[], VersionInfo]) -> VersionInfo:
    """The copy once ``set_alias()`` pointed ``alias`` at it; refused (past the checks before the copy: a role
    changed meanwhile), the copy is said to be there, without the alias, with what to do about it: the refusal alone
    read as if nothing had been copied (an operator's walk, session 48)."""
    try:
        return set_alias()
    except RegistryError as exc:
        console.print(_copied_line(copied, source))
        fail(RegistryError(f"{exc} The copy {copied.ref} stays, without @{alias}: point the alias at it later (`vera "
                           f"alias {copied.ref} {alias}`) or delete it (`vera delete {copied.ref}`)."))


def _copied_line(info: VersionInfo, source: str) -> str:
    return f"copied {info.lineage.get('copied_from', source)} to {info.ref}"


def _refuse_alias(problem: str | None) -> None:
    """Exit before a copy whose --alias the registry would refuse (the copy would be left without it)."""
    if problem is not None:
        fail(InvalidInput(f"{problem} Nothing was copied."))


def _anonymous_at(client: RegistryClient) -> bool:
    """Whether ``client`` reaches its registry without a user (no token, where the registry answers one)."""
    try:
        return client.whoami().anonymous
    except Unauthorized:
        return True


def _jobs(ids: list[int]) -> str:
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(map(str, ids))


def _tree(graph: LineageGraph) -> Tree:
    """The graph as a tree from its oldest ancestor (a version has one parent, so it is one)."""
    by_ref = {n.ref: n for n in graph.nodes}
    children: dict[str, list[str]] = {}
    for edge in graph.edges:
        children.setdefault(edge.parent, []).append(edge.child)

    def label(ref: str) -> Text:
        node = by_ref[ref]
        return Text.assemble(f"{ref}{' (yanked)' if node.yanked else ''}",
                             (" <- this version", "bold") if node.depth == 0 else "")

    root_ref = min(graph.nodes, key=lambda n: n.depth).ref
    tree = Tree(label(root_ref))
    todo = [(tree, root_ref)]
    while todo:
        branch, ref = todo.pop()
        for child in children.get(ref, []):
            todo.append((branch.add(label(child)), child))
    return tree


def lineage(
    ref: VersionRef,
    depth: Annotated[int, typer.Option(min=1, max=20, help="Generations to follow each way.")] = 20,
    as_json: JsonOutput = False, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """What a version was fine-tuned from and what was fine-tuned from it, as a tree; then the version it copies and
    its copies (`vera cp`) that you may read."""
    graph = call_registry(registry, token, lambda c: c.lineage(ref, depth=depth))
    if as_json:
        print_json(graph)
        return
    console.print(_tree(graph))
    itself = next(node for node in graph.nodes if node.depth == 0)
    if made := _made_by(itself.lineage):  # the job that trained it was said by `vera show` only (session 51's walk)
        console.print(f"{graph.ref} was made by: {'; '.join(made)}", soft_wrap=True)
    if graph.truncated:
        console.print(f"(more beyond {graph.max_depth} generations or {graph.max_nodes} versions)")
    if graph.copied_from:
        console.print(f"{graph.ref} is a copy of {graph.copied_from}")
    if graph.copies:
        console.print(f"copied to {', '.join(graph.copies)}")
