"""End to end in a real browser: Playwright driving Debian's chromium against `vera up` (API, worker and
dashboard). Browse, open an adapter, compare two, launch the demo fine-tune and see it finish and appear.
Screenshots of every page go to test-artifacts/dashboard/."""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from playwright.sync_api import FloatRect, Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from registry.client import RegistryClient
from registry.domain.schemas import ADAPTER_FILES
from tests.registry.adapters import TRIAL_DEMO, make_adapter
from tests.registry.servers import free_port, registry_in_thread, running_vera

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "dashboard"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_browse_keeps_its_filters_in_its_url_and_back_and_forward_follow_them_in_a_browser(
        page: Page, product: dict[str, str]) -> None:
    """A walk in a browser: Back from a filtered Browse to its bare address bounced back to the filters (a URL
    without them kept the session's), and went through half-applied ones (a parameter written at a time)."""
    use_product_registry(page, product)
    page.goto(product["ui"])
    expect(page.get_by_text("2 versions match")).to_be_visible()
    filter_and_sort(page)
    page.get_by_role("textbox", name="Owner", exact=True).fill("alice")
    page.get_by_role("textbox", name="Search", exact=True).fill("tiny1")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("1 version matches (owner alice, search 'tiny1')")).to_be_visible()
    expect(page).to_have_url(re.compile(r"\?owner=alice&q=tiny1$"))  # both in one step of the history
    page.get_by_role("button", name="Clear filters").click()
    expect(page.get_by_text("2 versions match")).to_be_visible()
    expect(page).not_to_have_url(re.compile(r"[?&](owner|q)="))
    page.go_back()
    expect(page.get_by_text("1 version matches (owner alice, search 'tiny1')")).to_be_visible()
    expect(page).to_have_url(re.compile(r"\?owner=alice&q=tiny1$"))
    page.go_forward()
    expect(page.get_by_text("2 versions match")).to_be_visible()
    page.wait_for_timeout(1500)  # the bounce came a moment later
    expect(page.get_by_text("2 versions match")).to_be_visible()
    expect(page).not_to_have_url(re.compile(r"[?&](owner|q)="))
    page.go_back()  # one Apply is one step: Back from the filtered address leaves Browse's first one
    expect(page.get_by_text("1 version matches (owner alice, search 'tiny1')")).to_be_visible()
    page.go_back()
    expect(page.get_by_text("2 versions match")).to_be_visible()
    expect(page).not_to_have_url(re.compile(r"[?&](owner|q)="))
    shot(page, "53-browse-back-through-filters")


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`vera up` as a user runs it, on a fresh data folder."""
    root = tmp_path_factory.mktemp("up")
    api, ui = free_port(), free_port()
    with running_vera(["up", "--port", str(api), "--ui-port", str(ui)], api, VERA_DATA_DIR=str(root / "data"),
                      VERA_DOWNLOAD_FLUSH_S="0.2",  # download counts show at once (test_the_first_walks_bugs...)
                      also=(f"http://127.0.0.1:{ui}/_stcore/health",)) as url:
        with RegistryClient(url) as client:
            for i in range(2):
                client.publish(make_adapter(root / f"a{i}", seed=i), f"alice/tiny{i}", base_model="tiny-llama",
                               metrics={"test": {"accuracy": 0.7 + i / 10},
                                        "train_loss": [[1, 0.9 - i / 10], [2, 0.5], [3, 0.4 - i / 20]]})
        yield {"api": url, "ui": f"http://127.0.0.1:{ui}"}


@pytest.fixture(scope="module")
def page(product: dict[str, str]) -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing at /usr/bin/chromium; .ci/setup installs it.")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # assertions have their own timeout (5 s); a cold first page takes longer
        yield tab
        browser.close()


def shot(page: Page, name: str) -> None:
    page.wait_for_timeout(800)  # let charts finish drawing
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def grid_row(page: Page, row: int, showing: str | None = None) -> Locator:
    """The first table's ``row`` (0: the first under the header) in the accessible copy of its cells that the grid
    keeps beside its canvas, once it holds data (and ``showing`` in its first column): a click on the canvas before
    then, or on a table a rerun is about to replace, is lost (seen in CI on a loaded machine)."""
    grid = page.get_by_test_id("stDataFrame").first
    expect(grid).to_be_visible()
    line = grid.locator(f'tr[aria-rowindex="{row + 2}"]')
    first = line.locator('[aria-colindex="1"]')
    if showing is None:
        expect(first).to_have_count(1)
    else:
        expect(first).to_contain_text(showing)
    return line


def row_point(page: Page, row: int, x: float) -> tuple[float, float]:
    """Where on the screen ``row`` of the first table is, ``x`` px from its left (35 px header, 35 px rows)."""
    box = page.get_by_test_id("stDataFrame").first.bounding_box()
    assert box is not None
    return box["x"] + x, box["y"] + 35 + 35 * row + 35 // 2


def close_popovers(page: Page) -> None:
    """Close an open popover as a user would (Escape) before clicking under it. Twice in fresh-clone CI under load
    (never here: 7 runs, cores kept busy) Browse's filter form was found open over the table after Apply had closed
    it and the first row's tick had rerun the app, and the second tick landed on the form. Presumably Streamlit 1.67's
    stateful popover sent a stale 'open' on that rerun (streamlit/streamlit#14945 fixed such a race for another path);
    a user closes it and ticks again, and so does this."""
    body = page.get_by_test_id("stPopoverBody")
    if body.count() and body.first.is_visible():
        page.keyboard.press("Escape")
        expect(body).to_have_count(0)


def tick_row(page: Page, row: int = 0, showing: str | None = None) -> None:
    """Tick the tick box of a table's row (drawn on a canvas) and wait until the grid says it is selected; a click
    the grid did not take (its handlers not yet attached) is made again, never one it took (that would untick)."""
    line = grid_row(page, row, showing)
    for _ in range(3):
        # a click while the app reruns (the last tick's rerun redraws the table) is lost: wait for it to finish
        expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=30_000)
        close_popovers(page)
        page.mouse.click(*row_point(page, row, 18))
        try:
            expect(line).to_have_attribute("aria-selected", "true", timeout=10_000)
            return
        except AssertionError:
            continue
    expect(line).to_have_attribute("aria-selected", "true")


def open_link_in_first_row(page: Page, showing: str) -> Page:
    """Click the link in the first row's first column (once it shows ``showing``): the new tab it opens."""
    grid_row(page, 0, showing)
    link = row_point(page, 0, 70)
    page.mouse.move(*link)  # the grid opens a link only when it was hovered first
    page.wait_for_timeout(300)
    with page.expect_popup() as opened:
        page.mouse.click(*link)
    return opened.value


def settled_box(page: Page, element: Locator) -> FloatRect:
    """``element``'s box once it stays put for 0.3 s (the hover toolbar slides in: CI measured it 28 px above its
    place once)."""
    box, deadline = element.bounding_box(), time.monotonic() + 10
    while time.monotonic() < deadline:
        page.wait_for_timeout(300)
        now = element.bounding_box()
        if now == box and box is not None:
            return box
        box = now
    raise AssertionError(f"{element} kept moving: {box}")


def open_first_row(page: Page) -> None:
    """Tick Browse's first row and press Open: once the tick's rerun is over, with a popover that it opened again
    closed first (session 45's fresh clone: the filter form, open over Open version after the tick, took the click
    for the whole minute, as close_popovers says of the tick itself)."""
    tick_row(page)
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=30_000)
    close_popovers(page)
    page.get_by_role("button", name=re.compile("Open version$")).click()


