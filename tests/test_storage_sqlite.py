"""The demo's storage path, on the database it serves.

The product runs on PostgreSQL; `make demo` runs each role on SQLite, so that it
needs nothing but a redis-server. Where the two differ (one-statement claims and
outcomes, capability counters, JSON containment, the summary's and overview's
counting SQL: project/dbbackends), the portable path is the one the demo takes.
This runs the tests of those services again, in a pytest of its own on an
in-memory SQLite database, so both paths run in every CI run on the database
each one serves (the demo itself runs in tests/test_demo.py). Tests of what only
PostgreSQL does are marked `postgresql` and left out."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The modules that reach a dialect fork (project.dbbackends.is_postgresql, connection.vendor).
MODULES = [
    "tests/regions/test_services_tasks.py",
    "tests/regions/test_api_errors.py",
    "tests/regions/test_summary_bounds.py",
    "tests/regions/test_task_batch.py",
    "tests/regions/test_task_no_agent.py",
    "tests/regions/test_fleet_scale.py",
    "tests/regions/test_migration_task_finished_idx.py",
    "tests/regions/test_leadership.py",
    "tests/router",
    "tests/test_overview.py",
    "tests/test_storage_sqlite.py::test_the_tests_run_on_the_database_asked_for",
]


@pytest.mark.django_db
def test_the_tests_run_on_the_database_asked_for():
    from django.db import connection

    asked = os.environ.get("DATABASE_URL", "postgres")
    assert connection.vendor == ("sqlite" if asked.startswith("sqlite") else "postgresql")


@pytest.mark.integration  # a pytest process of its own
def test_the_storage_paths_of_the_demo_pass_their_tests_on_sqlite():
    env = {**os.environ, "DATABASE_URL": "sqlite:///:memory:"}
    env.pop("PYTEST_ADDOPTS", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-m", "not integration and not faults and not browser and not postgresql", *MODULES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = "\n".join(run.stdout.splitlines()[-40:])
    assert run.returncode == 0, f"on SQLite:\n{tail}\n{run.stderr[-2000:]}"
    assert " passed" in tail and " deselected" in tail, tail
