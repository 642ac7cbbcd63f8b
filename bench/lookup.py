"""Checking many versions again over real HTTP: one ``POST /api/v1/adapters/lookup`` of N references (what
`vera serve-model`'s listings and `vera resolve` send) against N ``GET .../versions/{sel}`` (what a client had
before), on a `vera serve` with SQLite or the local PostgreSQL, rounds alternated. The references mix numbers,
aliases and adapters' latest, with a share that names nothing (a missing alias, a number never given).

``--mlflow``: the same models, versions and aliases in MLflow's Model Registry (its server on SQLite, driven by its
client in its own environment, bench/mlflow_lookup.py), resolved the two ways an MLflow user can: a call each, and
one paged search of every version of the models named; each round alternated with ours, answers checked equal.

    .venv/bin/python bench/lookup.py [--versions 500] [--refs 500] [--rounds 5] [--database sqlite|postgresql]
        [--mlflow]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry.client import RegistryClient  # noqa: E402
from registry.domain.errors import NotFound  # noqa: E402
from tests.registry.adapters import make_adapter  # noqa: E402
from tests.registry.servers import free_port, running_server  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


def references(versions: int, refs: int) -> list[str]:
    """``refs`` references over ``versions`` versions of 50 adapters, each adapter named ten ways in turn: @prod,
    its latest, seven version numbers, and one naming nothing (a missing alias, or a number it never had)."""
    per_adapter = max(1, versions // 50)
    made: list[str] = []
    for i in range(refs):
        adapter, kind = f"ann/a{(i // 10) % 50}", i % 10
        if kind == 0:
            made.append(f"{adapter}@prod")
        elif kind == 1:
            made.append(adapter)
        elif kind < 9:
            made.append(f"{adapter}:{1 + (kind - 2 + i // 500) % per_adapter}")
        else:
            made.append(f"{adapter}@missing" if (i // 10) % 2 else f"{adapter}:{per_adapter + 1}")
    return made


def one_by_one(client: RegistryClient, refs: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for ref in refs:
        try:
            found[ref] = client.get(ref).ref
        except NotFound:
            found[ref] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=500)
    parser.add_argument("--refs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--mlflow", action="store_true", help="MLflow's Model Registry side by side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if args.database == "sqlite":
            run(args, f"sqlite:///{root / 'r.db'}", root)
        else:
            from tests.registry.conftest import fresh_postgres

            with fresh_postgres("vera_bench") as url:
                run(args, url, root)


def run(args: argparse.Namespace, url: str, root: Path) -> None:
    source = make_adapter(root / "adapter")
    refs = references(args.versions, args.refs)
    times: dict[str, list[float]] = {"lookup": [], "GET each": []}
    with running_server(url, root / "blobs", VERA_REQUIRE_TOKENS="false") as base, \
            RegistryClient(base, cache=False) as client, mlflow_side(args, root, refs) as mlflow:
        for i in range(args.versions):
            client.publish(source, f"ann/a{i % 50}", base_model="tiny-llama", tags=["nightly"])
        for a in range(50):
            client.set_alias(f"ann/a{a}:1", "prod")
        batched = {ref: (v.ref if v else None) for ref, v in client.lookup(refs).items()}
        assert batched == one_by_one(client, refs), "the lookup and the GETs disagree"
        numbers = {ref: int(v.rsplit(":", 1)[1]) if v else None for ref, v in batched.items()}
        missing = sum(v is None for v in batched.values())
        for _ in range(args.rounds):  # alternated
            started = time.perf_counter()
            client.lookup(refs)
            times["lookup"].append(time.perf_counter() - started)
            started = time.perf_counter()
            one_by_one(client, refs)
            times["GET each"].append(time.perf_counter() - started)
            if mlflow is not None:
                for way, (seconds, answers) in mlflow().items():
                    assert answers == numbers, f"MLflow's {way} disagrees with the registry"
                    times.setdefault(f"MLflow: {way}", []).append(seconds)
    print(f"{len(refs)} references ({len(set(refs))} distinct, {missing} naming nothing), {args.versions} versions "
          f"of 50 adapters, {args.database}, {args.rounds} rounds alternated")
    print("| how | median s (all refs) | min s | spread (max/min) | ms per reference | x lookup |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    ours = statistics.median(times["lookup"])
    for how, seconds in times.items():
        median = statistics.median(seconds)
        print(f"| {how} | {median:.3f} | {min(seconds):.3f} | {max(seconds) / min(seconds):.2f} | "
              f"{1000 * median / len(refs):.3f} | {median / ours:.1f} |")


@contextmanager
def mlflow_side(args: argparse.Namespace, root: Path, refs: list[str]
                ) -> Iterator[Callable[[], dict[str, tuple[float, dict[str, int | None]]]] | None]:
    """With --mlflow: MLflow's server, seeded as the registry is, and a call that times one round of its two ways
    (each way's seconds and what it resolved); else None."""
    if not args.mlflow:
        yield None
        return
    from vs_mlflow import mlflow_python, mlflow_server, server

    python = mlflow_python()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = mlflow_server(port, root)
    listed = root / "refs.json"
    listed.write_text(json.dumps(refs))
    driver = str(Path(__file__).resolve().parent / "mlflow_lookup.py")

    def call(*more: str) -> str:
        done = subprocess.run([str(python), driver, url, *more], capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"mlflow_lookup.py {more[0]} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def one_round() -> dict[str, tuple[float, dict[str, int | None]]]:
        result = json.loads(call("resolve", str(listed)).strip().splitlines()[-1])
        carried = "its versions with their aliases" if result["aliases_in_search"] else "an alias a call each"
        return {f"{way} ({carried})" if way == "one search" else way: (seconds, result["answers"][way])
                for way, seconds in result["seconds"].items()}

    with server(command, f"{url}/health", {}):
        call("seed", "--models", "50", "--versions", str(max(1, args.versions // 50)))
        yield one_round

if __name__ == "__main__":
    main()
