"""The `vera` command line, by audience: local adapter tools (local), administration on the registry's machine
(admin), commands that talk to a registry over HTTP (remote, catalog, hub, jobs) and long-running processes (run).

This module builds `app`, declares every sub-app, and registers each command, wrapped in
`common.reports_errors` so that a registry or vera_core error is one clear line on stderr and exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer

from registry.cli import access, admin, catalog, cluster, events, hub, jobs, local, remote, run
from registry.cli.common import console, reports_errors

app = typer.Typer(help="VeRA adapters: train, inspect and convert them; publish, fetch, verify and serve them from "
                  "the registry; sync with the HuggingFace Hub; `vera up` runs the whole product.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
projection_app = typer.Typer(help="The shared random projections A and B.", no_args_is_help=True)
db_app = typer.Typer(help="The registry database (VERA_DATABASE_URL).", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens (run on the registry's machine: it writes the database).",
                        no_args_is_help=True)
hub_app = typer.Typer(help="Sync with the HuggingFace Hub (the registry server talks to the Hub).",
                      no_args_is_help=True)
base_app = typer.Typer(help="Base models and their layer shapes.", no_args_is_help=True)
job_app = typer.Typer(help="Fine-tune jobs (run by `vera worker`).", no_args_is_help=True)
auth_app = typer.Typer(help="You on a registry: log in (store a token), who you are, your tokens.",
                       no_args_is_help=True)
webhook_app = typer.Typer(help="Webhooks: an owner's adapter events POSTed, signed, to a URL (docs/webhooks.md).",
                          no_args_is_help=True)
org_app = typer.Typer(help="Organisations: owner namespaces shared by members with roles (read, write, admin).",
                      no_args_is_help=True)


def _print_version(asked: bool) -> None:
    if asked:
        try:
            installed = version("vera-registry")
        except PackageNotFoundError:  # a source tree that is not installed
            installed = "unknown (not installed)"
        console.print(f"vera-registry {installed}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
) -> None:
    pass


#: Each group's commands by name, in the order `--help` lists them.
COMMANDS: dict[typer.Typer, dict[str, Callable[..., Any]]] = {
    app: {
        "inspect": local.inspect, "export-peft": local.export_peft, "export-lora": local.export_lora,
        "params": local.params, "train": local.train,
        "fsck": admin.fsck, "gc": admin.gc, "serve": admin.serve,
        "serve-model": run.serve_model, "ui": run.ui, "up": run.up, "cluster": cluster.cluster,
        "publish": remote.publish, "fetch": remote.fetch, "verify": remote.verify, "ls": remote.list_versions,
        "compare": remote.compare, "alias": remote.alias,
        "show": catalog.show, "tag": catalog.tag, "describe": catalog.describe, "card": catalog.card,
        "yank": catalog.yank, "delete": catalog.delete, "lineage": catalog.lineage,
        "worker": admin.worker, "events": events.events,
        "login": access.login, "logout": access.logout, "whoami": access.whoami, "visibility": access.visibility,
    },
    auth_app: {"login": access.login, "logout": access.logout, "whoami": access.whoami,
               "create-token": access.create_token, "tokens": access.list_tokens, "revoke": access.revoke},
    org_app: {"create": access.org_create, "ls": access.org_ls, "show": access.org_show, "add": access.org_add,
              "remove": access.org_remove},
    webhook_app: {"add": events.webhook_add, "ls": events.webhook_ls, "edit": events.webhook_edit,
                  "rm": events.webhook_rm, "test": events.webhook_test, "deliveries": events.webhook_deliveries},
    projection_app: {"fingerprint": local.projection_fingerprint},
    db_app: {"upgrade": admin.db_upgrade, "downgrade": admin.db_downgrade, "status": admin.db_status},
    token_app: {"create": admin.token_create, "revoke": admin.token_revoke, "list": admin.token_list},
    hub_app: {"push": hub.hub_push, "pull": hub.hub_pull, "status": hub.hub_status},
    base_app: {"register": admin.base_register, "ls": remote.base_ls},
    job_app: {"submit": jobs.job_submit, "ls": jobs.job_ls, "show": jobs.job_show, "cancel": jobs.job_cancel,
              "logs": jobs.job_logs},
}
for group, commands in COMMANDS.items():
    for name, function in commands.items():
        group.command(name)(reports_errors(function))
for name, group in (("projection", projection_app), ("db", db_app), ("token", token_app), ("hub", hub_app),
                    ("base", base_app), ("job", job_app), ("auth", auth_app), ("org", org_app),
                    ("webhook", webhook_app)):
    app.add_typer(group, name=name)

__all__ = ["app"]
