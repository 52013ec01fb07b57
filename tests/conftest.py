"""Shared fixtures. Everything stays offline and on 127.0.0.1."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Offline, quiet, and state inside the project (set before Prefect or transformers are imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("PREFECT_HOME", str(REPO / ".shelfwise-test" / "prefect"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
for _var in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
    os.environ.pop(_var, None)

# Hypothesis (the fuzz tests): bounded everywhere, reproducible in CI, long runs on request
# (HYPOTHESIS_PROFILE=deep). Examples that failed once are replayed from .shelfwise-test/hypothesis.
try:
    from hypothesis import HealthCheck
    from hypothesis import settings as _hypothesis_settings
    from hypothesis.database import DirectoryBasedExampleDatabase
except ImportError:  # pragma: no cover - the test extra installs it
    pass
else:
    _common = {"suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
    _hypothesis_settings.register_profile(
        "default",
        max_examples=50,
        deadline=5000,
        database=DirectoryBasedExampleDatabase(str(REPO / ".shelfwise-test" / "hypothesis")),
        **_common,
    )
    _hypothesis_settings.register_profile(
        "ci", max_examples=50, deadline=5000, derandomize=True, database=None, print_blob=True, **_common
    )
    _hypothesis_settings.register_profile("deep", max_examples=3000, deadline=None, **_common)
    _hypothesis_settings.load_profile(
        os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
    )

SHARED = Path(os.environ.get("SHELFWISE_SHARED_DATA", REPO.parent / "shared" / "data"))
PG_URL = os.environ.get("SHELFWISE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


REAL_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The small real excerpt bundled in tests/data/, laid out like ../shared/data (always present).

    catalogs/, taxonomies/ and images/flipkart/ hold the same file names as the shared folder; what is
    whole and what is cut is listed in tests/data/SOURCES.md.
    """
    if not (REAL_DATA / "catalogs" / "flipkart.parquet").is_file():
        pytest.fail(
            f"the bundled test data {REAL_DATA} is missing (rebuild: python tests/data/make_excerpt.py)"
        )
    return REAL_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The full shared data folder (../shared/data), for the few tests the excerpt cannot serve.

    Required in CI; skipped in a user's clone without it (the skip is listed in the summary, -ra).
    """
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder {SHARED} is missing; CI needs it (set SHELFWISE_SHARED_DATA)")
        pytest.skip(f"shared data folder {SHARED} not present (set SHELFWISE_SHARED_DATA)")
    return SHARED


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The small real excerpt bundled in data/ (always present)."""
    return REPO / "data"


@pytest.fixture(scope="session")
def build_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[Path], None]], Path]:
    """`build_once(name, build)`: a folder ``name`` filled by ``build(folder)`` once per test run, shared
    by the xdist workers (the first to ask builds it under a file lock, the others wait and read it).

    For expensive session data that tests only read (a trained model, a warm embedding cache)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above each worker's own basetemp

    def get(name: str, build: Callable[[Path], None]) -> Path:
        folder = base / name
        with (base / f"{name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / ".built").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                build(folder)
                (folder / ".built").touch()
        return folder

    return get


@pytest.fixture(scope="session")
def minilm():
    """One real all-MiniLM-L6-v2 embedder for the whole session (loaded lazily, once)."""
    from classifiers import make_embedder

    return make_embedder("minilm")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the real PostgreSQL on 127.0.0.1:5432. Required in CI."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no PostgreSQL here"
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    return PG_URL


# ------------------------------------------------------------------------------------------------ CI
# In CI (CI=true, set by .ci/run) a test of ours that skips for a missing service, browser, extra or
# file fails instead: a green run must mean everything ran. Skips decided by a library on its own
# (scikit-learn's optional pandas / array-API checks) stay skips.
CI_ALLOWED_SKIPS = ("pandas is not installed", "SCIPY_ARRAY_API is not set")


def _skip_to_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    if any(allowed in reason for allowed in CI_ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped in CI (CI=true): {reason}; CI must provide what this test needs"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    _skip_to_failure(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    _skip_to_failure(outcome.get_result())


# --------------------------------------------------------------------------------------------- xdist
# The suite runs on two xdist workers, each taking whole modules (addopts in pyproject.toml: -n 2 --dist
# loadscope, so a module-scoped fixture such as a trained model or a started server is built once; `-n 0`
# runs in one process, e.g. for --pdb). Files several modules read are built once for both workers
# (`build_once`). The modules with such fixtures, and the slow tests, are sent first
# (--no-loadscope-reorder keeps this order), so no long test starts last while the other worker idles.


def _front(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    chains = info.name2fixturedefs.values() if info else []
    return bool(item.get_closest_marker("slow")) or any(chain[-1].scope == "module" for chain in chains)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    first = [item for item in items if _front(item)]
    items[:] = first + [item for item in items if not _front(item)]
