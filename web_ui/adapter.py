"""Adapter: one version in full: versions and aliases, config, lineage (web_ui.lineage), metrics and loss curve,
storage, the per-layer d/b heatmap, verification, Hub push/pull, downloads and editing (web_ui.editing); the
versions its adapter's retention rule is about to delete are marked (web_ui.retention)."""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import NotFound, RegistryError
from registry.domain.schemas import ADAPTER_FILES, EvaluationInfo, Ref, VerificationReport, VersionInfo
from vera_core.config import PEFT_GENERATOR
from web_ui import analysis, charts, editing, formats, layers, lineage, navigation, retention, session, tables, views
from web_ui.activity import markdown_text
from web_ui.browse import MIXED_ACCURACY_PX, accuracy_cells, accuracy_column, key_metrics, mixed_accuracies

#: The page's heading (also shown above a message that its registry URL is wrong: session.guarded).
TITLE = "Adapter"


def page() -> None:
    st.title(TITLE)
    navigation.follow_url("ref", "adapter_box", default=st.session_state.get("adapter_ref", ""))
    ref_text = st.text_input("Version", key="adapter_box", placeholder="owner/name, owner/name:3 or owner/name@prod",
                             on_change=navigation.write_url, args=("ref", "adapter_box")).strip()
    if not ref_text:
        st.info("Pick a version on the Browse page, or type one above.")
        return
    Ref.parse(ref_text)  # a malformed reference is an InvalidInput message, not a request
    try:
        info = session.read(RegistryClient.get, ref_text)
    except NotFound as exc:
        missing(ref_text, exc)
        return
    read_ahead(info)
    navigation.set_param("ref", ref_text)  # the URL names what is shown (also when opened from elsewhere)
    st.subheader(info.ref + ("  (yanked)" if info.yanked else ""))
    if info.yanked:  # said as a banner, not only a suffix (a walk in a browser, session 40), as `vera fetch` warns
        yanked_banner(info, "It stays downloadable by number (and by any alias still on it); Edit unyanks it.")
    retention.banner(info, adapter_field(info, "retention"),
                     lambda: editing.may_write(session.read(RegistryClient.whoami), info.owner))
    about(info)
    header(info)

    card = model_card(info)
    labels = (["Model card"] if card else []) + list(SECTIONS)
    # Only the open tab is built (a click on another reruns the page): a first visit draws the header and one table,
    # not charts, a graph and forms nobody has opened (bench/RESULTS.md, Adapter's first render).
    for label, tab in zip(labels, st.tabs(labels, key=TAB, on_change="rerun", default=kept_tab(labels)),
                          strict=True):
        if tab.open:
            with tab:
                if label == "Model card":
                    show_card(card or "")
                else:
                    SECTIONS[label](info)


def kept_tab(labels: list[str]) -> str | None:
    """The tabs' ``default``: where the labels are not those of the last run (a first model card saved adds one),
    the tab open then, which a browser's tabs forgot (Save adapter went on to the new Model card tab, and its
    "Saved" under the Edit form was never seen: a dashboard walk, session 48); with the same labels, the same
    default as the last run, since a new default makes new tabs, which open at it (the tab clicked was lost)."""
    before, default = st.session_state.get(TAB_LABELS, (None, None))
    if before != labels:
        tab = st.session_state.get(TAB)
        default = tab if before is not None and isinstance(tab, str) and tab in labels else None
        st.session_state[TAB_LABELS] = (labels, default)
    return default if isinstance(default, str) else None


def missing(ref_text: str, exc: NotFound) -> None:
    """A version the registry does not have, whose adapter has no versions left (its last one deleted: the
    registry then removes the adapter, 404, or keeps it empty): that said, with the way back to Browse, instead of
    a blank page. Any other missing version is the registry's message (``exc``, shown by session.guarded)."""
    ref = Ref.parse(ref_text)
    adapter = f"{ref.owner}/{ref.name}"
    deleted = editing.deleted_last(adapter)
    try:
        about = session.read(RegistryClient.adapter, adapter)
    except NotFound:
        about = None
    if (about.versions if about is not None else deleted is None):  # other versions, or not deleted here: unknown
        raise exc
    if deleted is not None:
        st.success(deleted, icon=":material/check:")
    st.info(f"{adapter} has no versions left: " + ("the registry removed it with its last one, so there is nothing "
                                                   "more to show here." if about is None else
                                                   "there is nothing to show here until one is published."),
            icon=":material/inventory_2:")
    if "browse" in (pages := st.session_state.get("pages", {})):
        st.page_link(pages["browse"], label="Back to Browse", icon=":material/table_view:",
                     query_params=navigation.carried())


