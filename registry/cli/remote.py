"""Commands that talk to a registry over HTTP (registry.client): publish, fetch, verify, ls, compare, alias and
base ls."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from registry.cli.common import (
    ForVllm,
    LoraDtype,
    MaxRank,
    RegistryUrl,
    Token,
    VersionRef,
    as_lora,
    call_registry,
    check_failed,
    console,
    err_console,
    fail,
    key_values,
    lora_export,
    lora_summary,
    read_json_object,
    styled,
    warn_unservable_by_vllm,
)
from registry.cli.output import Column, JsonOutput, fitted_table, print_json
from registry.domain import metric_names
from registry.domain.errors import InvalidInput, RegistryError
from registry.domain.metric_names import flat_metrics
from registry.domain.schemas import (
    MAX_PAGE,
    Comparison,
    Ref,
    VersionInfo,
    check_card,
    check_params,
    compare_params,
    non_finite_at,
    path_like,
)
from registry.domain.words import counted
from vera_core.config import DEMO_MODEL, VERA_PEFT_TYPES

if TYPE_CHECKING:
    from registry.client import RegistryClient


def publish(
    directory: Annotated[Path, typer.Argument(help="A PEFT-format VeRA adapter directory.")],
    name: Annotated[str, typer.Option("--name", help="owner/name")],
    base_model: Annotated[str | None, typer.Option(
        help="Base model (Hub id or name). Default: the one adapter_config.json names (base_model_name_or_path), "
             "unless that is a folder path.", show_default=False)] = None,
    base_revision: Annotated[str, typer.Option(help="Base model revision.")] = "",
    metrics: Annotated[Path | None, typer.Option(help="A JSON file of metrics (e.g. vera train's metrics.json).")
                       ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag; repeat for several.")] = None,
    prop: Annotated[list[str] | None, typer.Option("--property", help="A key=value property (e.g. "
                                                   "validation=passed); repeat for several.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="A key=value parameter it was trained with "
                                                    "(e.g. lr=0.01), beside those --metrics records; repeat for "
                                                    "several. Never changed after.")] = None,
    description: Annotated[str, typer.Option(help="Description.")] = "",
    base_config: Annotated[Path | None, typer.Option(
        help="The base model's transformers config.json: declares its layer shapes first (needed for seed-only "
             "adapters PEFT wrote).")] = None,
    parent: Annotated[str | None, typer.Option(help="Lineage: the version this was fine-tuned from "
                                               "(owner/name:N or owner/name@ALIAS).")] = None,
    code_revision: Annotated[str | None, typer.Option(help="Lineage: the code that trained it (a git commit, a "
                                                      "release).")] = None,
    dataset: Annotated[Path | None, typer.Option(help="Lineage: the file it was trained on, hashed here (its SHA-256 "
                                                 "and size are recorded; the data is not uploaded).")] = None,
    private: Annotated[bool | None, typer.Option(
        "--private/--public", help="Who may read a NEW adapter: its owner's members only, or whoever may read the "
        "registry (default: the registry's, VERA_DEFAULT_VISIBILITY). `vera visibility` changes it later.",
        show_default=False)] = None,
    card: Annotated[Path | None, typer.Option(
        help="A Markdown file (the folder's README.md, say) to set as the adapter's model card once the version is "
             "published: the card of every version, replacing the one it had (`vera card` sets it later too).",
        show_default=False)] = None,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Publish an adapter directory as the next version of owner/name."""
    visibility = None if private is None else "private" if private else "public"
    card_text = _card_file(card) if card is not None else None  # before anything is uploaded
    named, kind = _config_fields(directory, "base_model_name_or_path", "peft_type")
    if kind and kind not in VERA_PEFT_TYPES:  # before uploading it all
        fail(InvalidInput(f"{directory} holds a PEFT {kind} adapter (adapter_config.json's peft_type), not VeRA: "
                          "this registry stores VeRA adapters, and exports them as LoRA (`vera fetch REF --as "
                          "lora`). Nothing was uploaded."))
    if base_model is None:
        base_model = _base_from_config(directory, named, registry, token)
    elif named and named != base_model and not _a_path(named):
        err_console.print(styled("note:", "yellow", f" {directory}/adapter_config.json names base model {named!r}, "
                                 f"and --base-model is {base_model!r}: the version is published for "
                                 f"{base_model!r}."), soft_wrap=True)
    known = _known_bases(registry, token)
    if path_like(base_model) and base_model not in known:  # one named so before the registry refused them is kept
        fail(InvalidInput(f"--base-model {base_model!r} is a folder path; a version is keyed by its base model's Hub "
                          "id or registry name, the same on every machine (`vera base ls` lists those this registry "
                          f"knows), e.g. {_base_guess(base_model, registry, token, known)}."))
    values, params = _metrics_file(metrics)
    params.update(key_values(param or [], "Parameter", "lr=0.01"))  # given on the line: wins over the file's
    properties = key_values(prop or [])
    if base_config is not None:
        config = read_json_object(base_config, "--base-config")
        call_registry(registry, token, lambda c: c.register_base_model(base_model, config, revision=base_revision))
    info = call_registry(registry, token, lambda c: c.publish(directory, name, base_model=base_model,
                                                              base_revision=base_revision, metrics=values,
                                                              tags=tag or [], description=description,
                                                              parent=parent, code_revision=code_revision,
                                                              visibility=visibility, progress=True,
                                                              dataset=dataset, properties=properties,
                                                              params=params))
    console.print(f"published {info.ref} ({info.stored_bytes:,} bytes stored, "
                  f"{'seed-reproducible' if info.seed_reproducible else 'projections stored'})")
    if card is not None and card_text is not None:
        _set_card(info, card, card_text, registry, token)
    _folder_notes(info, directory, metrics_given=metrics is not None, card_given=card is not None)
    if known and base_model not in known and base_config is None:  # a typo makes a base for good: only an admin
        # removes one (--base-config declares a new base on purpose)
        err_console.print(styled("note:", "yellow", f" base model {base_model!r} is new to this registry (it knew "
                                 f"{', '.join(sorted(known)[:8])}{', ...' if len(known) > 8 else ''}); servers of "
                                 f"another name refuse this version. If that was a typo, `vera delete {info.ref} --yes`"
                                 " and publish it again with the right --base-model (`vera base ls`); an "
                                 f"administrator's `vera base rm {base_model}` then forgets the name."),
                      soft_wrap=True)
    _after_publish(info, dataset, properties, params, registry, token)


