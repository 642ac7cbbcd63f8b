"""How the dashboard writes numbers (web_ui/formats.py): separators, units, and metrics to the precision that tells
them apart."""

from __future__ import annotations

import pytest

from web_ui import formats


@pytest.mark.parametrize(("n", "shown"), [
    (0, "0 B"), (512, "512 B"), (999, "999 B"), (1000, "1.0 KB"), (120_008, "120.0 KB"),
    (38_400_000, "38.4 MB"), (3_500_000_000, "3.5 GB"), (5 * 10**16, "50,000.0 TB"),
], ids=lambda v: str(v))
def test_sizes_have_units(n: int, shown: str) -> None:
    assert formats.size(n) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (27522, "27,522"), (0.81234567, "0.8123"), (0.5, "0.5000"), (12.345678, "12.35"), (1234.5678, "1,235"),
    (0.0012345678, "0.001235"), (3.2e-07, "3.200e-07"), (0.0, "0"), (-0.25, "-0.2500"), (True, "yes"),
    (None, "—"), ("sst2", "sst2"),
], ids=lambda v: repr(v))
def test_numbers_keep_four_significant_digits_with_separators(value: object, shown: str) -> None:
    assert formats.number(value) == shown


def test_metrics_become_rows_with_nested_names_and_curves_left_out() -> None:
    metrics = {"test": {"accuracy": 0.912345, "loss": 0.23456}, "steps": 1200, "train_wall_time_s": 83.21,
               "train_loss": [[1, 0.7]], "eval": [{"step": 1, "loss": 0.5}], "labels": ["neg", "pos"],
               "note": "demo"}
    assert formats.metric_rows(metrics) == [
        {"metric": "test.accuracy", "value": "0.9123"}, {"metric": "test.loss", "value": "0.2346"},
        {"metric": "steps", "value": "1,200"}, {"metric": "train_wall_time_s", "value": "83.21"},
        {"metric": "note", "value": "demo"}]


@pytest.mark.parametrize(("text", "width", "shown"), [
    ("tiny-llama", 90, "tiny-llama"),  # (90 - 17) // 7 = 10 characters: whole
    ("meta-llama/Llama-2-7b-hf", 90, "meta-llam…"),
    ("ab", 10, "…"),
], ids=["fits", "cut", "narrower-than-a-letter"])
def test_a_cell_shows_its_text_whole_or_cut_with_an_ellipsis(text: str, width: int, shown: str) -> None:
    assert formats.fit(text, width) == shown
    assert formats.cell_width(shown) <= max(width, formats.cell_width("…"))


@pytest.mark.parametrize(("items", "shown"), [
    (["@prod", "demo"], "@prod, demo"),
    (["@latest", "@prod", "demo", "sentiment", "long-tag"], "@latest +4"),
    (["a-very-long-tag-name-indeed", "b"], "a-very-lon… +1"),
    ([], ""),
], ids=["fit", "some", "first-cut", "none"])
def test_a_list_cell_says_how_many_more_it_holds(items: list[str], shown: str) -> None:
    assert formats.fit_list(items, 120) == shown  # (120 - 17) // 7 = 14 characters
    assert formats.cell_width(shown) <= 120


@pytest.mark.parametrize(("generator", "shown"), [
    ("philox4x32-10-kaiming-uniform-v1", "philox #42"), ("torch-kaiming-uniform", "torch #42"),
    ("future-generator-v2", "future #42"),
], ids=["portable", "peft", "unknown"])
def test_a_projection_in_a_narrow_cell(generator: str, shown: str) -> None:
    assert formats.projection(generator, 42) == shown


@pytest.mark.parametrize(("n", "shown"), [(0, "0 downloads"), (1, "1 download"), (1200, "1,200 downloads")],
                         ids=["none", "one", "many"])
def test_counts_of_things_agree_in_number(n: int, shown: str) -> None:
    assert formats.counted(n, "download") == shown


@pytest.mark.parametrize(("n", "shown"), [(0, "0 versions match"), (1, "1 version matches"),
                                          (1200, "1,200 versions match")], ids=["none", "one", "many"])
def test_how_many_versions_match_reads_as_english(n: int, shown: str) -> None:
    assert formats.matching(n) == shown


def test_aliases_are_ordered_alike_on_every_page() -> None:
    """prod first (what is deployed), latest last, the others by name: the header, Browse and the versions table
    each had their own order (session 29's walk)."""
    assert formats.ordered_aliases(["latest", "staging", "prod", "canary"]) == ["prod", "canary", "staging", "latest"]
    assert formats.ordered_aliases(["latest"]) == ["latest"]
