"""HEAD on every GET route (registry.api.head): the GET's status and headers without its body, through a real server;
a path that takes no GET still 405, its Allow naming HEAD wherever it names GET."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.client import RegistryClient
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread

#: A value for each path parameter of the GET routes: the published version's where there is one, else something
#: that does not exist (the GET's 404 or 422 is then what HEAD must answer too).
VALUES = {"owner": "heady", "name": "a", "selector": "1", "version": "1", "filename": "adapter_config.json",
          "sha256": "0" * 64, "job_id": "1", "webhook_id": "1", "org": "heady", "revision": "main"}
#: Headers that differ between any two answers.
VARYING = {"date", "x-request-id"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("head")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as url, RegistryClient(url) as client:
        client.publish(make_adapter(root / "a"), "heady/a", base_model="tiny-llama", metrics={"loss": 0.5})
        yield url


def get_paths(url: str) -> list[str]:
    """Every GET route of the running server's OpenAPI document, its parameters filled from VALUES."""
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    return [re.sub(r"\{(\w+)\}", lambda m: VALUES[m[1]], path) for path, ops in paths.items() if "get" in ops]


def test_every_get_route_answers_head_with_its_headers_and_no_body(server: str) -> None:
    """Session 44's finding: HEAD was a 405 on every GET route but the file routes and /hf (monitors, link checkers
    and `curl -I` ask HEAD)."""
    paths = get_paths(server)
    assert len(paths) > 25 and "/api/v1/adapters/heady/a/versions/1" in paths
    statuses = set()
    for path in paths:
        got, head = httpx.get(f"{server}{path}"), httpx.head(f"{server}{path}")
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        statuses.add(got.status_code)
        if path == "/metrics":  # its counters move with each request
            continue
        assert {k: v for k, v in head.headers.items() if k not in VARYING | {"content-length"}} == \
            {k: v for k, v in got.headers.items() if k not in VARYING | {"content-length"}}, path
        if path.endswith("/files"):  # its own HEAD, one query that does not write the list: no length said (it
            assert "content-length" not in head.headers  # said 0, session 44's finding)
        else:
            assert int(head.headers["content-length"]) == len(got.content), path
    assert {200, 404} <= statuses  # found and missing things both asked


def test_a_path_without_get_is_still_405_and_allow_names_head_beside_get(server: str) -> None:
    post_only = httpx.head(f"{server}/api/v1/compare")
    assert post_only.status_code == 405 and post_only.headers["allow"] == "POST" and post_only.content == b""
    put = httpx.put(f"{server}/api/v1/adapters/heady/a/versions/1/lineage")
    assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD"
    assert put.json()["status"] == 405  # a problem document, as before
    # every method some route takes there (Starlette named the first route's: "GET" of an adapter, which takes
    # PATCH and DELETE too: an outsider's finding)
    adapter = httpx.put(f"{server}/api/v1/adapters/heady/a")
    assert adapter.status_code == 405 and set(adapter.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH",
                                                                                        "DELETE"}


def test_a_head_is_counted_under_the_route_it_took(tmp_path: Path) -> None:
    """An outsider's finding: HEADs served as GETs were counted under route="unmatched" in /metrics."""
    with registry_in_thread(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "blobs", VERA_METRICS_TOKEN="m" * 16) as url:
        for _ in range(3):
            assert httpx.head(f"{url}/api/v1/adapters").status_code == 200
        exposed = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {'m' * 16}"}).text
    assert 'vera_http_requests_total{method="HEAD",route="/api/v1/adapters",status="200"} 3.0' in exposed
    assert 'route="unmatched"' not in exposed


def test_head_of_a_version_counts_no_download_and_changes_nothing(server: str, tmp_path: Path) -> None:
    with RegistryClient(server) as client:
        before = client.get("heady/a:1")
        for path in ("/api/v1/adapters/heady/a/versions/1", "/api/v1/adapters/heady/a/versions/1/files",
                     "/api/v1/adapters/heady/a/versions/1/files/adapter_model.safetensors"):
            assert httpx.head(f"{server}{path}").status_code == 200
        client.get("heady/a:1")
        after = client.get("heady/a:1")
    assert after.downloads == before.downloads and after.model_dump() == before.model_dump()