def read_ahead(info: VersionInfo) -> None:
    """Start the reads the page makes, side by side, while the header draws (the page's own read then takes its
    value): the adapter (for its model card) and what the open tab shows."""
    if (fetch := getattr(RegistryClient, "adapter", None)) is not None:
        session.prefetch(fetch, f"{info.owner}/{info.name}")
    tab = st.session_state.get(TAB) or "Versions and config"
    if tab == "Versions and config":
        session.prefetch(RegistryClient.list_versions, **versions_query(info))
    elif tab == "Lineage":
        session.prefetch(RegistryClient.lineage, info.ref)
    elif tab in ("Metrics", "Layers"):
        session.prefetch(analysis.summary, info.ref, seed_reproducible=info.seed_reproducible)
        if tab == "Metrics":
            session.prefetch(RegistryClient.evaluations, info.ref)
    elif tab == "Hub":
        session.prefetch(RegistryClient.hub_status, info.ref)


def split_card(card: str) -> tuple[str, str]:
    """(YAML front matter, Markdown body) of a model card: the Hub's cards open with metadata between two '---'
    lines, which Markdown would draw as a rule and a giant heading. ('', card) when there is none."""
    lines = card.lstrip("\ufeff").splitlines(keepends=True)
    if lines and lines[0].strip() == "---":
        for i, line in enumerate(lines[1:], start=1):
            if line.strip() == "---":
                return "".join(lines[1:i]).strip(), "".join(lines[i + 1:])
    return "", card


def show_card(card: str) -> None:
    """The card's metadata as YAML, folded, then its body as Markdown."""
    metadata, body = split_card(card)
    if metadata:
        with st.expander("Card metadata", icon=":material/data_object:"):
            st.code(metadata, language="yaml")
    st.markdown(body)


def model_card(info: VersionInfo) -> str | None:
    """The model card (Markdown) when the registry has one: a ``card`` the version carries, else the adapter's own
    (``RegistryClient.adapter``, where the client and the server have it); None when there is none."""
    card = getattr(info, "card", None) or adapter_field(info, "card")
    return card if isinstance(card, str) and card.strip() else None


def adapter_field(info: VersionInfo, field: str) -> Any:
    """A field of the adapter of ``info`` (its card, its description), or None where the registry has no adapter
    pages (404, 405) or the client no such call."""
    fetch = getattr(RegistryClient, "adapter", None)
    if fetch is None:
        return None
    try:
        return getattr(session.read(fetch, f"{info.owner}/{info.name}"), field, None)
    except RegistryError:
        return None


VISIBILITY_BADGES = {"private": ":orange-badge[:material/lock: private]",
                     "public": ":green-badge[:material/public: public]"}


def about(info: VersionInfo) -> None:
    """The description and the tags, under the name (as a Hub model page shows them), then who may see it and how
    often its weights were downloaded."""
    if info.description:
        description(info.description)
    elif isinstance(said := adapter_field(info, "description"), str) and said.strip():
        # the adapter's own, where the version has none: it was shown nowhere but in the Edit tab's box (a
        # dashboard walk, session 48)
        description(said)
        st.caption(f"(the description of {info.owner}/{info.name}; this version has none of its own)")
    if info.aliases:  # which version is prod, said where the version is (Browse shows it; this page did not)
        st.markdown(" ".join(f":green-badge[@{alias}]" for alias in formats.ordered_aliases(info.aliases)),
                    help="Its aliases: owner/name@ALIAS names this version")
    if info.tags:
        st.markdown(" ".join(f":blue-badge[{tag}]" for tag in info.tags))
    else:
        st.caption("No tags.")
    if info.properties:  # key=value, as MLflow shows a model version's tags; a table: values are any text
        tables.show(pd.DataFrame({"property": list(info.properties), "value": list(info.properties.values())}),
                    whole=True, hide_index=True, key=f"properties-{info.ref}")
    st.markdown(f"{VISIBILITY_BADGES.get(info.visibility, info.visibility)} "
                f":gray-badge[:material/download: {formats.counted(info.downloads, 'download')}]",
                help="private: only its owner, the owning organisation's members and admins see it")


