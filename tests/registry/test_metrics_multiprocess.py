"""/metrics with several API processes on one port (`vera serve --workers N`): prometheus_client's multiprocess mode
(registry.api.metrics.multiprocess_directory), so that a scrape reaching any process counts every request. Before
it, each process answered with its own counters, which jumped from scrape to scrape."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from registry.api.metrics import MULTIPROCESS_DIR, multiprocess_directory
from registry.domain.errors import InvalidInput
from tests.registry.servers import free_port, running_vera


def test_several_processes_get_a_private_directory_removed_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIR, raising=False)
    with multiprocess_directory(2) as directory:
        assert directory is not None and directory.is_dir() and not any(directory.iterdir())
        assert os.environ[MULTIPROCESS_DIR] == str(directory)  # what the processes started here inherit
        assert directory.stat().st_mode & 0o077 == 0
    assert not directory.exists() and MULTIPROCESS_DIR not in os.environ


def test_one_process_counts_for_itself_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIR, raising=False)
    with multiprocess_directory(1) as directory:
        assert directory is None and MULTIPROCESS_DIR not in os.environ


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
def test_the_operators_directory_is_cleared_of_an_earlier_runs_files_and_kept(
        processes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "counter_7.db").write_bytes(b"an earlier run's counts")
    (tmp_path / "histogram_7.db").write_bytes(b"an earlier run's latencies")
    (tmp_path / "README").write_text("the operator's")
    monkeypatch.setenv(MULTIPROCESS_DIR, str(tmp_path))
    with multiprocess_directory(processes) as directory:
        assert directory == tmp_path and [p.name for p in tmp_path.iterdir()] == ["README"]
    assert os.environ[MULTIPROCESS_DIR] == str(tmp_path) and (tmp_path / "README").exists()


def test_an_operators_directory_holding_a_database_is_refused_and_nothing_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outsider's walk (session 16): PROMETHEUS_MULTIPROC_DIR set to VERA_DATA_DIR deleted registry.db at start,
    and the registry came up empty."""
    (tmp_path / "registry.db").write_bytes(b"SQLite format 3\x00 the registry")
    (tmp_path / "counter_7.db").write_bytes(b"an earlier run's counts")
    monkeypatch.setenv(MULTIPROCESS_DIR, str(tmp_path))
    with pytest.raises(InvalidInput, match=r"holds registry.db, which prometheus_client did not write.*a directory "
                                           r"of their own"), multiprocess_directory(2):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_7.db", "registry.db"]


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_an_operators_directory_that_is_none_is_refused(kind: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    named = tmp_path / "metrics"
    if kind == "file":
        named.write_text("")
    monkeypatch.setenv(MULTIPROCESS_DIR, str(named))
    found = "does not exist" if kind == "missing" else "is not a directory"
    said = f"PROMETHEUS_MULTIPROC_DIR={re.escape(repr(str(named)))} {found}: it must name a directory.*or unset"
    with pytest.raises(InvalidInput, match=said), multiprocess_directory(2):
        pass


def requests_counted(families: Iterable[Metric], route: str) -> float:
    """vera_http_requests for ``route``, every method and status, in parsed metric families."""
    return sum(sample.value for family in families if family.name == "vera_http_requests"
               for sample in family.samples if sample.name == "vera_http_requests_total"
               and sample.labels["route"] == route)


def counted_per_process(directory: Path, route: str) -> dict[str, float]:
    """The requests to ``route`` each process has counted so far, from its own counter file (counter_PID.db)."""
    counted = {}
    for file in directory.glob("counter_*.db"):
        families = MultiProcessCollector.merge([str(file)])  # type: ignore[no-untyped-call]
        counted[file.stem] = requests_counted(families, route)
    return counted


@pytest.mark.slow
def test_every_scrape_of_two_processes_counts_every_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A real `vera serve --workers 2` on SQLite: requests to /health, sent on new connections (the kernel hands
    each to either process) until both processes have answered some; then every scrape, whichever process answers
    it, says how many were sent in all. The private directory of the counters is gone once the server stopped."""
    temp = tmp_path / "tmp"  # the server's TMPDIR: where its private directory is made
    temp.mkdir()
    monkeypatch.delenv(MULTIPROCESS_DIR, raising=False)
    port = free_port()
    # waiting on /ready, so that the only requests to /health are the test's
    with running_vera(["serve", "--port", str(port), "--workers", "2"], port, health="/ready",
                      VERA_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
                      VERA_STORAGE_URL=str(tmp_path / "blobs"), TMPDIR=str(temp)) as url:
        [directory] = temp.glob("vera-metrics-*")
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while sent == 0 or (len([n for n in counted_per_process(directory, "/health").values() if n]) < 2
                                and sent < 400):
                answers = list(pool.map(lambda _: httpx.get(f"{url}/health").status_code, range(40)))
                assert answers == [200] * 40
                sent += 40
        per_process = counted_per_process(directory, "/health")
        assert len([n for n in per_process.values() if n]) >= 2, per_process  # else one process's count is all
        assert sum(per_process.values()) == sent
        scrapes = [httpx.get(f"{url}/metrics") for _ in range(8)]  # new connections: either process answers
        totals = [requests_counted(text_string_to_metric_families(s.text), "/health") for s in scrapes]
        assert totals == [sent] * len(scrapes) and sent >= 40
        assert "vera_versions 0.0" in scrapes[0].text  # the registry's totals, read by the process scraped
        assert "process_resident_memory_bytes" not in scrapes[0].text  # one process's of several: not said
    assert not list(temp.glob("vera-metrics-*"))
