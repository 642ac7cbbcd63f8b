"""HuggingFace Hub sync through the registry (the server talks to the Hub): hub push, pull and status."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from registry.cli.common import (
    HubTokenOpt,
    RegistryUrl,
    Token,
    VersionRef,
    as_lora,
    call_registry,
    console,
    err_console,
    styled,
)
from registry.cli.output import JsonOutput, print_json


def hub_push(
    ref: VersionRef,
    repo_id: Annotated[str, typer.Argument(help="Hub repo, namespace/name (created if missing).")],
    revision: Annotated[str, typer.Option(help="Branch to commit to.")] = "main",
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    seed_only: Annotated[bool, typer.Option(help="Leave A and B out (regenerated from the seed; PEFT can do that "
                                            "only for its own generator).")] = False,
    as_: Annotated[str, typer.Option("--as", help="vera, or lora: the equivalent LoRA, for LoRA-only servers.")
                   ] = "vera",
    hub_token: HubTokenOpt = None, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Push a version to a Hub repo in PEFT's format, with a model card; an unchanged re-push makes no commit."""
    lora = as_lora(as_)
    result = call_registry(registry, token, lambda c: c.hub_push(ref, repo_id, revision=revision, private=private,
                                                                  with_projection=not seed_only, as_lora=lora,
                                                                  hub_token=hub_token))
    what = "pushed" if result.changed else "unchanged, no new commit:"
    console.print(f"{what} {result.version.ref} -> {result.sync.repo_id}@{result.sync.commit_sha[:12]} "
                  f"({result.sync.commit_url})")
    for note in result.notes:
        err_console.print(styled("warning:", "bold yellow", f" {note}"))


def hub_pull(
    repo_id: Annotated[str, typer.Argument(help="Hub repo holding a PEFT VeRA adapter.")],
    as_: Annotated[str, typer.Option("--as", help="owner/name to record it as.")],
    revision: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
    base_model: Annotated[str | None, typer.Option(help="Base model; default: the adapter config's.")] = None,
    base_revision: Annotated[str | None, typer.Option(help="Base model revision.")] = None,
    hub_token: HubTokenOpt = None, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Record a Hub repo's VeRA adapter as the next version of owner/name; an unchanged revision makes none."""
    result = call_registry(registry, token, lambda c: c.hub_pull(repo_id, as_, revision=revision,
                                                                  base_model=base_model, base_revision=base_revision,
                                                                  hub_token=hub_token))
    what = "pulled as" if result.changed else "unchanged, already"
    console.print(f"{what} {result.version.ref} from {repo_id}@{result.sync.commit_sha[:12]}")
    for note in result.notes:
        err_console.print(styled("warning:", "bold yellow", f" {note}"))


def hub_status(ref: VersionRef, as_json: JsonOutput = False, registry: RegistryUrl = None,
               token: Token = None) -> None:
    """Where a version was pushed to or pulled from, at which commit."""
    syncs = call_registry(registry, token, lambda c: c.hub_status(ref))
    if as_json:
        print_json(syncs)
        return
    if not syncs:
        console.print(f"{ref}: never pushed to or pulled from the Hub")
        return
    table = Table("direction", "repo", "revision", "commit", "format", "by", "at")
    for s in syncs:
        kind = "lora" if s.format == "lora" else ("vera" if s.with_projection else "vera, seed-only")
        table.add_row(s.direction, f"{s.endpoint}/{s.repo_id}", s.revision, s.commit_sha[:12], kind, s.actor,
                      s.at.isoformat(timespec="seconds"))
    console.print(table)