def _base_from_config(directory: Path, named: str, registry: str | None, token: str | None) -> str:
    """The base model a publish without --base-model takes: the one adapter_config.json names, or exit saying why
    it cannot (no config, no base named, a folder path named, or a name a folder here has too)."""
    if not (directory / "adapter_config.json").is_file():  # (of a path not there, said so: session 51's walk)
        from registry.client import not_a_folder

        fail(InvalidInput(not_a_folder(directory) or f"{directory} has no adapter_config.json: publish a "
                          "PEFT-format adapter folder (`vera train` and PEFT's save_pretrained write one)."))
    if named and not path_like(named) and Path(named).is_dir():  # a name that a folder here has too: said
        # so, not "a folder path" with the same string suggested (a docs audit's finding, session 52)
        fail(InvalidInput(f"--base-model is needed: {directory}/adapter_config.json names {named!r}, which is "
                          f"also a folder here ({Path(named).resolve()}), so it may be a path where the adapter "
                          f"was trained. If {named!r} is the base's Hub id or its name in this registry, say so: "
                          f"--base-model {named}."))
    if not named or _a_path(named):
        fail(InvalidInput(f"--base-model is needed: {directory}/adapter_config.json names "
                          f"{repr(named) + ', a folder path' if named else 'no base model'}. Give the base's "
                          f"Hub id or registry name, e.g. {_base_guess(named, registry, token)}."))
    err_console.print(f"base model: {named} (from adapter_config.json)")
    return named


#: What marks a README.md nobody wrote as a card: PEFT's model card template (save_pretrained writes one into every
#: folder, its sections "[More Information Needed]"), and the ones vera writes (vera_core's save_adapter, the
#: registry's downloads and Hub pushes: tagged vera-registry).
WRITTEN_FOR_YOU = ("[More Information Needed]", "vera-registry")


def _written_for_you(readme: Path) -> bool:
    """Whether ``readme`` is a card PEFT or vera wrote for the folder (WRITTEN_FOR_YOU: no note of it), or is
    unreadable."""
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return any(mark in text for mark in WRITTEN_FOR_YOU)


def _card_file(path: Path) -> str:
    """--card's text, checked as the registry checks a card (UTF-8, at most 64 KiB, no control characters), or exit
    saying what is wrong: before the upload, which would leave a version without the card it was given."""
    from registry.cli.catalog import _read_text

    text = _read_text(path, "--card")
    try:
        return check_card(text)
    except InvalidInput as exc:
        fail(InvalidInput(f"--card {path}: {exc} Nothing was uploaded."))


def _folder_notes(info: VersionInfo, directory: Path, *, metrics_given: bool, card_given: bool) -> None:
    """Notes of what the folder holds that the publish left out: said after it (before it, one came ahead of a
    refusal, no token, that had nothing to do with it)."""
    if not metrics_given and (left := directory / "metrics.json").is_file():  # vera train writes one beside it
        err_console.print(styled("note:", "yellow", f" {left} was not published: without --metrics {left}, "
                                 f"{info.ref} has no loss curve or accuracy, nor the parameters it was trained "
                                 "with."), soft_wrap=True)
    if not card_given and (readme := directory / "README.md").is_file() and not _written_for_you(readme):
        # a card written for the Hub, left out unsaid (a PEFT user's walk, session 47)
        err_console.print(styled("note:", "yellow", f" {readme} was not published: `--card {readme}` sets it as "
                                 f"{info.owner}/{info.name}'s model card, or `vera card {info.owner}/{info.name} "
                                 f"--file {readme}`."), soft_wrap=True)