def test_browse_open_compare_and_train_in_a_browser(page: Page, product: dict[str, str]) -> None:
    page.goto(product["ui"])
    expect(page.get_by_text("2 versions match")).to_be_visible()
    shot(page, "1-browse")

    open_first_row(page)
    expect(page.get_by_role("heading", name="alice/tiny1:1")).to_be_visible()
    expect(page.get_by_text("Adapter parameters")).to_be_visible()
    shot(page, "2-adapter")
    page.get_by_role("tab", name="Layers").click()
    expect(page.get_by_text("where the adaptation concentrates")).to_be_visible()
    shot(page, "3-adapter-layers")
    page.get_by_role("tab", name="Verify").click()
    page.get_by_role("button", name="Verify now").click()
    expect(page.get_by_text("alice/tiny1:1: passed")).to_be_visible()

    page.goto(f"{product['ui']}/compare")
    expect(page.get_by_text("Loss curves")).to_be_visible()
    expect(page.get_by_text("cos(ΔW of each version")).to_be_visible()
    shot(page, "4-compare")

    page.goto(f"{product['ui']}/train")
    page.get_by_label("Publish as").fill("alice/polarity")
    epochs = page.get_by_label("Epochs")
    epochs.fill("0.2")
    epochs.press("Tab")
    # a trial run: the demo's whole eval and test splits (about 1,500 texts) are scored otherwise
    evals = page.get_by_role("spinbutton", name="Eval examples")
    evals.fill("64")
    evals.press("Tab")
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("Queued job 1 for alice/polarity")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/train\?(.*&)?job=1(&|$)"))  # the address follows the job launched
    shot(page, "5-train-launched")
    expect(page.get_by_text("Published alice/polarity:1", exact=True)).to_be_visible(timeout=300_000)
    expect(page.get_by_text("Eval loss", exact=True)).to_be_visible()  # the finished job's loss tile, named
    shot(page, "6-train-finished")
    page.get_by_role("link", name="Open alice/polarity:1").click()
    # a link (it was a button whose run switched pages from the live panel: over 60 s to the Adapter page once on 2
    # loaded cores, session 34, and an empty page for the whole 180 s once, session 37)
    expect(page.get_by_role("heading", name="alice/polarity:1")).to_be_visible(timeout=180_000)
    shot(page, "7-trained-adapter")

    page.goto(product["ui"])
    expect(page.get_by_text("3 versions match")).to_be_visible()
    shot(page, "8-browse-after-training")


#: The tab icons a page names (Streamlit sets its favicon as ``<link rel="shortcut icon">``).
ICONS_JS = "() => [...document.querySelectorAll('link[rel~=icon]')].map(link => link.href)"
#: The one outside URL allowed: ReDoc 2 draws Redocly's logo under its menu from Redocly's CDN (hard-coded in
#: redoc.standalone.js, no option); offline the image fails, ReDoc leaves it out, and the page is whole without it.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_the_dashboard_and_the_api_docs_ask_no_other_host_in_a_browser(page: Page, product: dict[str, str]) -> None:
    """On a cluster without internet: loading the dashboard's main pages and the API's /docs and /redoc, the browser
    asks only the dashboard and the registry for anything (fonts, icons, scripts), and each tab icon is theirs or
    drawn in the page (a data: URL). A ':material/...:' page icon was an SVG fetched from fonts.gstatic.com."""
    ours = {urlsplit(product["ui"]).netloc, urlsplit(product["api"]).netloc}
    asked: list[str] = []

    def record(request: Any) -> None:
        asked.append(request.url)

    page.on("request", record)
    try:
        use_product_registry(page, product)
        for path, shown in (("", "versions match"), ("/adapter?ref=alice/tiny0:1", "Adapter parameters"),
                            ("/compare?refs=alice/tiny0:1,alice/tiny1:1", "optimizer step")):
            page.goto(product["ui"] + path)
            expect(page.get_by_text(shown).first).to_be_visible()
            page.wait_for_timeout(1_000)  # what the drawn page asks for next (fonts, icons)
            asked.extend(page.evaluate(ICONS_JS))
        page.goto(f"{product['api']}/docs")
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible()  # the script ran, the schema was read
        shot(page, "60-api-docs")
        asked.extend(page.evaluate(ICONS_JS))
        page.goto(f"{product['api']}/redoc")
        expect(page.get_by_role("heading", name=re.compile(r"^vera-registry")).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "61-api-redoc.png"))  # its top: the whole page is 70,000 px tall
        asked.extend(page.evaluate(ICONS_JS))
    finally:
        page.remove_listener("request", record)
    assert any(url.startswith("data:image/svg+xml") for url in asked)  # the dashboard's emoji icon, drawn
    elsewhere = [url for url in asked if urlsplit(url).scheme in ("http", "https", "ws", "wss")
                 and urlsplit(url).netloc not in ours and url != REDOC_LOGO]
    assert elsewhere == [], elsewhere


def address(path: str, **params: str) -> re.Pattern[str]:
    """The dashboard's address of a page with these query parameters (as the browser encodes them)."""
    return re.compile(re.escape(f"{path}?{urlencode(params)}") + "$")


def header_metric(page: Page, label: str) -> Locator:
    return page.get_by_test_id("stMetric").filter(has_text=label)


def test_typed_references_urls_verify_and_downloads_in_a_browser(page: Page, product: dict[str, str]) -> None:
    """Issue 20: a version per URL, every typed reference kept, the header after Verify, downloads built on click."""
    page.goto(f"{product['ui']}/adapter?ref=alice/tiny0:1")
    expect(page.get_by_role("heading", name="alice/tiny0:1")).to_be_visible()
    box = page.get_by_role("textbox", name="Version", exact=True)
    for ref in ("alice/tiny1:1", "alice/tiny0:1", "alice/tiny1"):  # each one typed after the other is kept
        box.fill(ref)
        box.press("Enter")
        expect(page.get_by_role("heading", name=f"{ref.removesuffix(':1')}:1")).to_be_visible()
        expect(box).to_have_value(ref)
        expect(page).to_have_url(address("/adapter", ref=ref))
    shot(page, "9-adapter-typed-twice")

    page.goto(f"{product['ui']}/adapter?ref=alice/tiny0:1")
    expect(header_metric(page, "Stored")).to_contain_text(" KB")
    page.get_by_role("tab", name="Metrics").click()
    expect(page.get_by_text("Storage", exact=True)).to_be_visible()
    shot(page, "9b-adapter-metrics-table")
    expect(header_metric(page, "Verification")).to_contain_text("not yet")
    page.get_by_role("tab", name="Verify").click()
    page.get_by_role("button", name="Verify now").click()
    expect(page.get_by_text("alice/tiny0:1: passed")).to_be_visible()
    expect(header_metric(page, "Verification")).to_contain_text("passed")
    shot(page, "10-adapter-verified-header")

    page.get_by_role("tab", name="Download").click()
    with page.expect_download() as download:
        page.get_by_role("button", name="adapter_model.safetensors").click()
    data = Path(download.value.path()).read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    assert any(k.endswith("vera_lambda_d") for k in header)  # a real safetensors file, built on the click
    shot(page, "11-adapter-download")


