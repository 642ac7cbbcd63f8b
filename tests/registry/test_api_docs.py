"""The API's interactive docs (/docs: Swagger UI, /redoc: ReDoc) come whole from the server itself: every script,
stylesheet and icon their pages name is served by it, and the pages name no other host, so they work on a machine
that cannot reach a CDN. They are public, as /openapi.json is, even where the API requires tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.registry.servers import registry_in_thread

#: What each asset a docs page names must be served as (part of its Content-Type).
CONTENT_TYPES = {"script": "javascript", "stylesheet": "text/css", "icon": "image/"}
#: The assets each page must name: a page that names none would pass the checks below while being blank.
NEEDED = {"/docs": {"script", "stylesheet", "icon"}, "/redoc": {"script", "icon"}}


class Assets(HTMLParser):
    """(kind, URL) of every ``<script src>`` and ``<link href>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script" and named.get("src"):
            self.found.append(("script", named["src"] or ""))
        elif tag == "link" and named.get("href"):
            rel = (named.get("rel") or "").split()
            kind = "stylesheet" if "stylesheet" in rel else "icon" if "icon" in rel else " ".join(rel)
            self.found.append((kind, named["href"] or ""))


def page_assets(url: str, path: str) -> list[tuple[str, str]]:
    """The assets the HTML page at ``url + path`` names, after checking that it names no absolute URL at all."""
    page = httpx.get(url + path, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), (path, page.text)
    assert re.findall(r"(?:https?:)?//[\w.-]+", page.text) == [], f"{path} names another host"
    parser = Assets()
    parser.feed(page.text)
    return parser.found


def assert_docs_served_here(url: str) -> None:
    """/docs and /redoc of the server at ``url``: each asset they name is on the same host, answers 200 without a
    token and has the right content type; the OpenAPI document they read answers too."""
    host = urlsplit(url).netloc
    for path, needed in NEEDED.items():
        assets = page_assets(url, path)
        assert needed <= {kind for kind, _ in assets}, (path, assets)
        for kind, src in assets:
            absolute = urljoin(url + path, src)
            assert urlsplit(src).netloc == "" and urlsplit(absolute).netloc == host, (path, src)
            answer = httpx.get(absolute, timeout=30)
            assert answer.status_code == 200, (path, src, answer.status_code)
            assert CONTENT_TYPES[kind] in answer.headers["content-type"], (path, src, answer.headers["content-type"])
            assert len(answer.content) > 100, (path, src)
    assert httpx.get(f"{url}/openapi.json", timeout=30).json()["info"]["title"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry that requires a token for every API route (no anonymous reads)."""
    root = tmp_path_factory.mktemp("docs")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs", VERA_REQUIRE_TOKENS="true") as url:
        yield url


def test_docs_and_their_assets_are_served_by_the_registry_without_a_token(secured: str) -> None:
    assert httpx.get(f"{secured}/api/v1/adapters", timeout=30).status_code == 401  # the API itself needs one
    assert_docs_served_here(secured)


def test_docs_assets_that_do_not_exist_are_a_problem_404(secured: str) -> None:
    missing = httpx.get(f"{secured}/static-offline-docs/no-such.js", timeout=30)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
