"""Browse: every adapter version, filtered, sorted and paged by the registry (MLflow-style filters and metric sorts
run on the server, over every page)."""

from __future__ import annotations

from typing import Any, NamedTuple

import pandas as pd
import streamlit as st

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput
from registry.domain.schemas import Page, VersionInfo
from vera_core.config import KNOWN_GENERATORS
from web_ui import formats, getting_started, metric_names, navigation, session, tables

#: The page's heading (also shown above a message that its registry URL is wrong: session.guarded).
TITLE = "Browse adapters"

SORT_LABELS = {"-created": "newest", "created": "oldest", "-trainable_parameters": "most trainable parameters",
               "trainable_parameters": "fewest trainable parameters", "-stored_bytes": "largest stored",
               "stored_bytes": "smallest stored", "-r": "highest rank", "r": "lowest rank",
               "verification_status": "verification status", "-metrics.test.accuracy": "highest test accuracy",
               "-metrics.final_eval.accuracy": "highest eval accuracy", "metrics.final_eval.loss": "lowest eval loss"}
FILTER_HELP = ("MLflow-style clauses joined by `and`, run by the registry over every version: "
               "`metrics.test.accuracy > 0.9 and r <= 256`, `base_model = 'minilm'`, `tag in ('prod', 'demo')`, "
               "`created > '2026-11-01'`, `properties.validation = 'passed'` (a version's key=value properties), "
               "`params.lr = '0.01'` (what it was trained with, as text; `params.schedule in ('cosine', 'linear')`), "
               "`published_via.repository = 'acme/adapters'` (what a CI run published: also `published_via.sha`, "
               "`.ref`, `.publisher`). `properties.validation is null`: the versions without that property (`is not "
               "null`: with it; also on `metrics.<key>`). Strings in single quotes.")
METRIC_SORT_HELP = ("A metric's dotted name, e.g. `test.accuracy` (highest first) or `+final_eval.loss` (lowest "
                    "first). The registry sorts every page by it; versions without that metric are left out.")


def accuracy_of(info: VersionInfo) -> tuple[float | None, str]:
    """The accuracy people compare and where it comes from: the test split's ("test": ``test.accuracy``, or the
    Trainer's ``test_accuracy``), else the final evaluation's ("eval": ``final_eval.accuracy``, or the Trainer's
    ``eval_accuracy``), else a flat 'accuracy' metric (""); (None, "") when the version records none."""
    metrics: dict[str, Any] = info.metrics
    if (test := formats.metric_at(metrics, "test", "accuracy", "test_accuracy")) is not None:
        return test, "test"
    if (final := formats.metric_at(metrics, "final_eval", "accuracy", "eval_accuracy")) is not None:
        return final, "eval"
    return formats.number_or_none(metrics.get("accuracy")), ""


def key_metrics(info: VersionInfo) -> dict[str, float | None]:
    """The numbers people compare: test and eval accuracy (or any flat 'accuracy'), final eval loss
    (``final_eval.loss``, else the Trainer's ``eval_loss``, else a flat 'loss')."""
    return {"accuracy": accuracy_of(info)[0],
            "eval loss": formats.metric_at(info.metrics, "final_eval", "loss", "eval_loss", "loss")}


#: The accuracy column's header and help by where a page's accuracies come from; on a page mixing test and eval
#: accuracies the eval ones say so in their cell ("0.5622 eval"): the header alone let an eval-only version look best.
ACCURACY_LABELS = {frozenset({"test"}): ("test acc.", "accuracy on the test split"),
                   frozenset({"eval"}): ("eval acc.", "accuracy of the final evaluation (these versions record no "
                                                      "test accuracy)")}
MIXED_ACCURACY = ("accuracy", "accuracy on the test split; 'eval': the version records none, this is its final "
                  "evaluation's accuracy (not comparable with the others)")


def accuracy_sources(items: list[VersionInfo]) -> frozenset[str]:
    return frozenset(source for value, source in map(accuracy_of, items) if value is not None)


def mixed_accuracies(items: list[VersionInfo]) -> bool:
    return {"test", "eval"} <= accuracy_sources(items)