def filter_and_sort(page: Page) -> None:
    """Open Browse's filter form (it waits, closed, in a popover)."""
    page.get_by_role("button", name="Filter and sort").click()


def test_browse_compare_and_train_urls_in_a_browser(page: Page, product: dict[str, str]) -> None:
    page.goto(product["ui"])
    filter_and_sort(page)
    page.get_by_role("textbox", name="Search", exact=True).fill("tiny1")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("1 version matches")).to_be_visible()
    # Apply closes the form (two tests below check it); once in CI (session 38) the popover stayed open over the
    # table for the whole minute of the next click, so this walk, which is about the addresses, closes it itself
    try:
        expect(page.get_by_role("textbox", name="Owner", exact=True)).to_have_count(0, timeout=15_000)
    except AssertionError:
        page.keyboard.press("Escape")
        expect(page.get_by_role("textbox", name="Owner", exact=True)).to_have_count(0)
    open_first_row(page)
    expect(page.get_by_role("heading", name="alice/tiny1:1")).to_be_visible()
    expect(page).to_have_url(address("/adapter", ref="alice/tiny1:1"))

    page.goto(f"{product['ui']}/compare?refs=alice/tiny0:1,alice/tiny1:1")
    expect(page.get_by_text("cos(ΔW of each version, ΔW of alice/tiny0:1)")).to_be_visible()
    shot(page, "12-compare-from-url")

    page.goto(f"{product['ui']}/browse")  # Browse by its name too, as every other page is
    expect(page.get_by_role("heading", name="Browse adapters")).to_be_visible()
    expect(page.get_by_role("button", name="Filter and sort")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)

    page.goto(f"{product['ui']}/train")
    expect(page.get_by_label("Publish as")).to_be_visible()  # the form is drawn: Launch checks it
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("This field is required.")).to_be_visible()  # refused in the browser: required
    shot(page, "13-train-publish-as-empty")


def test_sidebar_urls_that_are_not_a_registry_and_an_empty_one(page: Page, product: dict[str, str],
                                                               tmp_path: Path) -> None:
    page.goto(product["ui"])
    expect(page.get_by_text("versions match")).to_be_visible()
    url = page.get_by_role("textbox", name="URL", exact=True)
    url.fill(product["ui"])  # the dashboard's own port, an easy mistake
    url.press("Enter")
    expect(page.get_by_text(f"{product['ui']} answered, but it is not a vera registry")).to_be_visible()
    expect(page.get_by_text("Traceback")).to_have_count(0)
    shot(page, "14-not-a-registry")
    url.fill(product["api"] + "/api/v1")  # the API's own path, as its docs show it: the root is named instead
    url.press("Enter")
    expect(page.get_by_text(f"The registry's URL is its root, without /api/v1: set {product['api']} in the sidebar"
                            )).to_be_visible()
    shot(page, "14b-registry-url-with-api-path")
    bare = product["api"].removeprefix("http://")
    url.fill(bare)
    url.press("Enter")
    expect(page.get_by_text(f"e.g. http://{bare}")).to_be_visible()
    shot(page, "15-url-without-scheme")

    with registry_in_thread(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path / "blobs") as empty:
        url.fill(empty)
        url.press("Enter")
        expect(page.get_by_text("This registry has no adapters yet")).to_be_visible()
        scrolled = page.get_by_test_id("stCode").evaluate(  # whichever element of the block would scroll
            "e => [e, ...e.querySelectorAll('*')].filter(x => x.scrollWidth > x.clientWidth).length")
        assert scrolled == 0, "the commands are cut off at 1,400 px (the block scrolls sideways)"
        shot(page, "16-empty-registry")
        page.get_by_role("button", name="Train the demo adapter").click()
        expect(page).to_have_url(address("/train", job="1", registry=empty))  # the registry shown, in the URL
        expect(page.get_by_role("combobox", name="Job")).to_have_value(re.compile(r"^job 1: demo/polarity "))
        expect(header_metric(page, "Status")).to_contain_text("queued")  # queued there; no worker runs it
        shot(page, "17-demo-job-queued")


def test_a_link_opened_in_a_new_tab_shows_the_same_registry(page: Page, product: dict[str, str],
                                                              tmp_path: Path) -> None:
    """A name's link opens a new tab, which is a new session: its address carries the registry the sidebar points
    at (not the token), so the new tab shows that registry's version, not a same-named one of the default."""
    with registry_in_thread(f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "blobs") as other:
        with RegistryClient(other) as client:
            client.publish(make_adapter(tmp_path / "only", seed=5), "zed/only", base_model="tiny-llama")
        page.goto(product["ui"])
        url = page.get_by_role("textbox", name="URL", exact=True)
        url.fill(other)
        url.press("Enter")
        expect(page).to_have_url(re.compile(re.escape(f"registry={quote(other, safe='')}") + "$"))
        tab = open_link_in_first_row(page, "zed/only")  # not the default registry's table, still shown a moment
        expect(tab.get_by_role("heading", name="zed/only:1")).to_be_visible()
        expect(tab.get_by_role("textbox", name="URL", exact=True)).to_have_value(other)
        shot(tab, "18-link-in-a-new-tab-keeps-the-registry")
        tab.reload()  # and so does a reload or a bookmark
        expect(tab.get_by_role("heading", name="zed/only:1")).to_be_visible()
        tab.close()


def use_product_registry(page: Page, product: dict[str, str]) -> None:
    """Point the sidebar back at the product's registry (an earlier test may have pointed it elsewhere)."""
    page.goto(product["ui"])
    url = page.get_by_role("textbox", name="URL", exact=True)
    url.fill(product["api"])
    url.press("Enter")


def test_browse_paints_the_table_with_its_form_closed_in_a_browser(page: Page, product: dict[str, str]) -> None:
    """Issue 20's first render: Browse draws the table without building the filter form (it waits closed in a
    popover); Apply closes it and the caption names what is applied; the buttons show their whole labels."""
    use_product_registry(page, product)
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    expect(page.get_by_role("textbox", name="Owner", exact=True)).to_have_count(0)  # not built until opened
    for pager in ("Previous page", "Next page"):  # the registry's versions fit one page: no pager (session 12)
        expect(page.get_by_role("button", name=re.compile(f"{re.escape(pager)}$"))).to_have_count(0)
    for label in ("Open version", "Compare selected (0)"):
        button = page.get_by_role("button", name=re.compile(f"{re.escape(label)}$"))
        clipped = button.evaluate("b => [b, ...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth)")
        assert not clipped, f"the button {label!r} cuts its label off"
    filter_and_sort(page)
    page.get_by_role("textbox", name="Owner", exact=True).fill("alice")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("versions match (owner alice)")).to_be_visible()
    expect(page.get_by_role("textbox", name="Owner", exact=True)).to_have_count(0)  # closed again: the table shows
    shot(page, "28-browse-filter-applied")


