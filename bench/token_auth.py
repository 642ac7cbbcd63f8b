"""What a token's last use costs each authenticated request: `registry.services.tokens.authenticate` (every request
with a token runs it) when it writes `last_used_at` on every call, as it did before session 17
(`LAST_USED_EVERY = 0`), and as it does now (at most once a minute per token). Per-call latency on one thread and
calls per second on 8 threads, on SQLite (a file, WAL) and PostgreSQL, rounds alternated so that both see the same
machine; prints markdown (ratios: the machine is noisy).

    .venv/bin/python bench/token_auth.py [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from registry.services import tokens  # noqa: E402
from registry.store.database import Database  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
MODES = {"every call (before)": timedelta(0), "once a minute (now)": tokens.LAST_USED_EVERY}


@contextmanager
def database(kind: str, root: Path) -> Iterator[Database]:
    if kind == "sqlite":
        db = Database(f"sqlite:///{root / 'auth.db'}")
        db.upgrade()
        yield db
        db.engine.dispose()
        return
    name = f"bench_auth_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = Database(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        db.upgrade()
        yield db
        db.engine.dispose()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def one_thread(db: Database, secret: str, calls: int) -> float:
    """Median seconds per call, one thread."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        tokens.authenticate(db, secret)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def eight_threads(db: Database, secrets: list[str], calls: int) -> float:
    """Calls per second, 8 threads, each with its own token (as 8 users' requests)."""
    def run(secret: str) -> None:
        for _ in range(calls // 8):
            tokens.authenticate(db, secret)

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, secrets))
    return (calls // 8) * 8 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.calls} calls per measurement, {args.rounds} rounds alternated, medians of the rounds\n")
    print("| database | last_used_at written | median per call, 1 thread | calls/s, 8 threads |")
    print("| --- | --- | --- | --- |")
    for kind in ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as db:
            secrets = [tokens.create_token(db, owner=f"user{i}", scopes=["read"])[1] for i in range(8)]
            results: dict[str, tuple[list[float], list[float]]] = {mode: ([], []) for mode in MODES}
            for round_ in range(args.rounds):
                for mode in (list(MODES) if round_ % 2 == 0 else list(reversed(MODES))):
                    tokens.LAST_USED_EVERY = MODES[mode]
                    results[mode][0].append(one_thread(db, secrets[0], args.calls))
                    results[mode][1].append(eight_threads(db, secrets, args.calls))
            tokens.LAST_USED_EVERY = MODES["once a minute (now)"]
            before = results["every call (before)"]
            base = {"latency": statistics.median(before[0]), "rate": statistics.median(before[1])}
            for mode, (latencies, rates) in results.items():
                latency, rate = statistics.median(latencies), statistics.median(rates)
                print(f"| {kind} | {mode} | {latency * 1e3:.3f} ms ({latency / base['latency']:.2f}x) | "
                      f"{rate:,.0f} ({rate / base['rate']:.2f}x) |")


if __name__ == "__main__":
    main()
