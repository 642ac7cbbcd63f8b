"""MLflow's side of bench/vs_mlflow.py, run with MLflow's own environment (bench/.mlflow-venv): publish adapter
folders as registered model versions (a run's artifacts + register_model), or fetch them back with
mlflow.artifacts.download_artifacts("models:/NAME/VERSION"), from ``threads`` threads; prints latencies as JSON.

    bench/.mlflow-venv/bin/python bench/mlflow_driver.py URL publish|fetch ADAPTER_DIRS... [--threads N] [--requests N]
        [--warm]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from driver_timing import timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("op", choices=["publish", "fetch"])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prefix", default="a")
    parser.add_argument("--warm", action="store_true", help="fetches: one untimed call per thread first")
    args = parser.parse_args()

    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(args.url)
    client = MlflowClient(args.url)
    scratch = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    if args.op == "publish":  # adapter i as the registered model {prefix}{i}
        experiment = client.create_experiment(f"bench-{time.time_ns()}")

        def publish(i: int) -> None:
            run = client.create_run(experiment)
            client.log_artifacts(run.info.run_id, str(args.dirs[i % len(args.dirs)]), "adapter")
            client.set_terminated(run.info.run_id)
            name = f"{args.prefix}{i}"  # MLflow 3's register_model wants a logged model; a folder goes this way
            client.create_registered_model(name)
            client.create_model_version(name, f"{run.info.artifact_uri}/adapter", run_id=run.info.run_id)

        result = timed(publish, args.requests, args.threads)
    else:
        def fetch(i: int) -> None:
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/a{i % len(args.dirs)}/1",
                                                dst_path=str(scratch / str(i)))

        result = timed(fetch, args.requests, args.threads, warm=args.warm)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