def test_browse_fits_and_sends_ticked_rows_to_compare_in_a_browser(page: Page, product: dict[str, str]) -> None:
    """Issue 20: at 1,400 px every Browse column is on screen; ticked rows go to Compare, whose picker searches the
    registry as one types."""
    use_product_registry(page, product)
    filter_and_sort(page)
    page.get_by_role("textbox", name="Search", exact=True).fill("tiny")  # the two tiny-llama versions
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("2 versions match")).to_be_visible()
    expect(page.get_by_role("textbox", name="Owner", exact=True)).to_have_count(0)  # Apply closed the form
    scroller = page.get_by_test_id("stDataFrame").first.locator(".dvn-scroller")
    widths = scroller.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert widths[0] <= widths[1], f"the table is {widths[0]} px wide in {widths[1]} px: columns cut off"
    tick_row(page, 0)
    tick_row(page, 1)
    page.get_by_role("button", name=re.compile(r"Compare selected \(2\)$")).click()
    expect(page).to_have_url(re.compile(r"/compare\?refs="))
    expect(page.get_by_text("cos(ΔW of each version")).to_be_visible()
    # one projection: a meaningful cosine
    expect(page.get_by_text(re.compile(r"All share \S+'s projection"))).to_be_visible()
    shot(page, "18-compare-from-browse")
    page.get_by_role("searchbox", name="Search versions").press_sequentially("tiny0")  # no Enter: live
    expect(page.get_by_text("1 version matches 'tiny0'")).to_be_visible()
    shot(page, "19-compare-search")


def test_publish_as_checked_and_cancel_confirmed_in_a_browser(page: Page, product: dict[str, str]) -> None:
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/train")
    target = page.get_by_label("Publish as")
    target.fill("Alice/long:2")
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("Type owner/name in lowercase letters")).to_be_visible()  # checked in the browser
    shot(page, "20-train-publish-as-invalid")
    target.fill("alice/long")
    epochs = page.get_by_label("Epochs")
    epochs.fill("5")
    epochs.press("Tab")
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("Queued job")).to_be_visible()
    expect(header_metric(page, "Step")).to_contain_text(" / ", timeout=300_000)  # the worker is training it
    page.get_by_role("button", name="Cancel job").click()
    expect(page.get_by_text("Its training so far is lost")).to_be_visible()
    shot(page, "21-train-cancel-asked")
    page.get_by_role("button", name="Yes, cancel the job").click()
    # "cancelling" until the worker stops the job (AppTest pins that state: test_pages); a prompt worker may stop it
    # before the page draws again (seen in CI), so either is right here
    expect(header_metric(page, "Status")).to_contain_text(re.compile("cancell(ing|ed)"))
    shot(page, "22-train-cancelling")
    expect(header_metric(page, "Status")).to_contain_text("cancelled", timeout=120_000)
    shot(page, "23-train-cancelled")


#: The texts of ``columns`` (name, width in px, texts) that are wider than their column in the page's own font (the
#: grid draws its cells on a canvas with the body font at 14 px and 8 px of padding each side, and clips the rest).
CLIPPED_JS = """([columns, size]) => {
  const context = document.createElement("canvas").getContext("2d");
  context.font = `${size}px ${getComputedStyle(document.body).fontFamily}`;
  return columns.flatMap(([name, width, texts]) => texts.filter(t => context.measureText(t).width + 16 > width)
                                                         .map(t => `${name} (${width} px): ${t}`));
}"""


def clipped(page: Page, frame: Any, widths: dict[str, int], texts: tuple[str, ...]) -> list[str]:
    """The headers of the columns ``widths`` and the cells of ``frame``'s columns ``texts`` that the browser cuts
    off (a link cell shows its reference, cut with '…' to its column)."""
    from web_ui import navigation, tables

    def cell(value: Any, width: int) -> str:
        return tables.link_label(str(value), width) if str(value).startswith(navigation.ADAPTER_PAGE) else str(value)

    columns = [[name, width, [name, *(cell(v, width) for v in frame[name])]] if name in texts
               else [name, width, [name]] for name, width in widths.items()]
    return list(page.evaluate(CLIPPED_JS, [columns, 14]))


def fits(page: Page, grid: Locator) -> None:
    """The table scrolls no column out of sight."""
    width, room = grid.locator(".dvn-scroller").evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert width <= room, f"the table is {width} px wide in {room} px: it scrolls sideways"


def test_tables_show_every_cell_whole_at_1400_px_in_a_browser(page: Page, product: dict[str, str],
                                                             tmp_path: Path) -> None:
    """Issue 20: Browse's and Compare's tables fit 1,400 px and no cell is cut off (a long name, base model and
    labels are shown whole or end in '…' / '+N')."""
    from web_ui import browse, compare, formats

    long_name = "alice/sentiment-review-adapter-v2"  # 33 characters, as long as a name is shown whole
    with RegistryClient(product["api"]) as client:
        client.publish(make_adapter(tmp_path / "long", seed=9), long_name, base_model="meta-llama-2-7b-chat-hf",
                       tags=["sentiment", "reviews", "english", "demo"], metrics={"test": {"accuracy": 0.5}})
        client.set_alias(f"{long_name}:1", "prod")
        listed = client.list_versions(limit=50, with_total=True)
        items = listed.items
    page.add_init_script(DRAWN_TEXTS_JS)
    use_product_registry(page, product)
    page.get_by_role("button", name="Refresh").click()  # the listing read a moment ago is cached for 5 s
    grid = page.get_by_test_id("stDataFrame").first
    expect(grid).to_be_visible()
    expect(page.get_by_text(formats.matching(listed.total or 0), exact=False).first).to_be_visible()  # read anew
    shot(page, "29-browse-cells-whole")
    fits(page, grid)
    frame = browse.table(items)
    # a team lead's walk: '@latest +5' hid @prod; every alias is shown, @prod first, and the tags are '+4'
    labels = frame.set_index("version")["labels"][f"adapter?ref={long_name}:1"]
    assert labels == "@prod, @latest +4"
    assert labels in drawn_texts(page, labels)
    widths = {name: config["width"] for name, config in browse.columns(items).items() if name in frame.columns}
    assert clipped(page, frame, widths, ("version", "base model", "verified", "labels")) == []

    pair = [item for item in items if item.ref in (f"{long_name}:1", "alice/tiny0:1")]
    page.goto(f"{product['ui']}/compare?refs={pair[0].ref},{pair[1].ref}")
    expect(page.get_by_text("cos(ΔW of each version")).to_be_visible()
    grid = page.get_by_test_id("stDataFrame").first
    shot(page, "30-compare-cells-whole")
    fits(page, grid)
    expect(page.get_by_text(f"No loss curve was recorded for {long_name}:1")).to_be_visible()  # not a legend entry
    widths = compare.widths(pair)
    assert clipped(page, compare.table(pair), widths, ("version", "base model", "projection", "verified")) == []


