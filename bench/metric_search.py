"""Metric search at scale (issue 16): filter + sort listings by metrics and parameters through the API, with 100,000
versions in PostgreSQL (rows inserted directly with SQL, not through publish), and the same as listings of adapters
(latest=true, session 42). Prints markdown for RESULTS.md.

    .venv/bin/python bench/metric_search.py [--versions 100000] [--requests 30]

Each version records {"accuracy", "loss", "final_eval": {"f1"}} (uniform random, seeded), so version_metrics holds
three rows per version; ranks are spread over 4..1024 and versions over 10 base models and 100 owners. One adapter in
ten is private: each query runs as an admin (sees everything: no visibility clause) and as a reader that is the
owner owner007 (public adapters and owner007's private ones: the clause every non-admin listing carries), side by
side in one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import PG_ADMIN, backend  # noqa: E402

from registry.services.tokens import create_token  # noqa: E402
from registry.store.database import Database  # noqa: E402
from tests.registry.servers import running_server  # noqa: E402

EXAMPLE = "metrics.accuracy > 0.9 and r <= 256 and base_model = 'minilm'"
#: (label, query parameters); a "+cursor" label asks for the page after the first.
QUERIES: list[tuple[str, dict[str, str | int]]] = [
    ("first page, newest (no filter; reference)", {"limit": 50}),
    (f"`{EXAMPLE}`, sort -metrics.accuracy", {"filter": EXAMPLE, "sort": "-metrics.accuracy", "limit": 50}),
    ("the same, 2nd page (keyset cursor)+cursor", {"filter": EXAMPLE, "sort": "-metrics.accuracy", "limit": 50}),
    ("the same, with the total count", {"filter": EXAMPLE, "sort": "-metrics.accuracy", "limit": 50,
                                        "with_total": "true"}),
    ("sort -metrics.loss (no filter)", {"sort": "-metrics.loss", "limit": 50}),
    ("`metrics.accuracy > 0.999`, newest first", {"filter": "metrics.accuracy > 0.999", "limit": 50}),
    ("`metrics.final_eval.f1 >= 0.5 and owner = 'owner007'`, sort metrics.final_eval.f1",
     {"filter": "metrics.final_eval.f1 >= 0.5 and owner = 'owner007'", "sort": "metrics.final_eval.f1", "limit": 50}),
    ("`tag = 'prod' and metrics.loss < 0.1 and r in (8, 16)`, newest first",
     {"filter": "tag = 'prod' and metrics.loss < 0.1 and r in (8, 16)", "limit": 50}),
    # one version an adapter (latest=true: each adapter's newest matching version; 1,000 adapters of 100 versions)
    ("latest=true, newest first", {"latest": "true", "limit": 50}),
    ("latest=true, with the total count", {"latest": "true", "limit": 50, "with_total": "true"}),
    ("latest=true, `metrics.accuracy > 0.9`, newest first",
     {"latest": "true", "filter": "metrics.accuracy > 0.9", "limit": 50}),
    (f"latest=true, `{EXAMPLE}`, sort -metrics.accuracy",
     {"latest": "true", "filter": EXAMPLE, "sort": "-metrics.accuracy", "limit": 50}),
]

#: Server-side generation: deterministic (setseed), no Python round trip per row.
LOAD = """
SELECT setseed(0.16);
INSERT INTO blobs (sha256, size, kind, created_at) VALUES (repeat('a', 64), 5600, 'vectors', now());
INSERT INTO base_models (id, name, revision, shapes, shapes_fingerprint, shapes_source, created_at)
  SELECT b, CASE WHEN b = 1 THEN 'minilm' ELSE 'base-' || b END, '', '{{}}', repeat('f', 64), 'implied', now()
  FROM generate_series(1, 10) b;
INSERT INTO projections (id, generator, seed, r, max_in, max_out, fingerprint, reproducible, created_at)
  VALUES (1, 'philox', '0', 8, 64, 64, repeat('f', 64), true, now());
INSERT INTO adapters (id, owner, name, description, created_at)
  SELECT a, 'owner' || lpad(((a - 1) % 100)::text, 3, '0'), 'adapter' || a, '', now()
  FROM generate_series(1, {adapters}) a;
