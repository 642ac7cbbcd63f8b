"""Registry API on loopback: publish and fetch throughput with p50/p99 latency at 1, 8 and 32 concurrent clients,
and list/search latency with 100,000 versions in the database; on SQLite and on PostgreSQL. Prints markdown.

    .venv/bin/python bench/api_load.py [--requests 96] [--versions 100000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from driver_timing import timed  # noqa: E402

from registry.client import RegistryClient  # noqa: E402
from registry.store import models as m  # noqa: E402
from registry.store.database import Database  # noqa: E402
from tests.registry.adapters import make_adapter  # noqa: E402
from tests.registry.servers import running_server  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def backend(kind: str, root: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{root / 'bench.db'}"
        return
    name = f"vera_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load(fn: Callable[[int], None], total: int, clients: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of ``total`` calls spread over ``clients`` threads."""
    result = timed(fn, total, clients)
    latencies, wall = result["latencies"], result["seconds"]
    assert isinstance(latencies, list) and isinstance(wall, float)
    q = statistics.quantiles(latencies, n=100)
    return total / wall, q[49] * 1e3, q[98] * 1e3


def publish_one(pool: list[RegistryClient], sources: list[Path], name: str, i: int) -> None:
    pool[i % len(pool)].publish(sources[i % len(sources)], name, base_model="tiny-llama")


def fetch_one(pool: list[RegistryClient], name: str, versions: int, i: int) -> None:
    pool[i % len(pool)].download(f"{name}:{i % versions + 1}", "adapter_model.safetensors")


def bulk_versions(database_url: str, count: int) -> None:
    """Copy the one published version ``count`` times under 100 owners (metadata only; they share its blobs)."""
    db = Database(database_url)
    with db.session() as s:
        template = s.scalars(select(m.AdapterVersion)).first()
        assert template is not None
        owners = [f"owner{i:03d}" for i in range(100)]
        s.execute(insert(m.Adapter), [{"owner": o, "name": f"adapter{j}", "description": f"bulk {o} {j}",
                                        "created_at": datetime.now(UTC)} for o in owners for j in range(count // 100)])
        ids = list(s.scalars(select(m.Adapter.id).where(m.Adapter.owner.in_(owners))))
        columns = {c.key: getattr(template, c.key) for c in m.AdapterVersion.__table__.columns if c.key != "id"}
        rows = [{**columns, "adapter_id": a, "version": 1, "r": 8 + (a % 4) * 8, "created_at": datetime.now(UTC)}
                for a in ids]
        for i in range(0, len(rows), 5000):
            s.execute(insert(m.AdapterVersion), rows[i:i + 5000])
    db.engine.dispose()


def timed_get(url: str, params: dict[str, str | int], reps: int = 20) -> tuple[float, float]:
    times = []
    with httpx.Client(timeout=60) as http:
        for _ in range(reps):
            start = time.perf_counter()
            response = http.get(f"{url}/api/v1/adapters", params=params)
            times.append(time.perf_counter() - start)
            response.raise_for_status()
    q = statistics.quantiles(times, n=100)
    return q[49] * 1e3, q[98] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--versions", type=int, default=100_000)
    args = parser.parse_args()
    print(f"## Registry API on loopback, {date.today()}: one `vera serve` process (uvicorn, 1 worker), tiny Llama "
          f"adapters (5.6 KB of vectors), {args.requests} requests per cell, CPU 2 cores shared by server and "
          "clients\n")
    print("| backend | operation | clients | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    listing: list[str] = []
    for kind in ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory() as tmp, backend(kind, Path(tmp)) as url:
            root = Path(tmp)
            sources = [make_adapter(root / f"a{i}", seed=i) for i in range(8)]
            with running_server(url, root / "blobs") as server:
                for clients in (1, 8, 32):
                    pool = [RegistryClient(server) for _ in range(clients)]
                    name = f"bench/c{clients}"
                    rate, p50, p99 = load(partial(publish_one, pool, sources, name), args.requests, clients)
                    print(f"| {kind} | publish | {clients} | {rate:.1f} | {p50:.0f} | {p99:.0f} |", flush=True)
                    rate, p50, p99 = load(partial(fetch_one, pool, name, args.requests), args.requests, clients)
                    print(f"| {kind} | fetch (safetensors) | {clients} | {rate:.1f} | {p50:.0f} | {p99:.0f} |",
                          flush=True)
                    for c in pool:
                        c.close()
                start = time.perf_counter()
                bulk_versions(url, args.versions)
                loaded = time.perf_counter() - start
                for label, params in [("first page (50)", {"limit": 50}), ("owner filter", {"owner": "owner042"}),
                                      ("rank filter", {"r": 16, "limit": 50}),
                                      ("text search", {"q": "adapter77", "limit": 50}),
                                      ("base model + rank", {"base_model": "tiny-llama", "r": 32, "limit": 50}),
                                      ("sorted by trainable parameters", {"sort": "-trainable_parameters"}),
                                      ("sorted by rank, 2nd page", {"sort": "r", "cursor": "second"}),
                                      ("first page with total count", {"with_total": "true"})]:
                    if params.get("cursor") == "second":  # a real keyset cursor, from the first page
                        first = httpx.get(f"{server}/api/v1/adapters", params={"sort": "r"}, timeout=60).json()
                        params = {"sort": "r", "cursor": first["next_cursor"]}
                    p50, p99 = timed_get(server, params)
                    listing.append(f"| {kind} | {label} | {p50:.0f} | {p99:.0f} |")
                listing.append(f"| {kind} | (bulk insert of {args.versions:,} versions: {loaded:.0f} s) | | |")
    print(f"\nList and search with {args.versions:,} versions in the database (20 requests each):\n")
    print("| backend | query | p50 ms | p99 ms |\n|---|---|---|---|")
    print("\n".join(listing))


if __name__ == "__main__":
    main()
