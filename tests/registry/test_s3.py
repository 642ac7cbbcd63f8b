"""The registry on S3-compatible storage (moto's server: S3's HTTP API spoken to the real s3fs and botocore, the
stand-in for S3 or MinIO, which cannot be reached offline): downloads redirected to presigned URLs so that the object
store carries the bytes, a presigned link that expired, and storage that goes away (503s with a clear problem, never
500s, and /ready says so)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.api.metrics import READY_TTL_S
from registry.client import RegistryClient, RegistryUnavailable
from tests.registry.adapters import make_adapter
from tests.registry.faulty_proxy import Fault, faulty_proxy
from tests.registry.servers import S3Server, running_s3, running_server, s3_objects

pytest.importorskip("boto3")
BUCKET = "vera-s3"


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with running_s3(BUCKET) as server:
        yield server


def folder(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_downloads_redirect_to_presigned_urls_that_the_client_follows(s3: S3Server, tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "unused", **s3.env,
                        VERA_STORAGE_URL=f"s3://{BUCKET}/registry", VERA_PRESIGNED_DOWNLOADS_S="60") as url:
        with RegistryClient(url, cache=False, inline=0) as client:  # every file by hash: through the store
            client.publish(make_adapter(tmp_path / "a", seed=6), "s3/a", base_model="tiny-llama")
            manifest = client.files("s3/a")
            entry = manifest.files[1]
            redirect = httpx.get(url + entry.url)
            assert redirect.status_code == 307 and redirect.headers["cache-control"] == "no-store"
            location = redirect.headers["location"]
            assert location.startswith(s3.env["AWS_ENDPOINT_URL"]) and "Signature" in location
            direct = httpx.get(location)  # the object store answers, not the API
            assert direct.status_code == 200 and hashlib.sha256(direct.content).hexdigest() == entry.sha256
            cached = httpx.get(url + entry.url, headers={"If-None-Match": f'"{entry.sha256}"'})
            assert cached.status_code == 304  # a caller holding it is told so, not sent away
            client.fetch("s3/a", tmp_path / "redirected")
            by_name = httpx.get(f"{url}/api/v1/adapters/s3/a/versions/1/files/adapter_model.safetensors")
            assert by_name.status_code == 200  # the download by name streams through the API, as before
        assert folder(tmp_path / "redirected")["adapter_model.safetensors"] == by_name.content
        assert any(key.startswith("registry/sha256/") for key in s3_objects(s3.env, BUCKET))


def test_a_presigned_link_the_object_store_refuses_is_asked_for_again(s3: S3Server, tmp_path: Path) -> None:
    """An expired link is refused by the object store (S3 answers 403; moto does not check expiry, so the refused
    link here names an object that is not there, answered 404): the client asks the registry for a fresh link."""
    with running_server(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "unused", **s3.env,
                        VERA_STORAGE_URL=f"s3://{BUCKET}/registry", VERA_PRESIGNED_DOWNLOADS_S="1") as url:
        with RegistryClient(url, cache=False) as client:
            client.publish(make_adapter(tmp_path / "a", seed=7), "s3/b", base_model="tiny-llama")
            entry = client.files("s3/b").files[1]
        link = httpx.get(url + entry.url).headers["location"]
        refused = link.replace(entry.sha256, "0" * 64)
        assert httpx.get(refused).status_code >= 400
        with faulty_proxy(url) as proxy:
            proxy.faults.append(Fault(entry.url, "status", status=307, headers={"Location": refused}))
            with RegistryClient(proxy.url, cache=False, backoff_s=0.01, inline=0) as client:
                client.fetch("s3/b", tmp_path / "out")
                assert proxy.faults[0].times == 0 and sum(entry.url in p for p in proxy.requests) == 2
                proxy.faults.append(Fault(entry.url, "status", status=307, headers={"Location": refused}, times=9))
                with pytest.raises(RegistryUnavailable, match="refused its download link"):
                    client.fetch("s3/b", tmp_path / "never")
        assert hashlib.sha256((tmp_path / "out" / entry.name).read_bytes()).hexdigest() == entry.sha256
        assert not (tmp_path / "never").exists()


def test_storage_that_goes_away_is_a_503_that_says_so_and_changes_nothing(s3: S3Server, tmp_path: Path) -> None:
    with (running_server(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "unused", **s3.env, AWS_MAX_ATTEMPTS="1",
                         VERA_STORAGE_URL=f"s3://{BUCKET}/registry") as url,
          RegistryClient(url, cache=False, retries=0) as client):
            client.publish(make_adapter(tmp_path / "a", seed=8), "s3/c", base_model="tiny-llama")
            assert httpx.get(f"{url}/ready").status_code == 200
            s3.stop()
            time.sleep(READY_TTL_S + 0.1)  # a check is reused for READY_TTL_S
            ready = httpx.get(f"{url}/ready", timeout=120)
            assert ready.status_code == 503 and ready.json()["checks"]["storage"].startswith("error: "), ready.text
            # answered without a token: the kind of failure, not the endpoint, bucket or credentials (in the log)
            assert s3.env["AWS_ENDPOINT_URL"].split("//")[1] not in ready.text and BUCKET not in ready.text
            for path in ("/api/v1/adapters/s3/c/versions/1/files",  # never built: needs the stored vectors
                         "/api/v1/adapters/s3/c/versions/1/files/adapter_model.safetensors"):
                response = httpx.get(url + path, timeout=120)
                assert response.status_code == 503, response.text
                problem = response.json()
                assert problem["type"] == "/problems/storage_unavailable" and "retry" in problem["detail"]
                assert BUCKET not in response.text  # where the storage is stays in the server's log
            source = make_adapter(tmp_path / "b", seed=9)
            files = {part: (f"{part}.{suffix}", (source / f"{part}.{suffix}").read_bytes())
                     for part, suffix in (("adapter_config", "json"), ("adapter_model", "safetensors"))}
            publish = httpx.post(f"{url}/api/v1/adapters/s3/c/versions", timeout=120, files=files,
                                 data={"base_model": "tiny-llama"})
            assert publish.status_code == 503 and "storage" in publish.json()["detail"], publish.text
            assert [v.ref for v in client.list_versions(owner="s3").items] == ["s3/c:1"]  # no partial rows