def _set_card(info: VersionInfo, path: Path, text: str, registry: str | None, token: str | None) -> None:
    """The adapter's model card set from --card once ``info`` is published; a refusal says the version stands."""
    adapter = f"{info.owner}/{info.name}"
    try:
        call_registry(registry, token, lambda c: c.update_adapter(adapter, card=text))
    except RegistryError as exc:
        fail(RegistryError(f"{info.ref} is published, but its model card was not set: {exc} Set it with `vera card "
                           f"{adapter} --file {path}`."))
    console.print(f"{adapter}: model card set from {path} ({len(text.encode()):,} bytes)")


def _after_publish(info: VersionInfo, dataset: Path | None, properties: dict[str, str], params: dict[str, str],
                   registry: str | None, token: str | None) -> None:
    """What a publish's caller should know beyond its line: a --dataset, --property or parameters the registry did
    not keep (one older than them), a version with the same vectors as the one before."""
    if params and not info.params:  # a registry from before parameters
        err_console.print(styled("warning:", "yellow", f" the registry did not record the {len(params)} training "
                                 f"parameters with {info.ref} (it is older than parameters); upgrade it to keep "
                                 "them."), soft_wrap=True)
    if dataset is not None and info.lineage.get("dataset_sha256") is None:  # a registry from before dataset lineage
        err_console.print(styled("warning:", "yellow", f" the registry did not record --dataset {dataset} in "
                                 f"{info.ref}'s lineage (it is older than dataset lineage); upgrade it to keep "
                                 "the data's hash with the version."), soft_wrap=True)
    if properties and info.properties != properties:  # a registry from before properties
        err_console.print(styled("warning:", "yellow", f" the registry did not record the --property values on "
                                 f"{info.ref} (it is older than properties); upgrade it, then set them with "
                                 f"`vera property {info.ref} KEY=VALUE`."), soft_wrap=True)
    if info.version > 1:  # the same vectors as the version before: said, as a Hub commit with no change would be
        try:
            before = call_registry(registry, token, lambda c: c.get(f"{info.owner}/{info.name}:{info.version - 1}"))
        except RegistryError:  # deleted, or unreadable now: nothing to compare with
            return
        if before.vectors_sha256 == info.vectors_sha256:
            err_console.print(styled("note:", "yellow", f" {info.ref} has the same vectors as {before.ref} "
                                     "(published again)."), soft_wrap=True)


def _known_bases(registry: str | None, token: str | None) -> set[str]:
    """The base model names the registry knows, for the note on a new one; none when it cannot say (the publish
    itself then says what is wrong)."""
    try:
        return {base.name for base in call_registry(registry, token, lambda c: c.base_models())}
    except RegistryError:
        return set()


#: A folder of the HuggingFace cache (``.../hub/models--FacebookAI--roberta-base/snapshots/<commit>``): the Hub id
#: it holds, its parts joined by "--".
_HUB_CACHE_FOLDER = re.compile(r"models--([\w.-]+?)--([\w.-]+)")


def _base_guess(path: str, registry: str | None, token: str | None, known: set[str] | None = None) -> str:
    """The --base-model to suggest for a base the config names as a folder ``path``: the Hub id of a HuggingFace cache
    folder, else a base this registry knows by the folder's name, else what a Hub id looks like and the bases the
    registry knows (every model was told "e.g. --base-model minilm": a PEFT user's walk, session 47)."""
    parts = [part for part in re.split(r"[/\\]", path) if part not in ("", ".", "..", "~")]
    for part in reversed(parts):
        if cached := _HUB_CACHE_FOLDER.fullmatch(part):
            return f"--base-model {cached[1]}/{cached[2]} (the Hub id of the cache folder it names)"
    bases = _known_bases(registry, token) if known is None else known
    if parts and (last := parts[-1]) in {*bases, DEMO_MODEL}:  # (the bundled demo model: every registry knows it)
        return f"--base-model {last} (a base this registry knows, by the folder's name)"
    listed = ", ".join(sorted(bases)[:5]) + (", ..." if len(bases) > 5 else "")
    return "--base-model ORG/NAME (the base model's Hub id, as FacebookAI/roberta-base)" + (
        f", or one of the bases this registry knows: {listed} (`vera base ls`)" if bases else "")


def _a_path(name: str) -> bool:
    """Whether a config's base model reads as a folder path (of this machine or the one that trained it), not a Hub
    id (``org/name``) or a registry name."""
    return path_like(name) or Path(name).is_dir()