#: Keeps every text the page's canvases draw (Streamlit's grid paints its cells on a canvas) in window.drawnTexts.
DRAWN_TEXTS_JS = """(() => {
  const texts = new Set();
  window.drawnTexts = texts;
  const fill = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
    texts.add(String(text));
    return fill.call(this, text, ...rest);
  };
})()"""
#: A size as Streamlit's "bytes" format writes it ('6.1KB': no space).
STREAMLIT_SIZE = re.compile(r"^[0-9.,]+[KMGT]?B$")


def drawn_texts(page: Page, waiting_for: str) -> set[str]:
    """The texts the page's grids have drawn, once ``waiting_for`` is among them."""
    try:
        page.wait_for_function("text => window.drawnTexts && window.drawnTexts.has(text)", arg=waiting_for)
    except PlaywrightTimeout:
        drawn = page.evaluate("() => window.drawnTexts ? [...window.drawnTexts] : null")
        raise AssertionError(f"{waiting_for!r} was never drawn; the grids drew {drawn}") from None
    page.wait_for_timeout(500)  # the rest of the grid's first frame
    return set(page.evaluate("() => [...window.drawnTexts]"))


def test_tables_cut_long_names_with_an_ellipsis_dash_missing_numbers_and_write_sizes_in_a_browser(
        page: Page, product: dict[str, str], tmp_path: Path) -> None:
    """Issue 20's last table limits, as chromium draws the grid: a name longer than its link column ends in '…'
    (and its link still opens the whole reference), a missing number is '—' (not 'None'), and a size reads
    '6.1 KB' as on the rest of the dashboard (not Streamlit's '6.1KB')."""
    from web_ui import browse, compare, formats, tables

    long_ref = "alice/sentiment-analysis-of-product-reviews-in-english-and-german-v3:1"  # 70 characters
    with RegistryClient(product["api"]) as client:  # no metrics: no accuracy, no eval loss
        client.publish(make_adapter(tmp_path / "longer", seed=11), long_ref.removesuffix(":1"),
                       base_model="meta-llama-2-7b-chat-hf")
        items = client.list_versions(limit=50).items
    page.add_init_script(DRAWN_TEXTS_JS)
    use_product_registry(page, product)
    page.get_by_role("button", name="Refresh").click()  # the listing read a moment ago is cached for 5 s
    frame, config = browse.table(items), browse.columns(items)
    assert frame["version"][0] == f"adapter?ref={long_ref}"  # the newest, on the first row
    label = tables.link_label(frame["version"][0], config["version"]["width"])
    assert label.endswith("…")
    drawn = drawn_texts(page, label)
    shot(page, "34-browse-long-name-cut")
    assert long_ref not in drawn and "None" not in drawn and formats.MISSING in drawn
    assert {formats.size(v.stored_bytes) for v in items} <= drawn
    assert [t for t in drawn if STREAMLIT_SIZE.match(t)] == []
    widths = {name: c["width"] for name, c in config.items() if name in frame.columns}
    assert clipped(page, frame, widths, ("version", "base model", "verified", "labels")) == []  # '…' fits
    opened = open_link_in_first_row(page, long_ref)  # the cut label's link: the whole reference
    expect(opened.get_by_role("heading", name=long_ref)).to_be_visible()
    assert opened.url.endswith(f"/adapter?ref={long_ref}")
    opened.close()

    pair = [v for v in items if v.ref in (long_ref, "alice/tiny0:1")]
    page.goto(f"{product['ui']}/compare?refs={pair[0].ref},{pair[1].ref}")
    label = tables.link_label(f"adapter?ref={long_ref}", compare.version_width(pair))
    drawn = drawn_texts(page, label)
    shot(page, "35-compare-long-name-cut")
    assert label.endswith("…") and long_ref not in drawn and "None" not in drawn and formats.MISSING in drawn
    assert {formats.size(v.stored_bytes) for v in pair} <= drawn
    assert [t for t in drawn if STREAMLIT_SIZE.match(t)] == []


#: The boxes of an element's text as drawn, line by line (left, right, top, bottom).
TEXT_RECTS_JS = """e => { const r = document.createRange(); r.selectNodeContents(e);
  return [...r.getClientRects()].map(x => [x.left, x.right, x.top, x.bottom]); }"""


def test_activity_shows_an_event_in_full_when_ticked_in_a_browser(page: Page, product: dict[str, str]) -> None:
    """Issue 20: the Activity page's detail reads as words, and a ticked row shows it whole (digests included)."""
    use_product_registry(page, product)
    with RegistryClient(product["api"]) as client:
        vectors = client.get("alice/tiny0:1").vectors_sha256
    page.goto(f"{product['ui']}/activity?adapter=alice/tiny0&action=publish")
    caption = page.get_by_text("The newest 1 event you may see")
    expect(caption).to_be_visible()
    # session 12's walk saw the hover toolbar over the end of the caption's words (and session 18 the words under it
    # once the toolbar had settled: CI had measured it on its way in)
    page.locator('[data-testid="stDataFrame"]').first.hover()
    toolbar = page.locator('[data-testid="stElementToolbar"]').first
    expect(toolbar).to_be_visible()
    tools = settled_box(page, toolbar)
    for left, right, top, bottom in caption.evaluate(TEXT_RECTS_JS):  # the words, not the caption's whole-width box
        assert right <= tools["x"] or bottom <= tools["y"] + 1 or tools["y"] + tools["height"] <= top + 1, (
            (left, right, top, bottom), tools)
    expect(page.get_by_text(vectors)).to_have_count(0)  # the table shortens digests
    tick_row(page, 0)
    expect(page.get_by_text(f"vectors: {vectors}")).to_be_visible()
    # exact: the row's own cell reads "vectors: 305220ac…; base model: tiny-llama" (seen: two matches in CI)
    expect(page.get_by_text("base model: tiny-llama", exact=True)).to_be_visible()
    expect(page.get_by_text('{"vectors"')).to_have_count(0)  # no JSON
    shot(page, "31-activity-event-detail")


#: The tick labels of each chart axis titled ``title`` on the page (Streamlit draws Altair charts as SVG).
AXIS_LABELS_JS = """title => [...document.querySelectorAll("g.role-axis")]
  .filter(axis => [...axis.querySelectorAll(".role-axis-title text")].some(t => t.textContent === title))
  .flatMap(axis => [...axis.querySelectorAll(".role-axis-label text")].map(t => t.textContent))"""


def test_loss_chart_steps_are_whole_numbers_in_a_browser(page: Page, product: dict[str, str],
                                                        tmp_path: Path) -> None:
    """Issue 20: three recorded steps are ticked 1, 2, 3 (not 1.5, 2.5). A team lead's walk: 300 steps drew an
    axis from -20 (Vega rounded the padded domain outwards); it starts at the first step, with no negative tick."""
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/compare?refs=alice/tiny0:1,alice/tiny1:1")
    expect(page.get_by_text("optimizer step", exact=True)).to_be_visible()
    ticks = page.evaluate(AXIS_LABELS_JS, "optimizer step")
    assert ticks and all(t.isdigit() for t in ticks), f"step ticks {ticks}"
    assert ticks == sorted(set(ticks), key=int)
    shot(page, "33-loss-chart-whole-steps")
    with RegistryClient(product["api"]) as client:  # no test accuracy: the filter test's count stays
        client.publish(make_adapter(tmp_path / "long-run", seed=12), "alice/long-run", base_model="tiny-llama",
                       metrics={"train_loss": [[s, 1 / s + 0.1] for s in range(1, 301)]})
    page.goto(f"{product['ui']}/adapter?ref=alice/long-run:1")
    page.get_by_role("tab", name="Metrics").click()
    expect(page.get_by_text("optimizer step", exact=True)).to_be_visible()
    ticks = page.evaluate(AXIS_LABELS_JS, "optimizer step")
    assert ticks and all(t.isdigit() for t in ticks), f"step ticks {ticks}"  # no '-20'
    assert ticks[0] in ("0", "1") and int(ticks[-1]) <= 300, f"step ticks {ticks}"
    shot(page, "33b-loss-chart-300-steps")


