"""The client over TLS: a registry behind HTTPS (uvicorn with a certificate, as behind a TLS-terminating proxy) is
reached with certificate verification on, from the system's store or SSL_CERT_FILE; a certificate that nothing
vouches for is refused with a clear error. (The client loads certificates only for https:// URLs:
registry.client._TlsWhenAsked.)"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.client import RegistryClient, RegistryUnavailable
from registry.store.database import Database
from tests.registry.servers import VERA_COMMAND, free_port


@pytest.fixture(scope="module")
def https_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A registry on https://127.0.0.1 with a self-signed certificate for that address; its URL and certificate."""
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    database = f"sqlite:///{root / 'registry.db'}"
    Database(database).upgrade()
    port = free_port()
    env = {**os.environ, "VERA_DATABASE_URL": database, "VERA_STORAGE_URL": str(root / "blobs")}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "registry.bootstrap:api_from_environment", "--factory",
                               "--host", "127.0.0.1", "--port", str(port), "--ssl-keyfile", str(key),
                               "--ssl-certfile", str(cert)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url, trusted = f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=cert)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", verify=trusted, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise RuntimeError("uvicorn with TLS exited before it answered")
            time.sleep(0.1)
        yield url, cert
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_certificate_that_nothing_vouches_for_is_refused(https_registry: tuple[str, Path]) -> None:
    url, _ = https_registry
    with RegistryClient(url, token="", cache=False, retries=0) as client, pytest.raises(RegistryUnavailable) as error:
        client.list_versions()
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.value) and url in str(error.value)


def test_the_cli_reaches_an_https_registry_whose_certificate_ssl_cert_file_trusts(
        https_registry: tuple[str, Path]) -> None:
    url, cert = https_registry
    env = {**os.environ, "SSL_CERT_FILE": str(cert), "VERA_NO_CACHE": "1", "VERA_TOKEN": ""}
    listed = subprocess.run([*VERA_COMMAND, "ls", "--registry", url, "--json"], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["items"] == []
    refused = subprocess.run([*VERA_COMMAND, "ls", "--registry", url], env={**env, "SSL_CERT_FILE": os.devnull},
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
