"""How long a `vera` registry command takes from the shell, start-up included (issue 15's aim: `vera ls` under 0.5 s
on this machine); with ``--operator``, also the operator's commands, which open the database themselves (`vera token
create`, `vera db status`), and `vera serve` from its start to its first /health answer.

A fresh `vera serve` (SQLite, local blobs) gets a few published versions; each command below runs N times as a new
process (`python -c` calling the `vera` script's main, so that a git revision without an installed script can run
too), against that registry, its output thrown away, with compiled modules kept as on a user's machine (one
untimed run of each first). With ``--before REV``, the same commands of git revision REV
(a temporary worktree, on PYTHONPATH) run alternately with the working tree's, so both see the same load. Prints
markdown: median and best per command, and `python -c pass` for the interpreter's own start.

    .venv/bin/python bench/cli_startup.py [--runs 15] [--before REV] [--operator]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import revisions  # noqa: E402 (bench/revisions.py, beside this script)

from registry.client import RegistryClient  # noqa: E402
from tests.registry.adapters import make_adapter  # noqa: E402
from tests.registry.servers import free_port, running_server  # noqa: E402

#: The `vera` script, in whichever tree is on PYTHONPATH: its main where there is one, else the whole app.
SCRIPT = ("import sys; sys.argv[0] = 'vera'; import registry.cli as cli; "
          "(cli.main if hasattr(cli, 'main') else cli.app)()")
COMMANDS = (["ls"], ["job", "ls"], ["show", "kim/fast0"])
#: With --operator: commands on the registry's database (VERA_DATABASE_URL), as its operator runs them.
OPERATOR = (["token", "create", "--owner", "bench", "--scope", "read"], ["db", "status"])


def timed(command: list[str], tree: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=tree, env=_environment(tree, env), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def _environment(tree: Path, env: dict[str, str] | None) -> dict[str, str]:
    # as on a user's machine, Python keeps the compiled modules (this machine's PYTHONDONTWRITEBYTECODE=1 would have
    # every run compile the registry's sources again: about 0.1 s more)
    kept = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {**kept, "PYTHONPATH": str(tree), "VERA_NO_CACHE": "1", **(env or {})}


def serve_time(tree: Path, env: dict[str, str]) -> float:
    """`vera serve` of ``tree`` on the registry of ``env``, from its start to its first /health answer."""
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-c", SCRIPT, "serve", "--port", str(port)], cwd=tree,
                              env=_environment(tree, env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError(f"vera serve of {tree} did not answer /health (exit {server.returncode})")
            time.sleep(0.01)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--before", help="a git revision to run alternately with the working tree")
    parser.add_argument("--operator", action="store_true",
                        help="also `vera token create`, `vera db status` and `vera serve` to its first answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with revisions.trees(args.before, root) as trees, \
                running_server(f"sqlite:///{root / 'r.db'}", root / "blobs") as url:
            with RegistryClient(url, cache=False) as client:
                for i in range(5):
                    client.publish(make_adapter(root / f"a{i}", seed=i), f"kim/fast{i}", base_model="tiny")
            runs: dict[tuple[str, str], list[float]] = {}
            database = {"VERA_DATABASE_URL": f"sqlite:///{root / 'r.db'}", "VERA_STORAGE_URL": str(root / "blobs")}
            commands = [([*words, "--registry", url], " ".join(words), None) for words in COMMANDS] + (
                [(words, " ".join(words), database) for words in OPERATOR] if args.operator else [])
            for words, _, env in commands:  # once untimed: compiled modules written
                for tree in trees.values():
                    timed([sys.executable, "-c", SCRIPT, *words], tree, env)
            for _ in range(args.runs):
                for words, name, env in commands:
                    for label, tree in trees.items():
                        runs.setdefault((name, label), []).append(timed([sys.executable, "-c", SCRIPT, *words],
                                                                        tree, env))
                for label, tree in trees.items() if args.operator else ():
                    runs.setdefault(("serve (to its first /health)", label), []).append(serve_time(tree, database))
                runs.setdefault(("python -c pass", "-"), []).append(
                    timed([sys.executable, "-c", "pass"], ROOT))
    load = os.getloadavg()[0]
    print(f"## {date.today()} — `vera` command start-up, {args.runs} runs each, alternated (bench/cli_startup.py"
          + (f" --before {args.before}" if args.before else "") + (" --operator" if args.operator else "")
          + f"); load average {load:.2f} after\n")
    print("| command | tree | median s | best s |")
    print("|---|---|---|---|")
    for (words, label), times in runs.items():
        print(f"| `{words}` | {label} | {statistics.median(times):.3f} | {min(times):.3f} |")


if __name__ == "__main__":
    main()
