"""What more than one module of the region's API uses: the list endpoints'
query filters and pages, and the answer while Redis is down."""
from __future__ import annotations

from rest_framework import serializers

from project.pagination import StrictCursorPagination
from project.validation import CAPABILITY_RE

LIVENESS_DOWN = "liveness store (Redis) unavailable; retry shortly"


class ListFilters(serializers.Serializer):
    """Query parameters of the list endpoints: checked before they reach a query
    (a NUL in a filter is a 400, not a database error)."""

    capability = serializers.RegexField(CAPABILITY_RE, required=False, error_messages={
        "invalid": "capability must be lower-case letters, digits and _ (at most 64), starting with a letter."})
    status = serializers.CharField(required=False, max_length=16)

    def __init__(self, *args, statuses, **kwargs):
        super().__init__(*args, **kwargs)
        self.statuses = statuses

    def validate_status(self, value):
        if value not in self.statuses:
            raise serializers.ValidationError(f"one of {', '.join(self.statuses)}")
        return value


def query_filters(request, statuses) -> dict:
    data = ListFilters(data={k: request.query_params[k] for k in ("capability", "status")
                             if k in request.query_params}, statuses=statuses)
    data.is_valid(raise_exception=True)
    return {"status": data.validated_data.get("status"), "capability": data.validated_data.get("capability")}


class Pages(StrictCursorPagination):
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "-created_at"
