"""MLflow's side of bench/lookup.py, run with MLflow's own environment (bench/.mlflow-venv): register ``--models``
models of ``--versions`` versions each with a ``prod`` alias on version 1 (``seed``), or resolve the references of a
JSON file the two ways an MLflow user can (``resolve``): a call each (get_model_version, get_model_version_by_alias,
and the newest version for an adapter alone), and one search of every version of the models named
(search_model_versions with ``name IN (...)``, paged) resolved locally, with a call each for what a search does not
return. Prints JSON: seconds per way, and what each resolved (for the caller to check against the registry's).

    bench/.mlflow-venv/bin/python bench/mlflow_lookup.py URL seed --models 50 --versions 10
    bench/.mlflow-venv/bin/python bench/mlflow_lookup.py URL resolve REFS.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def model(owner: str, name: str) -> str:
    """The registered model an owner/name stands for (MLflow's names are one flat namespace)."""
    return f"{owner}-{name}"


def parse(ref: str) -> tuple[str, str | None, int | None]:
    """owner/name[:N|@ALIAS] -> (model name, alias, number); neither: the newest version."""
    head, _, number = ref.partition(":")
    head, _, alias = head.partition("@")
    owner, _, name = head.partition("/")
    return model(owner, name), alias or None, int(number) if number else None


def seed(client: Any, models: int, versions: int) -> None:
    for i in range(models):
        name = model("ann", f"a{i}")
        client.create_registered_model(name)
        for _ in range(versions):
            client.create_model_version(name, f"s3://bench/{name}")  # never read: a remote source is taken as is
        client.set_registered_model_alias(name, "prod", "1")


def newest(client: Any, name: str) -> int | None:
    found = client.search_model_versions(f"name = '{name}'", max_results=1, order_by=["version_number DESC"])
    return int(found[0].version) if found else None


def by_alias(client: Any, name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def each(client: Any, refs: list[str]) -> dict[str, int | None]:
    """A call per reference."""
    from mlflow.exceptions import MlflowException

    out: dict[str, int | None] = {}
    for ref in refs:
        name, alias, number = parse(ref)
        if alias is not None:
            out[ref] = by_alias(client, name, alias)
        elif number is None:
            out[ref] = newest(client, name)
        else:
            try:
                out[ref] = int(client.get_model_version(name, str(number)).version)
            except MlflowException:
                out[ref] = None
    return out


def searched(client: Any, refs: list[str]) -> dict[str, int | None]:
    """One paged search of every version of the models named (50 names a filter), resolved here; an alias by a
    call where the search's versions carry none."""
    names = sorted({parse(ref)[0] for ref in refs})
    versions: dict[str, dict[int, Any]] = {}
    for start in range(0, len(names), 50):
        quoted = ", ".join(f"'{n}'" for n in names[start:start + 50])
        token = None
        while True:
            page = client.search_model_versions(f"name IN ({quoted})", max_results=1000, page_token=token)
            for mv in page:
                versions.setdefault(mv.name, {})[int(mv.version)] = mv
            token = page.token
            if not token:
                break
    carried = any(getattr(mv, "aliases", None) for held in versions.values() for mv in held.values())
    out: dict[str, int | None] = {}
    for ref in refs:
        name, alias, number = parse(ref)
        held = versions.get(name, {})
        if number is not None:
            out[ref] = number if number in held else None
        elif alias is None:
            out[ref] = max(held) if held else None
        elif carried:
            out[ref] = next((v for v, mv in held.items() if alias in (mv.aliases or [])), None)
        else:
            out[ref] = by_alias(client, name, alias)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("op", choices=["seed", "resolve"])
    parser.add_argument("refs", nargs="?", type=Path)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--versions", type=int, default=10)
    args = parser.parse_args()

    from mlflow import MlflowClient

    client = MlflowClient(args.url)
    if args.op == "seed":
        seed(client, args.models, args.versions)
        return
    refs: list[str] = json.loads(args.refs.read_text())
    timings: dict[str, float] = {}
    answers: dict[str, dict[str, int | None]] = {}
    for way, call in (("a call each", each), ("one search", searched)):
        call(client, refs)  # once untimed: connections, caches
        started = time.perf_counter()
        answers[way] = call(client, refs)
        timings[way] = time.perf_counter() - started
    print(json.dumps({"seconds": timings, "answers": answers, "aliases_in_search": any(
        getattr(mv, "aliases", None) for mv in client.search_model_versions(f"name = '{model('ann', 'a0')}'"))}))


if __name__ == "__main__":
    main()