def test_out_of_range_numbers_are_said_under_launch_in_a_browser(page: Page, product: dict[str, str]) -> None:
    """A newcomer's walk: an out-of-range number was refused by the browser with its reason only in a tooltip, and
    Launch did nothing visible. Every problem is written under the button, in the page."""
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/train")
    page.get_by_label("Publish as").fill("alice/ranged")
    for label, value in (("Rank r", "5000"), ("Epochs", "0")):
        box = page.get_by_role("spinbutton", name=label, exact=True)
        box.fill(value)
        box.press("Tab")
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("Rank r 5,000 is out of range: type a number from 1 to 4,096.")).to_be_visible()
    expect(page.get_by_text("Epochs 0 is out of range: type a number from 0.05 to 100.")).to_be_visible()
    expect(page.get_by_text("Queued job")).to_have_count(0)
    shot(page, "32b-train-numbers-out-of-range")


def test_the_generator_box_shows_its_whole_name_in_a_browser(page: Page, product: dict[str, str]) -> None:
    """Issue 20: on the Train page the Generator box is wide enough for the longest generator's name."""
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/train")
    box = page.get_by_role("combobox", name="Generator")
    expect(box).to_have_value("philox4x32-10-kaiming-uniform-v1")
    width, room = box.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert width <= room, f"the Generator box cuts its value: {width} px of text in {room} px"
    shot(page, "32-train-generator-box")


def test_lineage_graph_links_and_the_filter_box_in_a_browser(page: Page, product: dict[str, str],
                                                            tmp_path: Path) -> None:
    """The lineage graph drawn both ways with nodes that open their versions, and the filter box run by the
    registry with its refusal shown as a message. Last in the file: it publishes a third tiny-llama version."""
    use_product_registry(page, product)
    with RegistryClient(product["api"]) as client:
        client.publish(make_adapter(tmp_path / "derived", seed=5), "alice/derived", base_model="tiny-llama",
                       parent="alice/tiny0:1", code_revision="abc123")
    page.goto(f"{product['ui']}/adapter?ref=alice/tiny0:1")
    page.get_by_role("tab", name="Lineage").click()
    graph = page.get_by_test_id("stGraphVizChart")
    expect(graph.locator("svg g.node")).to_have_count(2)
    expect(graph.locator("svg g.edge")).to_have_count(1)
    expect(graph.locator("svg g.node [fill='#ff4b4b']")).to_have_count(1)  # the version shown, highlighted
    shot(page, "24-adapter-lineage-graph")
    graph.locator("svg a").filter(has_text="alice/derived:1").click()  # a node is a link to its version
    expect(page.get_by_role("heading", name="alice/derived:1")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/adapter\?ref=alice/derived:1$"))  # the node's own link
    page.get_by_role("tab", name="Lineage").click()
    expect(page.get_by_text("abc123")).to_be_visible()
    shot(page, "25-adapter-lineage-child")

    page.goto(product["ui"])
    filter_and_sort(page)
    box = page.get_by_role("textbox", name="Filter", exact=True)
    box.fill("metrics.test.accuracy > 0.75 and base_model = 'tiny-llama'")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("1 version matches")).to_be_visible()  # tiny1 (0.8): tiny0 is 0.7, derived has none
    shot(page, "26-browse-filtered")
    filter_and_sort(page)
    box.fill("metrics.test.accuracy >")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("The registry refused this filter or metric sort")).to_be_visible()
    expect(page.get_by_text("Traceback")).to_have_count(0)
    shot(page, "27-browse-filter-refused")


def test_publish_as_messages_follow_the_box_and_a_jobs_log_reads_in_words_in_a_browser(
        page: Page, product: dict[str, str]) -> None:
    """Walk 2: Launch with Publish as empty, then with a malformed name: each is refused in the browser with its own
    message, and nothing on screen still speaks of the earlier, empty box. A finished job's log is a table in words
    (no JSON, numbers to four significant digits) that wraps instead of cutting, the raw log one click away."""
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/train")
    target, launch = page.get_by_label("Publish as"), page.get_by_role("button", name="Launch")
    expect(target).to_be_visible()  # the form is drawn: Launch checks it
    launch.click()
    expect(page.get_by_text("This field is required.")).to_be_visible()
    target.fill("alice/pol arity")
    launch.click()
    expect(page.get_by_text("Type owner/name in lowercase letters")).to_be_visible()
    expect(page.get_by_text("This field is required.")).to_have_count(0)
    expect(page.get_by_text("Publish as is empty")).to_have_count(0)
    expect(page.get_by_test_id("stMain").get_by_test_id("stAlert")).to_have_count(0)  # none about an earlier value
    shot(page, "40-train-publish-as-message-follows-the-box")

    with RegistryClient(product["api"]) as client:  # a short job for the product's worker
        job = client.submit_job("alice/logged", {**TRIAL_DEMO, "r": 16, "training": {"max_steps": 20}})
    page.goto(f"{product['ui']}/train?job={job.id}")
    # opened while the job is queued or starting, its Logs stay open as the panel refreshes: an expander of its own
    # identity was drawn again closed at each change of the panel (a walk in a browser, session 40)
    logs = page.locator("details").filter(has_text="Logs").first
    page.get_by_text("Logs", exact=True).first.click()
    expect(logs).to_have_attribute("open", "")
    closed = []
    for _ in range(8):  # over the panel's refreshes (every 2 s) while the job is claimed and starts
        time.sleep(1)
        closed += [logs.get_attribute("open") is None]
    assert not any(closed), closed
    expect(page.get_by_text("Published alice/logged:1", exact=True)).to_be_visible(timeout=300_000)
    log = page.get_by_test_id("stTable")
    expect(log).to_contain_text("eval accuracy")  # the finished job's Logs are open
    expect(log).to_contain_text("published alice/logged:1")
    text = log.inner_text()
    assert "{" not in text and not re.search(r"\d\.\d{5,}", text), text  # no JSON, no 16-digit floats
    width, room = log.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert width <= room, f"the log is cut on the right: {width} px of text in {room} px"
    expect(page.get_by_role("button", name=re.compile(r"^Download the raw log \(\d+ events, JSON lines\)$"))) \
        .to_be_visible()
    shot(page, "41-train-log-in-words")


