"""What a publish costs the registry, in the service (``Registry.publish``: checks, hashing, blob writes, the rows), on
SQLite and PostgreSQL: wall seconds per publish of a tiny adapter (a fresh seed each, so every one stores its own
vectors), where the database's round trips are a large share. It measures the statements added since a revision: a
move and a publish of one adapter take turns (``lock_adapter``, a no-op UPDATE of the adapter's row), the quota
check before anything is stored (an ``owner_quotas`` lookup), and the unmounted-storage guard.

Each measurement is a new process with the tree's sources on PYTHONPATH, on a fresh database (a SQLite file, or a
PostgreSQL database made for it and dropped after): ``--warm`` untimed publishes, then ``--publishes`` timed. With
``--before REV``, the same measurement of git revision REV (a temporary worktree) alternates with the working tree's,
round by round, so both see the same load; compare the ratio, not the absolute numbers. Prints markdown.

    .venv/bin/python bench/publish_cost.py [--rounds 5] [--publishes 40] [--before REV] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import revisions  # noqa: E402 (bench/revisions.py, beside this script)

#: One measurement, in whichever tree is on PYTHONPATH: argv = database URL, warm, publishes, scratch folder.
MEASURE = """
import json, sys, time
from pathlib import Path
from registry.services.registry import Registry
from registry.store.blobs import FsspecBlobStore
from registry.store.database import Database
from tests.registry.adapters import make_adapter
url, warm, publishes, scratch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
folders = [make_adapter(scratch / f"a{seed}", seed=seed) for seed in range(warm + publishes)]
db = Database(url)
db.upgrade()
registry = Registry(db, FsspecBlobStore(str(scratch / "blobs")))
for folder in folders[:warm]:
    registry.publish(folder, owner="kim", name="bench", base_model="tiny-llama")
started = time.perf_counter()
for folder in folders[warm:]:
    registry.publish(folder, owner="kim", name="bench", base_model="tiny-llama")
print(json.dumps((time.perf_counter() - started) / publishes))
db.engine.dispose()
"""


def _postgres_database(server: str) -> tuple[str, str]:
    """A new empty database on the PostgreSQL server at ``server`` (a URL of any of its databases): (its URL, name)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_publish_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False), name


def _drop(server: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()


def measure(tree: Path, database: str, warm: int, publishes: int, scratch: Path, postgres: str) -> float:
    scratch.mkdir(parents=True)
    name = None
    if database == "postgresql":
        url, name = _postgres_database(postgres)
    else:
        url = f"sqlite:///{scratch / 'r.db'}"
    try:
        out = subprocess.run([sys.executable, "-c", MEASURE, url, str(warm), str(publishes), str(scratch)], cwd=tree,
                             env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True)
    finally:
        if name:
            _drop(postgres, name)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--publishes", type=int, default=40)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--before", help="a git revision to run alternately with the working tree")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL server (a URL of any of its databases; '' for SQLite only)")
    args = parser.parse_args()
    databases = ("sqlite", "postgresql") if args.postgres else ("sqlite",)
    runs: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with revisions.trees(args.before, root) as trees:
            for round_ in range(args.rounds):
                for database in databases:
                    for label, tree in trees.items():
                        runs.setdefault((database, label), []).append(measure(
                            tree, database, args.warm, args.publishes, root / f"{label}-{database}-{round_}",
                            args.postgres))
    load = os.getloadavg()[0]
    print(f"## {date.today()} — a publish in the service, {args.rounds} rounds of {args.publishes} publishes, "
          f"alternated (bench/publish_cost.py" + (f" --before {args.before}" if args.before else "")
          + f"); load average {load:.2f} after\n")
    revisions.print_rounds(runs, kind="database", unit="ms per publish", scale=1000, digits=2, before=args.before)


if __name__ == "__main__":
    main()