#: How much of a description the page shows before "Show more": lines, and characters (a long paragraph is one line).
DESCRIPTION_LINES, DESCRIPTION_CHARS = 5, 500
#: How far past DESCRIPTION_CHARS a line may go before it is cut (at a space) rather than shown whole.
DESCRIPTION_SLACK = 150


def description(text: str) -> None:
    """The description's first lines (description_parts), the rest behind "Show more": a long one pushed the
    version's numbers and tabs out of view (a newcomer's walk)."""
    head, rest = description_parts(text)
    st.markdown(head)
    if rest:
        with st.expander("Show more", icon=":material/expand_more:"):
            st.markdown(rest)


def description_parts(text: str) -> tuple[str, str]:
    """(what is shown, the rest): the first DESCRIPTION_LINES lines, fewer when they pass DESCRIPTION_CHARS
    characters; ('text', '') when that is all of it. A code block or a table is never cut (the rest would lose its
    fence or header); a line much longer than DESCRIPTION_CHARS is cut at a space, with '…' at the end of what is
    shown and the start of the rest."""
    head, rest = _cut(text.strip())
    if len(rest) <= 80 and "\n" not in rest:  # a short line more: shown, not folded away on its own
        return text.strip(), ""
    return head, rest


def _cut(text: str) -> tuple[str, str]:
    lines = text.splitlines()
    fenced, size = False, 0
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        before, size = size, size + len(line) + 1
        last = i + 1 == len(lines)
        in_block = fenced or (not last and line.lstrip().startswith("|") and lines[i + 1].lstrip().startswith("|"))
        if in_block or (size <= DESCRIPTION_CHARS and (last or i + 1 < DESCRIPTION_LINES)):
            continue
        if size > DESCRIPTION_CHARS + DESCRIPTION_SLACK and not fenced:  # a long paragraph: cut it at a space
            at = line.rfind(" ", 0, max(DESCRIPTION_CHARS - before, 80))
            if at > 0:
                return _joined([*lines[:i], line[:at] + " …"]), _joined(["… " + line[at + 1:], *lines[i + 1:]])
        if not last:
            return _joined(lines[:i + 1]), _joined(lines[i + 1:])
    return text, ""