def _config_fields(directory: Path, *keys: str) -> list[str]:
    """Text fields of the folder's adapter_config.json, read once, each "" where it has none (or the config is not
    readable: the publish itself then says what is wrong with the folder). Its base model (base_model_name_or_path)
    keys a version published without --base-model; with another --base-model, a note says so, since servers of the
    base the config names would refuse the version (a folder path is not compared: a Hub id or a registry name may
    well stand for it)."""
    try:
        config = json.loads((directory / "adapter_config.json").read_text())
    except (OSError, ValueError, RecursionError):
        config = {}
    values = [config.get(key) if isinstance(config, dict) else None for key in keys]
    return [value if isinstance(value, str) else "" for value in values]


def _metrics_file(path: Path | None) -> tuple[dict[str, object], dict[str, str]]:
    """The metrics a --metrics file gives a version, and the parameters it records (``params``: `vera train`'s
    metrics.json, or any file's object of them, which is not a metric)."""
    if path is None:
        return {}, {}
    from vera_core.recipes import (  # torch: only when a file is published
        is_trainer_state,
        published_metrics,
        published_params,
        trainer_state_metrics,
    )

    data = read_json_object(path, "--metrics")
    if is_trainer_state(data):  # its whole log_history became one metric (a PEFT user's walk, session 47)
        converted = trainer_state_metrics(data)
        err_console.print(f"--metrics {path}: read as HuggingFace Trainer's trainer_state.json: "
                          f"{counted(len(converted['train_loss']), 'loss point')}, "
                          f"{counted(len(converted.get('eval', [])), 'evaluation')}", soft_wrap=True)
        data = converted
    if (where := non_finite_at(data)) is not None:  # said here, naming the file and the entry (session 47's walk)
        fail(InvalidInput(f"--metrics {path}: {where[0] or 'the file'} is {where[1]}, which is not a number JSON has "
                          "(a run that diverged writes it): drop that entry, or write it as null. Nothing was "
                          "uploaded."))
    params = published_params(data)
    try:  # said here, naming the file (the registry's refusal read as a --param's)
        check_params(params, f"{path}'s params")
    except InvalidInput as exc:
        fail(InvalidInput(f"--metrics {path}: its params: {exc} Nothing was uploaded."))
    if "final_eval" in data:
        return published_metrics(data), params
    return {k: v for k, v in data.items() if not (k == "params" and isinstance(v, dict))}, params


