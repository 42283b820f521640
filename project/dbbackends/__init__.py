"""The database seam. The product runs on PostgreSQL; the demo's SQLite takes the
portable ORM path. Where a statement is PostgreSQL's own (one-statement claims
and outcomes, array parameters, counters, unlogged commits) the code asks
is_postgresql() here, and nowhere else decides by vendor."""
from django.db import connection


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"
