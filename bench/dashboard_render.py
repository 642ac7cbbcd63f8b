"""First render of each dashboard page with 1,000 published versions in the registry (issue 20's bar: under 2 s).

A fresh `vera serve` (SQLite, local blobs) gets N versions (20 adapters' vectors published under N names, with test
accuracy and a 100-point loss curve each); `vera ui` serves the dashboard; Debian's chromium, driven by Playwright
at 1,400 x 1,000, opens each page in a new tab (a new Streamlit session) and times the navigation until the page's
content is on screen: the time from navigating to the first animation frame in which every element that says the
page has rendered is in the page and has a size (checked in the page at each frame, so the time is that of the
frame, not of a poll: Playwright's `expect` polls every 500 ms once the first 270 ms have passed, which adds up to
half a second to a measurement).

Two kinds of visitor: a new one (a new browser context: nothing cached, so Streamlit's ~150 JavaScript files are
fetched and compiled on every visit) and a returning one (one browser context for every visit, as a browser that has
opened the dashboard before: Streamlit's files are content-hashed and served `immutable`, so they come from the
browser's cache). The first visit after the dashboard starts is reported alone (cold: Python imports and empty
caches); then R rounds per kind of visitor, each visiting every page once after the dashboard's 5 s read cache has
expired, so each one asks the registry again (but for Compare's per-layer comparison, which the dashboard keeps an
hour for the same versions: the cold visit computes it). Prints markdown, with the load average around the visits.

Each visit also records when Streamlit's websocket opened (the shell's JavaScript loaded and started), when the
session's first message and the script's end message arrived (read from the websocket's frames with Streamlit's own
ForwardMsg), and when the content was on screen: a second table gives their medians, so the shell's time and the
script's can be told apart.

With ``--before REV``, the dashboard of git revision REV (its web_ui/, served by Streamlit with `vera ui`'s flags)
runs beside the working tree's against the same registry, and each visit to one alternates with the same visit to
the other in random order, so both see the same load: a before/after that the machine's other work does not bias.

    .venv/bin/python bench/dashboard_render.py [--versions 1000] [--repeats 5] [--before REV]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, WebSocket, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from registry.client import RegistryClient  # noqa: E402
from tests.registry.adapters import make_adapter  # noqa: E402
from tests.registry.servers import free_port, running_server, running_vera, wait_for  # noqa: E402
from tests.web_ui.test_browser import CHROMIUM, FLAGS  # noqa: E402

CACHE_TTL_S = 5  # web_ui.session's st.cache_data(ttl=5)
SUCCESS = ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY


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


#: True when every (kind, text) check holds in the page: ("text", s) a visible text node containing s, ("link", s)
#: a visible link whose text ends with s, ("testid", s) a visible element with data-testid s. Visible: the element
#: (a text node's parent) has a size and is not hidden.
RENDERED_JS = """checks => {
  const shown = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0
                       && getComputedStyle(e).visibility !== "hidden"; };
  const text = s => { const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
                      for (let n = walk.nextNode(); n; n = walk.nextNode())
                        if (n.data.includes(s) && shown(n.parentElement)) return true;
                      return false; };
  const link = s => [...document.querySelectorAll("a")].some(a => a.textContent.trim().endsWith(s) && shown(a));
  const testid = s => [...document.querySelectorAll(`[data-testid="${s}"]`)].some(shown);
  return document.body !== null && checks.every(([kind, s]) => ({text, link, testid})[kind](s));
}"""

Check = tuple[str, str]


#: The moments of a visit, in seconds from navigating: the websocket to Streamlit's server open (the shell's
#: JavaScript loaded and started), the session's first message (the script starts), the script's end message, and
#: the first frame showing the page's content.
MARKS = ("websocket open", "script started", "script finished", "on screen")


def timed_visit(page: Page, url: str, checks: list[Check]) -> dict[str, float]:
    """The MARKS of a visit to ``url``, from Streamlit's websocket messages as Playwright sees them arrive (decoded
    with Streamlit's own ForwardMsg) and the first frame in which every check of ``checks`` holds."""
    marks: dict[str, float] = {}

    def frame(payload: bytes | str) -> None:
        if not isinstance(payload, bytes):
            return
        message = ForwardMsg()
        message.ParseFromString(payload)
        kind = message.WhichOneof("type")
        name = {"new_session": "script started", "script_finished": "script finished"}.get(kind or "")
        if name is not None and (name != "script finished" or message.script_finished == SUCCESS):
            marks.setdefault(name, time.perf_counter() - start)

    def websocket(socket: WebSocket) -> None:
        if socket.url.endswith("/_stcore/stream"):
            marks.setdefault("websocket open", time.perf_counter() - start)
            socket.on("framereceived", frame)

    page.on("websocket", websocket)
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_function(RENDERED_JS, arg=checks, polling="raf", timeout=60_000)
    marks["on screen"] = time.perf_counter() - start
    for _ in range(200):  # the script may still be running when its content is on screen
        if "script finished" in marks:
            break
        page.wait_for_timeout(25)
    return marks