def fetch(
    ref: Annotated[str, typer.Argument(help="owner/name, owner/name:VERSION or owner/name@ALIAS")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write.")],
    with_projection: Annotated[bool, typer.Option(help="Always materialise A and B (by default they are included "
                                                  "unless PEFT's own generator regenerates them).")] = False,
    seed_only: Annotated[bool, typer.Option(help="Leave A and B out even where PEFT cannot regenerate them (smallest; "
                                            "for vera_core, PEFT refuses such a folder).")] = False,
    as_: Annotated[str, typer.Option("--as", help="vera (PEFT's VeRA format) or lora (the equivalent LoRA, for "
                                     "LoRA-only servers such as vLLM).")] = "vera",
    max_rank: MaxRank = None, dtype: LoraDtype = "float32", for_vllm: ForVllm = False,
    force: Annotated[bool, typer.Option("--force", help="Replace the adapter of a training run (`vera train`'s "
                                        "output: metrics.json or checkpoints/ beside it) that --out holds.")] = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Download an adapter in PEFT's format: by default a folder PEFT loads correctly."""
    refuse_replacing_a_run(out, force)
    lora = as_lora(as_)
    if not lora and (max_rank is not None or dtype != "float32" or for_vllm):
        fail(InvalidInput("--max-rank, --dtype and --for-vllm shape a LoRA export; add --as lora."))
    options, export = None, None
    if lora:  # (checking the export's options loads vera_core.lora, and torch with it: only when exporting)
        export = lora_export(max_rank, dtype, for_vllm)
        options = {"max_rank": export.max_rank, "dtype": export.dtype, "for": "vllm" if export.for_vllm else None}
    if with_projection and seed_only:
        fail(InvalidInput("--with-projection and --seed-only contradict each other; pass one of them."))
    replaced = (out / "adapter_config.json").is_file()
    manifest = call_registry(registry, token, lambda c: c.fetch_files(
        ref, out, with_projection=with_projection, seed_only=seed_only, as_lora=lora, lora=options, progress=True))
    from vera_core.config import PEFT_GENERATOR  # (here: RE2 with it, a few ms `vera ls` need not spend)

    size = sum(f.size for f in manifest.files)
    why = ""
    if manifest.form == "vera+projection" or (manifest.form == "vera" and manifest.version.generator != PEFT_GENERATOR):
        why = (f"; A and B included so that PEFT loads it ({manifest.version.stored_bytes:,} bytes stored: "
               "--seed-only for vera_core)")
    elif manifest.form in ("vera", "vera+seed-only"):  # a folder saved with A and B came back without them, unsaid
        who = ("PEFT and vera_core regenerate them from the seed" if manifest.version.generator == PEFT_GENERATOR
               else "vera_core regenerates them from the seed, PEFT refuses such a folder")
        why = f"; seed-only: A and B are left out ({who}; --with-projection includes them)"
    fetched = {f.name for f in manifest.files}
    config = read_json_object(out / "adapter_config.json", "the export's adapter_config.json") if lora else {}
    if export is not None:  # which LoRA it is: exact, or an approximation and why (a newcomer's walk, session 38)
        why = lora_summary(config.get("r"), manifest.version.r, export, with_readme="README.md" in fetched)
    console.print(f"fetched {manifest.version.ref} into {out}: {size:,} bytes{why}"
                  + (" (its files replaced the adapter that was there)" if replaced else ""), soft_wrap=True)
    if for_vllm:
        warn_unservable_by_vllm(config)
    if manifest.version.yanked:  # as pip warns of a yanked release; an alias left on it fetched it unsaid (session 40)
        said = manifest.version.yank_reason
        err_console.print(styled("warning:", "yellow", f" {manifest.version.ref} is yanked"
                                 + (f" ({said})" if said else "") + ": its publisher took it out "
                                 f"of listings and latest. {ref} still names it"
                                 + ("" if manifest.version.ref == ref else "; move the alias if that is not meant")
                                 + "."), soft_wrap=True)
    if replaced and (left := sorted(p.name for p in out.iterdir() if p.is_file() and p.name not in fetched)):
        # a training folder's metrics.json stays, and `vera publish --metrics` of that folder would record another
        # adapter's figures with these vectors (a newcomer's walk, session 33)
        err_console.print(styled("warning:", "yellow", f" {out} still holds {', '.join(left[:6])}"
                                 f"{', ...' if len(left) > 6 else ''} from before, which did not come with "
                                 f"{manifest.version.ref}: fetch into an empty folder to keep them apart."),
                          soft_wrap=True)


def refuse_replacing_a_run(folder: Path, force: bool) -> None:
    """Unless ``force``, refuse a fetch into a folder that holds a `vera train` run's adapter (its metrics.json or
    checkpoints/ beside it): it was replaced with a note, unpublished work lost (a newcomer's walk, session 51). Over
    an adapter fetched before, a fetch is a refresh."""
    held = [name for name in ("metrics.json", "checkpoints") if (folder / name).exists()]
    if force or not held or not (folder / "adapter_config.json").is_file():
        return
    fail(InvalidInput(f"{folder} holds the adapter of a training run ({' and '.join(held)} beside it), which the fetch "
                      "would replace: fetch into another folder (-o), publish that run first (`vera publish "
                      f"{folder} --name OWNER/NAME`), or pass --force to replace it. Nothing was downloaded."))


def verify(ref: VersionRef, registry: RegistryUrl = None, token: Token = None) -> None:
    """Regenerate the projections from the seed, re-hash the blobs, check shapes; exit 3 if a check fails."""
    report = call_registry(registry, token, lambda c: c.verify(ref))
    console.print(Text.assemble(f"{report.ref}: ", (report.status, "bold")))
    for check, result in report.checks.items():
        console.print(f"  {check}: {'ok' if result.get('ok') else 'FAILED'} "
                      + ", ".join(f"{k}={v}" for k, v in result.items() if k != "ok"), soft_wrap=True)
    if report.status != "passed":
        check_failed()


def list_versions(
    adapter: Annotated[str | None, typer.Argument(metavar="OWNER[/NAME]", help=(
        "Only this owner's versions, or one adapter's (owner/name)."), show_default=False)] = None,
    owner: Annotated[str | None, typer.Option(help="Owner.")] = None,
    base_model: Annotated[str | None, typer.Option(help="Base model.")] = None,
    r: Annotated[int | None, typer.Option(help="Rank.")] = None,
    seed: Annotated[int | None, typer.Option(help="Projection seed.")] = None,
    generator: Annotated[str | None, typer.Option(help="Projection generator.")] = None,
    tag: Annotated[str | None, typer.Option(help="Tag.")] = None,
    q: Annotated[str | None, typer.Option(help="Text in owner, name or description.")] = None,
    filter_text: Annotated[str | None, typer.Option("--filter", help=(
        "Clauses joined by 'and', MLflow-style, e.g. \"metrics.accuracy > 0.9 and r <= 256 and base_model = "
        "'minilm'\" (docs/api.md lists the fields)."))] = None,
    sort: Annotated[str | None, typer.Option(help=(
        "created, r, trainable_parameters, stored_bytes, verification_status or metrics.<key> (only versions that "
        "record it); '-' prefix: descending. Default: -created."))] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_PAGE, help="Rows per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Cursor from the previous page.")] = None,
    include_yanked: Annotated[bool, typer.Option("--include-yanked", help="Yanked versions too, marked so.")
                              ] = False,
    latest: Annotated[bool, typer.Option("--latest", help=(
        "One row an adapter: its newest version of those the other options match (a list of adapters)."))] = False,
    show: Annotated[list[str] | None, typer.Option("--show", metavar="KEY", help=(
        "A column of metrics.<key>, params.<key> or properties.<key> (repeat for several), e.g. --show params.lr "
        "--show metrics.test.accuracy; a --sort metric is shown without it."))] = None,
    as_json: JsonOutput = False, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """List adapter versions, newest first (columns that do not fit the terminal are left out, least useful first;
    --show adds columns, MLflow's runs table's chosen ones; --json prints the page as the API gives it)."""
    extra = _shown_columns(show or [], sort)
    name = None
    if adapter is not None:
        if "/" in adapter:
            try:
                Ref.parse_adapter(adapter)  # owner/name only: a version or alias lists nothing
            except InvalidInput as exc:
                fail(exc)
        named_owner, _, name = adapter.partition("/")
        if owner is not None and owner != named_owner:
            fail(InvalidInput(f"{adapter!r} and --owner {owner} name two owners; give one of them."))
        owner, name = named_owner, name or None
    page = call_registry(registry, token, lambda c: c.list_versions(
        owner=owner, name=name, base_model=base_model, r=r, seed=seed, generator=generator, tag=tag, q=q,
        limit=limit, cursor=cursor, filter=filter_text, sort=sort, include_yanked=include_yanked or None,
        latest=latest or None))
    if as_json:
        print_json(page)
        return
    if not page.items and cursor is None:  # an empty table said nothing (a misspelt filter key reads alike)
        sorted_by = (sort or "").lstrip("+-")
        metric = sorted_by.removeprefix("metrics.") if sorted_by.startswith("metrics.") else None
        _say_none_match(registry, token, filter_text, metric, include_yanked=include_yanked, asked=any(
            x is not None for x in (owner, name, base_model, r, seed, generator, tag, q, filter_text, metric)))
        return
    rows = [[v.ref + (" (yanked)" if v.yanked else ""), ",".join(v.aliases), v.base_model, str(v.r), str(v.seed),
             f"{v.adapter_parameters:,}", f"{v.stored_bytes:,}", v.verification_status, ",".join(v.tags),
             f"{v.downloads:,}", *(_cell(v, key) for key in extra)] for v in page.items]
    console.print(fitted_table([*LS_COLUMNS, *(Column(key, 0, "right") for key in extra)], rows))
    if sort and sort.lstrip("+-").startswith("metrics."):  # 4 of 8 versions went unsaid (a PEFT user's walk)
        console.print(f"versions that do not record {sort.lstrip('+-')} are left out of a listing sorted by it")
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


def _say_none_match(registry: str | None, token: str | None, filter_text: str | None, metric: str | None, *,
                    include_yanked: bool, asked: bool) -> None:
    """What `vera ls` says of an empty first page: how to publish a first version, or the hints that may be why
    nothing matched, each where it may be: the keys' one for a filter with such a clause only, the yanked ones (an
    alias on a yanked version matched nothing, hinted at metrics: a newcomer's walk, session 40), and a metric no
    version records, with those there are (a PEFT user's walk, session 47: "no versions match" only)."""
    if not asked:
        console.print("no versions yet: `vera publish DIR --name owner/name --base-model BASE` adds one")
        return
    # the ones the filter names, but in `is null` clauses, which match exactly the versions without the key (a docs
    # audit's finding, session 52: the hint said the opposite of what such a clause asks)
    keyed = [f"{field}.<key>" for field in ("metrics", "params", "properties", "published_via")
             if filter_text and re.search(rf"\b{field}\.[^\s=!<>]++(?!\s*is\s+null\b)", filter_text, re.IGNORECASE)]
    hints = ([f"{' and '.join(keyed)} clauses match only versions that record that key"] if keyed else []) + (
        [] if include_yanked else ["yanked versions are left out: --include-yanked lists them too"])
    console.print("no versions match" + (f" ({'; '.join(hints)})" if hints else ""), soft_wrap=True)
    if (keys := metric_names.named(filter_text, metric)) and (
            said := call_registry(registry, token, lambda c: _absent_metrics(c, keys))):
        console.print(said, soft_wrap=True)


def _absent_metrics(client: RegistryClient, keys: list[str]) -> str | None:
    """Which of the metrics ``keys`` (a listing's filter and sort named them) no version records, and which ones
    there are, or None: a misspelt metric matched nothing, and only "no versions match" was said (a PEFT user's
    walk, session 47; the dashboard's Browse says it as this does)."""
    absent = metric_names.missing(client.list_versions, keys)
    return metric_names.message(client.list_versions, absent) if absent else None


#: What `vera ls --show` adds a column of: a key of each.
SHOWN_FIELDS = ("metrics.", "params.", "properties.")


def _shown_columns(shown: list[str], sort: str | None) -> list[str]:
    """`vera ls --show`'s columns, checked, each once, and the metric --sort names (the dashboard shows it too)."""
    for key in shown:
        if not key.startswith(SHOWN_FIELDS) or key in SHOWN_FIELDS:
            fail(InvalidInput(f"--show {key!r}: give metrics.<key>, params.<key> or properties.<key>, e.g. --show "
                              "params.lr or --show metrics.test.accuracy."))
    sorted_by = (sort or "").lstrip("+-")
    return list(dict.fromkeys([*shown, *([sorted_by] if sorted_by.startswith("metrics.") else [])]))


def _cell(v: VersionInfo, key: str) -> str:
    """A version's value of ``key`` (metrics.<dotted key>, params.<key> or properties.<key>), or '-'."""
    from registry.domain.metric_names import metric_text

    field, _, name = key.partition(".")
    if field == "metrics":
        found = dict(flat_metrics(v.metrics)).get(name)
        return "-" if found is None else metric_text(found)
    held = v.params if field == "params" else v.properties
    return held.get(name, "-")


#: `vera ls`'s columns, by priority: the reference always, then rank, base model and parameters; seed goes first.
LS_COLUMNS = (Column("ref"), Column("aliases", 3), Column("base model", 2), Column("r", 1, "right"),
              Column("seed", 7, "right"), Column("adapter params", 2, "right"), Column("bytes", 5, "right"),
              Column("verified", 4), Column("tags", 4), Column("downloads", 6, "right"))


def compare(
    refs: Annotated[list[str], typer.Argument(help="Two to eight versions.")],
    as_json: JsonOutput = False, registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Compare versions: parameters, bytes, metrics side by side, the training parameters that differ, and per-layer
    cosine similarity of their weight deltas (--json: the comparison as the API gives it)."""
    from registry.domain.metric_names import metric_text

    result = call_registry(registry, token, lambda c: c.compare(refs))
    if as_json:
        print_json(result)
        return
    summary = Table("ref", "base model", "adapter params", "bytes")
    for v in result.versions:
        summary.add_row(v.ref, v.base_model, f"{v.adapter_parameters:,}", f"{v.stored_bytes:,}")
    console.print(summary)
    metrics = [dict(flat_metrics(v.metrics)) for v in result.versions]
    if names := sorted(set().union(*metrics)):  # one row per metric, a column per version: whole, not cut
        table = Table("metric", *[v.ref for v in result.versions], caption="- where a version does not record it")
        for name in names:
            table.add_row(name, *[metric_text(m[name]) if name in m else "-" for m in metrics])
        console.print(table)
    _differing_params(result.versions)
    # the first version's layers that another version adapts too (with_first): a version on another base model
    # shares none, and leaves the others theirs; a registry older than the field answers the layers all share
    rows = ([(w.module, w.cosine) for w in result.with_first] if result.with_first is not None
            else [(layer.module, layer.delta_cosine[0]) for layer in result.layers])
    layers = Table("layer", *[f"cos(1,{i + 1})" for i in range(1, len(result.refs))],
                   caption="cosine of each version's weight delta with the first's; - where it does not adapt it "
                           "or none could be computed (said below)")
    for module, cosines in rows:
        layers.add_row(module, *[f"{c:.3f}" if c is not None else "-" for c in cosines[1:]])
    console.print(layers)
    first = result.versions[0]
    for i, ref in enumerate(result.refs[1:], start=1):
        if not rows or all(cosines[i] is None for _, cosines in rows):
            console.print(_no_cosines(result, i, rows, registry, token), soft_wrap=True)
        elif (base := result.versions[i].base_model) != first.base_model:
            # cosines of 1.000 across two names of one model (a typo published as a new base) read as nothing amiss
            # (a newcomer's walk, session 51)
            console.print(f"{ref} is for base model {base}, {result.refs[0]} for {first.base_model}: their layers "
                          "have the same shapes, so the deltas compare, but they were learned on different base "
                          "models (if one name is a typo of the other, `vera show` them and publish again).",
                          soft_wrap=True)
        elif differences := first.projection_differences(result.versions[i]):
            # its cosines read as a finding ("unrelated updates") where they say nothing (a newcomer's walk, session 40)
            console.print(f"{ref} is on another projection than {result.refs[0]} ({', '.join(differences)}): deltas "
                          "built on independent random matrices are nearly orthogonal, so its cosines are about 0 "
                          "whatever it learned; compare it by the metrics above.")


def _no_cosines(result: Comparison, i: int, rows: list[tuple[str, list[float | None]]], registry: str | None,
                token: str | None) -> str:
    """Why the version at ``i`` has no cosine with the first: another base model, a base whose layer shapes are not
    declared (adapters PEFT wrote record no layer's input size, and a delta needs it: it said "adapts none of its
    layers" of a version compared with itself, a PEFT user's walk, session 47), deltas that are zero (b all zeros:
    untrained), or other modules."""
    first, other, ref = result.versions[0], result.versions[i], result.refs[i]
    if other.base_model != first.base_model:
        return (f"{ref} adapts none of {result.refs[0]}'s layers: it is for base model {other.base_model}, "
                f"{result.refs[0]} for {first.base_model}.")
    shared = [layer for layer in result.layers if layer.module in {module for module, _ in rows}]
    if shared and all(layer.b_norms[i] == 0 for layer in shared):
        return f"{ref}'s weight deltas are zero (its b vectors are all zeros: an untrained adapter): no cosine."
    if shared and all(layer.b_norms[0] == 0 for layer in shared):  # the first's: no cosine with any of them
        return (f"{result.refs[0]}'s weight deltas are zero (its b vectors are all zeros: an untrained adapter): no "
                f"cosine with {ref}.")
    if shared:
        bases = call_registry(registry, token, lambda c: c.base_models())
        if not any(b.name == first.base_model and b.revision == first.base_revision and b.shapes_source == "declared"
                   for b in bases):
            return (f"No cosine with {ref}: a weight delta needs each layer's input size, which adapters PEFT wrote "
                    f"do not record, and base model {first.base_model}'s layer shapes are not declared. Declare them "
                    f"(`vera base register {first.base_model} --config config.json`, its transformers config) and "
                    "compare again.")
    return f"{ref} adapts none of {result.refs[0]}'s layers (other modules)."


def _differing_params(versions: list[VersionInfo]) -> None:
    """The parameters the versions were trained with that differ, a column per version (those all share: counted)."""
    recorded, differing, shared = compare_params(versions)
    if not differing:
        if len(recorded) > 1:
            console.print(f"trained with the same {len(recorded[0].params)} parameters"
                          + (f" ({', '.join(v.ref for v in versions if not v.params)} recorded none)"
                             if len(recorded) < len(versions) else ""))
        elif len(recorded) == 1:
            console.print(f"only {recorded[0].ref} recorded the parameters it was trained with (`vera show "
                          f"{recorded[0].ref}` lists them)")
        return
    table = Table("parameter", *[v.ref for v in versions], caption=(
        f"the {shared} parameters all share are left out; " if shared else "") + "- where a version does not record "
        "it")
    for key in differing:
        table.add_row(key, *[v.params.get(key, "-") for v in versions])
    console.print(table)


def alias(
    ref: Annotated[str, typer.Argument(help="owner/name:VERSION the alias should point to")],
    name: Annotated[str, typer.Argument(help="Alias, e.g. prod")],
    remove: Annotated[bool, typer.Option(help="Remove the alias instead (ref is then owner/name).")] = False,
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Move (or remove) an alias."""
    if remove:
        call_registry(registry, token, lambda c: c.remove_alias(ref, name))
        console.print(f"removed {ref}@{name}")
    else:
        info = call_registry(registry, token, lambda c: c.set_alias(ref, name))
        given = Ref.parse(ref)  # the registry accepted it: it parses
        # which version it was pinned to, and that it stays there: "(me/sent@prod names @prod; ...)" said nothing (a
        # PEFT user's walk, session 47)
        now, later = (("the latest version now", "a new version is published") if given.alias is None else
                      (f"the version @{given.alias} names now", f"@{given.alias} moves"))
        implied = "" if given.version is not None else f" ({now}; @{name} stays on {info.version} when {later})"
        console.print(f"{info.owner}/{info.name}@{name} -> {info.version}{implied}")
        if info.yanked:
            err_console.print(styled("note:", "yellow", f" {info.ref} is yanked: whoever fetches "
                                     f"{info.owner}/{info.name}@{name} gets a version taken out of listings "
                                     f"(`vera yank {info.ref} --undo` lists it again)."), soft_wrap=True)


def base_rm(
    name: Annotated[str, typer.Argument(help="The base model's name as adapters are published with it.")],
    revision: Annotated[str, typer.Option(help="Its revision (default: none).")] = "",
    registry: RegistryUrl = None, token: Token = None,
) -> None:
    """Forget a base model's layer shapes that no version was published against (a registry admin's token): the way
    to undo wrong shapes declared under a name others publish with; declare them again with `vera base register`."""
    gone = call_registry(registry, token, lambda c: c.remove_base_model(name, revision=revision))
    console.print(f"removed {gone.name}@{gone.revision or 'default'} ({gone.layers} layers, {gone.shapes_source})")


def base_ls(as_json: JsonOutput = False, registry: RegistryUrl = None, token: Token = None) -> None:
    """Base models the registry knows, with how their shapes are known."""
    bases = call_registry(registry, token, lambda c: c.base_models())
    if as_json:
        print_json(bases)
        return
    table = Table("name", "revision", "layers", "shapes", "fingerprint")
    for b in bases:
        table.add_row(b.name, b.revision, str(b.layers), b.shapes_source, b.shapes_fingerprint[:16])
    console.print(table)
