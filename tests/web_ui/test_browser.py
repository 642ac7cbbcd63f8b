"""End to end in a real browser: Playwright driving Debian's chromium against `vera up` (API, worker and
dashboard). Browse, open an adapter, compare two, launch the demo fine-tune and see it finish and appear.
Screenshots of every page go to test-artifacts/dashboard/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from registry.client import RegistryClient
from tests.registry.adapters import make_adapter
from tests.registry.servers import free_port, running_vera

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "dashboard"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`vera up` as a user runs it, on a fresh data folder."""
    root = tmp_path_factory.mktemp("up")
    api, ui = free_port(), free_port()
    with running_vera(["up", "--port", str(api), "--ui-port", str(ui)], api, VERA_DATA_DIR=str(root / "data"),
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


def test_browse_open_compare_and_train_in_a_browser(page: Page, product: dict[str, str]) -> None:
    page.goto(product["ui"])
    expect(page.get_by_text("2 versions match")).to_be_visible()
    shot(page, "1-browse")

    page.get_by_role("button", name="Open adapter").click()
    expect(page.get_by_role("heading", name="alice/tiny1:1")).to_be_visible()
    expect(page.get_by_text("Trainable parameters")).to_be_visible()
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
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("Queued job 1 for alice/polarity")).to_be_visible()
    shot(page, "5-train-launched")
    expect(page.get_by_text("Published alice/polarity:1", exact=True)).to_be_visible(timeout=300_000)
    shot(page, "6-train-finished")
    page.get_by_role("button", name="Open alice/polarity:1").click()
    expect(page.get_by_role("heading", name="alice/polarity:1")).to_be_visible()
    shot(page, "7-trained-adapter")

    page.goto(product["ui"])
    expect(page.get_by_text("3 versions match")).to_be_visible()
    shot(page, "8-browse-after-training")
