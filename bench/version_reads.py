"""A version's reads in the registry's own process, this working tree against an earlier revision: ``get`` (one
version's metadata), ``manifest`` (the fetch path's one query: a download's file list with the version) and a page
of ``list_versions`` (50 versions with their tags, properties and parameters), on SQLite, rounds alternated. What
adding a field of the version's (properties, session 28; training parameters, session 41) costs the hot reads,
measured rather than assumed.

    .venv/bin/python bench/version_reads.py [--before REV] [--versions 200] [--reads 2000] [--rounds 3]
        [--properties 4] [--params 0]

Each (tree, round) runs in its own process with that tree first on PYTHONPATH, publishing ``--versions`` small
adapters into a fresh database (with ``--properties`` key=value properties and ``--params`` training parameters
each where the tree has them: the working tree is measured both without and with them; `vera train` records about
30 parameters) and timing ``--reads`` calls of each read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revisions import ROOT, print_rounds, trees  # noqa: E402

READS = ("get", "manifest", "list page")


def inner(versions: int, reads: int, properties: int, params: int, scratch: Path) -> dict[str, float]:
    """In the tree on the path: publish, then seconds per read of each kind."""
    from registry.services.derived import FileForm
    from registry.services.registry import Registry
    from registry.store.blobs import FsspecBlobStore
    from registry.store.database import Database
    from tests.registry.adapters import make_adapter

    db = Database(f"sqlite:///{scratch / 'r.db'}")
    db.upgrade()
    registry = Registry(db, FsspecBlobStore(str(scratch / "blobs")))
    source = make_adapter(scratch / "adapter")
    extra: dict[str, dict[str, str]] = {}
    if properties:
        extra["properties"] = {f"key{i}": f"value {i}" for i in range(properties)}
    if params:
        extra["params"] = {f"setting_{i}": f"{0.001 * (i + 1):g}" for i in range(params)}
    for i in range(versions):
        registry.publish(source, owner="ann", name=f"a{i % 20}", base_model="tiny-llama", tags=["nightly"],
                         **extra)
    ref = "ann/a3:1"
    registry.derived.manifest(ref, FileForm())  # built once: the reads below only read
    calls = {"get": lambda: registry.get(ref), "manifest": lambda: registry.derived.manifest(ref, FileForm()),
             "list page": lambda: registry.list_versions(limit=50)}
    timings = {}
    for name, call in calls.items():
        call()
        started = time.perf_counter()
        for _ in range(reads if name != "list page" else max(1, reads // 10)):
            call()
        timings[name] = (time.perf_counter() - started) / (reads if name != "list page" else max(1, reads // 10))
    db.engine.dispose()
    return timings


def run_tree(tree: Path, args: argparse.Namespace, properties: int, params: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}
        out = subprocess.run([sys.executable, __file__, "--inner", "--versions", str(args.versions), "--reads",
                              str(args.reads), "--properties", str(properties), "--params", str(params),
                              "--scratch", scratch],
                             env=env, cwd=tree, capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"the run in {tree} failed:\n{out.stderr[-3000:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="an earlier revision to compare with (a temporary worktree)")
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--properties", type=int, default=4)
    parser.add_argument("--params", type=int, default=0, help="training parameters each (the working tree)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.versions, args.reads, args.properties, args.params, Path(args.scratch))))
        return
    runs: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch, trees(args.before, Path(scratch)) as found:
        variants = [(label, tree, 0, 0) for label, tree in found.items()]
        variants.insert(1, ("now", ROOT, args.properties, args.params))
        for _ in range(args.rounds):  # alternated: each round runs every variant once
            for label, tree, properties, params in variants:
                given = [f"{properties} properties"] * bool(properties) + [f"{params} params"] * bool(params)
                named = label if not given else f"now, {' and '.join(given)} each"
                for read, seconds in run_tree(tree, args, properties, params).items():
                    runs.setdefault((read, named), []).append(seconds)
    ordered = {(read, label): runs[(read, label)] for read in READS for (r, label) in runs if r == read}
    print_rounds(ordered, kind="read", unit="µs", scale=1e6, digits=0, before=args.before)


if __name__ == "__main__":
    main()