def accuracy_cells(items: list[VersionInfo]) -> list[float | str | None]:
    """Each version's accuracy for a table: a number, or, on a page that mixes test and eval accuracies, text in
    one number of decimals with the eval ones saying so ("0.9000 eval")."""
    values = [accuracy_of(v) for v in items]
    if not mixed_accuracies(items):
        return [value for value, _ in values]
    decimals = formats.metric_format(value for value, _ in values)
    return [None if value is None else decimals % value + (" eval" if source == "eval" else "")
            for value, source in values]


def metric_value(info: VersionInfo, dotted: str) -> float | None:
    """The version's metric ``dotted`` (``test.accuracy``: nested objects joined by dots), None when it has none."""
    value: Any = info.metrics
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def sorted_metric(sort: str) -> str | None:
    """The metric a sort orders by (``-metrics.test.accuracy`` -> ``test.accuracy``), None for a column sort."""
    return sort.lstrip("-").removeprefix("metrics.") if sort.lstrip("-").startswith("metrics.") else None


LOCK = "\N{LOCK}"

#: The room Browse's table has at 1,400 px beside the sidebar, less its tick column (measured in chromium: 939 px),
#: and the px each column but the version gets; the version takes what its longest name needs of the rest.
TABLE_PX = 890
WIDTHS = {"base model": 90, "r": 36, "stored": 68, "params": 68, "accuracy": 68, "downloads": 84, "verified": 72,
          "labels": 120, "created": 86}
VERSION_MIN_PX = 120
#: The base model column grows from WIDTHS' 90 px to show the page's longest name whole, up to this (session 12's
#: walk: 'tiny-roberta' was cut to 'tiny-robe…' beside room to spare).
BASE_MODEL_MAX_PX = 170
#: The labels column grows from WIDTHS' 120 px to show every alias of the page's versions whole (with '+N' for
#: their tags), up to what leaves the version column VERSION_MIN_PX beside the page's base model and score columns:
#: at least this, beside the widest base model column.
LABELS_MAX_PX = TABLE_PX - VERSION_MIN_PX - (sum(WIDTHS.values()) - WIDTHS["params"] - WIDTHS["labels"]
                                             - WIDTHS["base model"] + BASE_MODEL_MAX_PX)


def base_model_width(items: list[VersionInfo]) -> int:
    return formats.text_width((v.base_model for v in items), WIDTHS["base model"], BASE_MODEL_MAX_PX)


class Widths(NamedTuple):
    """The px of the columns that grow with the page (base model, score, labels), and of every column but the
    version together (what the version column's room is TABLE_PX less)."""

    base_model: int
    score: int
    labels: int
    others: int


def widths(items: list[VersionInfo], metric: str | None = None) -> Widths:
    """The page's growing columns, each computed once (the labels from what the others leave). The labels: room for
    each version's lock and aliases whole, and the '+N' of its tags (a team lead's walk: '@latest +5' hid @prod), at
    least WIDTHS' and at most what the page's other columns leave the version column VERSION_MIN_PX of (a new user's
    walk: '@prod, @latest, fine-tune' needs 192 px, more than LABELS_MAX_PX, and hid the tag beside a short base
    model name)."""
    base_px, score_px = base_model_width(items), score_width(items, metric)
    fixed = (sum(WIDTHS.values()) - WIDTHS["params"] - WIDTHS["labels"] - WIDTHS["base model"] - WIDTHS["accuracy"]
             + base_px + score_px)
    room = max(LABELS_MAX_PX, TABLE_PX - VERSION_MIN_PX - fixed)
    labels_px = formats.text_width(map(kept_labels, items), WIDTHS["labels"], room)
    # then every tag too, in what the version column does not need for the page's names ('@latest +2' hid two
    # short tags beside room to spare: a dashboard walk, session 48)
    names_px = max(VERSION_MIN_PX, max((formats.cell_width(v.ref) for v in items), default=VERSION_MIN_PX))
    spare = min(room, TABLE_PX - names_px - fixed)
    labels_px = formats.text_width((", ".join(labels(v)) for v in items), labels_px, max(labels_px, spare))
    return Widths(base_px, score_px, labels_px, fixed + labels_px)


def score_width(items: list[VersionInfo], metric: str | None = None) -> int:
    """The px of the accuracy column, or of the metric sorted by that takes its place."""
    if metric:
        return max(WIDTHS["accuracy"], formats.cell_width(metric) + 20)
    return MIXED_ACCURACY_PX if mixed_accuracies(items) else WIDTHS["accuracy"]


