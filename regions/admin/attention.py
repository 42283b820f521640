"""The task list's "why it waits" filter (?waits_for=...): the rows each line of
the overview's "needs attention" panel counts (regions/attention.py)."""
from __future__ import annotations

from django.contrib import admin

from regions.attention import QUEUED_LONG, QUEUED_LONG_REASON, WAIT_REASONS, wait_reason_filter


class WaitsForFilter(admin.SimpleListFilter):
    title = "why it waits"
    parameter_name = "waits_for"

    def lookups(self, request, model_admin):
        minutes = int(QUEUED_LONG.total_seconds() // 60)
        return [*((name, why) for name, (why, _) in WAIT_REASONS.items()),
                (QUEUED_LONG_REASON, f"queued for over {minutes} min")]

    def queryset(self, request, queryset):
        condition = wait_reason_filter(self.value()) if self.value() else None
        return queryset.filter(condition) if condition is not None else queryset