#: Per loss chart on the page (the one with an "optimizer step" axis): its plot area's height (its vertical grid
#: lines, px) and its legends' entries (label, dash, stroke and length of each sample).
LOSS_CHART_JS = """() => [...document.querySelectorAll("svg.marks")]
  .filter(svg => [...svg.querySelectorAll(".role-axis-title text")].some(t => t.textContent === "optimizer step"))
  .map(svg => ({
    plot: Math.max(...[...svg.querySelectorAll(".role-axis-grid")].map(g => g.getBoundingClientRect().height)),
    legends: [...svg.querySelectorAll("g.role-legend")].map(legend => {
      const labels = [...legend.querySelectorAll(".role-legend-label text")].map(t => t.textContent);
      return [...legend.querySelectorAll(".role-legend-symbol path")].map((s, i) => ({label: labels[i],
        dash: s.getAttribute("stroke-dasharray"), stroke: s.getAttribute("stroke"),
        length: s.getBoundingClientRect().width}));
    })}))"""


def readable_loss_chart(page: Page) -> None:
    """The page's loss chart has a plot area at least 280 px tall, and its training and eval entries are line
    samples: a visible stroke, solid for training and dashed (6 on, 3 off) for eval, long enough to show it."""
    expect(page.get_by_text("optimizer step", exact=True)).to_be_visible()
    (chart,) = page.evaluate(LOSS_CHART_JS)
    assert chart["plot"] >= 280, f"plot area {chart['plot']} px"
    samples = {s["label"]: s for legend in chart["legends"] for s in legend if s["label"] in ("training", "eval")}
    assert set(samples) == {"training", "eval"}, chart["legends"]
    assert samples["training"]["dash"] == "1,0" and samples["eval"]["dash"] == "6,3"
    for sample in samples.values():
        assert sample["stroke"] not in (None, "transparent", "none") and sample["length"] >= 20, sample


def test_loss_charts_are_tall_enough_and_their_legend_shows_the_lines_in_a_browser(
        page: Page, product: dict[str, str], tmp_path: Path) -> None:
    """Issue 20, walk 2: the loss charts' plot was ~85 px (~55 in Compare with four versions) and the legend's
    training and eval entries showed no line. Four versions with eval curves in Compare, one on the Adapter page."""
    refs = [f"alice/curves{i}:1" for i in range(4)]
    with RegistryClient(product["api"]) as client:
        for i, ref in enumerate(refs):
            curves = {"train_loss": [[s, 1 / (s + i) + 0.1] for s in range(1, 30)],
                      "eval": [{"step": s, "eval_loss": 1.2 / (s + i) + 0.15} for s in (10, 20, 29)]}
            client.publish(make_adapter(tmp_path / str(i), seed=10 + i), ref.removesuffix(":1"),
                           base_model="tiny-llama", metrics=curves)
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/compare?refs={','.join(refs)}")
    readable_loss_chart(page)
    shot(page, "50-compare-loss-chart-four-versions")
    page.goto(f"{product['ui']}/adapter?ref={refs[0]}")
    page.get_by_role("tab", name="Metrics").click()
    readable_loss_chart(page)
    shot(page, "51-adapter-loss-chart")


def test_back_from_an_opened_version_leaves_browse_without_its_ref_in_a_browser(
        page: Page, product: dict[str, str]) -> None:
    """Issue 20, walk 2: Browse -> Open version -> Back showed Browse at ``?ref=...``."""
    use_product_registry(page, product)
    page.goto(product["ui"])
    expect(page.get_by_text(re.compile(r"versions match"))).to_be_visible()
    open_first_row(page)
    expect(page).to_have_url(re.compile(r"/adapter\?ref="))
    expect(page.get_by_role("tab", name="Metrics")).to_be_visible()
    page.go_back()
    expect(page.get_by_text(re.compile(r"versions match"))).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Open version$"))).to_be_visible()  # Browse has run
    expect(page).not_to_have_url(re.compile(r"[?&]ref="))
    shot(page, "52-browse-after-back")


def downloads_of(product: dict[str, str], ref: str, *, settle_s: float = 1.0) -> int:
    """The version's download count once the server's counts have been flushed (every 0.2 s here)."""
    time.sleep(settle_s)
    with RegistryClient(product["api"]) as client:
        return client.get(ref).downloads


def test_the_first_walks_bugs_in_a_browser_404_page_parameter_count_and_downloads_built_on_click(
        page: Page, product: dict[str, str], tmp_path: Path) -> None:
    """Issue 20's bugs that AppTest covered, in chromium too: another HTTP server's HTML 404 is named (not quoted,
    no traceback); the header counts adapter parameters as `vera ls` does and says the count with the head; the
    Metrics and Download tabs fetch no weights until a download button is clicked (the version's download count
    moves only then)."""
    (tmp_path / "www").mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    other = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # python -m http.server: an HTML 404 at /health
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        page.goto(product["ui"])
        url = page.get_by_role("textbox", name="URL", exact=True)
        url.fill(f"http://127.0.0.1:{other.server_address[1]}")
        url.press("Enter")
        expect(page.get_by_text("answered, but it is not a vera registry")).to_be_visible()
        expect(page.get_by_text("an HTML page, not the registry's answer")).to_be_visible()
        expect(page.get_by_text("<!DOCTYPE")).to_have_count(0)
        expect(page.get_by_text("Traceback")).to_have_count(0)
        shot(page, "19-another-servers-404")
    finally:
        other.shutdown()
        other.server_close()

    with RegistryClient(product["api"]) as client:
        info = client.publish(make_adapter(tmp_path / "headed", seed=7, modules_to_save=["lm_head"]), "alice/headed",
                              base_model="tiny-llama")
    assert info.trainable_parameters > info.adapter_parameters
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/adapter?ref={info.ref}")
    expect(header_metric(page, "Adapter parameters")).to_contain_text(f"{info.adapter_parameters:,}")  # as vera ls
    expect(page.get_by_text(f"{info.trainable_parameters:,} trainable with the task head")).to_be_visible()

    before = downloads_of(product, info.ref)
    page.get_by_role("tab", name="Metrics").click()
    expect(page.get_by_text("Storage", exact=True)).to_be_visible()  # drawn from the weights, read to be shown
    page.get_by_role("tab", name="Download").click()
    expect(page.get_by_role("button", name="adapter_model.safetensors")).to_be_visible()
    assert downloads_of(product, info.ref) == before  # nothing downloaded to draw the tabs or their buttons
    with page.expect_download():
        page.get_by_role("button", name="adapter_model.safetensors").click()
    deadline = time.monotonic() + 30
    while downloads_of(product, info.ref, settle_s=0.3) == before and time.monotonic() < deadline:
        pass
    assert downloads_of(product, info.ref) == before + 1  # the click, once