INSERT INTO adapter_versions (id, adapter_id, version, base_model_id, projection_id, r, seed, generator, config,
    vectors_sha256, projection_fingerprint, seed_reproducible, trainable_parameters, adapter_parameters,
    stored_bytes, metrics, description, published_by, created_at, yanked, verification_status)
  SELECT v, (v - 1) / {per_adapter} + 1, (v - 1) % {per_adapter} + 1, 1 + (v * 7) % 10, 1,
    (ARRAY[4, 8, 16, 32, 64, 128, 256, 512, 1024])[1 + (v * 13) % 9], '0', 'philox', '{{}}', repeat('a', 64),
    repeat('f', 64), true, 1000 + v % 5000, 1000 + v % 5000, 5600,
    json_build_object('accuracy', round(random()::numeric, 6), 'loss', round(random()::numeric, 6),
                      'final_eval', json_build_object('f1', round(random()::numeric, 6))),
    '', 'bench', now() - (({versions} - v) || ' seconds')::interval, false, 'unverified'
  FROM generate_series(1, {versions}) v;
INSERT INTO version_tags (version_id, tag) SELECT v, 'prod' FROM generate_series(1, {versions}, 20) v;
INSERT INTO version_metrics (version_id, key, value)
  SELECT id, k, (CASE k WHEN 'final_eval.f1' THEN metrics::jsonb #>> '{{final_eval,f1}}'
                 ELSE metrics::jsonb ->> k END)::float
  FROM adapter_versions, unnest(ARRAY['accuracy', 'loss', 'final_eval.f1']) k;
UPDATE adapters SET visibility = 'private' WHERE id % 10 = 0;
SELECT setval(pg_get_serial_sequence('adapter_versions', 'id'), {versions});
SELECT setval(pg_get_serial_sequence('adapters', 'id'), {adapters});
ANALYZE;
"""


def load(url: str, versions: int) -> float:
    db = Database(url)
    db.upgrade()
    db.engine.dispose()
    start = time.perf_counter()
    per_adapter = 100
    script = LOAD.format(versions=versions, adapters=-(-versions // per_adapter), per_adapter=per_adapter)
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        for statement in script.split(";\n"):
            if statement.strip():
                conn.execute(statement.encode())
    return time.perf_counter() - start


def timed(http: httpx.Client, url: str, params: dict[str, str | int], requests: int,
          token: str) -> tuple[float, float, int]:
    """p50 and p99 in ms, and the number of items on the page."""
    times, items = [], 0
    for _ in range(requests + 2):  # two warm-up requests
        start = time.perf_counter()
        response = http.get(f"{url}/api/v1/adapters", params=params, headers={"Authorization": f"Bearer {token}"})
        times.append(time.perf_counter() - start)
        response.raise_for_status()
        items = len(response.json()["items"])
    q = statistics.quantiles(times[2:], n=100)
    return q[49] * 1e3, q[98] * 1e3, items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    with psycopg.connect(PG_ADMIN) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        settings = dict(conn.execute("SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                                     "('shared_buffers', 'work_mem', 'effective_cache_size')").fetchall())
    server_version = f"{row[0] if row else '?'} ({', '.join(f'{k}={v}' for k, v in sorted(settings.items()))})"
    with tempfile.TemporaryDirectory() as tmp, backend("postgresql", Path(tmp)) as url:
        seconds = load(url, args.versions)
        print(f"## {date.today()} — metric search at {args.versions:,} versions (bench/metric_search.py)\n")
        print(f"PostgreSQL {server_version} on 127.0.0.1, one `vera serve` process (uvicorn, "
              f"1 worker) on the same machine; {args.versions:,} versions inserted with SQL in {seconds:.0f} s "
              f"(3 metric rows each in version_metrics, then ANALYZE); {args.requests} requests per query after 2 "
              "warm-up requests, sequential, through the HTTP API (JSON of 50 versions per page).\n")
        db = Database(url)
        admin, reader = (create_token(db, owner=o, scopes=s)[1] for o, s in (("ops", ["admin"]),
                                                                             ("owner007", ["read"])))
        db.engine.dispose()
        print("| query | items | admin p50 ms | admin p99 ms | reader p50 ms | reader p99 ms | reader / admin |\n"
              "|---|---|---|---|---|---|---|")
        with running_server(url, Path(tmp) / "blobs", VERA_REQUIRE_TOKENS="true") as server, \
                httpx.Client(timeout=120) as http:
            for label, params in QUERIES:
                timings: list[tuple[float, float, int]] = []
                for token in (admin, reader):
                    if label.endswith("+cursor"):
                        cursor = http.get(f"{server}/api/v1/adapters", params=params,
                                          headers={"Authorization": f"Bearer {token}"}).json()["next_cursor"]
                        params_now = {**params, "cursor": cursor}
                    else:
                        params_now = params
                    timings.append(timed(http, server, params_now, args.requests, token))
                (a50, a99, items), (r50, r99, _) = timings[0], timings[1]
                print(f"| {label.removesuffix('+cursor')} | {items} | {a50:.0f} | {a99:.0f} | {r50:.0f} | {r99:.0f} "
                      f"| {r50 / a50:.2f} |")


if __name__ == "__main__":
    main()
