"""Real registry servers for tests: `vera serve` in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from registry.db import Database

VERA = Path(sys.executable).parent / "vera"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(database_url: str, storage: Path, *, host: str = "127.0.0.1", **env: str) -> Iterator[str]:
    """Start `vera serve` against an upgraded database; yield its URL; stop it afterwards."""
    db = Database(database_url)
    db.upgrade()
    db.engine.dispose()
    port = free_port()
    environment = {"VERA_DATABASE_URL": database_url, "VERA_STORAGE_URL": str(storage), **env}
    with running_vera(["serve", "--host", host, "--port", str(port)], port, **environment) as url:
        yield url


@contextmanager
def running_vera(args: list[str], port: int, *, health: str = "/health", **env: str) -> Iterator[str]:
    """Run `vera ARGS` (a server on ``port``) until ``health`` answers; yield its URL; stop it afterwards."""
    process = subprocess.Popen([str(VERA), *args], env={**os.environ, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}{health}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read() if process.stdout else ""
                raise RuntimeError(f"vera {args[0]} did not start: {output[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        if process.stdout:
            process.stdout.close()
