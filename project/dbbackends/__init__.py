"""The database seam. The product runs on PostgreSQL; the demo's SQLite takes the
portable ORM path. Where a statement is PostgreSQL's own (one-statement claims
and outcomes, array parameters, counters, unlogged commits) the code asks
is_postgresql() here; the two queries written in both dialects (the summary's
counts, the overview's wait buckets) pick theirs by connection.vendor."""
from django.db import connection


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"