def kept_labels(v: VersionInfo) -> str:
    """What of a version's labels Browse's column makes room for: its lock and aliases, then its one tag whole, or
    '+N' for its tags (a new user's walk: '@latest +1' hid the only tag, as long as the '+1')."""
    kept = labels(v)[:(v.visibility == "private") + len(v.aliases) + (len(v.tags) == 1)]
    return ", ".join(kept) + (f" +{len(v.tags)}" if len(v.tags) > 1 else "")


def size_column(sort: str) -> str:
    """'params' when the listing is sorted by trainable parameters (the column sorted by is shown), else 'stored'."""
    return "params" if sort.lstrip("-") == "trainable_parameters" else "stored"


def labels(v: VersionInfo) -> list[str]:
    """A lock for a private adapter, "yanked" for a yanked version, then its aliases (@prod first, @latest last) and
    its tags."""
    return ([LOCK] * (v.visibility == "private") + ["yanked"] * v.yanked
            + [f"@{a}" for a in formats.ordered_aliases(v.aliases)] + list(v.tags))


def table(items: list[VersionInfo], metric: str | None = None, sort: str = "-created") -> pd.DataFrame:
    """One row per version, the columns that fit 1,400 px beside the sidebar, each cell whole or cut with '…'
    (projection, trainable parameters, eval loss and exact bytes are on the Adapter and Compare pages). Labels are
    a lock for a private adapter, its aliases and its tags; sorted by a metric, that metric's column takes the place
    of accuracy, and sorted by trainable parameters, they take the place of the stored size."""
    size, page = size_column(sort), widths(items, metric)

    scores: list[dict[str, float | str | None]] = (
        [{metric: metric_value(v, metric)} for v in items] if metric
        else [{"accuracy": cell} for cell in accuracy_cells(items)])
    return pd.DataFrame([{
        "version": navigation.version_link(v.ref), "base model": formats.fit(v.base_model, page.base_model),
        "r": v.r, size: v.stored_bytes if size == "stored" else v.trainable_parameters, **score,
        "downloads": v.downloads, "verified": formats.VERIFIED.get(v.verification_status, v.verification_status),
        "labels": formats.fit_list(labels(v), page.labels), "created": v.created_at,
    } for v, score in zip(items, scores, strict=True)])


def columns(items: list[VersionInfo], metric: str | None = None) -> dict[str, Any]:
    """The table's column settings: the version as wide as its longest name needs, in what the others leave; a
    metric, the accuracy otherwise, with one number of decimals in every row (formats.metric_format)."""
    page = widths(items, metric)
    needed = max((formats.cell_width(v.ref) for v in items), default=VERSION_MIN_PX)
    version = max(VERSION_MIN_PX, min(needed, TABLE_PX - page.others))
    return COLUMNS | {"version": navigation.version_column(version),
                      "base model": st.column_config.TextColumn(width=page.base_model),
                      "labels": st.column_config.TextColumn(width=page.labels, help=LABELS_HELP)} | (
        {metric: formats.metric_column((metric_value(v, metric) for v in items), width=page.score)} if metric else
        {"accuracy": accuracy_column(items, page.score)})


def accuracy_column(items: list[VersionInfo], width: int) -> Any:
    """The accuracy column, named for where its values come from (test, eval, or both: then as text)."""
    sources = accuracy_sources(items)
    mixed = {"test", "eval"} <= sources  # mixed_accuracies, from the sources read once
    label, help_text = MIXED_ACCURACY if mixed else ACCURACY_LABELS.get(
        sources, ("accuracy", "test accuracy, else the final evaluation's"))
    if mixed:
        return st.column_config.TextColumn(label, width=width, help=help_text, alignment="right")  # as numbers
    return formats.metric_column((accuracy_of(v)[0] for v in items), label=label, width=width, help=help_text)


MIXED_ACCURACY_PX = 100
LABELS_HELP = (f"{LOCK}: private, seen only by its owner, the owning organisation's members and admins; @name: an "
               "alias (every one, @prod first); then its tags. +N: more, on its Adapter page")
