"""The `vera` command line, by audience: local adapter tools (local), administration on the registry's machine
(admin), commands that talk to a registry over HTTP (remote, catalog, hub, jobs) and long-running processes (run).

This module builds the Typer app (``build``; ``app`` is the whole of it), declares every sub-app, and registers each
command, wrapped in `common.reports_errors` so that a registry or vera_core error is one clear line on stderr and exit
code 1. The `vera` script (``main``) imports and registers only the command its arguments name, so that `vera ls`
does not pay for importing and building the other sixty-odd commands.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    app: typer.Typer

HELP = ("VeRA adapters: train, inspect and convert them; publish, fetch, verify and serve them from the registry; sync "
        "with the HuggingFace Hub; `vera up` runs the whole product.")
#: The sub-apps (`vera job ...`), in the order `--help` lists them: `auth` and `token` side by side, each saying when
#: to use the other (both make tokens; scripts use both, so neither is renamed).
GROUPS = {
    "projection": "The shared random projections A and B.",
    "db": "The registry database (VERA_DATABASE_URL).",
    "hub": "Sync with the HuggingFace Hub (the registry server talks to the Hub).",
    "base": "Base models and their layer shapes.",
    "job": "Fine-tune jobs (run by `vera worker`).",
    "eval": "Evaluations recorded on versions after publish (lm-evaluation-harness's results, or any numbers): they "
            "join the version's metrics.",
    "auth": "You, over HTTP from any machine: log in, who you are, your own tokens (any user's, on the registry's "
            "machine: `vera token`).",
    "token": "Any user's tokens, on the registry's machine, written straight into its database: the first admin token "
             "too (your own, from anywhere: `vera auth`).",
    "org": "Organisations: owner namespaces shared by members with roles (read, write, admin).",
    "webhook": "Webhooks: an owner's adapter events POSTed, signed, to a URL (docs/webhooks.md).",
}
#: How help is laid out: click's plain layout, which wraps each paragraph and each option's help to the terminal (up
#: to 100 columns) and keeps option names whole. Typer's rich panels split an 80-column terminal into six columns (a
#: dozen characters were left for an option's help) and kept a docstring's line breaks where its source had them.
HELP_LAYOUT: dict[str, Any] = {"rich_markup_mode": None, "context_settings": {"max_content_width": 100}}
#: The end of a help text's first sentence (not the dot of "e.g." or "i.e.").
_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+(?=[A-Z`(])")
#: Each group's commands by name ("" is `vera` itself), in the order `--help` lists them: module.function in
#: registry.cli, imported when the command is registered.
COMMANDS: dict[str, dict[str, str]] = {
    "": {
        "inspect": "local.inspect", "export-peft": "local.export_peft", "export-lora": "local.export_lora",
        "params": "local.params", "train": "local.train",
        "fsck": "admin.fsck", "gc": "admin.gc", "serve": "admin.serve",
        "serve-model": "run.serve_model", "ui": "run.ui", "up": "run.up", "cluster": "cluster.cluster",
        "publish": "remote.publish", "fetch": "remote.fetch", "verify": "remote.verify", "ls": "remote.list_versions",
        "compare": "remote.compare", "alias": "remote.alias",
        "show": "catalog.show", "resolve": "catalog.resolve", "tag": "catalog.tag", "property": "catalog.property_",
        "describe": "catalog.describe",
        "card": "catalog.card",
        "yank": "catalog.yank", "delete": "catalog.delete", "mv": "catalog.move", "cp": "catalog.copy",
        "lineage": "catalog.lineage",
        "worker": "admin.worker", "events": "events.events",
        "login": "access.login", "logout": "access.logout", "whoami": "access.whoami",
        "visibility": "access.visibility", "retention": "catalog.retention", "usage": "access.usage",
        "quota": "access.quota",
    },
    "auth": {"login": "access.login", "logout": "access.logout", "whoami": "access.whoami",
             "create-token": "access.create_token", "tokens": "access.list_tokens", "revoke": "access.revoke",
             "exchange": "access.exchange", "publishers": "access.publishers"},
    "org": {"create": "access.org_create", "ls": "access.org_ls", "show": "access.org_show", "add": "access.org_add",
            "remove": "access.org_remove", "rename": "access.org_rename", "delete": "access.org_delete",
            "invitations": "access.org_invitations",
            "accept": "access.org_accept", "decline": "access.org_decline", "uninvite": "access.org_uninvite",
            "protect": "access.org_protect", "unprotect": "access.org_unprotect"},
    "webhook": {"add": "events.webhook_add", "ls": "events.webhook_ls", "edit": "events.webhook_edit",
                "rm": "events.webhook_rm", "test": "events.webhook_test", "deliveries": "events.webhook_deliveries"},
    "projection": {"fingerprint": "local.projection_fingerprint"},
    "db": {"upgrade": "admin.db_upgrade", "downgrade": "admin.db_downgrade", "status": "admin.db_status",
           "backup": "admin.db_backup", "copy": "admin.db_copy"},
    "token": {"create": "admin.token_create", "revoke": "admin.token_revoke", "list": "admin.token_list",
              "purge": "admin.token_purge"},
    "hub": {"push": "hub.hub_push", "pull": "hub.hub_pull", "status": "hub.hub_status"},
    "base": {"register": "admin.base_register", "ls": "remote.base_ls", "rm": "remote.base_rm"},
    "eval": {"run": "evals.run", "record": "evals.record", "ls": "evals.ls", "delete": "evals.delete"},
    "job": {"submit": "jobs.job_submit", "ls": "jobs.job_ls", "show": "jobs.job_show", "cancel": "jobs.job_cancel",
            "logs": "jobs.job_logs"},
}


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        from registry.cli.common import console

        try:
            installed = version("vera-registry")
        except PackageNotFoundError:  # a source tree that is not installed
            installed = "unknown (not installed)"
        console.print(f"vera-registry {installed}")
        raise typer.Exit()


def _options(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
) -> None:
    pass


def named(argv: Sequence[str]) -> dict[str, dict[str, str]]:
    """The part of COMMANDS that ``argv`` (the arguments after `vera`) runs: one command (`ls`, `job ls`), one
    group (`job --help`), or all of them when it names none (`--help`, a typo, which click answers with the names
    that come close). Shell completion (typer's _VERA_COMPLETE) sees all of them."""
    if not argv or "_VERA_COMPLETE" in os.environ:
        return COMMANDS
    first, second = argv[0], (argv[1] if len(argv) > 1 else "")
    if first in COMMANDS[""]:
        return {"": {first: COMMANDS[""][first]}}
    if first in GROUPS:
        group = COMMANDS[first]
        return {first: {second: group[second]} if second in group else group}
    return COMMANDS


def summary(help_text: str | None) -> str:
    """A command's line in its group's list: the first sentence of its help, whole (click would cut it at the
    terminal's width, mid-phrase, with '...'); the list wraps it."""
    paragraph = " ".join(inspect.cleandoc(help_text or "").split("\n\n")[0].split())
    return _SENTENCE_END.split(paragraph, maxsplit=1)[0]


def build(commands: dict[str, dict[str, str]] = COMMANDS) -> typer.Typer:
    """A `vera` app with ``commands`` (by default, all of them)."""
    from registry.cli.common import reports_errors

    root = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False, **HELP_LAYOUT)
    root.callback()(_options)  # a callback keeps `vera` a group even when it holds a single command
    groups = {name: typer.Typer(help=GROUPS[name], short_help=summary(GROUPS[name]), no_args_is_help=True,
                                **HELP_LAYOUT) for name in GROUPS if name in commands}
    for group_name, group_commands in commands.items():
        group = groups[group_name] if group_name else root
        for name, target in group_commands.items():
            module, function = target.split(".")
            command = getattr(importlib.import_module(f"registry.cli.{module}"), function)
            group.command(name, short_help=summary(command.__doc__))(reports_errors(command))
    for group_name, group in groups.items():  # in GROUPS' order
        root.add_typer(group, name=group_name)
    return root


def main() -> None:
    """The `vera` console script."""
    build(named(sys.argv[1:]))(prog_name="vera")


def __getattr__(name: str) -> Any:
    """``app``: the whole `vera` app, built when first asked for."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["app"] = built = build()
    return built


__all__ = ["app", "build", "main"]