def pages(ui: str, refs: list[str]) -> dict[str, tuple[str, list[Check]]]:
    """Each page's address and what says it has rendered."""
    return {
        "Streamlit's shell alone (the sidebar's page links)": (f"{ui}/train", [("link", "Browse")]),
        "Browse (the first 50 rows, with the total)": (ui, [("text", "versions match"), ("testid", "stDataFrame")]),
        "Adapter (header, versions and config tab)": (f"{ui}/adapter?ref={refs[0]}",
                                                      [("text", "Base model and projection")]),
        "Compare (two versions, loss chart, cosine grid)": (f"{ui}/compare?refs={refs[0]},{refs[1]}",
                                                             [("text", "cos(ΔW of each version")]),
        "Train (form, no jobs)": (f"{ui}/train", [("text", "No jobs yet.")]),
    }


VISITORS = ("new", "returning")


def visit(browser: Browser, context: BrowserContext | None, url: str, checks: list[Check]) -> float:
    """One timed visit in a new tab of ``context``, or of a new context (a new visitor) when it is None: seconds
    until the page's content is on screen."""
    return marked_visit(browser, context, url, checks)["on screen"]


def marked_visit(browser: Browser, context: BrowserContext | None, url: str, checks: list[Check]
                 ) -> dict[str, float]:
    """``visit``, with each of MARKS."""
    own = context is None
    context = context or browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    try:
        marks = timed_visit(tab, url, checks)
    except PlaywrightTimeout as exc:
        tab.screenshot(path=str(Path(tempfile.gettempdir()) / "dashboard_render_timeout.png"))
        raise RuntimeError(f"{url}: the page never showed {checks} (a screenshot is in "
                           f"{tempfile.gettempdir()}/dashboard_render_timeout.png)") from exc
    tab.close()
    if own:
        context.close()
    return marks


Times = dict[tuple[str, str], list[float]]  # seconds per (page, kind of visitor)
Marks = dict[tuple[str, str], list[dict[str, float]]]  # each visit's MARKS per (page, kind of visitor)


def measure(ui: str, refs: list[str], repeats: int) -> tuple[dict[str, float], Marks]:
    """The cold visits (the first of each page after the dashboard started, by a new visitor), then ``repeats``
    rounds per kind of visitor; a round visits every page once, then waits for the read cache to expire."""
    times: Marks = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        cold = {name: visit(browser, None, url, checks) for name, (url, checks) in pages(ui, refs).items()}
        returning = browser.new_context(viewport={"width": 1400, "height": 1000})
        visit(browser, returning, ui, [("text", "versions match")])  # it has opened the dashboard once before
        time.sleep(CACHE_TTL_S + 1)
        for _ in range(repeats):
            for kind, context in (("new", None), ("returning", returning)):
                for name, (url, checks) in pages(ui, refs).items():
                    times.setdefault((name, kind), []).append(marked_visit(browser, context, url, checks))
                time.sleep(CACHE_TTL_S + 1)
        browser.close()
    return cold, times


ROOT = Path(__file__).resolve().parent.parent
#: `vera ui`'s Streamlit flags (registry/cli/run.py), for a dashboard served from another revision's web_ui/.
UI_FLAGS = ["--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal"]