COLUMNS: dict[str, Any] = {
    "r": st.column_config.NumberColumn(width=WIDTHS["r"]),
    "stored": st.column_config.NumberColumn(width=WIDTHS["stored"]),  # written by formats.size: web_ui.tables
    "params": st.column_config.NumberColumn(
        format="localized", width=WIDTHS["params"], help="trainable parameters: d and b plus any trained task head; "
                                                         "`vera ls` shows d and b only"),
    "downloads": st.column_config.NumberColumn(format="localized", width=WIDTHS["downloads"],
                                               help="downloads of its weights (counted in batches: may lag ~10 s)"),
    "verified": st.column_config.TextColumn(width=WIDTHS["verified"], help="verification status (Verify on the "
                                                                           "Adapter page): passed, failed or not yet"),
    "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD", width=WIDTHS["created"], timezone="UTC",
                                               help="published on (the date in UTC)"),
}


#: The popover holding the filter form (its open state is in st.session_state under this key).
FILTERS = "browse_filters"
#: The form's values last applied (st.session_state): the listing follows them whether the form is drawn or not.
APPLIED_FORM = "browse_form"
#: The form's fields and their values before anything is applied.
FORM_DEFAULTS: dict[str, Any] = {"owner": "", "base": "any", "rank": "", "seed": "", "generator": "any", "tag": "",
                                 "text": "", "sort": "-created", "filter": "", "metric": "", "size": 50,
                                 "yanked": False, "latest": False}


def field_key(name: str) -> str:
    """The session-state key of the form's field ``name``."""
    return f"browse_form_{name}"


def form_values() -> dict[str, Any]:
    """The form's values last applied (the defaults before any)."""
    return {**FORM_DEFAULTS, **st.session_state.get(APPLIED_FORM, {})}


def applying() -> None:
    """Apply's callback, before the rerun: the form's values are kept as the applied ones, the listing goes back
    to its first page, and the popover closes to show the result."""
    state = st.session_state
    state[APPLIED_FORM] = {name: state[field_key(name)] for name in FORM_DEFAULTS if field_key(name) in state}
    state["browse_cursors"] = [None]
    state[FILTERS] = False


#: Rows per page the form offers (a select box: the same lazily loaded widget code as the form's other choices).
PAGE_SIZES = [25, 50, 100, 250, 500]


def filter_form(values: dict[str, Any]) -> None:
    """The filter form, showing ``values`` (the applied ones); Apply applies what it then holds. Drawn only while
    its popover is open: a closed one costs neither its widgets nor the base-model list."""
    bases = ["any", *(b.name for b in session.read(RegistryClient.base_models))]
    seeded = {**values, "base": values["base"] if values["base"] in bases else "any"}
    for name, value in seeded.items():  # its fields start from what is applied (a closed form keeps no state)
        st.session_state.setdefault(field_key(name), value)
    with st.form("filters"):
        c1, c2, c3, c4 = st.columns(4)
        c1.text_input("Owner", key=field_key("owner"))
        c2.selectbox("Base model", bases, key=field_key("base"))
        c3.text_input("Rank", help="empty: any", key=field_key("rank"))
        c4.text_input("Seed", key=field_key("seed"))
        c5, c6, c7, c8 = st.columns(4)
        c5.selectbox("Generator", ["any", *KNOWN_GENERATORS], key=field_key("generator"))
        c6.text_input("Tag", key=field_key("tag"))
        c7.text_input("Search", help="owner, name or description", key=field_key("text"))
        c8.selectbox("Sort", list(SORT_LABELS), format_func=SORT_LABELS.__getitem__, key=field_key("sort"))
        c9, c10, c11 = st.columns([4.5, 2, 1.5])
        c9.text_input("Filter", placeholder="metrics.test.accuracy > 0.9 and r <= 256", help=FILTER_HELP,
                      key=field_key("filter"))
        c10.text_input("Sort by metric", placeholder="test.accuracy", help=METRIC_SORT_HELP, key=field_key("metric"))
        c11.selectbox("Rows per page", PAGE_SIZES, key=field_key("size"))
        # `vera ls --include-yanked` had no box here (a walk in a browser, session 40)
        st.checkbox("Include yanked versions", key=field_key("yanked"),
                    help="Yanked versions are left out of listings and latest; ticked, they are listed too, labelled "
                         "yanked.")
        st.form_submit_button("Apply", on_click=applying)