def test_train_takes_a_dataset_whose_columns_have_other_names_in_a_browser(page: Page, product: dict[str, str],
                                                                           tmp_path: Path) -> None:
    """A dataset of `sentence,sentiment` was refused from the Train page with "pass --text-column / --label-column",
    options it does not have (session 23's walk): the page has Text column and Label column boxes, the message names
    them, and a job launched with them reads the right columns. With no dataset at all the page says what to do in
    its own words, not the command line's."""
    data = tmp_path / "reviews.csv"
    data.write_text("sentence,sentiment\n" + "".join(f"review {i} was {'good' if i % 2 else 'bad'},"
                                                     f"{'pos' if i % 2 else 'neg'}\n" for i in range(40)))
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/train")
    page.get_by_label("Publish as").fill("alice/columns")
    page.get_by_text("Demo task (word polarity, offline)").click()  # unticked
    # the registry's bound on a dataset (VERA_MAX_DATASET_BYTES), not Streamlit's 200 MB (a dashboard walk, 48)
    expect(page.get_by_text(re.compile(r"^64MB per file"))).to_be_visible()
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("No dataset: tick Demo task for the offline demo, or upload a .csv or .jsonl file."
                            )).to_be_visible()
    page.locator("input[type=file]").set_input_files(str(data))
    expect(page.get_by_text("reviews.csv")).to_be_visible()
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text(re.compile(r"reviews\.csv has columns \['sentence', 'sentiment'\] but not \['text', "
                                       r"'label'\]: type its column of texts in Text column and of labels in Label "
                                       r"column"))).to_be_visible()  # said on Launch, with any other problem
    page.get_by_role("textbox", name="Text column").fill("sentence")
    page.get_by_role("textbox", name="Label column").fill("sentiment")
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text(re.compile(r"Queued job \d+ for alice/columns"))).to_be_visible()
    shot(page, "55-train-other-columns")
    with RegistryClient(product["api"]) as client:
        [job] = [j for j in client.jobs(owner="alice") if j.target_name == "alice/columns"]
        # the address follows the job launched, not the one followed before (session 48's note: only on a reload)
        expect(page).to_have_url(re.compile(rf"/train\?(.*&)?job={job.id}(&|$)"))
        if job.status in ("queued", "running"):  # (on a fast day it has finished already: a 409 to cancel)
            client.cancel_job(job.id)  # its columns are what this test checks, not its training
    assert job.spec["text_column"] == "sentence" and job.spec["label_column"] == "sentiment", job.spec
    assert job.spec["demo"] is False


#: Whether any part of an element's text is cut (its box narrower than what it holds: '…' or hidden).
CUT = "el => [el, ...el.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1)"


def test_header_numbers_are_whole_at_1000_px_and_in_one_row_at_1400_in_a_browser(page: Page,
                                                                                   product: dict[str, str]) -> None:
    """A dashboard walk (session 48): at 1,000 px the Adapter header's five equal columns cut its values ("26,…",
    "120…", "not …") and the Train page's too ("suc…", "30 /…"); the tiles are as wide as their values now, and
    wrap onto a second row where they do not fit."""
    use_product_registry(page, product)
    try:
        for width, height in ((1000, 800), (1400, 1000)):
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{product['ui']}/adapter?ref=alice/tiny0:1")
            expect(header_metric(page, "Base model")).to_contain_text("tiny-llama")
            values = page.get_by_test_id("stMetricValue")
            expect(values).to_have_count(5)
            assert not [values.nth(i).inner_text() for i in range(5) if values.nth(i).evaluate(CUT)]
            tops = {round(values.nth(i).bounding_box()["y"]) for i in range(5)}  # type: ignore[index]
            if width == 1400:
                assert len(tops) == 1, tops  # one row where there is room
            shot(page, f"58-adapter-header-{width}")
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})


def test_a_first_model_card_saved_stays_on_edit_and_the_folder_downloads_as_one_zip_in_a_browser(
        page: Page, product: dict[str, str], tmp_path: Path) -> None:
    """A dashboard walk (session 48): Save adapter with a first model card went on to the Model card tab that it
    added, and its "Saved" under the Edit form was never seen; every download form's files had PEFT's names, so
    two downloads collided in the browser's folder: the folder comes as one zip named after the version and form."""
    with RegistryClient(product["api"]) as client:
        client.publish(make_adapter(tmp_path / "carded", seed=21), "alice/carded", base_model="tiny-llama")
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/adapter?ref=alice/carded:1")
    page.get_by_role("tab", name="Edit").click()
    page.get_by_role("textbox", name="Model card (Markdown)").fill("# Carded\n\nA first card.")
    page.get_by_role("button", name="Save adapter").click()
    expect(page.get_by_text("Saved alice/carded: model card.")).to_be_visible()
    expect(page.get_by_role("tab", name="Model card")).to_be_visible()
    expect(page.get_by_role("tab", name="Edit", selected=True)).to_be_visible()
    shot(page, "56-first-card-saved-on-edit")
    page.get_by_role("tab", name="Download").click()
    expect(page.get_by_text("vera fetch alice/carded:1 --out carded")).to_be_visible()
    shot(page, "57-download-folder-zip")
    with page.expect_download() as download:
        page.get_by_role("button", name=re.compile(r"alice-carded-v1\.zip \(the folder\)")).click()
    assert download.value.suggested_filename == "alice-carded-v1.zip"
    import zipfile

    with zipfile.ZipFile(download.value.path()) as folder:
        assert folder.namelist() == [f"alice-carded-v1/{name}" for name in ADAPTER_FILES]
        config = json.loads(folder.read("alice-carded-v1/adapter_config.json"))
    assert config["peft_type"] == "VERA"


def test_a_team_leads_walk_compare_projections_and_the_last_version_deleted_in_a_browser(
        page: Page, product: dict[str, str], tmp_path: Path) -> None:
    """A team lead's walk: Compare drew the cosine grid of a version on another projection under a caption saying
    it scores about 0 whatever it learned (now: no grid, and why); deleting an adapter's last version in the Edit
    tab went on to Browse without a word (now: what happened, and a link back to Browse). Last in the file: it
    deletes a version."""
    with RegistryClient(product["api"]) as client:  # no metrics: the filter test's count stays
        client.publish(make_adapter(tmp_path / "reseeded", seed=13, projection_prng_key=7), "alice/reseeded",
                       base_model="tiny-llama")
    use_product_registry(page, product)
    page.goto(f"{product['ui']}/compare?refs=alice/tiny0:1,alice/reseeded:1")
    expect(page.get_by_text("No cosine grid for alice/reseeded:1 (another seed)")).to_be_visible()
    expect(page.get_by_text("optimizer step", exact=True)).to_be_visible()  # tiny0's loss curve
    page.wait_for_timeout(1_000)  # the rest of the run
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(1)  # the loss curves, no cosine grid
    expect(page.get_by_text("cos(ΔW of each version")).to_have_count(0)
    shot(page, "53-compare-another-projection")

    page.goto(f"{product['ui']}/adapter?ref=alice/reseeded:1")
    page.get_by_role("tab", name="Edit").click()
    page.get_by_role("textbox", name="Type alice/reseeded:1 to confirm").fill("alice/reseeded:1")
    page.get_by_role("textbox", name="Type alice/reseeded:1 to confirm").press("Enter")
    page.get_by_role("button", name=re.compile("Delete this version$")).click()
    expect(page.get_by_text("Deleted alice/reseeded:1, the last version of alice/reseeded.")).to_be_visible()
    expect(page.get_by_text("alice/reseeded has no versions left")).to_be_visible()
    shot(page, "54-adapter-last-version-deleted")
    page.get_by_role("link", name="Back to Browse").click()
    expect(page.get_by_text(re.compile(r"versions match"))).to_be_visible()
    expect(page).not_to_have_url(re.compile(r"[?&]ref="))
