"""How the dashboard's tables show their cells where Streamlit's column settings cannot say it: a missing value as
an em dash, sizes as formats.size writes them ('6.1 KB', not the "bytes" format's '6.1KB'), and a link cut with '…'
to its column (a LinkColumn shows its URL or a part of it matched by ``display_text``, and the grid clips text at
the column's edge with no sign that it did).

Sizes and link labels are display values: a pandas Styler's formatting, which Streamlit draws in place of a cell's
value when the column sets no ``format`` (numbers) or ``display_text`` (links). The data stays as it is, so a link
still opens the whole reference and clicking a size column sorts by bytes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

import pandas as pd
import streamlit as st

from web_ui import formats, navigation


def link_text(value: str) -> str:
    """What a link cell names: the reference of an Adapter page's address (``adapter?ref=alice/x:1`` ->
    'alice/x:1', without the parameters it carries), the owner of an Activity page's (``activity?adapter=acme``),
    the name after an Activity link's '#', any other text as it is."""
    for page in (navigation.ADAPTER_PAGE, navigation.ACTIVITY_PAGE):
        if value.startswith(page):
            return unquote(value.removeprefix(page).split("&", 1)[0])
    if value.startswith(navigation.ACTIVITY_ACTION_PAGE) and "#" in value:  # events of a kind: named after the #
        return unquote(value.rpartition("#")[2])
    return value


def link_label(value: str, width: int) -> str:
    """A link cell's label in a column ``width`` px wide: what it names, whole or cut with '…'."""
    return formats.fit(link_text(value), width)


def cut_links(columns: dict[str, Any]) -> dict[str, int]:
    """The link columns whose labels are cut to fit, with their px: those with a width in px and no
    ``display_text`` (a column that sets one shows what its pattern matches, not a label)."""
    return {name: config["width"] for name, config in columns.items()
            if config.get("type_config", {}).get("type") == "link" and isinstance(config.get("width"), int)
            and not config["type_config"].get("display_text")}


def size_text(value: float) -> str:
    """A size cell: formats.size of its bytes (a column holding a missing size is a float column)."""
    return formats.size(int(value))


def number_text(value: float) -> str:
    """A number cell: formats.number's four significant digits, with separators."""
    return formats.number(float(value))


def formatters(frame: pd.DataFrame, columns: dict[str, Any], sizes: Iterable[str],
               numbers: Iterable[str] = ()) -> dict[str, Callable[[Any], str]]:
    """The display value of each cell of ``frame``'s size, number and cut link columns, by column."""
    shown: dict[str, Callable[[Any], str]] = {name: size_text for name in sizes if name in frame.columns}
    shown |= {name: number_text for name in numbers if name in frame.columns}
    return shown | {name: functools.partial(link_label, width=width) for name, width in cut_links(columns).items()
                    if name in frame.columns}


#: The background of a table's marked row (``show(marked=...)``): a faint blue, as a selection (the theme's red, faint,
#: read as a warning beside the versions table's "due for deletion": a walk in a browser, session 56).
MARKED_ROW = "background-color: rgba(28, 131, 225, 0.12)"


def styled(frame: pd.DataFrame, columns: dict[str, Any], sizes: Iterable[str] = (),
           numbers: Iterable[str] = (), marked: int | None = None) -> pd.DataFrame | Any:
    """``frame`` as st.dataframe is given it: with its sizes, numbers and cut link labels as display values, and the
    row at position ``marked`` shaded (a Styler), or as it is when it has none of them."""
    shown = formatters(frame, columns, sizes, numbers)
    if not shown and marked is None:
        return frame
    style = frame.style.format(shown, na_rep=formats.MISSING)
    if marked is not None:
        style = style.apply(lambda row: [MARKED_ROW if row.name == frame.index[marked] else ""] * len(row), axis=1)
    return style


def show(frame: pd.DataFrame, *, column_config: dict[str, Any] | None = None, sizes: Iterable[str] = (),
         numbers: Iterable[str] = (), whole: bool = False, marked: int | None = None, **options: Any) -> Any:
    """st.dataframe of ``frame`` as every table of the dashboard shows it: missing values as '—', the columns
    ``sizes`` (bytes) in KB/MB and ``numbers`` to four significant digits (display values: a click on the header
    still sorts by value), links in a column of fixed px cut with '…'; ``whole``: tall enough for every row (up
    to MAX_WHOLE_ROWS), where Streamlit's default height shows about ten and scrolls the rest; ``marked``: the
    position of a row to shade (the one the page shows); ``options`` are st.dataframe's (the selection it returns
    when ``on_select`` is given)."""
    columns = column_config or {}
    if whole:
        options.setdefault("height", whole_height(len(frame)))
    return st.dataframe(styled(frame, columns, sizes, numbers, marked), column_config=columns or None,
                        placeholder=formats.MISSING, **options)


#: The most rows a ``whole`` table shows without scrolling.
MAX_WHOLE_ROWS = 40
#: Streamlit's grid: 35 px a row (and the header), plus its 2 px border.
ROW_PX = 35


def fitted_texts(texts: list[str | None], least: int, most: int, header: str = "") -> tuple[list[str | None], Any]:
    """A text column as wide as its longest text (and ``header``), ``least`` to ``most`` px, and its ``texts`` as it
    shows them (longer ones cut with '…'; None stays missing): sized by content, Streamlit cut
    'philox4x32-10-kaiming-uniform-v1' to 'philox4x32-10-k…' (a walk in a browser)."""
    width = formats.text_width([header, *(t for t in texts if t is not None)], least, most)
    return [None if t is None else formats.fit(t, width) for t in texts], st.column_config.TextColumn(width=width)


def whole_height(rows: int) -> int:
    """The px height of a table showing ``rows`` rows (at most MAX_WHOLE_ROWS) and its header, nothing cut."""
    return ROW_PX * (min(rows, MAX_WHOLE_ROWS) + 1) + 3