def choices(values: dict[str, Any]) -> dict[str, Any]:
    """list_versions' arguments (None where unset) and the page size, from the form's values."""
    rank, seed = values["rank"].strip(), values["seed"].strip()
    return {"owner": values["owner"].strip() or None, "base_model": None if values["base"] == "any" else values["base"],
            "r": int(rank) if rank.isdigit() and int(rank) > 0 else None,
            "seed": int(seed) if seed.isdigit() else None,
            "generator": None if values["generator"] == "any" else values["generator"],
            "tag": values["tag"].strip() or None, "q": values["text"].strip() or None,
            "sort": metric_sort(values["metric"]) or values["sort"], "limit": values["size"],
            "filter": values["filter"].strip() or None, "include_yanked": bool(values["yanked"]) or None,
            "latest": bool(values["latest"]) or None}


def ignored(values: dict[str, Any]) -> list[str]:
    """What the form holds that is not used, said: a rank or seed that is not a whole number."""
    return [f"{label} {typed!r} is not a whole number; it is ignored." for label, typed in
            (("Rank", values["rank"].strip()), ("Seed", values["seed"].strip())) if typed and not typed.isdigit()]


def metric_sort(text: str) -> str | None:
    """The registry's sort for what was typed in Sort by metric: highest first unless it starts with '+'
    (``test.accuracy`` -> ``-metrics.test.accuracy``; ``+loss`` -> ``metrics.loss``); None when empty."""
    text = text.strip()
    if not text:
        return None
    lowest, key = text.startswith("+"), text.lstrip("+-").removeprefix("metrics.")
    return ("" if lowest else "-") + f"metrics.{key}"


def listing(chosen: dict[str, Any], cursor: str | None) -> Page | None:
    """The page of versions the registry answers for the form's choices; None (and a message saying what the
    registry found wrong) when it refuses them, e.g. a filter that does not parse."""
    try:
        return session.read(RegistryClient.list_versions, cursor=cursor, with_total=True, **chosen)
    except InvalidInput as exc:
        what = "filter or metric sort" if chosen["filter"] else "sort"
        st.error(f"The registry refused this {what}: {exc}\n\nFix it in the form above; the syntax is in the "
                 "Filter box's help (?).", icon=":material/filter_alt_off:")
        return None


#: The form's choices that narrow the listing down (a metric sort does too: versions without the metric are left out).
NARROWING = ("owner", "base_model", "r", "seed", "generator", "tag", "q", "filter")


def empty_registry(chosen: dict[str, Any], cursor: str | None, result: Page) -> bool:
    """Whether the registry holds no version at all: the first page of an unnarrowed listing is empty (the page
    learns it from its own listing, not from a request of its own)."""
    unnarrowed = all(chosen[k] is None for k in NARROWING) and sorted_metric(chosen["sort"]) is None
    return unnarrowed and cursor is None and not result.items


#: How the caption names each narrowing choice that is set.
APPLIED = {"owner": "owner {}", "base_model": "base model {}", "r": "rank {}", "seed": "seed {}",
           "generator": "generator {}", "tag": "tag {}", "q": "search '{}'", "filter": "filter `{}`"}


def applied(chosen: dict[str, Any]) -> str:
    """What the form narrows and sorts by, for the caption (the form itself sits closed in its popover): '' for
    the defaults."""
    parts = [APPLIED[k].format(chosen[k]) for k in APPLIED if chosen[k] is not None] + (
        ["yanked versions included"] if chosen.get("include_yanked") else []) + (
        ["the newest matching version of each adapter"] if chosen.get("latest") else [])
    metric = sorted_metric(chosen["sort"])
    first = "lowest" if not chosen["sort"].startswith("-") else "highest"
    # the versions a metric sort leaves out, said (9 versions became 8 unsaid: a walk in a browser, session 40)
    order = (f"sorted by {metric}, {first} first, over every page; versions that do not record {metric} are left out"
             if metric
             else None if chosen["sort"] == "-created" else f"{SORT_LABELS[chosen['sort']]} first")
    return "; ".join(filter(None, [", ".join(parts), order]))


