"""The database seam. The product runs on PostgreSQL; the demo's SQLite takes the
portable ORM path. Where a statement is PostgreSQL's own (one-statement claims
and outcomes, array parameters, counters, unlogged commits) the code asks
is_postgresql() here; the two queries written in both dialects (the summary's
counts, the overview's wait buckets) pick theirs by connection.vendor."""
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
