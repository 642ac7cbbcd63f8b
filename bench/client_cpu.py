"""What the registry client's own work costs per request: CPU seconds of the client process (``time.process_time``,
so the server's share and the machine's other load stay out of it) for a file list, a version's info and a whole
seed-only fetch (list, download, hash, write), against one `vera serve` (SQLite, local blobs).

Each measurement is a new process with the tree's sources on PYTHONPATH: 50 untimed calls, then ``--calls`` timed.
With ``--before REV``, the same measurement of git revision REV (a temporary worktree) alternates with the working
tree's, round by round, so both see the same load; compare the ratio, not the absolute numbers. Prints markdown.

    .venv/bin/python bench/client_cpu.py [--rounds 5] [--calls 200] [--before REV]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import revisions  # noqa: E402 (bench/revisions.py, beside this script)

from registry.client import RegistryClient  # noqa: E402
from tests.registry.adapters import make_adapter  # noqa: E402
from tests.registry.servers import running_server  # noqa: E402

#: One measurement, in whichever tree is on PYTHONPATH: argv = url, operation, calls, scratch folder.
MEASURE = """
import json, shutil, sys, time
from pathlib import Path
from registry.client import RegistryClient
url, op, calls, scratch = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
with RegistryClient(url, cache=False) as client:
    def fetch(i):
        client.fetch("kim/bench:1", scratch / "out", seed_only=True)
    one = {"files": lambda i: client.files("kim/bench:1"), "get": lambda i: client.get("kim/bench:1"),
           "fetch": fetch}[op]
    for i in range(50):
        one(i)
    started = time.process_time()
    for i in range(calls):
        one(i)
    print(json.dumps((time.process_time() - started) / calls))
"""
OPERATIONS = ("files", "get", "fetch")


def measure(tree: Path, url: str, op: str, calls: int, scratch: Path) -> float:
    out = subprocess.run([sys.executable, "-c", MEASURE, url, op, str(calls), str(scratch)], cwd=tree,
                         env={**os.environ, "PYTHONPATH": str(tree), "VERA_NO_CACHE": "1"},
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--before", help="a git revision to run alternately with the working tree")
    args = parser.parse_args()
    runs: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        # out of the way of the costly-request budget (file lists and downloads count): the client is measured
        with revisions.trees(args.before, root) as trees, \
                running_server(f"sqlite:///{root / 'r.db'}", root / "blobs",
                               VERA_COSTLY_REQUESTS_PER_MINUTE="1000000000") as url:
            with RegistryClient(url, cache=False) as client:
                client.publish(make_adapter(root / "a"), "kim/bench", base_model="tiny")
            for _ in range(args.rounds):
                for op in OPERATIONS:
                    for label, tree in trees.items():
                        runs.setdefault((op, label), []).append(measure(tree, url, op, args.calls, root / label))
    load = os.getloadavg()[0]
    print(f"## {date.today()} — the client's CPU per request, {args.rounds} rounds of {args.calls} calls, alternated "
          f"(bench/client_cpu.py" + (f" --before {args.before}" if args.before else "")
          + f"); load average {load:.2f} after\n")
    revisions.print_rounds(runs, kind="operation", unit="ms of client CPU per call (its mean)", scale=1000, digits=3,
                           before=args.before)


if __name__ == "__main__":
    main()