#: The URL's name of each form field that is not at its default (``?owner=alice&filter=r+<=+8``): a filtered
#: listing is a link to share, and Back returns to the filters before (MLflow's search is in its URL too).
URL_NAMES = {"owner": "owner", "base": "base", "rank": "rank", "seed": "seed", "generator": "generator",
             "tag": "tag", "text": "q", "sort": "sort", "filter": "filter", "metric": "metric", "size": "size",
             "yanked": "yanked", "latest": "latest"}
#: The URL text the page last wrote (st.session_state): a URL that differs from it was opened or gone Back to.
URL_SEEN = "browse_url_seen"


def url_text(values: dict[str, Any]) -> dict[str, str]:
    """The query parameters of the form's ``values``: each that is not its default, as text."""
    return {URL_NAMES[name]: ("true" if value is True else str(value)) for name, value in values.items()
            if name in URL_NAMES and value != FORM_DEFAULTS[name]}


def from_url(params: dict[str, str]) -> dict[str, Any]:
    """The form's values a URL's ``params`` give (the others at their defaults); a value the form cannot hold (a
    size it does not offer, an unknown sort or generator) is left at its default."""
    values = dict(FORM_DEFAULTS)
    for name, param in URL_NAMES.items():
        text = params.get(param)
        if text is None:
            continue
        if name == "size":
            values[name] = int(text) if text.isdigit() and int(text) in PAGE_SIZES else FORM_DEFAULTS[name]
        elif name in ("yanked", "latest"):
            values[name] = text.lower() in ("true", "1", "yes")
        elif name == "sort":
            values[name] = text if text in SORT_LABELS else FORM_DEFAULTS[name]
        elif name == "generator":
            values[name] = text if text in KNOWN_GENERATORS else FORM_DEFAULTS[name]
        else:
            values[name] = text[:MAX_URL_FIELD]
    return values


#: The longest text of one field the page takes from its URL (a filter is at most 1,000 characters: the registry's).
MAX_URL_FIELD = 1000


#: Browse's url_paths (web_ui.app: "home" is served at /, whose path a default page may also give as "").
BROWSE_PATHS = ("", "home", "browse")


def follow_url() -> None:
    """The URL's filters become the applied ones when they differ from what the page last wrote there: a shared
    link opened, or Back and Forward within Browse (to a URL without filters too: every version). Opened from
    another page (the menu) without filters, the page keeps the session's, and writes them (write_url)."""
    ours = set(URL_NAMES.values())
    given = {name: st.query_params[name] for name in ours if name in st.query_params}
    state = st.session_state
    within = state.get(navigation.PAGE_BEFORE) in BROWSE_PATHS
    if given != state.get(URL_SEEN, {}) and (given or within):
        reset_to(from_url(given))


def reset_to(values: dict[str, Any]) -> None:
    """Apply ``values`` from outside the form (the URL, Clear filters): back to the first page, and the form's
    boxes shown anew from them when it opens."""
    state = st.session_state
    state[APPLIED_FORM] = {name: value for name, value in values.items() if value != FORM_DEFAULTS[name]}
    state["browse_cursors"] = [None]
    for name in FORM_DEFAULTS:
        state.pop(field_key(name), None)


def write_url(values: dict[str, Any]) -> None:
    """The applied ``values`` into the URL (those at their defaults left out), in one change: one entry of the
    browser's history per Apply (a parameter at a time, Back went through half-applied filters: a walk in a
    browser). Parameters of another page, such as the Adapter page's ``?ref=`` that Back brings along, go; the
    registry's stays."""
    wanted = url_text(values)
    kept = {navigation.REGISTRY: st.query_params[navigation.REGISTRY]} if navigation.REGISTRY in st.query_params \
        else {}
    if st.query_params.to_dict() != {**kept, **wanted}:
        st.query_params.from_dict({**kept, **wanted})
    st.session_state[URL_SEEN] = wanted


#: The toggle beside Filter and sort: one row an adapter (its newest version the filters match), or every version
#: (a walk: Browse listed versions, not adapters, as MLflow's and the Hub's model lists do).
LATEST_LABEL = "Newest version of each adapter"
LATEST_HELP = ("On: one row an adapter, its newest version of those the filters match (`vera ls --latest`). Off: every "
               "version.")