def _joined(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n")


def header(info: VersionInfo) -> None:
    views.tiles([("Rank", info.r, None),
                 ("Adapter parameters", formats.count(info.adapter_parameters),
                  "The d and b vectors of every adapted layer: what `vera ls` counts."),
                 ("Stored", formats.size(info.stored_bytes), f"{info.stored_bytes:,} bytes"),
                 # in Browse's words ("not yet", not "unverified": session 23's walk read two terms for one state)
                 ("Verification", formats.VERIFIED.get(info.verification_status, info.verification_status), None),
                 ("Base model", info.base_model, f"`{info.base_model}`")])  # whole, should a narrow page cut it
    if info.trainable_parameters != info.adapter_parameters:
        st.caption(f"{formats.count(info.trainable_parameters)} trainable with the task head "
                   f"({formats.count(info.trainable_parameters - info.adapter_parameters)} head parameters on top "
                   "of d and b; `vera ls` counts d and b only).")


VERSION_LINK = st.column_config.LinkColumn(display_text=r"adapter\?ref=[^:&]*:(\d+)", help="Open this version")


def versions_query(info: VersionInfo) -> dict[str, Any]:
    """list_versions' arguments for the versions of ``info``'s adapter (yanked ones too)."""
    return {"owner": info.owner, "name": info.name, "include_yanked": True, "limit": 100}


def published_by(v: VersionInfo) -> str:
    """Who published ``v``, and through which trusted publisher when a CI run did (its Lineage tab says which)."""
    via = v.lineage.get("published_via")
    return f"{v.published_by} (CI: {via.get('publisher', '?')})" if isinstance(via, dict) else v.published_by


def yanked_banner(info: VersionInfo, more: str) -> None:
    """The warning that the yanked version ``info`` is yanked, with its publisher's reason, then ``more``."""
    why = f" (its publisher's reason: {markdown_text(info.yank_reason)})" if info.yank_reason else ""
    st.warning(f"{info.ref} is yanked{why}: its publisher took it out of listings and latest. {more}",
               icon=":material/block:")


def yanked_cell(v: VersionInfo) -> str:
    """A version's yank in a table's cell: "yanked" and its reason (only the version's own banner said it: a
    dashboard walk, session 48), or ""."""
    return ("yanked" + (f": {v.yank_reason}" if v.yank_reason else "")) if v.yanked else ""


def versions(info: VersionInfo) -> None:
    page = session.read(RegistryClient.list_versions, **versions_query(info))
    items = page.items
    # its rank and numbers beside each version, as Browse has them: which version of the adapter is better was a trip
    # to Compare (a walk in a browser, session 40)
    frame = pd.DataFrame([{"version": navigation.version_link(v.ref),
                           "aliases": ", ".join(formats.ordered_aliases(v.aliases)), "r": v.r,
                           "accuracy": accuracy, "eval loss": key_metrics(v)["eval loss"],
                           # words, not a bool: the grid draws a bool as a checkbox, which reads as one to click (a
                           # newcomer's walk); yanking is the Edit tab's
                           "created": v.created_at, "yanked": yanked_cell(v),
                           "verification": formats.VERIFIED.get(v.verification_status, v.verification_status),
                           "published by": published_by(v)}
                          for v, accuracy in zip(items, accuracy_cells(items), strict=True)])
    if (cells := retention.column(retention.due(f"{info.owner}/{info.name}", adapter_field(info, "retention")),
                                  [v.ref for v in items])) is not None:  # said where the versions are listed
        frame.insert(frame.columns.get_loc("yanked"), "retention", cells)
    # the version this page shows, shaded when there are others: the table did not say which row it was (a dashboard
    # walk, session 48)
    shown = next((i for i, v in enumerate(items) if v.ref == info.ref), None) if len(items) > 1 else None
    tables.show(frame, hide_index=True, width="stretch", marked=shown, column_config={
        "version": VERSION_LINK, "created": formats.moment_column(),
        "r": st.column_config.NumberColumn(width=36),
        "accuracy": accuracy_column(items, MIXED_ACCURACY_PX if mixed_accuracies(items) else 80),
        "eval loss": formats.metric_column(frame["eval loss"], width=80, help="final eval loss")})
    if shown is not None:
        st.caption(f"The shaded row is {info.ref}, the version this page shows.")
    st.markdown("**Base model and projection**")
    views.fields({"base model": info.base_model, "generator": info.generator, "seed": str(info.seed), "r": info.r,
            "fingerprint": info.projection_fingerprint, "seed reproducible": info.seed_reproducible,
            "target modules": info.target_modules or "(the model's defaults)"})


def metrics(info: VersionInfo) -> None:
    rows = formats.metric_rows(info.metrics)
    train, evals = {info.ref: info.metrics.get("train_loss") or []}, {info.ref: charts.eval_points(
        info.metrics.get("eval") or [])}
    kept = charts.kept_steps({info.ref: info.metrics})
    chart = charts.loss_curves(train, evals, kept)
    # headed as the tab's other parts are ("Trained with", "Storage"): the table stood unnamed at the top (session
    # 51's walk)
    st.markdown("**Metrics**")
    if rows:
        tables.show(pd.DataFrame(rows), hide_index=True, width="content", whole=True)
        recorded = evaluations(info)
        if recorded:
            st.caption("Recorded after publish: " + "; ".join(
                f"**{e.name}** by {e.recorded_by} on {e.recorded_at:%Y-%m-%d}"
                + (f" ({e.details['harness']})" if isinstance(e.details.get("harness"), str) else "")
                for e in recorded) + ". The other metrics came with the version.")
    elif chart is not None:
        st.caption("No final metrics (test or eval results) were recorded with this version: only the loss curve.")
    else:
        st.caption("No metrics were recorded with this version.")
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    for curve in charts.metric_curves({info.ref: info.metrics.get("eval") or []}, charts.step_span(train, evals), kept):
        st.altair_chart(curve, width="stretch")
    trained_with(info)
    st.markdown("**Storage**")
    views.checklist(storage_items(layers.tensor_summary(info), info))


def trained_with(info: VersionInfo) -> None:
    """The parameters the version was trained with (MLflow's run Parameters), or why there are none."""
    st.markdown("**Trained with**")
    if info.params:
        # each column as wide as its longest text (tables.fitted_texts: Streamlit gave the values 45 px, 'accuracy'
        # showing as 'accurac', a walk in chromium)
        keys, key_column = tables.fitted_texts(list(info.params), 100, PARAM_KEY_PX)
        values, value_column = tables.fitted_texts(list(info.params.values()), 80, PARAM_VALUE_PX)
        tables.show(pd.DataFrame({"parameter": keys, "value": values}), hide_index=True, width="content", whole=True,
                    key=f"params-{info.ref}", column_config={"parameter": key_column, "value": value_column})
    else:
        st.caption("No training parameters were recorded with this version. `vera publish --metrics "
                   "DIR/metrics.json` records those `vera train` wrote, fine-tune jobs record theirs, and `vera "
                   "publish --param KEY=VALUE` those of a run trained elsewhere (versions published before "
                   "2026-12-05 have none).")


#: The most px the Trained with table's columns take (a longer key or value is cut with '…'; `vera show` has it).
PARAM_KEY_PX, PARAM_VALUE_PX = 260, 560


def evaluations(info: VersionInfo) -> list[EvaluationInfo]:
    """The evaluations recorded on the version after publish (none from a registry that predates them)."""
    try:
        return session.read(RegistryClient.evaluations, info.ref)
    except NotFound:
        return []


def storage_items(found: dict[str, Any], info: VersionInfo) -> list[views.Item]:
    """Where the version's bytes go, as a checklist (analysis.parameter_counts' numbers)."""
    items = [views.Item(True, "d and b", f"{formats.count(found['vector_parameters'])} parameters, "
                                         f"{formats.size(info.stored_bytes)} stored (content-addressed)")]
    if found["head_parameters"]:
        items.append(views.Item(None, "Task head", f"{formats.count(found['head_parameters'])} parameters, "
                                                   "stored with the vectors"))
    projection = ("regenerated from the seed (0 bytes stored)" if info.seed_reproducible else
                  f"stored once, shared ({formats.size(4 * found['projection_parameters'])})")
    items.append(views.Item(True if info.seed_reproducible else None, "Projection A and B", projection))
    return items


def run_verify(ref: str) -> None:
    """``on_click`` of Verify now: runs before the page, so the header already shows the new status."""
    result: VerificationReport | RegistryError
    try:
        result = session.call(lambda c: c.verify(ref))
    except RegistryError as exc:
        result = exc
    st.session_state["verify_result"] = (ref, result)
    st.cache_data.clear()


def verify(info: VersionInfo) -> None:
    st.caption("Regenerates A and B from the seed and compares fingerprints, re-hashes the stored blobs and checks "
               "the layer shapes against the base model.")
    st.button("Verify now", key="verify", on_click=run_verify, args=(info.ref,))
    ref, result = st.session_state.get("verify_result", (None, None))
    if ref != info.ref or result is None:
        return
    if isinstance(result, RegistryError):
        session.show_error(result)
        return
    (st.success if result.status == "passed" else st.error)(f"{result.ref}: {result.status}")
    if session.read(RegistryClient.whoami).read_only:  # (answered, not recorded: a newcomer's walk, session 54)
        st.caption("This registry is read-only: the result is not recorded, and the version keeps the status it had "
                   "(the header's).")
    views.checklist(views.verification_items(result.model_dump(mode="json")["checks"]))


def hub(info: VersionInfo) -> None:
    with st.form("hub_push"):
        st.markdown("**Push to the Hub** (PEFT's format and a model card; an unchanged push makes no commit)")
        repo = st.text_input("Repo id", placeholder="namespace/name")
        kind = st.radio("Format", ["VeRA with projections", "VeRA seed-only", "equivalent LoRA"], horizontal=True)
        private = st.checkbox("Private repo")
        token = st.text_input("Hub token (used once, never stored)", type="password")
        if st.form_submit_button("Push"):
            try:
                result = session.call(lambda c: c.hub_push(info.ref, repo, private=private,
                                                           with_projection=kind != "VeRA seed-only",
                                                           as_lora=kind == "equivalent LoRA", hub_token=token or None))
            except RegistryError as exc:
                session.show_error(exc)
            else:
                st.success(("Pushed" if result.changed else "Unchanged, no new commit:")
                           + f" {result.sync.repo_id}@{result.sync.commit_sha[:12]}")
                for note in result.notes:
                    st.warning(note)
                st.cache_data.clear()
    with st.form("hub_pull"):
        st.markdown(f"**Pull from the Hub** into {info.owner}/{info.name} (a PEFT VeRA adapter repo)")
        repo = st.text_input("Repo id to pull", placeholder="namespace/name")
        revision = st.text_input("Revision", value="main")
        token = st.text_input("Hub token", type="password", key="pull_token")
        if st.form_submit_button("Pull"):
            try:
                result = session.call(lambda c: c.hub_pull(repo, f"{info.owner}/{info.name}", revision=revision,
                                                           hub_token=token or None))
            except RegistryError as exc:
                session.show_error(exc)
            else:
                st.success(("Pulled as " if result.changed else "Unchanged, already ") + result.version.ref)
                st.cache_data.clear()
    st.markdown("**Sync state** (pushes and pulls of this version, newest first)")
    syncs = session.read(RegistryClient.hub_status, info.ref)
    if syncs:
        tables.show(pd.DataFrame([{"direction": s.direction, "repo": s.repo_id, "revision": s.revision,
                                   "commit": s.commit_sha[:12], "format": s.format if s.format == "lora" else (
                                       "vera" if s.with_projection else "vera, seed-only"),
                                   "by": s.actor, "at": s.at, "link": s.commit_url} for s in syncs]),
                    hide_index=True, width="stretch", column_config={"link": st.column_config.LinkColumn()})
    else:
        st.caption("Never pushed to or pulled from the HuggingFace Hub.")


def built_file(url: str, token: str, ref: str, name: str, options: dict[str, bool]) -> bytes:
    """One file as the registry builds it; called only when its download button is clicked (on Streamlit's own
    thread, so it gets the connection as arguments, not from the session)."""
    with session.connect(url, token, timeout=300) as c:
        return c.download(ref, name, with_projection=options.get("with_projection", False),
                          seed_only=options.get("seed_only", False), as_lora=options.get("as_lora", False))


def folder_name(info: VersionInfo, options: dict[str, bool]) -> str:
    """The downloaded folder's name: owner-name-vN, and the form unless it is the default (``-lora``)."""
    form = next((suffix for key, suffix in (("as_lora", "-lora"), ("with_projection", "-with-ab"),
                                            ("seed_only", "-seed-only")) if options.get(key)), "")
    return f"{info.owner}-{info.name}-v{info.version}{form}"


def built_folder(url: str, token: str, ref: str, names: tuple[str, ...], options: dict[str, bool],
                 folder: str) -> bytes:
    """The version's files in this form as one zip of the folder ``folder`` (PEFT's files, which
    ``PeftModel.from_pretrained`` loads once unzipped); built when its button is clicked (built_file)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.writestr(f"{folder}/{name}", built_file(url, token, ref, name, options))
    return out.getvalue()


def download_forms(info: VersionInfo) -> dict[str, dict[str, bool]]:
    """The forms the Download tab offers for ``info``, by label: the download's options. "with A and B" only where
    the default is seed-only (PEFT's generator, reproducible from its seed): elsewhere the default holds A and B
    already, and the two were the same file (a newcomer's walk, session 51); seed-only where the seed gives A and B."""
    forms: dict[str, dict[str, bool]] = {"for PEFT (default)": {}}
    if _default_is_seed_only(info):
        forms["with A and B"] = {"with_projection": True}
    if info.seed_reproducible:
        forms["seed-only (vera_core)"] = {"seed_only": True}
    return {**forms, "equivalent LoRA (vLLM, LoRAX)": {"as_lora": True}}


def _default_is_seed_only(info: VersionInfo) -> bool:
    """Whether the default download (what PEFT loads correctly) leaves A and B to the seed: PEFT's own generator,
    reproducible from its seed."""
    return info.generator == PEFT_GENERATOR and info.seed_reproducible


def downloads(info: VersionInfo) -> None:
    forms = download_forms(info)
    form = st.radio("Form", list(forms), horizontal=True,
                    help="The default is what PEFT loads correctly: seed-only where PEFT's own generator regenerates "
                         "A and B, A and B materialised otherwise. A seed-only copy of a portable-generator adapter "
                         "is for vera_core; PEFT refuses it with a message.")
    options = forms[form]
    url, token = session.settings()
    # a new user saw "Stored 120.0 KB" and got 3.27 MB for PEFT (session 23's walk): what makes a form larger, said
    larger = (options.get("with_projection") or options.get("as_lora")
              or (not options and not _default_is_seed_only(info)))
    holds = "the LoRA factors of every adapted layer" if options.get("as_lora") else "the projection A and B"
    st.caption("Each file is built by the registry when its button is clicked" + (
        f"; this form holds {holds}, so it is larger than the {formats.size(info.stored_bytes)} stored."
        if larger else "."))
    names = ADAPTER_FILES[:2] if options.get("as_lora") else ADAPTER_FILES
    # the folder in one file, named after the version and form: every form's files had PEFT's names, so two
    # downloads collided in the browser's folder (a dashboard walk, session 48)
    folder = folder_name(info, options)
    st.download_button(f"{folder}.zip (the folder)", functools.partial(built_folder, url, token, info.ref, names,
                                                                         options, folder),
                       file_name=f"{folder}.zip", mime="application/zip", key="dl-folder", on_click="ignore",
                       icon=":material/folder_zip:", type="primary")
    for name in names:
        st.download_button(name, functools.partial(built_file, url, token, info.ref, name, options), file_name=name,
                           key=f"dl-{name}", on_click="ignore", icon=":material/download:")
    flag = {"with_projection": " --with-projection", "seed_only": " --seed-only", "as_lora": " --as lora"}
    st.code(f"vera fetch {info.ref} --out {info.name}" + "".join(flag[k] for k in options), language="bash")
    adapted = ", ".join(f"`{m}`" for m in info.target_modules) if info.target_modules else "the model's defaults"
    # a LoRA export is PEFT's (vera_core loads VeRA adapters only): it was offered vera_core too (a walk, session 40)
    peft_refuses = options.get("seed_only") and info.generator != PEFT_GENERATOR
    loaders = ("`PeftModel.from_pretrained(base, folder)` (a LoRA), or serve it with vLLM's `--enable-lora`"
               if options.get("as_lora") else
               "`vera_core.load_adapter(base, folder)` (PEFT refuses a seed-only copy of this generator)"
               if peft_refuses else
               "`PeftModel.from_pretrained(base, folder)` or `vera_core.load_adapter(base, folder)`")
    st.caption(f"Load it onto `{info.base_model}`: {loaders}. It adapts {adapted}.")


#: The tab that is open (st.session_state), and what each tab but the model card shows, in order.
TAB = "adapter_tab"
#: The Adapter page's tab labels as last drawn, and the default they were drawn with (kept_tab).
TAB_LABELS = "adapter_tab_labels"
SECTIONS: dict[str, Callable[[VersionInfo], None]] = {
    "Versions and config": versions, "Lineage": lineage.section, "Metrics": metrics, "Layers": layers.section,
    "Verify": verify, "Hub": hub, "Download": downloads, "Edit": editing.section}
