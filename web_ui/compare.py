"""Compare: two to four versions side by side (``?refs=a,b`` in the URL). The picker searches every version through
the registry's text filter as the user types; typed references join the chosen ones."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput, NotFound
from registry.domain.schemas import Page, VersionInfo, compare_params, is_reference
from web_ui import charts, formats, navigation, session, tables
from web_ui.adapter import PARAM_KEY_PX, PARAM_VALUE_PX, yanked_banner
from web_ui.browse import MIXED_ACCURACY_PX, accuracy_cells, accuracy_column, key_metrics, mixed_accuracies

#: The page's heading (also shown above a message that its registry URL is wrong: session.guarded).
TITLE = "Compare"

BOX = "compare_box"
SEARCH = "compare_search"
#: How many matches of a search the picker offers (the newest first); the search narrows the rest down.
OPTIONS = 50


#: The most versions Compare shows side by side (a table row, a colour and a cosine grid each).
MOST = 4
#: Where add_typed leaves the message about references it could not add, for the run it triggers to show.
NOT_ADDED = "compare_not_added"


def add_typed() -> None:
    """``on_change`` of the reference box: typed references of versions there are join the chosen ones (at most
    four), then the box empties; those not added are named in a message, each with why: not a reference, no such
    version, or beyond four (kept for the page to show: a callback draws nothing). A misspelt reference took a place
    of the four, and a malformed one was refused as one too many (a walk in a browser, session 40)."""
    state = st.session_state
    chosen: list[str] = state[BOX]
    typed = [r for r in dict.fromkeys(navigation.split_refs(state["compare_typed"])) if r not in chosen]
    malformed = [r for r in typed if not is_reference(r)]
    asked = [r for r in typed if r not in malformed]
    try:
        found: dict[str, object] = dict(session.read(RegistryClient.lookup, tuple(asked))) if asked else {}
    except Exception:  # noqa: BLE001 - a courtesy: unchecked, they are added, and the page's reads say what fails
        found = dict.fromkeys(asked, True)
    missing = [r for r in asked if found.get(r) is None]
    new = [r for r in asked if r not in missing]
    room = max(0, MOST - len(chosen))
    state[BOX] = chosen + new[:room]
    said = ([f"{formats.listed(malformed)}: not a reference (owner/name:N, owner/name@alias or owner/name)"]
            if malformed else []) + ([f"{formats.listed(missing)}: no such version (or none you may read)"]
                                     if missing else [])
    if left := new[room:]:
        said.append(f"{formats.listed(left)}: Compare takes at most {MOST} versions and "
                    f"{len(chosen) + len(new[:room])} are chosen; remove one above (its ×) to add another")
    if said:
        state[NOT_ADDED] = "Not added: " + "; ".join(said) + "."
    state["compare_typed"] = ""
    navigation.write_url("refs", BOX, navigation.join_refs)


def matches() -> Page:
    """Versions matching the search box (owner, name or description; the registry searches all of them), newest
    first: the first OPTIONS, with their total."""
    text = str(st.session_state.get(SEARCH) or "").strip()
    return session.read(RegistryClient.list_versions, q=text or None, limit=OPTIONS, with_total=True)


def newest_two(found: Page) -> str:
    """The picker's first choice: the registry's newest two versions (from ``found`` when it lists them)."""
    if st.session_state.get(SEARCH) or len(found.items) < min(2, found.total or 0):
        found = session.read(RegistryClient.list_versions, limit=2)
    return navigation.join_refs([v.ref for v in found.items[:2]])


def options(found: Page) -> list[str]:
    """The references ``found`` offers; says how many matched when they are more than the picker offers."""
    text = str(st.session_state.get(SEARCH) or "").strip()
    refs = [v.ref for v in found.items]
    total = found.total if found.total is not None else len(refs)
    if text:
        st.caption(f"{formats.matching(total)} {text!r}" + (f"; the newest {OPTIONS} are offered below." if
                                                          total > OPTIONS else "."))
    elif total > OPTIONS:
        st.caption(f"The newest {OPTIONS} of {total:,} versions are offered; search to find any other.")
    return refs


def picker() -> list[str]:
    """The search box, the chosen versions and the reference box; the chosen references."""
    linked = navigation.split_refs(st.query_params.get("refs", ""))
    for ref in linked[:MOST]:  # read below: meanwhile, the search (a link's first MOST only: a link is anyone's)
        session.prefetch(RegistryClient.get, ref)
    found = matches()
    navigation.follow_url("refs", BOX, decode=lambda text: navigation.split_refs(text)[:MOST],
                          default=lambda: newest_two(found))
    if len(linked) > MOST:
        st.warning(f"The address names {len(linked)} versions; Compare shows {MOST} at most: the first {MOST}.",
                   icon=":material/playlist_remove:")
    st.text_input("Search versions", key=SEARCH, live=True, type="search", placeholder="owner, name or description",
                  help="Searches every version in the registry as you type.")
    offered = options(found)
    chosen: list[str] = st.session_state[BOX]
    refs: list[str] = st.multiselect("Versions (2 to 4)", chosen + [r for r in offered if r not in chosen], key=BOX,
                                     max_selections=MOST, on_change=navigation.write_url,
                                     args=("refs", BOX, navigation.join_refs))
    st.text_input("Add versions by reference (comma-separated)", key="compare_typed", on_change=add_typed,
                  placeholder="alice/a:1, bob/b@prod")
    if message := st.session_state.pop(NOT_ADDED, None):
        st.warning(message, icon=":material/playlist_remove:")
    return refs


Pinned = tuple[tuple[str, str, str], ...]  # (owner/name:N, vectors' SHA-256, projection fingerprint) per version


def layer_comparison(client: RegistryClient, pinned: Pinned) -> list[dict[str, Any]]:
    """The registry's per-layer comparison of the versions ``pinned`` names with the first (``with_first``: each
    version's delta cosine with the first's, over the first's layers that any other adapts): computed from their
    tensors, so it changes only when what ``pinned`` holds does. A registry older than ``with_first`` answers
    the layers every version adapts only: those, the same way."""
    result = client.compare([ref for ref, _, _ in pinned])
    if result.with_first is None:
        return [{"module": layer.module, "cosine": layer.delta_cosine[0]} for layer in result.layers]
    return [layer.model_dump() for layer in result.with_first]


def readable(refs: list[str]) -> list[VersionInfo]:
    """The versions ``refs`` name, each once: a reference the registry refuses (a typo, an adapter not there) is
    said beside the others, which are still compared (it replaced the whole page), and a reference that names a
    version already chosen (``@prod`` is ``:1``) is said and dropped (the page compared a version with itself)."""
    versions: dict[str, tuple[str, VersionInfo]] = {}  # owner/name:N -> the reference that named it first
    for ref in refs:
        try:
            info = session.read(RegistryClient.get, ref)
        except (NotFound, InvalidInput) as exc:
            st.warning(f"{ref}: {session.dashboard_words(str(exc))} Remove it from the box above to compare the "
                       "others.", icon=":material/error:")
            continue
        if info.ref in versions:
            st.warning(f"{ref} is {info.ref}, the version {versions[info.ref][0]} names too: it is compared once. "
                       "Choose another version to compare with.", icon=":material/content_copy:")
            continue
        versions[info.ref] = (ref, info)
    return [info for _, info in versions.values()]


def page() -> None:
    st.title(TITLE)
    refs = picker()
    if not 2 <= len(refs) <= MOST:
        st.info("Choose two to four versions.")
        return
    for ref in refs:
        session.prefetch(RegistryClient.get, ref)
    versions = readable(refs)
    if len(versions) < 2:
        st.info("Choose two to four different versions.")
        return
    for info in versions:  # a yanked version compared read like any other, the best one perhaps (a dashboard
        # walk, session 48)
        if info.yanked:
            yanked_banner(info, "Compared here as asked; choose another version to use.")
    pinned = tuple((v.ref, v.vectors_sha256, v.projection_fingerprint) for v in versions)
    # the slow part, computed while the table and curves draw: against the version the Against box holds (a link's
    # ?against= too: a comparison shared is the same comparison)
    navigation.follow_url("against", AGAINST)
    session.prefetch_pinned(layer_comparison, tuple(pinned[i] for i in against_order([v.ref for v in versions])))
    navigation.set_param("refs", navigation.join_refs(refs))
    side_by_side(versions)
    differing_params(versions)
    st.subheader("Per-layer cosine similarity of the weight deltas")
    versions, pinned = against(versions, pinned)
    layers = session.read_pinned(layer_comparison, pinned)
    alone = charts.without_cosine(layers, len(versions))
    apart = [j for j in range(1, len(versions)) if j not in alone and versions[0].projection_differences(versions[j])]
    cosine = charts.cosine_heatmap(without(layers, apart), [v.ref for v in versions])
    if cosine is not None:
        st.caption(cosine_caption([v for j, v in enumerate(versions) if j not in alone + apart], bool(apart)))
    if apart:
        st.caption(other_projection_caption(versions[0], [versions[j] for j in apart]))
    if alone:
        st.caption(without_cosine_caption(versions[0], [versions[j] for j in alone], len(versions) >= 3))
    if cosine is not None:
        st.altair_chart(cosine, width="content")


#: The Against box's choice (st.session_state): which version the cosine grids compare the others with.
AGAINST = "compare_against"


def against(versions: list[VersionInfo], pinned: Pinned) -> tuple[list[VersionInfo], Pinned]:
    """The versions and their pins with the one the grids compare the others with first: with three or more, the
    Against box chooses it (the grids compared each with the first chosen only: a walk's finding, session 40)."""
    if len(versions) < 3:
        return versions, pinned
    refs = [v.ref for v in versions]
    if st.session_state.get(AGAINST) not in refs:  # the versions changed: the first, as before
        st.session_state[AGAINST] = refs[0]
    st.selectbox("Against", refs, key=AGAINST, on_change=navigation.write_url, args=("against", AGAINST),
                 help="the version each grid compares the others with (the registry compares them again, from their "
                      "tensors)")
    order = against_order(refs)
    return [versions[i] for i in order], tuple(pinned[i] for i in order)


def against_order(refs: list[str]) -> list[int]:
    """The positions of ``refs`` with the Against box's version first (the first, with fewer than three or none
    chosen among them), the others in their order."""
    chosen = st.session_state.get(AGAINST)
    first = refs.index(chosen) if len(refs) >= 3 and chosen in refs else 0
    return [first, *(i for i in range(len(refs)) if i != first)]


def without(layers: list[dict[str, Any]], apart: list[int]) -> list[dict[str, Any]]:
    """``layers`` (as charts.cosine_heatmap takes them) without the cosines of the versions at the positions
    ``apart``: no grid is drawn for them."""
    return [{**layer, "cosine": [None if j in apart else c for j, c in enumerate(layer["cosine"])]}
            for layer in layers]


#: Compare's table at 1,400 px beside the sidebar (measured in chromium: 939 px): the px each column but the
#: version gets; the version takes what its longest name needs of the rest.
TABLE_PX = 920
WIDTHS = {"base model": 90, "r": 36, "projection": 124, "adapter params": 112, "stored": 68, "accuracy": 68,
          "eval loss": 72, "verified": 72}
#: The base model column grows from 90 px to show the longest name whole, up to this.
BASE_MODEL_MAX_PX = 170
COLUMNS: dict[str, Any] = {
    "r": st.column_config.NumberColumn(width=WIDTHS["r"]),
    "projection": st.column_config.TextColumn(width=WIDTHS["projection"], help="generator #seed: versions with the "
                                              "same projection and rank share A and B (full names on the Adapter "
                                              "page)"),
    "adapter params": st.column_config.NumberColumn(format="localized", width=WIDTHS["adapter params"],
                                                    help="d and b: what `vera ls` counts (the Adapter page also "
                                                         "counts a trained task head)"),
    "stored": st.column_config.NumberColumn(width=WIDTHS["stored"]),  # written by formats.size: web_ui.tables
    "verified": st.column_config.TextColumn(width=WIDTHS["verified"], help="verification status: passed, failed "
                                                                           "or not yet"),
}


def table(versions: list[VersionInfo]) -> pd.DataFrame:
    """One row per version, the columns that fit 1,400 px, each cell whole or cut with '…'."""
    base_px = base_model_width(versions)
    return pd.DataFrame([{
        "version": navigation.version_link(v.ref), "base model": formats.fit(v.base_model, base_px),
        "r": v.r, "projection": formats.fit(formats.projection(v.generator, v.seed), WIDTHS["projection"]),
        "adapter params": v.adapter_parameters, "stored": v.stored_bytes, "accuracy": accuracy,
        "eval loss": key_metrics(v)["eval loss"],
        "verified": formats.VERIFIED.get(v.verification_status, v.verification_status),
    } for v, accuracy in zip(versions, accuracy_cells(versions), strict=True)])


def base_model_width(versions: list[VersionInfo]) -> int:
    return formats.text_width((v.base_model for v in versions), WIDTHS["base model"], BASE_MODEL_MAX_PX)


def widths(versions: list[VersionInfo]) -> dict[str, int]:
    """Each column's px: the base model as wide as the longest name needs (up to BASE_MODEL_MAX_PX), the version
    what the longest reference needs within what the other columns leave."""
    fixed = WIDTHS | {"base model": base_model_width(versions)} | (
        {"accuracy": MIXED_ACCURACY_PX} if mixed_accuracies(versions) else {})  # "0.9000 eval"
    return fixed | {"version": min(max(formats.cell_width(v.ref) for v in versions), TABLE_PX - sum(fixed.values()))}


def version_width(versions: list[VersionInfo]) -> int:
    """The version column's px (``widths``)."""
    return widths(versions)["version"]


def side_by_side(versions: list[VersionInfo]) -> None:
    """The versions' numbers as a table, and their loss curves."""
    frame = table(versions)
    px = widths(versions)
    tables.show(frame, sizes=("stored",), hide_index=True, width="stretch", column_config=COLUMNS | {
        "version": navigation.version_column(px["version"]),
        "base model": st.column_config.TextColumn(width=px["base model"]),
        "accuracy": accuracy_column(versions, px["accuracy"]),
        "eval loss": formats.metric_column(frame["eval loss"], width=WIDTHS["eval loss"], help="final eval loss")})
    train = {v.ref: v.metrics.get("train_loss") or [] for v in versions}
    evals = {v.ref: charts.eval_points(v.metrics.get("eval") or []) for v in versions}
    kept = charts.kept_steps({v.ref: v.metrics for v in versions})
    curves = charts.loss_curves(train, evals, kept)
    st.subheader("Loss curves")
    if curves is None:
        st.caption("None of these versions recorded a loss curve (versions trained by a job do).")
        return
    st.altair_chart(curves, width="stretch")
    if none := [ref for ref in train if not train[ref] and not evals[ref]]:
        st.caption(f"No loss curve was recorded for {', '.join(none)} (versions trained by a job record one).")
    for curve in charts.metric_curves({v.ref: v.metrics.get("eval") or [] for v in versions},
                                      charts.step_span(train, evals), kept):
        st.altair_chart(curve, width="stretch")


def differing_params(versions: list[VersionInfo]) -> None:
    """The training parameters whose values differ, a column per version (MLflow's run comparison), or what the
    versions record of them."""
    st.subheader("Trained with")
    recorded, differing, shared = compare_params(versions)
    unrecorded = [v.ref for v in versions if not v.params]
    if differing:
        keys, key_column = tables.fitted_texts(list(differing), 100, PARAM_KEY_PX)
        columns = {v.ref: tables.fitted_texts([v.params.get(key) for key in differing], 80, PARAM_VALUE_PX, v.ref)
                   for v in versions}
        tables.show(pd.DataFrame({"parameter": keys, **{ref: cells for ref, (cells, _) in columns.items()}}),
                    hide_index=True, width="content", whole=True, column_config={
                        "parameter": key_column, **{ref: column for ref, (_, column) in columns.items()}})
        said = [f"The {formats.counted(len(differing), 'parameter')} whose values differ" + (
            f"; the {shared} that all share are left out." if shared else " (none is the same in all).")]
        if any(c is None for cells, _ in columns.values() for c in cells):
            said.append(f"{formats.MISSING} where a version does not record the parameter.")
        st.caption(" ".join(said))
    elif len(recorded) > 1:
        st.caption(f"{formats.listed([v.ref for v in recorded])} were trained with the same "
                   f"{len(recorded[0].params)} parameters.")
    if unrecorded:
        st.caption(f"{formats.listed(unrecorded)} recorded no training parameters (a version published before "
                   "2026-12-05, or without them).")


def cosine_caption(versions: list[VersionInfo], others_apart: bool = False) -> str:
    """What the cosine grid shows, and why it is meaningful for ``versions`` (the first, then those drawn against
    it: each shares its projection); ``others_apart``: some versions compared are left out for another projection."""
    first, drawn = versions[0], versions[1:]
    text = (f"cos(ΔW of each version, ΔW of {first.ref}) per layer, where ΔW = diag(b) B diag(d) A: 1 = the same "
            "direction, 0 = unrelated, -1 = opposite.")
    shared = (f"{formats.listed([v.ref for v in drawn])} {'shares' if len(drawn) == 1 else 'share'} {first.ref}'s "
              "projection (generator, seed and rank)" if others_apart else
              f"All share {first.ref}'s projection (generator, seed and rank)")
    said = text + f" {shared}, so A and B are the same matrices and the cosine compares what d and b learned."
    elsewhere = [v for v in drawn if v.base_model != first.base_model]
    if elsewhere:  # same layer shapes under another name: compared silently before (a newcomer's walk, session 51)
        said += (f" {formats.listed([f'{v.ref} ({v.base_model})' for v in elsewhere])} "
                 f"{'is' if len(elsewhere) == 1 else 'are'} on another base model than {first.ref} "
                 f"({first.base_model}): the same layer shapes, so the deltas compare, but learned on different "
                 "base models.")
    return said


def other_projection_caption(first: VersionInfo, apart: list[VersionInfo]) -> str:
    """Why the versions ``apart`` (on another projection than the first's) get no grid, in one sentence."""
    named = "; ".join(f"{v.ref} ({', '.join(first.projection_differences(v))})" for v in apart)
    it, its = ("it", "its") if len(apart) == 1 else ("they", "their")
    return (f"No cosine grid for {named}: on another projection than {first.ref}'s (generator {first.generator}, "
            f"seed {first.seed}, r {first.r}), {its} A and B are other random matrices, and deltas built on "
            f"independent random matrices are nearly orthogonal, so {its} cosine would be about 0 whatever {it} "
            f"learned; compare {'it' if len(apart) == 1 else 'them'} by the metrics above, or with versions on "
            f"{its} own projection.")


def without_cosine_caption(first: VersionInfo, alone: list[VersionInfo], choosable: bool = False) -> str:
    """Why each version in ``alone`` has no grid: another base model than the first's (said once per base model,
    both named), or, on the same one, no layer whose delta can be set beside the first's; and what to do
    (``choosable``: the Against box is there, with three versions or more)."""
    by_base: dict[str, list[str]] = {}
    for v in alone:
        if v.base_model != first.base_model:
            by_base.setdefault(v.base_model, []).append(v.ref)
    reasons = [f"{formats.listed(refs)}: on another base model ({base}; {first.ref} is on {first.base_model}), so "
               f"{'it adapts' if len(refs) == 1 else 'they adapt'} no layer in common with {first.ref}"
               for base, refs in by_base.items()]
    reasons += [f"{v.ref}: no layer comparable with {first.ref}'s (it adapts other modules of {v.base_model}, or "
                "the registry does not know their shapes: `vera base register` declares them)"
                for v in alone if v.base_model == first.base_model]
    it = "it" if len(alone) == 1 else "them"
    firsts = " or ".join(dict.fromkeys(v.base_model for v in alone if v.base_model != first.base_model))
    hint = ("" if not firsts else f"; choose a version on {firsts} under Against to see their deltas side by side"
            if choosable else f"; compare versions on {firsts} with one another to see their deltas side by side")
    return f"No cosine grid for {'; '.join(reasons)}. Compare {it} by the metrics above{hint}."


