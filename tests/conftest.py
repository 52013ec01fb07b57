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


# ------------------------------------------------------------------------------------------ full data
# A few tests need the full shared data folder (../shared/data beside the clone, or SHELFWISE_SHARED_DATA),
# which the bundled excerpt (tests/data) cannot stand in for. They are marked `@pytest.mark.full_data` and
# ask for the `shared_data` fixture. The rule, in this one place:
# - folder absent (a user's clone never has it): skip, listed by -ra with FULL_DATA_ABSENT, even in CI;
# - SHELFWISE_SHARED_DATA names a folder that does not exist, or the folder lacks a part: fail.
# CI here always has ../shared, so these tests run there. `-m "not full_data"` leaves them out.
SHARED_ENV = "SHELFWISE_SHARED_DATA"
SHARED = Path(os.environ.get(SHARED_ENV) or REPO.parent / "shared" / "data")
SHARED_PARTS = ("catalogs", "taxonomies", "images/flipkart")
FULL_DATA_ABSENT = "full-data test: the shared data folder is not beside this clone"


def _full_data_problem() -> tuple[str, str] | None:
    """None when the full shared folder is usable, else ("skip" | "fail", message)."""
    if not SHARED.exists():
        if os.environ.get(SHARED_ENV):
            return "fail", f"{SHARED_ENV}={SHARED} does not exist; point it at the shared data folder"
        return "skip", (f"{FULL_DATA_ABSENT} ({SHARED} is absent; {SHARED_ENV}=/path/to/shared/data runs it)")
    missing = [part for part in SHARED_PARTS if not (SHARED / part).is_dir()]
    if missing:
        return "fail", (
            f"shared data folder {SHARED} exists but lacks {', '.join(m + '/' for m in missing)}; "
            f"restore it, or point {SHARED_ENV} at a complete copy"
        )
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("full_data") is None:
        return
    problem = _full_data_problem()
    if problem is not None:
        (pytest.skip if problem[0] == "skip" else pytest.fail)(problem[1])


@pytest.fixture()
def shared_data(request: pytest.FixtureRequest) -> Path:
    """The full shared data folder (../shared/data), for tests marked ``@pytest.mark.full_data``."""
    if request.node.get_closest_marker("full_data") is None:
        pytest.fail("a test that reads the full shared data folder must be marked @pytest.mark.full_data")
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
# (scikit-learn's optional pandas / array-API checks) stay skips, and so do the full-data tests where
# ../shared is absent (a user's clone running .ci/run; see "full data" above).
CI_ALLOWED_SKIPS = ("pandas is not installed", "SCIPY_ARRAY_API is not set")


def _skip_to_failure(report: pytest.TestReport | pytest.CollectReport, *, full_data: bool = False) -> None:
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    if any(allowed in reason for allowed in CI_ALLOWED_SKIPS):
        return
    if full_data and FULL_DATA_ABSENT in reason:  # a clone without ../shared: the one skip CI keeps
        return
    report.outcome = "failed"
    report.longrepr = f"skipped in CI (CI=true): {reason}; CI must provide what this test needs"


# A fixture that runs a server process names its log for the test's report:
# request.node.user_properties.append(("service_log", "NAME=PATH")). A failing test then shows the log's
# tail under the failure, so a server that misbehaved or died tells why.
SERVICE_LOG_TAIL = 4000


def _attach_service_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    if not report.failed:
        return
    for key, value in item.user_properties:
        if key != "service_log" or "=" not in str(value):
            continue
        name, _, path = str(value).partition("=")
        log = Path(path)
        text = log.read_text(errors="replace")[-SERVICE_LOG_TAIL:] if log.is_file() else "(no log written)"
        report.sections.append((f"{name} log, last {SERVICE_LOG_TAIL} characters ({log})", text))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    _skip_to_failure(report, full_data=item.get_closest_marker("full_data") is not None)
    _attach_service_logs(item, report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    _skip_to_failure(outcome.get_result())


# --------------------------------------------------------------------------------------------- xdist
# The suite runs on two xdist workers, each taking whole modules (addopts in pyproject.toml: -n 2 --dist
# loadscope, so a module-scoped fixture such as a trained model or a started server is built once; `-n 0`
# runs in one process, e.g. for --pdb). Files several modules read are built once for both workers
# (`build_once`). The slowest modules (SLOWEST_FIRST, measured), then the other modules with such
# fixtures or slow tests, are sent first (--no-loadscope-reorder keeps this order), so no long test starts
# last while the other worker idles.


def _front(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    chains = info.name2fixturedefs.values() if info else []
    return bool(item.get_closest_marker("slow")) or any(chain[-1].scope == "module" for chain in chains)


# The slowest modules, longest first, so the two workers end together (the longest start first and the
# short ones fill in at the end). Order from a fresh clone's `--durations=60` run (2026-12-07, the 2-core
# CI machine under load, seconds per module: migration_e2e 569, test_pipeline 502, kill_keeps_work 474,
# embedding_cache_pg 429, nightly_flow 423, incremental 418, dask_engine 376, fault_dask_worker 326, ...),
# with these changes: test_dask_engine builds the flow tests' shared night (`amazon_night`, `threads_night`),
# so it goes before the other modules that read it (they would wait on its lock), and the modules cut
# since then (kill_keeps_work, the two Dask tests, the S3 outage) are placed by their new times; the
# report modules stay together.
SLOWEST_FIRST = (
    "tests/pipeline/test_migration_e2e.py",
    "tests/pipeline/test_pipeline.py",
    "tests/flows/test_dask_engine.py",
    "tests/flows/test_nightly_flow.py",
    "tests/classifiers_embedding/test_embedding_cache_pg.py",
    "tests/pipeline/test_incremental.py",
    "tests/classifiers_embedding/test_kill_keeps_work.py",
    "tests/flows/test_fault_dask_worker.py",
    "tests/flows/test_dask_warmup.py",  # added since: one `shelfwise run --dask-workers 2` (95-232 s loaded)
    "tests/flows/test_sigkill.py",
    "tests/reports/test_report_browser.py",  # the report modules one after the other: each worker that
    "tests/reports/test_report_figures.py",  # runs one builds their session fixture `nights` (~100 s)
    "tests/reports/test_report_edges.py",
    "tests/reports/test_report_llm.py",
    "tests/classifiers_model/test_model.py",
    "tests/llm/test_llama_server.py",
    "tests/classifiers_embedding/test_cache.py",
    "tests/verification_store/test_labelstudio_server.py",
    "tests/flows/test_fault_s3_outage.py",
)


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return SLOWEST_FIRST.index(path) if path in SLOWEST_FIRST else len(SLOWEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # stable sort: the listed modules in their order, then the other front modules, then the rest, each
    # in collection order
    items.sort(key=lambda item: (_rank(item), not _front(item)))