@contextmanager
def dashboard_at(rev: str, registry: str, folder: Path) -> Iterator[str]:
    """The dashboard of git revision ``rev`` (its web_ui/ extracted into ``folder``; registry/ and vera_core/ from
    this checkout) against ``registry``; its URL."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "web_ui"], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}", "VERA_REGISTRY_URL": registry}
    with tempfile.TemporaryFile("w+") as log:
        entry = str(folder / "web_ui" / "streamlit_app.py")
        process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", entry, "--server.port", str(port),
                                    *UI_FLAGS], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(f"http://127.0.0.1:{port}/_stcore/health", process, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


Paired = dict[tuple[str, str, str], list[float]]  # seconds per (page, kind of visitor, "before" or "after")


def side_by_side(before: str, after: str, refs: list[str], repeats: int) -> Paired:
    """``repeats`` rounds per kind of visitor; in a round each page is visited on both dashboards, in random order."""
    times: Paired = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        sites = {"before": before, "after": after}
        contexts = {which: browser.new_context(viewport={"width": 1400, "height": 1000}) for which in sites}
        for which, ui in sites.items():  # the first visit after start, and the returning visitor's first
            for url, checks in pages(ui, refs).values():
                visit(browser, contexts[which], url, checks)
        time.sleep(CACHE_TTL_S + 1)
        for _ in range(repeats):
            for kind in VISITORS:
                for name in pages("", refs):
                    for which in random.sample(list(sites), 2):
                        url, checks = pages(sites[which], refs)[name]
                        context = contexts[which] if kind == "returning" else None
                        times.setdefault((name, kind, which), []).append(visit(browser, context, url, checks))
                time.sleep(CACHE_TTL_S + 1)
        browser.close()
    return times


def print_side_by_side(times: Paired, rev: str, repeats: int, loads: tuple[float, float]) -> None:
    print(f"\nBefore ({rev}) and after (this checkout) side by side, each visit of one alternating with the same visit "
          f"of the other in random order; {repeats} rounds per kind of visitor; load average {loads[0]:.2f} at the "
          f"start, {loads[1]:.2f} at the end.\n")
    print("| page | visitor | before median | after median | before max | after max |\n"
          "| --- | --- | ---: | ---: | ---: | ---: |")
    for name in pages("", ["", ""]):
        for kind in VISITORS:
            b, a = times[(name, kind, "before")], times[(name, kind, "after")]
            print(f"| {name} | {kind} | {statistics.median(b):.2f} s | {statistics.median(a):.2f} s | "
                  f"{max(b):.2f} s | {max(a):.2f} s |")


def print_marks(times: Marks) -> None:
    """Where each visit's time went, medians: until the shell's websocket opened, until the script started, the
    script's own run (its first message to its end message), and after it until the content was on screen."""
    print("\nWhere the time goes (medians of the same visits, seconds from navigating; the script's run is from the "
          "session's first message to its end message, as the browser receives them):\n")
    print("| page | visitor | websocket open | script started | script finished | script run | on screen |\n"
          "| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for (name, kind), visits in times.items():
        complete = [m for m in visits if all(k in m for k in MARKS)]
        if not complete:
            continue
        median = {k: statistics.median(m[k] for m in complete) for k in MARKS}
        run = statistics.median(m["script finished"] - m["script started"] for m in complete)
        print(f"| {name} | {kind} | " + " | ".join(f"{median[k]:.2f} s" for k in MARKS[:3])
              + f" | {run:.2f} s | {median['on screen']:.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", metavar="REV", help="also serve REV's dashboard and alternate visits with it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with running_server(f"sqlite:///{root / 'r.db'}", root / "blobs") as api:
            started = time.perf_counter()
            refs = publish(api, root, args.versions)
            publish_s = time.perf_counter() - started
            port = free_port()
            with running_vera(["ui", "--port", str(port), "--registry", api], port, health="/_stcore/health") as ui:
                load_before = os.getloadavg()[0]
                cold, times = measure(ui, refs, args.repeats)
                load_after = os.getloadavg()[0]
                if args.before:
                    with dashboard_at(args.before, api, root / "before") as before:
                        loads = os.getloadavg()[0]
                        paired = side_by_side(before, ui, refs, args.repeats)
                        loads_end = os.getloadavg()[0]
    print(f"## {date.today()} — dashboard first render with {args.versions:,} versions (bench/dashboard_render.py)\n")
    print(f"{args.versions:,} versions published in {publish_s:.0f} s; chromium 1,400 x 1,000, a new tab (a new "
          f"Streamlit session) per visit, timed to the first frame showing the page's content; median and max of "
          f"{args.repeats} visits per kind of visitor, each after the 5 s read cache expired; load average (1 min) "
          f"{load_before:.2f} when the visits began, {load_after:.2f} when they ended.\n")
    print("| page | first visit after start | new visitor median | new visitor max | returning visitor median | "
          "returning visitor max |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in pages("", ["", ""]):
        new, back = ([m["on screen"] for m in times[(name, kind)]] for kind in VISITORS)
        print(f"| {name} | {cold[name]:.2f} s | {statistics.median(new):.2f} s | {max(new):.2f} s | "
              f"{statistics.median(back):.2f} s | {max(back):.2f} s |")
    print_marks(times)
    if args.before:
        print_side_by_side(paired, args.before, args.repeats, (loads, loads_end))


if __name__ == "__main__":
    main()
