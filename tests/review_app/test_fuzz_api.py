"""Schemathesis fuzzes every operation of the app's own OpenAPI: no input may get a 5xx answer.

Runs as the admin (HTTP basic auth, so every operation is reachable) against a seeded app on SQLite and on
the real PostgreSQL (NUL bytes, 64-bit numbers and odd Unicode reach the database there). Bounded: a fixed
number of generated cases per operation, valid ones (positive) and schema-breaking ones (negative),
derandomized so a CI failure replays the same cases.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from review_app_support import PASSWORD, Env, make_env
from schemathesis.checks import not_a_server_error

ADMIN = {"Authorization": "Basic " + base64.b64encode(f"root:{PASSWORD}".encode()).decode()}
EXAMPLES = 20  # per operation and mode: ~9 operations x 2 modes x 2 databases stay under 2 minutes


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fuzz_env(request: pytest.FixtureRequest, tmp_path: Path, real_data: Path) -> Iterator[Env]:
    if request.param == "sqlite":
        env = make_env(f"sqlite:///{tmp_path / 'queue.db'}", real_data)
        yield env
        env.app.state.review.store.close()
        return
    pg_url: str = request.getfixturevalue("pg_url")
    name = f"shelfwise_fuzz_{secrets.token_hex(4)}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    env = make_env(
        sa.engine.make_url(pg_url).set(database=name).render_as_string(hide_password=False), real_data
    )
    try:
        yield env
    finally:
        env.app.state.review.store.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_no_input_gets_a_server_error(fuzz_env: Env) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_env.app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8  # every /api operation is in the schema, so every one is fuzzed

    runs = [(op, mode) for op in operations for mode in schemathesis.GenerationMode]
    for operation, mode in runs:

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(headers=ADMIN)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            fuzz()
        except Unsatisfiable:
            assert mode == schemathesis.GenerationMode.NEGATIVE  # no parameter to get wrong (GET /api/me)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them together
            failures.append(f"{operation.label} ({mode.value} cases): {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
