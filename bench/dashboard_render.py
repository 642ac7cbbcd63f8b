"""First render of each dashboard page with 1,000 published versions in the registry (issue 20's bar: under 2 s).

A fresh `vera serve` (SQLite, local blobs) gets N versions (20 adapters' vectors published under N names, with test
accuracy and a 100-point loss curve each); `vera ui` serves the dashboard; Debian's chromium, driven by Playwright
at 1,400 x 1,000, opens each page in a new browser context (a new Streamlit session) and times the navigation
until the page's content is on screen. The first visit after the dashboard starts is reported alone (cold: Python
imports and empty caches); then R visits per page, each after the dashboard's 5 s read cache has expired, so each
one asks the registry again. Prints markdown.

    .venv/bin/python bench/dashboard_render.py [--versions 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from registry.client import RegistryClient  # noqa: E402
from tests.registry.adapters import make_adapter  # noqa: E402
from tests.registry.servers import free_port, running_server, running_vera  # noqa: E402
from tests.web_ui.test_browser import CHROMIUM, FLAGS  # noqa: E402

CACHE_TTL_S = 5  # web_ui.session's st.cache_data(ttl=5)


def publish(url: str, root: Path, versions: int) -> list[str]:
    """``versions`` versions, 20 distinct adapters' vectors under ``versions`` names in 50 owners; their refs."""
    folders = [make_adapter(root / f"a{i}", seed=i) for i in range(20)]

    def one(i: int) -> str:
        curve = [[s, 1.0 / (1 + s / 10) + (i % 7) / 100] for s in range(1, 101)]
        with RegistryClient(url) as client:
            return client.publish(folders[i % 20], f"team{i % 50}/adapter{i}", base_model="tiny-llama",
                                  metrics={"test": {"accuracy": 0.5 + (i % 50) / 100}, "train_loss": curve},
                                  tags=["bench", f"group{i % 5}"], description=f"bench adapter {i}").ref

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(versions)))


def timed_visit(page: Page, url: str, ready: Callable[[Page], None]) -> float:
    """Seconds from navigating to ``url`` until ``ready`` sees the page's content."""
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    ready(page)
    return time.perf_counter() - start


def pages(ui: str, refs: list[str]) -> dict[str, tuple[str, Callable[[Page], None]]]:
    """Each page's address and what says it has rendered."""
    def text(s: str) -> Callable[[Page], None]:
        return lambda p: expect(p.get_by_text(s).first).to_be_visible()

    def browse(p: Page) -> None:
        expect(p.get_by_text("versions match")).to_be_visible()
        expect(p.get_by_test_id("stDataFrame").first).to_be_visible()

    return {
        "Streamlit's shell alone (the sidebar's page links)": (f"{ui}/train", lambda p: expect(
            p.get_by_role("link", name="Browse")).to_be_visible()),
        "Browse (the first 50 rows, with the total)": (ui, browse),
        "Adapter (header, versions and config tab)": (f"{ui}/adapter?ref={refs[0]}", text("Projection")),
        "Compare (two versions, loss chart, cosine grid)": (f"{ui}/compare?refs={refs[0]},{refs[1]}",
                                                             text("cos(ΔW of each version")),
        "Train (form, no jobs)": (f"{ui}/train", text("No jobs yet.")),
    }


def measure(ui: str, refs: list[str], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        expect.set_options(timeout=60_000)
        for _ in range(repeats + 1):  # the first round is the cold one
            for name, (url, ready) in pages(ui, refs).items():
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                times.setdefault(name, []).append(timed_visit(context.new_page(), url, ready))
                context.close()
            time.sleep(CACHE_TTL_S + 1)
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with running_server(f"sqlite:///{root / 'r.db'}", root / "blobs") as api:
            started = time.perf_counter()
            refs = publish(api, root, args.versions)
            publish_s = time.perf_counter() - started
            port = free_port()
            with running_vera(["ui", "--port", str(port), "--registry", api], port, health="/_stcore/health") as ui:
                times = measure(ui, refs, args.repeats)
    print(f"## {date.today()} — dashboard first render with {args.versions:,} versions (bench/dashboard_render.py)\n")
    print(f"{args.versions:,} versions published in {publish_s:.0f} s; chromium 1,400 x 1,000, a new session per "
          f"visit; warm: median and max of {args.repeats} visits, each after the 5 s read cache expired.\n")
    print("| page | cold (first visit) | warm median | warm max |\n| --- | ---: | ---: | ---: |")
    for name, seconds in times.items():
        warm = seconds[1:]
        print(f"| {name} | {seconds[0]:.2f} s | {statistics.median(warm):.2f} s | {max(warm):.2f} s |")


if __name__ == "__main__":
    main()
