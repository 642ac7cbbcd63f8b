"""The registry starts, reads and answers its operator without torch: `vera serve` and commands such as `vera token
create` import it only when they touch tensors (a publish, a verify, a comparison, a job's spec checked, the first
download of a version's files, which builds them). Importing torch took 2-3 s of a server's or a command's start
here, and 190 MB of its peak memory (107 MB for the API alone, 296 MB with torch), which a read replica never needs.
Each check runs in a fresh interpreter, so nothing an earlier test imported counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from registry.bootstrap import open_registry
from registry.settings import Settings
from tests.registry.adapters import make_adapter

#: Run in a fresh interpreter against the registry in VERA_DATABASE_URL / VERA_STORAGE_URL: the API's read routes,
#: then a publish; prints whether torch was imported after the reads and after the publish.
READS_THEN_PUBLISH = """
import json, sys
from fastapi.testclient import TestClient
from registry.bootstrap import api_from_environment

answers = {}
with TestClient(api_from_environment()) as client:
    for path in ("/health", "/ready", "/api/v1/adapters", "/api/v1/adapters?filter=r%20%3E%3D%202&q=kept",
                 "/api/v1/adapters/ann/kept", "/api/v1/adapters/ann/kept/versions/1",
                 "/api/v1/adapters/ann/kept/versions/latest/lineage",
                 "/api/v1/adapters/ann/kept/versions/1/verification", "/api/v1/projections", "/api/v1/events",
                 "/api/v1/whoami", "/api/v1/base-models"):
        answers[path] = client.get(path).status_code
    after_reads = "torch" in sys.modules
    with open(sys.argv[1] + "/adapter_config.json", "rb") as config, \\
            open(sys.argv[1] + "/adapter_model.safetensors", "rb") as weights:
        published = client.post("/api/v1/adapters/ann/fresh/versions", data={"base_model": "tiny-llama"},
                                files={"adapter_config": config, "adapter_model": weights}).status_code
print(json.dumps({"answers": answers, "after_reads": after_reads, "published": published,
                  "after_publish": "torch" in sys.modules}))
"""


def test_a_server_reads_without_torch_and_imports_it_at_the_first_publish(tmp_path: Path) -> None:
    url, storage = f"sqlite:///{tmp_path / 'r.db'}", str(tmp_path / "blobs")
    registry = open_registry(Settings(database_url=url, storage_url=storage), create_if_empty=True)
    registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="kept", base_model="tiny-llama", tags=["t"])
    registry.db.engine.dispose()
    run = subprocess.run([sys.executable, "-c", READS_THEN_PUBLISH, str(tmp_path / "a")], capture_output=True,
                         text=True, timeout=300, check=False,
                         env={**os.environ, "VERA_DATABASE_URL": url, "VERA_STORAGE_URL": storage})
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.splitlines()[-1])
    assert set(seen["answers"].values()) == {200}, seen["answers"]
    assert seen["after_reads"] is False  # every read route above, torch-free
    assert (seen["published"], seen["after_publish"]) == (201, True)  # validating an adapter is when it comes


def test_operator_commands_start_without_torch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    env = {**os.environ, "VERA_DATABASE_URL": url, "VERA_STORAGE_URL": str(tmp_path / "blobs")}
    for args in (["db", "upgrade"], ["token", "create", "--owner", "ann", "--scope", "read"], ["token", "list"],
                 ["db", "status"]):
        run = subprocess.run([sys.executable, "-X", "importtime", "-m", "registry.cli", *args], capture_output=True,
                             text=True, timeout=300, check=False, env=env)
        assert run.returncode == 0, (args, run.stdout, run.stderr)
        imported = [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line]
        assert imported and "torch" not in imported, args
