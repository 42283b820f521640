"""regions/migrations/0016 builds its index on regions_task, the busiest table,
without locking writes to it on PostgreSQL (CREATE INDEX CONCURRENTLY), and
still builds it on SQLite (the demo's embedded database: this module runs
there too, tests/test_storage_sqlite.py)."""
import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)

INDEX = "task_finished_idx"


def sql_of(name: str, *, backwards: bool = False) -> str:
    from io import StringIO

    out = StringIO()
    call_command("sqlmigrate", "regions", name, backwards=backwards, stdout=out)
    return out.getvalue()


def indexes() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, "regions_task"))


@pytest.mark.postgresql
def test_the_finished_at_index_is_built_and_dropped_concurrently_on_postgresql():
    assert "CREATE INDEX CONCURRENTLY" in sql_of("0016")
    assert "DROP INDEX CONCURRENTLY" in sql_of("0016", backwards=True)


def test_the_finished_at_index_is_built_without_concurrently_where_there_is_none():
    if connection.vendor == "postgresql":
        pytest.skip("SQLite's statement: this module runs on SQLite in tests/test_storage_sqlite.py")
    forwards = sql_of("0016")
    assert "CREATE INDEX" in forwards and "CONCURRENTLY" not in forwards


def test_the_finished_at_index_migrates_back_and_forth():
    assert INDEX in indexes()
    call_command("migrate", "regions", "0015", verbosity=0)
    assert INDEX not in indexes()
    call_command("migrate", "regions", verbosity=0)  # to the latest: later tests need the later tables
    assert INDEX in indexes()
