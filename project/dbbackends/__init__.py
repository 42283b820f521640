"""The database seam. The product runs on PostgreSQL; the demo runs each role on
SQLite (it then needs nothing but a redis-server) and takes the portable ORM
path. Where a statement is PostgreSQL's own (one-statement claims and
outcomes, the capability counters, the waiters' array parameter, the router's
unflushed commit of a summary) the code asks is_postgresql() here; JSON-list membership is
json_list_has(); the two queries written in both dialects (the summary's
counts, the overview's wait buckets) pick theirs by connection.vendor. Both
sides run in every CI run on the database they serve: the services' tests
again on SQLite (tests/test_storage_sqlite.py), and the demo itself."""
import json

from django.db import connection
from django.db.models import Q


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def json_list_has(field: str, value: str) -> Q:
    """Rows whose JSON list `field` holds the string `value`: jsonb containment
    on PostgreSQL; on SQLite (where Django has no JSON containment) the quoted
    value in the stored text (Django's only text match on a JSONField there is
    case-insensitive): exact for lower-case values without quotes or
    backslashes, as capabilities are by their pattern."""
    if is_postgresql():
        return Q(**{f"{field}__contains": [value]})
    return Q(**{f"{field}__icontains": json.dumps(value)})