def toggling_latest() -> None:
    """The toggle's callback: applied at once (it is not in the form), from the first page."""
    state = st.session_state
    applied = {name: value for name, value in state.get(APPLIED_FORM, {}).items() if name != "latest"}
    state[APPLIED_FORM] = applied | ({"latest": True} if state[field_key("latest")] else {})
    state["browse_cursors"] = [None]


def clearing() -> None:
    """Clear filters' callback: every choice back to its default."""
    reset_to(FORM_DEFAULTS)


def page() -> None:
    st.title(TITLE)  # the sidebar says Browse (a walk: "Adapters" here, Browse there)
    follow_url()
    form = st.empty()
    values = form_values()
    write_url(values)
    st.session_state[field_key("latest")] = bool(values["latest"])  # what is applied, from the URL too
    with form.container(horizontal=True, vertical_alignment="center"):
        filters = st.popover("Filter and sort", icon=":material/filter_list:", key=FILTERS, on_change="rerun")
        st.toggle(LATEST_LABEL, key=field_key("latest"), on_change=toggling_latest, help=LATEST_HELP)
        if values != FORM_DEFAULTS:  # one click back to every version (there was none: a walk in a browser)
            st.button("Clear filters", icon=":material/filter_alt_off:", on_click=clearing)
        if filters.open:
            # Built only while open: a first visit paints the table without eleven inputs in the page
            # (bench/RESULTS.md, 2026-11-30: a new visitor's Browse, 0.5 s of 2.3) or the base-model list.
            with filters:
                filter_form(values)
    for problem in ignored(values):
        st.warning(problem)
    chosen = choices(values)
    cursors: list[str | None] = st.session_state.setdefault("browse_cursors", [None])
    result = listing(chosen, cursors[-1])
    if result is None:
        return
    if empty_registry(chosen, cursors[-1], result):
        form.empty()  # nothing to filter yet: how to publish a first adapter instead
        getting_started.panel()
        return
    first = (len(cursors) - 1) * chosen["limit"]
    metric = sorted_metric(chosen["sort"])
    how = applied(chosen)
    total = result.total if result.total is not None else len(result.items)  # (asked for: with_total)
    # with nothing shown, no "showing 0-0" and no word of rows to click (session 23's walk)
    st.caption(formats.matching(total, "adapter" if chosen["latest"] else "version") + (f" ({how})" if how else "") + (
        f"; showing {first + 1:,}-{first + len(result.items):,}. Click a name to open it, tick rows to open or compare "
        "them; clicking a column sorts this page only (Filter and sort sorts them all)." if result.items else "."))
    if not result.items:
        # a misspelt metric (test.acc), sorted by or in the filter, matched nothing, with no word of what the names
        # are (session 23's walk; a newcomer's, for the filter)
        absent = metric_names.missing(metric_names.named(chosen["filter"], metric))
        st.info(metric_names.message(absent) if absent else "No adapter matches these filters" + (
            f" with the metric {metric}." if metric else "."))
        return
    selection = tables.show(table(result.items, metric, chosen["sort"]), sizes=("stored",), hide_index=True,
                            width="stretch", whole=True, on_select="rerun", selection_mode="multi-row",
                            column_config=columns(result.items, metric), key="browse_table")
    if len(cursors) > 1 or result.next_cursor is not None:  # one page only: no pair of disabled buttons
        with st.container(horizontal=True):
            if st.button("Previous page", disabled=len(cursors) == 1):
                cursors.pop()
                st.rerun()
            if st.button("Next page", disabled=result.next_cursor is None):
                cursors.append(result.next_cursor)
                st.rerun()
    actions([result.items[i].ref for i in selection.selection.rows] if selection is not None else [])


def actions(ticked: list[str]) -> None:
    """What the ticked rows can do: open one, compare two to four."""
    with st.container(horizontal=True, vertical_alignment="center"):
        if st.button("Open version", disabled=len(ticked) != 1, icon=":material/open_in_new:"):
            navigation.open_version(ticked[0])
        if st.button(f"Compare selected ({len(ticked)})", disabled=not 2 <= len(ticked) <= 4,
                     icon=":material/compare_arrows:", type="primary" if 2 <= len(ticked) <= 4 else "secondary"):
            navigation.open_compare(ticked)
        st.caption("Tick one row to open it, or two to four to compare them."
                   if len(ticked) <= 4 else f"{len(ticked)} rows ticked: Compare takes at most four.")
